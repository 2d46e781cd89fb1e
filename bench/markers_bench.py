#!/usr/bin/env python3
"""What request markers cost: a marker-heavy Python workload (N tiny "requests" of ~20 us of
work each, every one inside `with prof_markers.mark(...)`) run without prof, under
`prof run` with the marks off (the module's calls skipped), and under `prof run` with them
on, in rounds (order rotating); CPU time (user + system) of the process tree (os.wait4).
Prints medians, the cost per marker (begin + end) and the log bytes per marker.

Usage: bench/markers_bench.py [ROUNDS] [REQUESTS] [PYTHON]
       (defaults 7, 200000, python3.11; build first: cargo build --release -p prof-cli -p prof-agent)
"""
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROF = os.path.join(ROOT, "target", "release", "prof")
WORKLOAD = r'''
import sys
try:
    import prof_markers
except ImportError:
    prof_markers = None
n, on = int(sys.argv[1]), sys.argv[2] == "on"
def request(i):
    s = 0
    for k in range(60):
        s += (i * k) % 7
    return s
if on:
    mark = prof_markers.mark
    names = ["GET /a", "GET /b", "POST /c"]
    for i in range(n):
        with mark(names[i % 3]):
            request(i)
else:
    for i in range(n):
        request(i)
'''


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
    python = sys.argv[3] if len(sys.argv) > 3 else "python3.11"
    if not os.path.exists(PROF):
        sys.exit("build first: cargo build --release -p prof-cli -p prof-agent")
    tmp = tempfile.mkdtemp()
    script = os.path.join(tmp, "workload.py")
    with open(script, "w") as f:
        f.write(WORKLOAD)
    data = os.path.join(tmp, "p.data")

    def run(kind):
        cmd = [python, script, str(n), "on" if kind == "prof+markers" else "off"]
        if kind != "plain":
            cmd = [PROF, "run", "-q", "-o", data, "--"] + cmd
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit("%s failed" % " ".join(cmd))
        return ru.ru_utime + ru.ru_stime

    kinds = ["plain", "prof", "prof+markers"]
    times = {k: [] for k in kinds}
    sizes = {}
    for r in range(rounds):
        for k in kinds[r % 3:] + kinds[: r % 3]:
            times[k].append(run(k))
            if k != "plain":
                sizes[k] = os.path.getsize(data)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("%d requests per run, %d rounds, %s" % (n, rounds, python))
    for k in kinds:
        print("  %-13s median %.3f s CPU  (%s)" % (k, med[k], " ".join("%.2f" % t for t in times[k])))
    per = (med["prof+markers"] - med["prof"]) / n * 1e6
    print("  markers: %.2f us of CPU per marker (begin + end), %.3fx the unmarked prof run"
          % (per, med["prof+markers"] / med["prof"]))
    print("  prof: %.3fx the plain run" % (med["prof"] / med["plain"]))
    print("  log: %.1f bytes per marker" % ((sizes["prof+markers"] - sizes["prof"]) / n))


if __name__ == "__main__":
    main()
