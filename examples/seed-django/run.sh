#!/usr/bin/env bash
# Reproduces the seed article's plot with prof: the BotBot Django ORM benchmark on CPython
# and on PyPy, each profiled with `prof run --web` into one local prof server, so the viewer
# shows both warm-up curves with their request latencies, and a compare link.
#
#   examples/seed-django/run.sh [REQUESTS]     (needs python3, pypy3 and network for pip)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-3000}
cargo build -p prof-cli -p prof-agent
prof="$PWD/target/debug/prof"
work="$PWD/target/seed-django"
mkdir -p "$work"

# Django 4.2 (the last release PyPy 3.9 runs) in a venv per interpreter.
venv() { # dir, interpreter
    [ -x "$1/bin/python" ] || "$2" -m venv "$1"
    "$1/bin/python" -c 'import django' 2>/dev/null || "$1/bin/python" -m pip install -q 'django>=4.2,<4.3'
}
venv "$work/cpython" python3
venv "$work/pypy" pypy3

rm -rf "$work/server"
"$prof" serve --addr 127.0.0.1:0 --data "$work/server" 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/server.log" | head -1); do sleep 0.1; done

ids=()
for impl in cpython pypy; do
    echo "== $impl" >&2
    "$prof" run --web="$url" -o "$work/$impl.data" -- "$work/$impl/bin/python" \
        examples/seed-django/botbot.py "$n" 2>&1 | tee "$work/$impl.out"
    ids+=("$(grep -o "$url/p/[0-9a-f]*" "$work/$impl.out" | tail -1 | sed 's|.*/p/||')")
done
echo
echo "CPython: $url/p/${ids[0]}"
echo "PyPy:    $url/p/${ids[1]}"
echo "compare: $url/compare/${ids[0]}/${ids[1]}"
echo "serving until Ctrl-C"
wait $server
