#!/usr/bin/env bash
# The one test command (README, .ci/run): installs the pinned tools that are
# missing (cached under ~/.cache/berth, keyed by version), then runs every
# tier with one test build profile (plus the release build of the images):
#   1. static checks: rustfmt, clippy -D warnings, generated CRDs, helm lint
#   2. unit + in-process tests (storage suite per driver, HTTP API, operator)
#   3. e2e: the real berth-registry binary against the OCI conformance suite,
#      real clients (crane, oras, skopeo, helm), MinIO, the local Kubernetes
#      control plane, and the built images
# Any missing tool or failing tier fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }
started=$SECONDS

step "tools"
e2e/tools/install.sh
e2e/tools/install.sh kube etcd kwok
# shellcheck source=tools/env.sh
source e2e/tools/env.sh

step "static checks"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "generated CRDs and the Helm chart"
# crds/ (and the chart's copy) must be exactly what the Rust types generate.
cargo run --locked -q -p berth-operator --bin crdgen
git diff --exit-code -- crds/ charts/berth/files/crds/
helm lint --strict charts/berth
helm template berth charts/berth -n berth-system >/dev/null
helm template berth charts/berth --set crds.install=false >/dev/null

step "build"
# The e2e tests start this binary; it shares the test profile's artifacts.
cargo build --workspace --bins --locked

step "images"
# The release binaries, static, in target/image (the one build apart from
# the test profile: the images hold what ships), packed into OCI layouts
# under target/image/oci. e2e/tests/images.rs pushes, inspects and runs them.
target/debug/berth-image

step "tests: unit, in-process, e2e"
cargo nextest run --workspace --locked --no-fail-fast

step "done in $((SECONDS - started))s"
