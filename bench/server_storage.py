#!/usr/bin/env python3
"""Storage backends and replicas (issue 15): uploads/s and upload latency (p50, p99) with
16 concurrent clients against 1 and 2 `prof serve` replicas on SQLite + files and on
PostgreSQL + S3 (Debian's PostgreSQL started here, as nobody when run as root; moto's S3
server from target/moto-venv, which the server tests create), and the cold tree of a
1M-sample profile on each backend.

    cargo build --release -p prof-cli && cargo build --release -p prof-server --example bench_profile
    python3 bench/server_storage.py [--uploads 800] [--clients 16]

Prints a Markdown table (paste into bench/RESULTS-server.md).
"""

import argparse
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROF = os.path.join(ROOT, "target/release/prof")
GEN = os.path.join(ROOT, "target/release/examples/bench_profile")
MOTO = os.path.join(ROOT, "target/moto-venv/bin/moto_server")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, what):
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"{what} exited")
            time.sleep(0.1)
    sys.exit(f"{what} did not listen")


def pg_bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True) + os.environ["PATH"].split(":"):
        if os.path.isfile(os.path.join(d, "initdb")) and os.path.isfile(os.path.join(d, "postgres")):
            return d
    sys.exit("needs PostgreSQL: apt-get install postgresql")


def as_user():
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []


def start_postgres(tmp):
    bindir = pg_bindir()
    d = os.path.join(tmp, "pg")
    os.mkdir(d)
    if os.geteuid() == 0:
        os.chown(d, 65534, 65534)
    subprocess.run(as_user() + [f"{bindir}/initdb", "-U", "prof", "--auth=trust", "--no-sync", "-D", f"{d}/data"],
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    p = subprocess.Popen(as_user() + [f"{bindir}/postgres", "-D", f"{d}/data", "-h", "127.0.0.1", "-p", str(port),
                                      "-k", d, "-c", "max_connections=200"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p, "postgres")
    time.sleep(1)
    return p, port


def start_moto():
    if not os.path.exists(MOTO):
        sys.exit("needs target/moto-venv (cargo test -p prof-server --test api creates it)")
    port = free_port()
    p = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_port(port, p, "moto")
    return p, port


class Replica:
    def __init__(self, args, env, log):
        self.log = open(log, "w")
        self.p = subprocess.Popen([PROF, "serve", "--addr", "127.0.0.1:0", "--max-upload-mb", "512"] + args,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.p.stderr.readline()
        urls = [w for w in line.split() if w.startswith("http://")]
        if not urls:
            sys.exit(f"prof serve {' '.join(args)} did not start: {line}{self.p.stderr.read()}")
        self.url = urls[0]
        threading.Thread(target=lambda: [self.log.write(x) for x in self.p.stderr], daemon=True).start()

    def stop(self):
        self.p.terminate()
        self.p.wait()


def post(url, body):
    r = urllib.request.Request(url, data=body, method="POST",
                               headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(r, timeout=120) as resp:
        return resp.status, json.loads(resp.read())


def upload_burst(urls, body, uploads, clients):
    lat = []
    lock = threading.Lock()
    counter = iter(range(uploads))
    errors = [0]

    def worker(k):
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            try:
                st, _ = post(urls[(k + i) % len(urls)] + "/api/v1/profiles", body)
                ok = st == 201
            except Exception:
                ok = False
            d = time.perf_counter() - t
            with lock:
                if ok:
                    lat.append(d)
                else:
                    errors[0] += 1

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000
    return len(lat) / wall, q(0.5), q(0.99), errors[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=800)
    ap.add_argument("--clients", type=int, default=16)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="prof-bench-")
    os.chmod(tmp, 0o755)  # postgres runs as nobody under it
    procs = []
    try:
        small = os.path.join(tmp, "small.data")
        big = os.path.join(tmp, "big.data")
        subprocess.run([GEN, small, "20000", "500"], check=True, stderr=subprocess.DEVNULL)
        subprocess.run([GEN, big, "1000000", "5000"], check=True, stderr=subprocess.DEVNULL)
        small_b = open(small, "rb").read()
        big_b = open(big, "rb").read()
        pg, pg_port = start_postgres(tmp)
        procs.append(pg)
        moto, moto_port = start_moto()
        procs.append(moto)
        env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{moto_port}", AWS_ACCESS_KEY_ID="x",
                   AWS_SECRET_ACCESS_KEY="x", AWS_REGION="us-east-1", PROF_LOG="warn")
        rows = []
        for backend in ["sqlite+files", "postgres+s3"]:
            for n in [1, 2]:
                tag = f"{backend.replace('+', '_')}_{n}"
                if backend == "sqlite+files":
                    shared = os.path.join(tmp, tag)
                    args = lambda i: ["--data", shared]
                else:
                    dbname = tag
                    subprocess.run(as_user() + [os.path.join(pg_bindir(), "createdb"), "-h", "127.0.0.1", "-p",
                                                str(pg_port), "-U", "prof", dbname], check=True)
                    urllib.request.urlopen(urllib.request.Request(
                        f"http://127.0.0.1:{moto_port}/{tag.replace('_', '-')}", method="PUT")).read()
                    args = lambda i: ["--db", f"postgres://prof@127.0.0.1:{pg_port}/{dbname}", "--store",
                                      f"s3://{tag.replace('_', '-')}/prof", "--data", os.path.join(tmp, f"{tag}-{i}")]
                reps = [Replica(args(i), env, os.path.join(tmp, f"{tag}-{i}.log")) for i in range(n)]
                urls = [r.url for r in reps]
                rps, p50, p99, errs = upload_burst(urls, small_b, a.uploads, a.clients)
                cold = ""
                if n == 1:
                    _, v = post(urls[0] + "/api/v1/profiles", big_b)
                    time.sleep(3)  # the background preparation of the upload
                    for r in reps:
                        r.stop()
                    reps = [Replica(args(0), env, os.path.join(tmp, f"{tag}-cold.log"))]
                    t = time.perf_counter()
                    urllib.request.urlopen(f"{reps[0].url}/api/v1/profiles/{v['id']}/tree", timeout=120).read()
                    cold = f"{(time.perf_counter() - t) * 1000:.0f} ms"
                for r in reps:
                    r.stop()
                rows.append((backend, n, rps, p50, p99, errs, cold))
                print(rows[-1], file=sys.stderr)
        load = open("/proc/loadavg").read().split()[:3]
        print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, release build; {a.clients} clients "
              f"(Python threads on the same machine), {a.uploads} uploads of a {len(small_b)}-byte profile "
              f"(20,000 samples); cold tree: {len(big_b)}-byte profile of 1,000,000 samples; "
              f"load average when done: {' '.join(load)}.\n")
        print("| backend | replicas | uploads/s | p50 | p99 | failed | cold tree (1M samples) |")
        print("|---|---|---|---|---|---|---|")
        for b, n, rps, p50, p99, errs, cold in rows:
            print(f"| {b} | {n} | {rps:.0f} | {p50:.1f} ms | {p99:.1f} ms | {errs} | {cold} |")
    finally:
        for p in procs:
            p.send_signal(2)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
