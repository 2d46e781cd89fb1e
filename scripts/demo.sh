#!/usr/bin/env bash
# Builds prof, builds the bundled example (examples/hotspots.c), profiles it with
# `prof run`, then prints `prof report`. Everything lands in target/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p prof-cli -p prof-agent
mkdir -p target/demo
gcc -O2 -g -fno-omit-frame-pointer -pthread examples/hotspots.c -o target/demo/hotspots
cd target/demo
echo "+ prof run -- ./hotspots" >&2
../release/prof run -- ./hotspots
echo "+ prof report --top 12" >&2
../release/prof report --top 12
