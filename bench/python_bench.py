#!/usr/bin/env python3
"""Overhead of `prof run` on a CPU-bound CPython workload, against py-spy and vmprof.

One invocation runs bench/py_cpu.py (pure-Python fib / dict / string phases) unprofiled,
under `prof run --rate 999` (and 4999), under `py-spy record -r 999` and under
`python -m vmprof`, in rounds (a different order each round), and prints the wall-time
and CPU-time ratios to the unprofiled run of the same round (CPU time of the whole
process tree, from os.wait4; medians over rounds), samples per CPU-second, the CPU cost
per sample (slope between 999 and 4999 Hz) and whether prof's top-10 Python functions
(by total time) agree with py-spy's. A "floor" row runs the workload with only prof's timer and an empty SIGPROF
handler preloaded (bench/bench.py's FLOOR_C): what any in-process sampler driven by that
timer costs on this machine, before it does any work.

Needs: `pip install py-spy vmprof` (into the Python used below) and release binaries
(`cargo build --release`). Usage: bench/python_bench.py [--runs N] [--scale S] [--python PY]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOAD = os.path.join(ROOT, "bench", "py_cpu.py")


def timed(argv):
    """Runs argv; returns (wall s, CPU s of the process tree)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        err.seek(0)
        text = err.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{argv[0]} failed ({code}):\n{text}")
    return wall, ru.ru_utime + ru.ru_stime


def top_from_folded(path, n=10):
    """Top-n function names by total weight from folded stacks ("a;b;c 12")."""
    totals = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            seen = set()
            for fr in stack.split(";"):
                name = fr.split(" (")[0].strip()
                if name and name not in seen:
                    seen.add(name)
                    totals[name] = totals.get(name, 0) + int(count)
    return [k for k, _ in sorted(totals.items(), key=lambda kv: -kv[1])][:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--python", default=shutil.which("python3"))
    a = ap.parse_args()
    # The interpreter itself, not a launcher script (pyenv shims are bash scripts).
    a.python = subprocess.run([a.python, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True, check=True).stdout.strip()
    prof = os.path.join(ROOT, "target", "release", "prof")
    if not os.path.exists(prof):
        sys.exit("build first: cargo build --release")
    py_spy = shutil.which("py-spy")
    if not py_spy:
        sys.exit("py-spy missing: pip install py-spy")
    if subprocess.run([a.python, "-c", "import vmprof"], capture_output=True).returncode != 0:
        sys.exit("vmprof missing: pip install vmprof")
    tmp = tempfile.mkdtemp()
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from bench import FLOOR_C
    floor_c = os.path.join(tmp, "floor.c")
    with open(floor_c, "w") as f:
        f.write(FLOOR_C)
    floor_so = os.path.join(tmp, "floor.so")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", floor_c, "-o", floor_so], check=True)
    out = {k: os.path.join(tmp, k) for k in ("prof", "prof5k", "pyspy", "vmprof")}
    base = [a.python, WORKLOAD, str(a.scale)]
    tools = {
        "unprofiled": base,
        "floor 999 Hz": ["env", "LD_PRELOAD=" + floor_so, "FLOOR_HZ=999"] + base,
        "floor 4999 Hz": ["env", "LD_PRELOAD=" + floor_so, "FLOOR_HZ=4999"] + base,
        "prof 999 Hz": [prof, "run", "-q", "--rate", "999", "-o", out["prof"], "--"] + base,
        "prof 4999 Hz": [prof, "run", "-q", "--rate", "4999", "-o", out["prof5k"], "--"] + base,
        "py-spy 999 Hz": [py_spy, "record", "-r", "999", "-f", "raw", "-o", out["pyspy"], "--"] + base,
        "vmprof 1 ms": [a.python, "-m", "vmprof", "--period", "0.001", "-o", out["vmprof"], WORKLOAD, str(a.scale)],
    }
    res = {k: [] for k in tools}
    names = list(tools)
    for i in range(a.runs):
        # A different order each round, so no tool always runs right after another.
        k = i % len(names)
        for name in names[k:] + names[:k]:
            res[name].append(timed(tools[name]))
    # Ratios are medians of per-round ratios to that round's unprofiled run: the machine's
    # speed drifts over minutes (shared VM), and pairing within a round cancels the drift.
    def ratio(name, j):
        return statistics.median(r[j] / u[j] for r, u in zip(res[name], res["unprofiled"]))
    print(f"workload: {os.path.basename(a.python)} bench/py_cpu.py {a.scale}, {a.runs} rounds; "
          f"seconds: medians; ratios: medians of per-round ratios")
    print(f"{'tool':<16}{'wall s':>9}{'x wall':>9}{'CPU s':>9}{'x CPU':>9}")
    for name, r in res.items():
        w = statistics.median(x for x, _ in r)
        c = statistics.median(y for _, y in r)
        print(f"{name:<16}{w:>9.2f}{ratio(name, 0):>9.3f}{c:>9.2f}{ratio(name, 1):>9.3f}")
    # Per-sample cost from the slope between 999 and 4999 Hz: less exposed to the noise
    # than a few percent at one rate, and it separates the signal floor from prof's work.
    for who in ("floor", "prof"):
        slope = (ratio(f"{who} 4999 Hz", 1) - ratio(f"{who} 999 Hz", 1)) / 4000
        print(f"{who}: {slope * 1e6:.1f} us of CPU per sample (999 -> 4999 Hz slope)")
    rep = json.loads(subprocess.run([prof, "report", "--format", "json", out["prof"]], capture_output=True, check=True).stdout)
    cpu = sum(p["cpu_s"] or 0 for p in rep["processes"])
    print(f"prof: {rep['samples']} samples, {rep['samples'] / cpu:.0f} per CPU-second, "
          f"{os.path.getsize(out['prof']) / max(rep['samples'], 1):.1f} bytes/sample")
    folded = os.path.join(tmp, "prof.folded")
    with open(folded, "w") as f:
        subprocess.run([prof, "report", "--format", "collapsed", out["prof"]], stdout=f, check=True)
    py_funcs = {fn["name"] for fn in rep["functions"] if fn["module"].endswith(".py")}
    ours = [n for n in top_from_folded(folded, 1000) if n in py_funcs][:10]
    theirs = [n for n in top_from_folded(out["pyspy"], 1000) if not n.startswith("<") or n == "<module>"][:10]
    common = set(ours) & set(theirs)
    print(f"top-10 Python functions by total: prof {ours}")
    print(f"                                 py-spy {theirs}")
    print(f"agreement: {len(common)}/10")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
