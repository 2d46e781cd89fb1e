#!/usr/bin/env python3
"""Overhead of `prof run` on PyPy (issue 17), against vmprof, and what PyPy's own JIT log
costs.

Runs a PyPy workload (default tests/fixtures/pypy_app.py: the seed's megamorphic
example, a JIT-compiled kernel, dict/string work, recursion, a thread) in rounds, every
variant once per round in a shuffled order, and prints for each variant the median over
rounds of its CPU time (user + system of the process tree, from os.wait4) divided by the
unprofiled run's of the same round. PyPy's run times vary a lot from run to run (the JIT
compiles different traces), hence many rounds and per-round ratios.

Variants:
  plain           pypy3 WORKLOAD
  prof            prof run --rate 999 (Python frames, names, PYPYLOG sections prof sets)
  prof-nolog      prof run --rate 999 --no-jit-maps (no PYPYLOG: no loop names, phases)
  log-prof        plain with prof's PYPYLOG sections, no prof: the log's own cost
  log-nogc        plain with prof's sections minus gc-collect-step
  log-optbridge   plain with prof's sections plus jit-log-opt-bridge (names bridges; dropped)
  prof+gc-minor   prof with its sections plus gc-minor (minor collections as gc; dropped)
  floor           plain with only prof's timer and an empty SIGPROF handler preloaded
                  (bench/bench.py's FLOOR_C, main thread): what any in-process sampler
                  driven by that timer costs here before it does any work
  vmprof          pypy3 -m vmprof (its default period; its delivered rate is printed)

Needs release binaries (`cargo build --release`) and a PyPy with vmprof installed
(`pypy3 -m venv V && V/bin/pip install vmprof`; pass --vmprof-python V/bin/python).
Usage: bench/pypy_bench.py [--rounds N] [--scale S] [--workload FILE] [--vmprof-python PY]
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROF_SECTIONS = "jit-backend-addr,jit-tracing,jit-blackhole,gc-collect-step"
NOGC_SECTIONS = "jit-backend-addr,jit-tracing,jit-blackhole"
OPT_SECTIONS = PROF_SECTIONS + ",jit-log-opt-bridge"
MINOR_SECTIONS = PROF_SECTIONS + ",gc-minor"


def timed(argv, env=None):
    """Runs argv; returns (wall s, CPU s of the process tree)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        err.seek(0)
        text = err.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv} failed:\n{text}")
    return wall, ru.ru_utime + ru.ru_stime


def report(prof, path):
    out = subprocess.run([prof, "report", "--format", "json", path], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--scale", default="8")
    ap.add_argument("--workload", default=os.path.join(ROOT, "tests", "fixtures", "pypy_app.py"))
    ap.add_argument("--pypy", default=shutil.which("pypy3"))
    ap.add_argument("--vmprof-python", default=None)
    a = ap.parse_args()
    prof = os.path.join(ROOT, "target", "release", "prof")
    if not os.path.exists(prof):
        sys.exit("build first: cargo build --release")
    if not a.pypy:
        sys.exit("pypy3 missing: apt-get install -y pypy3")
    tmp = tempfile.mkdtemp(prefix="pypy-bench-")
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import bench  # noqa: E402 (FLOOR_C)

    floor_c = os.path.join(tmp, "floor.c")
    with open(floor_c, "w") as f:
        f.write(bench.FLOOR_C)
    floor_so = os.path.join(tmp, "floor.so")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", floor_so, floor_c], check=True)
    data = os.path.join(tmp, "p.data")
    vm = os.path.join(tmp, "p.vmprof")
    work = [a.workload, a.scale]
    env = dict(os.environ)
    env.pop("PYPYLOG", None)
    log_env = dict(env, PYPYLOG=f"{PROF_SECTIONS}:{tmp}/log-%d")
    nogc_env = dict(env, PYPYLOG=f"{NOGC_SECTIONS}:{tmp}/log-%d")
    opt_env = dict(env, PYPYLOG=f"{OPT_SECTIONS}:{tmp}/log-%d")
    minor_env = dict(env, PYPYLOG=f"{MINOR_SECTIONS}:{tmp}/log-%d")
    variants = {
        "plain": ([a.pypy] + work, env),
        "prof": ([prof, "run", "-q", "--rate", "999", "-o", data, "--", a.pypy] + work, env),
        "prof-nolog": ([prof, "run", "-q", "--no-jit-maps", "--rate", "999", "-o", data + "2", "--", a.pypy] + work, env),
        "floor": ([a.pypy] + work, dict(env, LD_PRELOAD=floor_so, FLOOR_HZ="999")),
        "log-prof": ([a.pypy] + work, log_env),
        "log-nogc": ([a.pypy] + work, nogc_env),
        "log-optbridge": ([a.pypy] + work, opt_env),
        "prof+gc-minor": ([prof, "run", "-q", "--rate", "999", "-o", data + "3", "--", a.pypy] + work, minor_env),
    }
    if a.vmprof_python:
        variants["vmprof"] = ([a.vmprof_python, "-m", "vmprof", "-o", vm] + work, env)
    ratios = {k: [] for k in variants}
    rates = []
    vm_samples = []
    for r in range(a.rounds):
        order = list(variants)
        random.shuffle(order)
        cpu = {}
        for k in order:
            argv, e = variants[k]
            cpu[k] = timed(argv, e)[1]
            if k == "prof":
                rates.append(report(prof, data)["samples_per_cpu_s"])
            if k == "vmprof":
                rv = report(prof, vm)
                vm_samples.append(rv["samples"] / cpu[k])
            for f in os.listdir(tmp):
                if f.startswith("log-"):
                    os.remove(os.path.join(tmp, f))
        for k in variants:
            ratios[k].append(cpu[k] / cpu["plain"])
        print(f"round {r + 1}: " + " ".join(f"{k}={cpu[k]:.2f}s" for k in order), file=sys.stderr)
    print(f"PyPy overhead, {a.rounds} rounds, {os.path.basename(a.workload)} {a.scale}: CPU time / unprofiled CPU time of the same round")
    print(f"{'variant':12} {'median':>7} {'p25':>6} {'p75':>6}")
    for k, v in ratios.items():
        q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0]] * 3
        print(f"{k:12} {statistics.median(v):7.3f} {q[0]:6.3f} {q[2]:6.3f}")
    print(f"prof samples per CPU-second (median): {statistics.median(rates):.0f}")
    if vm_samples:
        print(f"vmprof samples per CPU-second (median): {statistics.median(vm_samples):.0f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
