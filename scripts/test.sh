#!/usr/bin/env bash
# Checks formatting (cargo fmt) and lints (clippy, warnings are errors), then runs every
# test of the workspace (unit, property and end-to-end tests), first installing with
# apt-get what the end-to-end tests need when it is missing (compilers, runtimes,
# browsers: see each line below). Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
if ! command -v gcc >/dev/null 2>&1; then
    need+=(build-essential libc6-dev)
elif [ "$(gcc -print-file-name=libc.a)" = "libc.a" ]; then
    need+=(libc6-dev)
fi
# The JIT tests (tests/tests/jit.rs) run node, OpenJDK 17 and PyPy.
command -v node >/dev/null 2>&1 || need+=(nodejs)
# ... and npm, which installs the acorn parser from the npm registry for the real-JS test
# (nodesource's nodejs includes it; Debian packages it apart).
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
# The PyPy tests (tests/tests/pypy.rs) run Debian's pypy3; their venvs get Django and vmprof
# from PyPI, and the agent's unit tests read its libpypy3.9-c.so.
command -v pypy3 >/dev/null 2>&1 || need+=(pypy3)
# The export/import tests (tests/tests/exports.rs) read the pprof export with
# `go tool pprof`, draw the HTML flamegraph in headless Chromium, and record vmprof logs
# in venvs (python3 -m venv; pip installs vmprof there from PyPI).
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# The viewer tests (tests/tests/viewer.rs) drive headless Chromium through chromedriver.
command -v chromedriver >/dev/null 2>&1 || need+=(chromium chromium-driver)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3 python3-venv)
# The unwinder tests (tests/tests/unwind.rs) profile Debian's own python3.11, built
# without frame pointers, by its full path (python3 on PATH may be another build).
[ -x /usr/bin/python3.11 ] || need+=(python3)
# The server's storage tests (server/tests/api.rs, replicas.rs) start Debian's PostgreSQL
# (initdb + postgres, run as nobody when the tests run as root) on a loopback port.
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || need+=(postgresql)
# ... and moto's S3 server, which they pip-install into target/moto-venv (python3 -m venv).
if [ ${#need[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Style and lints before any test: CI fails on either. A toolchain without the components
# (a minimal rustup profile) gets them.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

cargo test --workspace "$@"

# The README's first command, headless: builds what it runs (shared with the tests'
# build), profiles the bundled web shop on CPython and PyPy with `prof run --web` and checks
# that the viewer answers and the request markers arrived.
scripts/demo.sh --check
