#!/usr/bin/env bash
# prof's demo: builds prof and its agent, starts a local prof server, profiles the bundled
# web shop (examples/webapp/app.py: 1500 requests of four kinds, each a request marker)
# with `prof run --web` on CPython and, when pypy3 is installed, on PyPy, prints each run's
# summary and the links to their flamegraphs, warm-up curves and request latencies, then
# serves them until Ctrl-C.
#
#   scripts/demo.sh            # needs cargo, python3 and a browser to look
#   scripts/demo.sh --check    # headless (CI): checks the viewer answers, then stops
#
# Everything lands in target/demo/ (the server's data too; delete it to start afresh).
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
[ "${1:-}" = "--check" ] && check=1
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

for tool in cargo python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "demo.sh: $tool is missing (install it first)" >&2; exit 1; }
done

# The demo builds only what it runs: prof and the agent (the debug profile, which the test
# suite shares; the agent is always optimized). The first build takes a few minutes.
say "building prof and its agent (cargo build -p prof-cli -p prof-agent; the first time takes a few minutes)"
cargo build -p prof-cli -p prof-agent
prof="$PWD/target/debug/prof"

demo="$PWD/target/demo"
mkdir -p "$demo"
rm -rf "$demo/server"
say "starting a prof server (data in target/demo/server)"
"$prof" serve --addr 127.0.0.1:0 --data "$demo/server" 2>"$demo/server.log" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 100); do
    url=$(grep -o 'http://127.0.0.1:[0-9]*' "$demo/server.log" 2>/dev/null | head -1 || true)
    [ -n "$url" ] && break
    kill -0 $server_pid 2>/dev/null || { cat "$demo/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "demo.sh: the server did not start:" >&2; cat "$demo/server.log" >&2; exit 1; }

links=()
run() { # name, interpreter
    local name=$1 python=$2
    say "prof run --web=$url -- $python examples/webapp/app.py"
    "$prof" run --web="$url" -o "$demo/$name.data" -- "$python" examples/webapp/app.py 2>&1 \
        | tee "$demo/$name.out"
    local link
    link=$(grep -o "$url/p/[0-9a-f]*" "$demo/$name.out" | tail -1)
    [ -n "$link" ] || { echo "demo.sh: no viewer link in the output of $name" >&2; exit 1; }
    links+=("$name $link")
}
run cpython python3
if command -v pypy3 >/dev/null 2>&1; then
    run pypy pypy3
else
    say "pypy3 is not installed: skipping the PyPy run (apt-get install pypy3 to see the JIT warm up)"
fi

# The viewer answers for every profile, and the API has each run's request markers.
for entry in "${links[@]}"; do
    link=${entry#* }
    python3 - "$link" <<'EOF'
import json, sys, urllib.request
link = sys.argv[1]
base, pid = link.split("/p/")
page = urllib.request.urlopen(link, timeout=30).read().decode()
assert "<html" in page.lower(), "the viewer page is not HTML"
summary = json.load(urllib.request.urlopen("%s/api/v1/profiles/%s" % (base, pid), timeout=120))
stats = summary.get("marker_stats") or summary.get("summary", {}).get("marker_stats") or []
n = sum(m["count"] for m in stats)
assert n >= 1500, "expected 1500 request markers, found %d" % n
EOF
done

say "open in a browser"
for entry in "${links[@]}"; do
    printf '  %-8s %s\n' "${entry%% *}" "${entry#* }"
done
if [ ${#links[@]} -eq 2 ]; then
    a=${links[0]#* }; b=${links[1]#* }
    printf '  %-8s %s\n' "compare" "$url/compare/${a##*/}/${b##*/}"
fi
if [ $check -eq 1 ] || [ ! -t 0 ]; then
    say "the viewer answers; stopping the server (run without --check to browse)"
    exit 0
fi
say "serving until Ctrl-C"
wait $server_pid
