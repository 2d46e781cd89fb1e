#!/usr/bin/env bash
# The viewer benchmark: time to first paint and redraw time after a zoom on a call tree
# of 100,000 nodes, in headless Chromium, against the real `prof serve` (release build).
# Needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver).
# Options go to the benchmark: --nodes N (node budget, default 100000), --loads N,
# --zooms N, --stacks N (distinct stacks in the synthetic profile). Results: stdout;
# the figures of record are in bench/RESULTS-viewer.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p prof-cli -p prof-agent
cargo run --release --quiet -p prof-e2e --example viewer_bench -- "$@"
