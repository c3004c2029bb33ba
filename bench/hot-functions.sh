#!/usr/bin/env bash
# Regenerates registry/hot-functions.ld, the linker script that places the
# functions Berth runs together (bench/src/hot.rs says why): builds the
# release binary and the image binary (their symbols differ), runs each
# under callgrind through the bench workloads, and writes the patterns of
# the functions they ran. About 5 minutes; needs valgrind
# (apt-get install valgrind). Run it when the bench report's "Hot-function
# layout" line shows that many patterns no longer name a function.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v valgrind >/dev/null; then
    echo "valgrind is missing: apt-get install valgrind" >&2
    exit 1
fi
cargo build --locked --release -p berth-registry -p berth-bench
cargo build --locked -p berth-image
target/debug/berth-image --image registry
exec target/release/berth-bench hot-functions \
    --binary target/release/berth-registry \
    --binary target/image/x86_64-unknown-linux-gnu/release/berth-registry
