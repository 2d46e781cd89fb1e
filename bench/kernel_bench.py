#!/usr/bin/env python3
"""Overhead of prof with kernel-time accounting (issue 12), on C and Python workloads.

One invocation, alternating rounds (a different order each round), per-round ratios to
that round's unprofiled run (the shared VM's speed drifts over minutes; pairing within a
round cancels the drift), medians of those ratios:

  C, CPU-bound:     tests/fixtures/c_threads.c (4 threads, cost 1:2:3:4)
  C, syscall-heavy: tests/fixtures/sys_threads.c (pread loop, computation, both)
  Python:           bench/py_cpu.py (one thread, pure Python)

Tools: unprofiled; `prof run --rate 999` (kernel-time accounting on, the default);
the same with PROF_KERNEL_TIME=off (the agent before issue 12: the perf event alone);
`perf record -F 999 -g`; and on Python `py-spy record -r 999`.

CPU time is the whole process tree's (os.wait4's rusage of the tool's process). Also
printed: prof's samples per CPU-second (how much of the CPU time the samples account
for) and what the accounting adds per sample: (CPU on - CPU off) / samples.

Usage: bench/kernel_bench.py [--rounds N] [--unit ITER] [--scale N]
Needs gcc, perf (apt-get install -y linux-perf) and py-spy (pip install py-spy).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(argv, env=None):
    """(wall s, CPU s of the process tree)."""
    import time

    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{argv} failed ({code}):\n{err}")
    return wall, ru.ru_utime + ru.ru_stime


def prof_report(prof, path):
    out = subprocess.run([prof, "report", "--format", "json", path],
                         capture_output=True, check=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--unit", default="8000000", help="c_threads iterations per cost unit")
    ap.add_argument("--sys-scale", default="1.0", help="sys_threads scale (1.0: 2.25 CPU-s)")
    ap.add_argument("--scale", default="20", help="bench/py_cpu.py scale")
    ap.add_argument("--python", default=shutil.which("python3"))
    a = ap.parse_args()
    a.python = subprocess.run([a.python, "-c", "import sys; print(sys.executable)"],
                              capture_output=True, text=True, check=True).stdout.strip()
    perf = shutil.which("perf")
    py_spy = shutil.which("py-spy")
    if not perf:
        sys.exit("perf not found: apt-get install -y linux-perf")
    if not py_spy:
        sys.exit("py-spy not found: pip install py-spy")
    if "/shims/" in py_spy:
        # pyenv's shim is a bash script: its own start-up would count as py-spy's cost.
        py_spy = subprocess.run(["pyenv", "which", "py-spy"], capture_output=True, text=True,
                                check=True).stdout.strip()
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "prof-cli", "-p", "prof-agent"],
                   cwd=ROOT, check=True)
    prof = os.path.join(ROOT, "target", "release", "prof")
    tmp = tempfile.mkdtemp()
    exes = {}
    for name in ("c_threads", "sys_threads"):
        exes[name] = os.path.join(tmp, name)
        flags = ["-O2", "-g", "-fno-omit-frame-pointer", "-pthread"]
        if name == "c_threads":
            flags.append("-DMIX_FRAME")
        subprocess.run(["gcc", *flags, os.path.join(ROOT, "tests", "fixtures", f"{name}.c"),
                        "-o", exes[name]], check=True)
    workloads = {
        "c_threads": [exes["c_threads"], a.unit],
        "sys_threads": [exes["sys_threads"], a.sys_scale],
        "py_cpu": [a.python, os.path.join(ROOT, "bench", "py_cpu.py"), a.scale],
    }
    off = dict(os.environ, PROF_KERNEL_TIME="off")
    out = {k: os.path.join(tmp, k) for k in ("on", "off", "perf", "pyspy")}

    def tools(wl):
        base = workloads[wl]
        t = {
            "unprofiled": (base, None),
            "prof 999 Hz": ([prof, "run", "-q", "--rate", "999", "-o", out["on"], "--"] + base, None),
            "prof, kernel time off": ([prof, "run", "-q", "--rate", "999", "-o", out["off"], "--"] + base, off),
            "perf record -g": ([perf, "record", "-q", "-F", "999", "-g", "--no-bpf-event", "-o",
                                out["perf"], "--"] + base, None),
        }
        if wl == "py_cpu":
            t["py-spy 999 Hz"] = ([py_spy, "record", "-r", "999", "-f", "raw", "-o", out["pyspy"],
                                   "--"] + base, None)
        return t

    res = {wl: {name: [] for name in tools(wl)} for wl in workloads}
    density = {wl: {"on": [], "off": []} for wl in workloads}
    for i in range(a.rounds):
        for wl in workloads:
            names = list(tools(wl))
            k = i % len(names)
            for name in names[k:] + names[:k]:
                argv, env = tools(wl)[name]
                res[wl][name].append(timed(argv, env))
                if name.startswith("prof"):
                    which = "on" if name == "prof 999 Hz" else "off"
                    rep = prof_report(prof, out[which])
                    cpu = sum(p["cpu_s"] or 0 for p in rep["processes"])
                    density[wl][which].append((rep["weight"], rep["samples"], cpu))
        print(f"round {i + 1}/{a.rounds} done", file=sys.stderr)

    print(f"{a.rounds} rounds, alternating; seconds: medians; ratios: medians of per-round "
          f"ratios to the round's unprofiled run")
    for wl, r in res.items():
        def ratio(name, j):
            return statistics.median(x[j] / u[j] for x, u in zip(r[name], r["unprofiled"]))

        print()
        print(f"### {wl}: {' '.join(os.path.basename(x) for x in workloads[wl])}")
        print()
        print("| tool | wall s | x wall | CPU s | x CPU |")
        print("|---|---|---|---|---|")
        for name, runs in r.items():
            w = statistics.median(x for x, _ in runs)
            c = statistics.median(y for _, y in runs)
            print(f"| {name} | {w:.2f} | {ratio(name, 0):.3f} | {c:.2f} | {ratio(name, 1):.3f} |")
        on, off_ = density[wl]["on"], density[wl]["off"]
        rate_on = statistics.median(w / c for w, _, c in on)
        rate_off = statistics.median(w / c for w, _, c in off_)
        samples_on = statistics.median(s for _, s, _ in on)
        per_round = [(x[1] - y[1]) / s for x, y, (_, s, _) in
                     zip(r["prof 999 Hz"], r["prof, kernel time off"], on)]
        print()
        print(f"samples per CPU-second: {rate_on:.0f} with kernel time, {rate_off:.0f} without; "
              f"{samples_on:.0f} samples; CPU added by the accounting: "
              f"{statistics.median(per_round) * 1e6:.1f} us per sample (median of rounds; "
              f"range {min(per_round) * 1e6:.1f} to {max(per_round) * 1e6:.1f})")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
