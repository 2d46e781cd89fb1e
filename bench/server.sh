#!/usr/bin/env bash
# The server benchmark (issue 6): a profile of 1,000,000 samples over ~5,000 distinct
# stacks (server/examples/bench_profile.rs: real functions of a real ELF file, so the
# server really symbolizes), then
#   - upload time;
#   - the first tree after a restart (cold: read the blob, decode, symbolize, index,
#     aggregate) and warm trees;
#   - wrk for 10 s on the tree endpoint from loopback: the same URL, and random time
#     ranges (what brushing the timeline sends: every request a new aggregation).
# Targets: cold tree <= 1 s, warm tree p99 <= 50 ms.
#
# Usage: bench/server.sh [--no-build] [--write]   (--write: also write bench/RESULTS-server.md)
# Env: PROF (default target/release/prof), GEN (default target/release/examples/bench_profile),
#      CONNECTIONS (default 8), DURATION (default 10s).
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
write=0
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        --write) write=1 ;;
        *) echo "usage: bench/server.sh [--no-build] [--write]" >&2; exit 2 ;;
    esac
done
PROF=${PROF:-target/release/prof}
GEN=${GEN:-target/release/examples/bench_profile}
CONNECTIONS=${CONNECTIONS:-8}
DURATION=${DURATION:-10s}

if [ "$build" = 1 ]; then
    cargo build --release -q -p prof-cli
    cargo build --release -q -p prof-server --example bench_profile
fi
if ! command -v wrk >/dev/null 2>&1; then
    echo "bench/server.sh: installing wrk" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq wrk >/dev/null
fi
for t in curl python3; do
    command -v "$t" >/dev/null || { echo "bench/server.sh: $t is needed" >&2; exit 1; }
done

tmp=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

start_server() {
    : > "$tmp/serve.log"
    "$PROF" serve --addr 127.0.0.1:0 --data "$tmp/data" 2> "$tmp/serve.log" &
    server_pid=$!
    for _ in $(seq 100); do
        base=$(grep -o 'http://[0-9.:]*' "$tmp/serve.log" | head -1 || true)
        [ -n "$base" ] && return 0
        sleep 0.05
    done
    echo "the server did not start:" >&2
    cat "$tmp/serve.log" >&2
    exit 1
}
stop_server() {
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

"$GEN" "$tmp/big.data" 1000000 5000 2> "$tmp/gen.log"
gen_line=$(tail -1 "$tmp/gen.log")
size=$(stat -c %s "$tmp/big.data")

start_server
upload_s=$(curl -sS -o "$tmp/up.json" -w '%{time_total}' --data-binary @"$tmp/big.data" \
    -H 'Content-Type: application/octet-stream' "$base/api/v1/profiles")
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$tmp/up.json")
# Let the background preparation finish before the restart (it is what we time next).
sleep 1
stop_server

# Cold: a fresh server process, nothing prepared.
start_server
tree="$base/api/v1/profiles/$id/tree"
cold=$(curl -sS -o "$tmp/tree.json" -w '%{time_total}' "$tree")
nodes=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["nodes"]["parent"]))' "$tmp/tree.json")
bytes=$(stat -c %s "$tmp/tree.json")
warm=()
for _ in $(seq 20); do
    warm+=("$(curl -sS -o /dev/null -w '%{time_total}' "$tree")")
done
warm_median=$(printf '%s\n' "${warm[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
warm_max=$(printf '%s\n' "${warm[@]}" | sort -g | tail -1)
timeline_s=$(curl -sS -o /dev/null -w '%{time_total}' "$base/api/v1/profiles/$id/timeline")
functions_s=$(curl -sS -o /dev/null -w '%{time_total}' "$base/api/v1/profiles/$id/functions")

cat > "$tmp/ranges.lua" <<'EOF'
-- Random time ranges on the cpu axis (the profile spans 1000 s of CPU time).
math.randomseed(7)
request = function()
  local from = math.random() * 900
  local to = from + 1 + math.random() * 99
  return wrk.format("GET", string.format("%s?from=%.3f&to=%.3f", wrk.path, from, to))
end
EOF

wrk_run() { # URL [script] -> "rps p50 p99"
    local out
    if [ $# -gt 1 ]; then
        out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$2" "$1")
    else
        out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$1")
    fi
    echo "$out" >> "$tmp/wrk.log"
    local rps p50 p99 errors
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    errors=$(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr '\n' ' ' || true)
    echo "$rps $p50 $p99 ${errors:-none}"
}
read -r same_rps same_p50 same_p99 same_err < <(wrk_run "$tree")
read -r range_rps range_p50 range_p99 range_err < <(wrk_run "$tree" "$tmp/ranges.lua")
stop_server

ms() { python3 -c "import sys; print(f'{float(sys.argv[1])*1000:.1f} ms')" "$1"; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
load=$(cut -d' ' -f1-3 /proc/loadavg)
report=$(cat <<EOF
# Server benchmark (bench/server.sh)

$(date -u +%Y-%m-%d), $(nproc) CPUs ($cpu), release build, server and wrk on the same
machine over loopback; wrk: 2 threads, $CONNECTIONS connections, $DURATION. Load average
when done (other work on the machine competes for the same CPUs): $load.

Profile: ${gen_line#bench_profile: wrote *: }; $size bytes on disk.

| measure | result | target |
|---|---|---|
| upload (POST, 1M samples) | $(ms "$upload_s") | |
| first tree after a restart (cold: read, decode, symbolize, index, aggregate) | $(ms "$cold") | <= 1 s |
| warm tree, one client (median / max of 20) | $(ms "$warm_median") / $(ms "$warm_max") | |
| warm tree under load, same URL (answered from the per-profile answer cache): requests/s, p50, p99 | $same_rps req/s, $same_p50, $same_p99 | p99 <= 50 ms |
| warm tree under load, random time ranges (a new aggregation over ~50k samples each): requests/s, p50, p99 | $range_rps req/s, $range_p50, $range_p99 | p99 <= 50 ms |
| timeline (200 buckets), functions (warm, one request) | $(ms "$timeline_s"), $(ms "$functions_s") | |

The tree response: $nodes nodes (the default budget, 5000), $bytes bytes of JSON.
Errors under load: same URL: $same_err; ranges: $range_err.
EOF
)
echo "$report"
if [ "$write" = 1 ]; then
    echo "$report" > bench/RESULTS-server.md
    echo "bench/server.sh: wrote bench/RESULTS-server.md" >&2
fi
