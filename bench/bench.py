#!/usr/bin/env python3
"""Overhead and density of `prof run` against `perf record`, on two C fixtures.

One invocation builds prof (release) and two fixtures, and runs two suites, each
alternating unprofiled / prof / perf runs, RUNS times each:

1. threads: tests/fixtures/c_threads.c (4 threads, -fno-omit-frame-pointer), unprofiled,
   under `prof run --rate 999` and under `perf record -F 999 -g` (frame-pointer call
   graphs);
2. nofp: tests/fixtures/nofp_chain.c (-O2 -fomit-frame-pointer: no frame pointers, so
   stacks need DWARF unwinding), unprofiled, under `prof run --rate 999` (CFI evaluated in
   the signal handler) and under `perf record -F 999 --call-graph dwarf` (copies 8 KB of
   stack per sample, unwound later by `perf report`); and, as the floor of any in-process
   sampler driven by the same timer, the fixture linked with FLOOR_C below: the agent's
   perf_event cpu-clock SIGPROF mechanism at the same rate with an empty handler (no
   unwinding, no writer), so the signal delivery's own cost is visible.

and prints, per suite (medians):

  - CPU-time and wall-time ratios to the unprofiled run. CPU time is that of the whole
    process tree (the tool and the fixture: os.wait4's rusage of the tool's process,
    which includes the children it waited for);
  - samples recorded (per CPU-second of the fixture's threads for c_threads, from their
    own CLOCK_THREAD_CPUTIME_ID figures on the fixture's GROUND line);
  - the output file's size, per sample and (nofp) against perf.data's;
  - (nofp) the share of samples whose stack reaches `main`, in each tool's own output.

Usage: bench/bench.py [--runs N] [--suite all|threads|nofp] [--unit ITERATIONS]
                      [--nofp-iterations N] [--rate HZ] [--no-perf]
Needs gcc, and perf for the comparison (Debian: apt-get install -y linux-perf).
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

# The agent's timer mechanism with nothing else: a per-thread perf_event cpu-clock event
# (user time only) whose every overflow is routed to the thread as SIGPROF with
# F_SETOWN_EX/F_SETSIG, and a handler that does nothing. Armed by a constructor for the
# main thread (the fixtures are single-threaded); FLOOR_HZ sets the rate. Linked into a
# program, or built with -shared -fPIC and preloaded (bench/python_bench.py).
FLOOR_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/perf_event.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int floor_fd = -1;
static void floor_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si; (void)uc;
}
__attribute__((constructor)) static void floor_arm(void) {
    const char *hz = getenv("FLOOR_HZ");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = floor_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGPROF, &sa, NULL);
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_SOFTWARE;
    a.size = sizeof a;
    a.config = PERF_COUNT_SW_CPU_CLOCK;
    a.sample_period = 1000000000ULL / (unsigned long long)atol(hz ? hz : "999");
    a.disabled = 1;
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    a.wakeup_events = 1;
    floor_fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (floor_fd < 0) _exit(111);
    struct f_owner_ex o = {F_OWNER_TID, (pid_t)syscall(SYS_gettid)};
    fcntl(floor_fd, F_SETFL, O_ASYNC);
    fcntl(floor_fd, F_SETSIG, SIGPROF);
    fcntl(floor_fd, F_SETOWN_EX, &o);
    ioctl(floor_fd, PERF_EVENT_IOC_ENABLE, 0);
}
"""


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(argv, stdout=subprocess.DEVNULL, env=None):
    """Runs argv; returns (wall s, CPU s of the process tree, stderr text, exit status)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=stdout, stderr=err, env=env)
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


def prof_samples(prof, path):
    rep = json.loads(subprocess.run([prof, "report", "--format", "json", path],
                                    check=True, capture_output=True).stdout)
    return rep["samples"], rep.get("timer")


def prof_reach_main(prof, path):
    """Share of sample weight whose folded stack contains `main`."""
    out = subprocess.run([prof, "report", "--format", "collapsed", path], check=True,
                         capture_output=True, text=True).stdout
    total = hit = 0
    for line in out.splitlines():
        stack, _, w = line.rpartition(" ")
        total += int(w)
        if "main" in stack.split(";"):
            hit += int(w)
    return hit / max(total, 1)


def perf_samples(perf, path):
    out = subprocess.run([perf, "script", "-i", path, "-F", "tid"], check=True,
                         capture_output=True).stdout
    return len(out.splitlines())


def perf_reach_main(perf, path):
    """Share of perf's samples whose (DWARF-unwound) call chain contains `main`."""
    # --max-stack: perf script stops call chains at 127 frames by default, and the
    # fixture's recursion is 200 deep.
    out = subprocess.run([perf, "script", "-i", path, "-F", "ip,sym", "--max-stack", "1024"],
                         check=True, capture_output=True, text=True).stdout
    total = hit = 0
    for block in out.split("\n\n"):
        # "<tab>   120e leaf", one line per frame, a blank line between samples.
        syms = [line.split()[1] for line in block.splitlines() if len(line.split()) > 1]
        if not syms:
            continue
        total += 1
        hit += "main" in syms
    return hit / max(total, 1)


