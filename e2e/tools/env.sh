# Source this (bash) to put Berth's cached test tools on PATH:
#
#   source e2e/tools/env.sh
#
# It builds nothing: run e2e/tools/install.sh first. Tools that are not cached
# are simply not added (their commands then fail with "not found").
# Exports:
#   BERTH_CACHE             cache root (default ~/.cache/berth)
#   BERTH_CONFORMANCE_BIN   OCI distribution-spec conformance binary
#   BERTH_KWOK_STAGES       kwok's default Stage manifests (used by e2e/cluster/up.sh)
#   PATH                    + <cache>/<tool>-<version>/bin for each cached tool
# Debian-packaged tools (skopeo, docker-registry) are already on PATH.

__berth_tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$__berth_tools_dir/versions.env"
export BERTH_CACHE="${BERTH_CACHE:-$HOME/.cache/berth}"
export BERTH_CONFORMANCE_BIN="$BERTH_CACHE/conformance-$CONFORMANCE_VERSION/bin/conformance"
export BERTH_KWOK_STAGES="$BERTH_CACHE/kwok-$KWOK_VERSION/stages"

for __berth_d in \
    "nextest-$NEXTEST_VERSION" \
    "conformance-$CONFORMANCE_VERSION" \
    "crane-$CRANE_VERSION" \
    "oras-$ORAS_VERSION" \
    "helm-$HELM_VERSION" \
    "cosign-$COSIGN_VERSION" \
    "minio-$MINIO_VERSION" \
    "zot-$ZOT_VERSION" \
    "kube-$KUBE_VERSION" \
    "etcd-$ETCD_VERSION" \
    "kwok-$KWOK_VERSION"; do
    __berth_d="$BERTH_CACHE/$__berth_d/bin"
    if [ -d "$__berth_d" ]; then
        case ":$PATH:" in
            *":$__berth_d:"*) ;;
            *) PATH="$__berth_d:$PATH" ;;
        esac
    fi
done
export PATH
unset __berth_d __berth_tools_dir
