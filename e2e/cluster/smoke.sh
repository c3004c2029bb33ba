#!/usr/bin/env bash
# Smoke-test a cluster started by e2e/cluster/up.sh: what the operator tier
# relies on. Exits non-zero on the first failure; cleans up its namespace.
#
#   e2e/cluster/smoke.sh STATE_DIR
#
# Checks: a 2-replica Deployment gets both pods scheduled onto kwok nodes,
# Running and Ready; a Service gets a ClusterIP (and EndpointSlices); a
# ServiceAccount gets a token (TokenRequest) that authenticates; RBAC via
# `kubectl auth can-i --as=system:serviceaccount:NS:SA`; a
# coordination.k8s.io/v1 Lease can be created and updated by that SA.
set -euo pipefail

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[smoke] %s\n' "$*" >&2; }
die() { printf '[smoke] FAIL: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 STATE_DIR"
S=$(cd "$1" && pwd)
# shellcheck source=../tools/env.sh
source "$CLUSTER_DIR/../tools/env.sh"
export KUBECONFIG=$S/kubeconfig
NS=berth-smoke-$$
K=(kubectl --request-timeout=10s)
START=$SECONDS

cleanup() { "${K[@]}" delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

"${K[@]}" create namespace "$NS" >/dev/null
"${K[@]}" apply -n "$NS" -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      serviceAccountName: operator
      containers:
      - name: web
        image: example.invalid/never-pulled:1
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: operator
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: leases
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: operator-leases
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leases}
subjects:
- {kind: ServiceAccount, name: operator}
EOF

"${K[@]}" -n "$NS" rollout status deployment/web --timeout=90s >/dev/null \
    || die "deployment did not become available"
ready=$("${K[@]}" -n "$NS" get pods -l app=web \
    -o 'jsonpath={range .items[*]}{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}/{.spec.nodeName}{"\n"}{end}')
[[ $(grep -c '^Running/True/kwok-node-' <<<"$ready") -eq 2 ]] || die "pods not Running+Ready on kwok nodes: $ready"
log "deployment: 2 pods Running and Ready ($(tr '\n' ' ' <<<"$ready"))"

ip=$("${K[@]}" -n "$NS" get service web -o 'jsonpath={.spec.clusterIP}')
[[ $ip =~ ^10\.96\. ]] || die "service has no ClusterIP in 10.96.0.0/16: '$ip'"
eps=""
for ((i = 0; i < 50; i++)); do
    eps=$("${K[@]}" -n "$NS" get endpointslices -l kubernetes.io/service-name=web \
        -o 'jsonpath={.items[*].endpoints[*].addresses[0]}')
    [[ $(wc -w <<<"$eps") -eq 2 ]] && break
    sleep 0.2
done
[[ $(wc -w <<<"$eps") -eq 2 ]] || die "service endpointslice does not list 2 pod IPs: '$eps'"
log "service: ClusterIP $ip, endpoints $eps"

SA=system:serviceaccount:$NS:operator
[[ $("${K[@]}" auth can-i create leases.coordination.k8s.io -n "$NS" --as="$SA") == yes ]] \
    || die "can-i create leases as $SA: expected yes"
[[ $("${K[@]}" auth can-i list secrets -n "$NS" --as="$SA" || true) == no ]] \
    || die "can-i list secrets as $SA: expected no"
log "auth can-i --as=$SA: leases yes, secrets no"

token=$("${K[@]}" -n "$NS" create token operator --duration=10m)
who=$(kubectl --kubeconfig=/dev/null --server="$("${K[@]}" config view --raw -o 'jsonpath={.clusters[0].cluster.server}')" \
    --certificate-authority="$S/pki/ca.crt" --token="$token" auth whoami -o 'jsonpath={.status.userInfo.username}')
[[ $who == "$SA" ]] || die "token authenticates as '$who', expected $SA"
log "serviceaccount token (TokenRequest) authenticates as $who"

"${K[@]}" -n "$NS" --as="$SA" apply -f - >/dev/null <<EOF
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: berth-leader
spec:
  holderIdentity: replica-0
  leaseDurationSeconds: 15
  acquireTime: $(date -u +%Y-%m-%dT%H:%M:%S.000000Z)
  renewTime: $(date -u +%Y-%m-%dT%H:%M:%S.000000Z)
EOF
"${K[@]}" -n "$NS" --as="$SA" patch lease berth-leader --type=merge \
    -p '{"spec":{"holderIdentity":"replica-1"}}' >/dev/null
holder=$("${K[@]}" -n "$NS" get lease berth-leader -o 'jsonpath={.spec.holderIdentity}')
[[ $holder == replica-1 ]] || die "lease holder is '$holder', expected replica-1"
log "lease coordination.k8s.io/v1 created and updated as $SA"

"${K[@]}" -n "$NS" scale deployment/web --replicas=0 >/dev/null
for ((i = 0; i < 100; i++)); do
    [[ -z $("${K[@]}" -n "$NS" get pods -l app=web -o name) ]] && break
    sleep 0.2
done
[[ -z $("${K[@]}" -n "$NS" get pods -l app=web -o name) ]] || die "pods not deleted after scale to 0"
log "scale to 0: pods gone"
log "all checks passed in $((SECONDS - START))s"