def alternate(tools, cmdlines, runs, outputs, after_run, label, envs=None):
    """Runs every tool once per round, `runs` rounds; returns per-tool lists."""
    res = {t: {"wall": [], "cpu": [], "extra": []} for t in tools}
    for i in range(runs):
        for t in tools:
            for f in outputs:
                if os.path.exists(f):
                    os.unlink(f)
            wall, cpu, err, code = timed(cmdlines[t], env=(envs or {}).get(t))
            if code != 0:
                raise SystemExit(f"{label}: {t} run failed ({code}):\n{err}")
            res[t]["wall"].append(wall)
            res[t]["cpu"].append(cpu)
            res[t]["extra"].append(after_run(t, err))
        print(f"{label}: run {i + 1}/{runs} done", file=sys.stderr)
    return res


def ratios(res, t):
    """(median CPU ratio, lowest and highest run over the unprofiled median, best run over
    the best unprofiled run, median wall ratio). On a shared machine the best runs are
    the least disturbed ones: best/best estimates the ratio on a quiet machine."""
    base_cpu = statistics.median(res["none"]["cpu"])
    base_wall = statistics.median(res["none"]["wall"])
    r = res[t]
    return (statistics.median(r["cpu"]) / base_cpu, min(r["cpu"]) / base_cpu,
            max(r["cpu"]) / base_cpu, min(r["cpu"]) / min(res["none"]["cpu"]),
            statistics.median(r["wall"]) / base_wall)


def suite_threads(args, prof, perf, tools, work):
    exe = os.path.join(work, "c_threads")
    sh(["gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-DMIX_FRAME", "-pthread",
        os.path.join(ROOT, "tests", "fixtures", "c_threads.c"), "-o", exe])
    prof_out = os.path.join(work, "prof.data")
    perf_out = os.path.join(work, "perf.data")
    cmdlines = {
        "none": [exe, args.unit],
        # -q: no summary at the end, so that symbolization is not counted as overhead.
        "prof": [prof, "run", "-q", "--rate", args.rate, "-o", prof_out, "--", exe, args.unit],
        "perf": [perf, "record", "-q", "-F", args.rate, "-g", "--no-bpf-event", "-o", perf_out,
                 "--", exe, args.unit],
    }
    timer = [None]

    def after(t, err):
        work_cpu = ground_cpu(err)
        if t == "prof":
            n, timer[0] = prof_samples(prof, prof_out)
            size = os.path.getsize(prof_out)
        elif t == "perf":
            n = perf_samples(perf, perf_out)
            size = os.path.getsize(perf_out)
        else:
            return None
        return {"samples": n, "rate": n / work_cpu, "bps": size / max(n, 1)}

    res = alternate(tools, cmdlines, args.runs, [prof_out, perf_out], after, "threads")
    base_cpu = statistics.median(res["none"]["cpu"])
    base_wall = statistics.median(res["none"]["wall"])
    print(f"c_threads (4 threads, cost 1:2:3:4, frame pointers), unit {args.unit}, "
          f"{args.runs} runs each, alternating; medians. Unprofiled: {base_cpu:.2f} CPU-s, "
          f"{base_wall:.2f} s wall.")
    if timer[0]:
        print(f"prof timer: {timer[0]}")
    print()
    print("| tool | x CPU | x CPU range | x CPU best/best | x wall | samples/CPU-s | samples "
          "| bytes/sample |")
    print("|---|---|---|---|---|---|---|---|")
    for t in tools:
        cpu, lo, hi, best, wall = ratios(res, t)
        if t == "none":
            print(f"| unprofiled | 1.000 | {lo:.3f}-{hi:.3f} | 1.000 | 1.000 | - | - | - |")
            continue
        ex = res[t]["extra"]
        med = lambda k: statistics.median(e[k] for e in ex)  # noqa: E731
        name = {"prof": f"prof run --rate {args.rate}",
                "perf": f"perf record -F {args.rate} -g"}[t]
        print(f"| {name} | {cpu:.3f} | {lo:.3f}-{hi:.3f} | {best:.3f} | {wall:.3f} | "
              f"{med('rate'):.0f} | "
              f"{med('samples'):.0f} | {med('bps'):.2f} |")
    print()


