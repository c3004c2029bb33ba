#!/usr/bin/env bash
# Write a kubeconfig that authenticates as a ServiceAccount of a cluster
# started by e2e/cluster/up.sh, so a host process (the operator, a registry
# replica) runs with that account's RBAC instead of the admin's
# system:masters. The token comes from the TokenRequest API (bound, expiring).
#
#   e2e/cluster/sa-kubeconfig.sh STATE_DIR NAMESPACE SERVICEACCOUNT OUT [DURATION]
#
# DURATION defaults to 24h (the apiserver caps it at its
# --service-account-max-token-expiration, unset here). The ServiceAccount must
# already exist.
set -euo pipefail

die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }
[[ $# -ge 4 && $# -le 5 ]] || die "usage: $0 STATE_DIR NAMESPACE SERVICEACCOUNT OUT [DURATION]"
S=$(cd "$1" && pwd) ns=$2 sa=$3 out=$4 duration=${5:-24h}
CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tools/env.sh
source "$CLUSTER_DIR/../tools/env.sh"
[[ -f $S/env ]] || die "$S has no env file; is it an up.sh state dir?"
# shellcheck disable=SC1091
source "$S/env"

token=$(kubectl --kubeconfig "$S/kubeconfig" -n "$ns" create token "$sa" --duration="$duration") \
    || die "could not create a token for $ns/$sa"
umask 077
cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth
  cluster:
    server: $BERTH_CLUSTER_SERVER
    certificate-authority-data: $(base64 -w0 "$BERTH_CLUSTER_CA")
users:
- name: $ns-$sa
  user:
    token: $token
contexts:
- name: berth
  context:
    cluster: berth
    user: $ns-$sa
    namespace: $ns
current-context: berth
EOF
