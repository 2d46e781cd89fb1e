#!/usr/bin/env python3
"""What kernel-time accounting adds on CPU-bound work: c_threads under `prof run --rate
999` with PROF_KERNEL_TIME=on and =off, in pairs (order alternating), CPU time of the
process tree (os.wait4); prints the median per-pair difference and ratio.

Usage: bench/kernel_pair.py [PAIRS] [UNIT]   (defaults 15, 8000000; build first:
cargo build --release -p prof-cli -p prof-agent)
"""
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROF = os.path.join(ROOT, "target", "release", "prof")


def main():
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    unit = sys.argv[2] if len(sys.argv) > 2 else "8000000"
    if not os.path.exists(PROF):
        sys.exit("build first: cargo build --release -p prof-cli -p prof-agent")
    tmp = tempfile.mkdtemp()
    exe = os.path.join(tmp, "c_threads")
    subprocess.run(["gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-DMIX_FRAME", "-pthread",
                    os.path.join(ROOT, "tests", "fixtures", "c_threads.c"), "-o", exe], check=True)

    def run(kernel_time):
        env = dict(os.environ, PROF_KERNEL_TIME=kernel_time)
        p = subprocess.Popen([PROF, "run", "-q", "--rate", "999", "-o", os.path.join(tmp, "p.data"),
                              "--", exe, unit], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit("prof run failed")
        return ru.ru_utime + ru.ru_stime

    res = []
    for i in range(pairs):
        if i % 2 == 0:
            on = run("on")
            off = run("off")
        else:
            off = run("off")
            on = run("on")
        res.append((on, off))
    diff = [a - b for a, b in res]
    print(f"c_threads {unit}, {pairs} pairs: CPU s median on {statistics.median(a for a, _ in res):.3f}, "
          f"off {statistics.median(b for _, b in res):.3f}; on - off median {statistics.median(diff) * 1e3:.1f} ms "
          f"(range {min(diff) * 1e3:.1f} to {max(diff) * 1e3:.1f}); ratio median "
          f"{statistics.median(a / b for a, b in res):.4f}")


if __name__ == "__main__":
    main()