def suite_nofp(args, prof, perf, tools, work):
    exe = os.path.join(work, "nofp_chain")
    src = os.path.join(ROOT, "tests", "fixtures", "nofp_chain.c")
    sh(["gcc", "-O2", "-g", "-fomit-frame-pointer", src, "-o", exe])
    floor_c = os.path.join(work, "floor.c")
    with open(floor_c, "w") as f:
        f.write(FLOOR_C)
    floor_exe = os.path.join(work, "nofp_chain_floor")
    sh(["gcc", "-O2", "-g", "-fomit-frame-pointer", src, floor_c, "-o", floor_exe])
    tools = tools[:1] + ["floor"] + tools[1:]
    prof_out = os.path.join(work, "prof.data")
    perf_out = os.path.join(work, "perf.data")
    it = args.nofp_iterations
    cmdlines = {
        "none": [exe, it],
        "floor": [floor_exe, it],
        "prof": [prof, "run", "-q", "--rate", args.rate, "-o", prof_out, "--", exe, it],
        "perf": [perf, "record", "-q", "-F", args.rate, "--call-graph", "dwarf",
                 "--no-bpf-event", "-o", perf_out, "--", exe, it],
    }

    def after(t, _err):
        if t == "prof":
            n, _ = prof_samples(prof, prof_out)
            return {"samples": n, "size": os.path.getsize(prof_out),
                    "main": prof_reach_main(prof, prof_out)}
        if t == "perf":
            return {"samples": perf_samples(perf, perf_out), "size": os.path.getsize(perf_out),
                    "main": perf_reach_main(perf, perf_out)}
        return None

    envs = {"floor": dict(os.environ, FLOOR_HZ=args.rate)}
    res = alternate(tools, cmdlines, args.runs, [prof_out, perf_out], after, "nofp", envs)
    base_cpu = statistics.median(res["none"]["cpu"])
    base_wall = statistics.median(res["none"]["wall"])
    print(f"nofp_chain (-O2 -fomit-frame-pointer; main→outer→middle→leaf and a 200-deep "
          f"recursion), {it} iterations, {args.runs} runs each, alternating; medians. "
          f"Unprofiled: {base_cpu:.2f} CPU-s, {base_wall:.2f} s wall.")
    print()
    print("| tool | x CPU | x CPU range | x CPU best/best | x wall | samples | output bytes "
          "| bytes/sample | stacks reaching main |")
    print("|---|---|---|---|---|---|---|---|---|")
    med = {}
    for t in tools:
        cpu, lo, hi, best, wall = ratios(res, t)
        if t == "none":
            print(f"| unprofiled | 1.000 | {lo:.3f}-{hi:.3f} | 1.000 | 1.000 | - | - | - | - |")
            continue
        if t == "floor":
            med["floor"] = {"cpu": cpu, "best": best}
            print(f"| floor: empty SIGPROF handler, same timer at {args.rate} Hz | {cpu:.3f} | "
                  f"{lo:.3f}-{hi:.3f} | {best:.3f} | {wall:.3f} | - | - | - | - |")
            continue
        ex = res[t]["extra"]
        m = {k: statistics.median(e[k] for e in ex) for k in ("samples", "size", "main")}
        m["cpu"], m["best"] = cpu, best
        med[t] = m
        name = {"prof": f"prof run --rate {args.rate}",
                "perf": f"perf record -F {args.rate} --call-graph dwarf"}[t]
        print(f"| {name} | {cpu:.3f} | {lo:.3f}-{hi:.3f} | {best:.3f} | {wall:.3f} | "
              f"{m['samples']:.0f} | "
              f"{m['size']:.0f} | {m['size'] / max(m['samples'], 1):.1f} | "
              f"{100 * m['main']:.1f}% |")
    print()
    p = med["prof"]
    ok = "met" if p["cpu"] <= 1.03 else "NOT met"
    print(f"target <= 1.03x CPU at {args.rate} Hz: prof {p['cpu']:.3f}x median ({ok}), "
          f"{p['best']:.3f}x best/best; the timer's signals alone (floor) cost "
          f"{med['floor']['cpu']:.3f}x median, {med['floor']['best']:.3f}x best/best, so "
          f"prof's own work adds {p['cpu'] / med['floor']['cpu']:.3f}x over the floor")
    if "perf" in med:
        q = med["perf"]
        ratio = q["size"] / max(p["size"], 1)
        ok = "met" if ratio >= 100 else "NOT met"
        print(f"target profile <= 1/100 of perf.data: perf.data / prof profile = {ratio:.0f}x "
              f"({p['size']:.0f} vs {q['size']:.0f} bytes; {ok}); perf record costs "
              f"{q['cpu']:.3f}x CPU")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--suite", choices=["all", "threads", "nofp"], default="all")
    ap.add_argument("--unit", default="24000000", help="c_threads iterations per cost unit (24M: ~3 CPU-s)")
    ap.add_argument("--nofp-iterations", default="600000000",
                    help="nofp_chain iterations per half (600M: ~2 CPU-s)")
    ap.add_argument("--rate", default="999")
    ap.add_argument("--no-perf", action="store_true", help="skip perf record")
    args = ap.parse_args()

    sh(["cargo", "build", "--release", "--quiet", "-p", "prof-cli", "-p", "prof-agent"], cwd=ROOT)
    prof = os.path.join(ROOT, "target", "release", "prof")
    perf = shutil.which("perf")
    tools = ["none", "prof"]
    if not args.no_perf:
        if not perf:
            raise SystemExit("perf not found: apt-get install -y linux-perf (or pass --no-perf)")
        tools.append("perf")
    work = tempfile.mkdtemp(prefix="prof-bench-")
    try:
        if args.suite in ("all", "threads"):
            suite_threads(args, prof, perf, tools, work)
        if args.suite in ("all", "nofp"):
            suite_nofp(args, prof, perf, tools, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
