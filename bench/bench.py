#!/usr/bin/env python3
"""Overhead and density of `prof run` against `perf record` on the 4-thread C fixture.

One invocation builds prof (release) and tests/fixtures/c_threads.c, then runs the fixture
unprofiled, under `prof run --rate 999` and under `perf record -F 999 -g`, alternating,
RUNS times each, and prints (medians):

  - CPU-time and wall-time ratios to the unprofiled run. CPU time is that of the whole
    process tree (the tool and the fixture: os.wait4's rusage of the tool's process,
    which includes the children it waited for);
  - samples actually recorded per CPU-second of the fixture's threads (their own
    CLOCK_THREAD_CPUTIME_ID figures, printed on the fixture's GROUND line);
  - bytes per sample of each tool's output file.

Usage: bench/bench.py [--runs N] [--unit ITERATIONS] [--rate HZ] [--no-perf]
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


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(argv, stdout=subprocess.DEVNULL):
    """Runs argv; returns (wall s, CPU s of the process tree, stderr text, exit status)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=stdout, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return wall, ru.ru_utime + ru.ru_stime, text, p.returncode


def ground_cpu(stderr):
    for line in stderr.splitlines():
        if line.startswith("GROUND "):
            return sum(float(kv.split("=")[1]) for kv in line.split()[1:])
    raise SystemExit("the fixture printed no GROUND line:\n" + stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--unit", default="24000000", help="fixture iterations per cost unit (24M: ~3 CPU-s)")
    ap.add_argument("--rate", default="999")
    ap.add_argument("--no-perf", action="store_true", help="skip perf record")
    args = ap.parse_args()

    sh(["cargo", "build", "--release", "--quiet", "-p", "prof-cli", "-p", "prof-agent"], cwd=ROOT)
    prof = os.path.join(ROOT, "target", "release", "prof")
    work = tempfile.mkdtemp(prefix="prof-bench-")
    exe = os.path.join(work, "c_threads")
    sh(["gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-DMIX_FRAME", "-pthread",
        os.path.join(ROOT, "tests", "fixtures", "c_threads.c"), "-o", exe])
    perf = shutil.which("perf")
    tools = ["none", "prof"]
    if not args.no_perf:
        if not perf:
            raise SystemExit("perf not found: apt-get install -y linux-perf (or pass --no-perf)")
        tools.append("perf")

    prof_out = os.path.join(work, "prof.data")
    perf_out = os.path.join(work, "perf.data")
    cmdlines = {
        "none": [exe, args.unit],
        # -q: no summary at the end, so that symbolization is not counted as overhead.
        "prof": [prof, "run", "-q", "--rate", args.rate, "-o", prof_out, "--", exe, args.unit],
        "perf": [perf, "record", "-q", "-F", args.rate, "-g", "--no-bpf-event", "-o", perf_out,
                 "--", exe, args.unit],
    }
    res = {t: {"wall": [], "cpu": [], "rate": [], "bps": [], "samples": []} for t in tools}
    timer = None
    for i in range(args.runs):
        for t in tools:
            for f in (prof_out, perf_out):
                if os.path.exists(f):
                    os.unlink(f)
            wall, cpu, err, code = timed(cmdlines[t])
            if code != 0:
                raise SystemExit(f"{t} run failed ({code}):\n{err}")
            r = res[t]
            r["wall"].append(wall)
            r["cpu"].append(cpu)
            work_cpu = ground_cpu(err)
            if t == "prof":
                rep = json.loads(subprocess.run([prof, "report", "--format", "json", prof_out],
                                                check=True, capture_output=True).stdout)
                n = rep["samples"]
                timer = rep.get("timer")
                size = os.path.getsize(prof_out)
            elif t == "perf":
                out = subprocess.run([perf, "script", "-i", perf_out, "-F", "tid"], check=True,
                                     capture_output=True).stdout
                n = len(out.splitlines())
                size = os.path.getsize(perf_out)
            else:
                continue
            r["samples"].append(n)
            r["rate"].append(n / work_cpu)
            r["bps"].append(size / max(n, 1))
        print(f"run {i + 1}/{args.runs} done", file=sys.stderr)

    base_cpu = statistics.median(res["none"]["cpu"])
    base_wall = statistics.median(res["none"]["wall"])
    print(f"c_threads (4 threads, cost 1:2:3:4), unit {args.unit}, {args.runs} runs each, "
          f"alternating; medians. Unprofiled: {base_cpu:.2f} CPU-s, {base_wall:.2f} s wall.")
    if timer:
        print(f"prof timer: {timer}")
    print()
    print("| tool | x CPU | x CPU range | x wall | samples/CPU-s | samples | bytes/sample |")
    print("|---|---|---|---|---|---|---|")
    for t in tools:
        r = res[t]
        cpu = statistics.median(r["cpu"]) / base_cpu
        wall = statistics.median(r["wall"]) / base_wall
        lo, hi = min(r["cpu"]) / base_cpu, max(r["cpu"]) / base_cpu
        if t == "none":
            print(f"| unprofiled | 1.000 | {lo:.3f}-{hi:.3f} | 1.000 | - | - | - |")
            continue
        name = {"prof": f"prof run --rate {args.rate}",
                "perf": f"perf record -F {args.rate} -g"}[t]
        print(f"| {name} | {cpu:.3f} | {lo:.3f}-{hi:.3f} | {wall:.3f} | {statistics.median(r['rate']):.0f} | "
              f"{statistics.median(r['samples']):.0f} | {statistics.median(r['bps']):.2f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
