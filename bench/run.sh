#!/usr/bin/env bash
# The whole benchmark in one command (BENCHMARKS.md):
#
#   bench/run.sh            # full run, about 15 minutes on 2 cores
#   bench/run.sh --quick    # smoke run, about 2 minutes
#
# Installs the peers that are missing (zot, distribution, nginx), builds
# Berth and the load client in release mode, runs every workload against
# Berth, distribution, zot and the limits, and writes the Markdown report to
# bench/results/latest.md (extra arguments go to `berth-bench all`; see
# `target/release/berth-bench all --help`). Run it on a quiet machine: the
# report records the load average at start and end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

e2e/tools/install.sh zot distribution nginx minio
# shellcheck source=../e2e/tools/env.sh
source e2e/tools/env.sh
cargo build --locked --release -p berth-registry -p berth-bench
mkdir -p bench/results
exec target/release/berth-bench all --out bench/results/latest.md "$@"
