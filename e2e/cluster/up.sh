#!/usr/bin/env bash
# Start a real, throwaway Kubernetes control plane on 127.0.0.1 with no
# Docker: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and
# kwok faking the nodes (pods go Running and Ready, nothing actually runs).
#
#   e2e/tools/install.sh kube etcd kwok      # once; cached per version
#   e2e/cluster/up.sh STATE_DIR              # e.g. /tmp/berth-cluster
#   export KUBECONFIG=STATE_DIR/kubeconfig   # (or: source STATE_DIR/env)
#   e2e/cluster/down.sh STATE_DIR            # stop; safe to run twice
#
# STATE_DIR gets fresh certificates, kubeconfigs, data, logs (*.log) and pid
# files (*.pid). It must be empty, missing, or a previous run's state dir
# whose cluster is stopped (it is then wiped). Every port is bound to
# 127.0.0.1 only. Ports are picked at random among free ones unless given:
#   BERTH_CLUSTER_APISERVER_PORT, BERTH_CLUSTER_ETCD_PORT,
#   BERTH_CLUSTER_ETCD_PEER_PORT, BERTH_CLUSTER_KCM_PORT,
#   BERTH_CLUSTER_SCHEDULER_PORT
# Other knobs: BERTH_CLUSTER_NODES (fake nodes, default 2),
#   BERTH_CLUSTER_TIMEOUT (seconds to wait for readiness, default 120).
# On success it prints the exports to use (also written to STATE_DIR/env).
# On failure it shows the failing component's log, stops what it started
# and exits non-zero.
set -euo pipefail

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS_DIR=$(cd "$CLUSTER_DIR/../tools" && pwd)

START=$SECONDS
log() { printf '[cluster +%ss] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 && $1 != -* ]] || die "usage: $0 STATE_DIR"

# ---------------------------------------------------------------- tools

# shellcheck source=../tools/env.sh
source "$TOOLS_DIR/env.sh"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok openssl; do
    command -v "$b" >/dev/null || die "$b not found; run: $TOOLS_DIR/install.sh kube etcd kwok"
done
[[ -f $BERTH_KWOK_STAGES/pod-ready.yaml ]] \
    || die "kwok stages missing in $BERTH_KWOK_STAGES; run: $TOOLS_DIR/install.sh kwok"

# ---------------------------------------------------------------- state dir

mkdir -p "$1"
S=$(cd "$1" && pwd)
MARKER=$S/.berth-cluster
if [[ -n $(ls -A "$S") ]]; then
    [[ -f $MARKER ]] || die "$S is not empty and not a berth cluster state dir; refusing to wipe it"
    for f in "$S"/*.pid; do
        [[ -f $f ]] || continue
        pid=$(<"$f")
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
        if [[ $pid =~ ^[0-9]+$ && ${exe##*/} == "$(basename "$f" .pid)"* ]]; then
            die "a cluster is still running in $S (pid $pid from $(basename "$f")); run: $CLUSTER_DIR/down.sh $S"
        fi
    done
    log "wiping previous state in $S"
    find "$S" -mindepth 1 -delete
fi
touch "$MARKER"
mkdir -p "$S/pki" "$S/etcd-data" "$S/kwok-home"
chmod 700 "$S" "$S/pki" "$S/etcd-data"

# On any failure from here on: show the relevant log, stop what we started.
FAILED_LOG=
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        if [[ -n $FAILED_LOG && -f $FAILED_LOG ]]; then
            log "last lines of $FAILED_LOG:"
            tail -n 40 "$FAILED_LOG" >&2
        fi
        log "up failed after $((SECONDS - START))s; stopping what was started (logs stay in $S)"
        "$CLUSTER_DIR/down.sh" "$S" >&2 || true
    fi
}
trap on_exit EXIT

# ---------------------------------------------------------------- ports

USED_PORTS=" "
# port_free PORT: nothing accepts connections on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Random ports come from below the kernel's ephemeral range: a port in it
# may be taken, between our check and the component's bind, by any
# outgoing connection or by a test's bind to port 0 (seen: the apiserver
# failing with "address already in use" while other e2e tests ran).
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
PICK_LOW=10000
PICK_HIGH=$(( EPHEMERAL_LOW > PICK_LOW + 1000 ? EPHEMERAL_LOW : 32768 ))
# pick_port GIVEN: GIVEN if set, else a random free port in
# PICK_LOW..PICK_HIGH-1.
pick_port() {
    local p=${1:-} i
    if [[ -n $p ]]; then
        port_free "$p" || die "port $p is already in use on 127.0.0.1"
    else
        for ((i = 0; i < 200; i++)); do
            p=$((PICK_LOW + (RANDOM * 32768 + RANDOM) % (PICK_HIGH - PICK_LOW)))
            [[ $USED_PORTS == *" $p "* ]] && continue
            port_free "$p" && break
        done
    fi
    USED_PORTS+="$p "
    printf '%s\n' "$p"
}
# Collect in this shell (not via $(...)) so USED_PORTS accumulates.
pick() { local -n out=$1; out=$(pick_port "${2:-}"); USED_PORTS+="$out "; }
pick ETCD_PORT "${BERTH_CLUSTER_ETCD_PORT:-}"
pick ETCD_PEER_PORT "${BERTH_CLUSTER_ETCD_PEER_PORT:-}"
pick APISERVER_PORT "${BERTH_CLUSTER_APISERVER_PORT:-}"
pick KCM_PORT "${BERTH_CLUSTER_KCM_PORT:-}"
pick SCHEDULER_PORT "${BERTH_CLUSTER_SCHEDULER_PORT:-}"
NODES=${BERTH_CLUSTER_NODES:-2}
TIMEOUT=${BERTH_CLUSTER_TIMEOUT:-120}
SERVICE_CIDR=10.96.0.0/16
SERVICE_APISERVER_IP=10.96.0.1
POD_CIDR=10.244.0.0/16
SERVER=https://127.0.0.1:$APISERVER_PORT

# ---------------------------------------------------------------- certificates

P=$S/pki
# Every key is ECDSA P-256 (PKCS#8 PEM): generating RSA keys took ~3-5 s of a
# ~15 s start on a busy 2-core machine. The apiserver, kubectl, client-go and
# rustls/openssl clients all accept it; service-account tokens are ES256.
ossl() { openssl "$@" 2>>"$P/openssl.log" >/dev/null || { FAILED_LOG=$P/openssl.log; die "openssl $1 failed"; }; }

# new_ca NAME CN
new_ca() {
    ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$P/$1.key"
    ossl req -x509 -new -key "$P/$1.key" -sha256 -days 3650 -subj "/CN=$2" -out "$P/$1.crt" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -addext "subjectKeyIdentifier=hash"
}

# new_cert NAME CA SUBJECT EKU [SAN]: key + leaf certificate signed by CA.
new_cert() {
    local name=$1 ca=$2 subj=$3 eku=$4 san=${5:-}
    ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$P/$name.key"
    ossl req -new -key "$P/$name.key" -subj "$subj" -out "$P/$name.csr"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=$eku"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid"
        [[ -z $san ]] || echo "subjectAltName=$san"
    } >"$P/$name.ext"
    ossl x509 -req -in "$P/$name.csr" -CA "$P/$ca.crt" -CAkey "$P/$ca.key" -CAcreateserial \
        -sha256 -days 3650 -extfile "$P/$name.ext" -out "$P/$name.crt"
    rm -f "$P/$name.csr" "$P/$name.ext"
}

log "generating certificates in $P"
new_ca ca berth-cluster-ca
new_cert apiserver ca "/CN=kube-apiserver" serverAuth \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SERVICE_APISERVER_IP"
new_cert admin ca "/O=system:masters/CN=berth-admin" clientAuth
new_cert controller-manager ca "/CN=system:kube-controller-manager" clientAuth
new_cert scheduler ca "/CN=system:kube-scheduler" clientAuth
new_cert kwok ca "/O=system:masters/CN=kwok" clientAuth
# The controller-manager and scheduler serve /healthz on 127.0.0.1 with this.
new_cert components ca "/CN=localhost" serverAuth "DNS:localhost,IP:127.0.0.1"
# Aggregation layer (front proxy): its own CA, as kubeadm does.
new_ca front-proxy-ca berth-front-proxy-ca
new_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
# Service-account token signing keypair.
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$P/sa.key"
ossl pkey -in "$P/sa.key" -pubout -out "$P/sa.pub"
chmod 600 "$P"/*.key

# write_kubeconfig FILE CERTNAME: a self-contained kubeconfig (data embedded).
write_kubeconfig() {
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth
  cluster:
    server: $SERVER
    certificate-authority-data: $(base64 -w0 "$P/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$P/$2.crt")
    client-key-data: $(base64 -w0 "$P/$2.key")
contexts:
- name: berth
  context:
    cluster: berth
    user: $2
    namespace: default
current-context: berth
EOF
    chmod 600 "$1"
}
write_kubeconfig "$S/kubeconfig" admin
write_kubeconfig "$S/controller-manager.kubeconfig" controller-manager
write_kubeconfig "$S/scheduler.kubeconfig" scheduler
write_kubeconfig "$S/kwok.kubeconfig" kwok

# ---------------------------------------------------------------- processes

# start NAME CMD...: run CMD detached (own session, stdin closed) with output
# in NAME.log and its pid in NAME.pid.
start() {
    local name=$1; shift
    setsid "$@" </dev/null >"$S/$name.log" 2>&1 &
    echo $! >"$S/$name.pid"
    FAILED_LOG=$S/$name.log
}

# wait_for WHAT PIDNAME CMD...: retry CMD until it succeeds; fail if the
# process behind PIDNAME.pid exits or TIMEOUT passes.
wait_for() {
    local what=$1 name=$2 deadline=$((SECONDS + TIMEOUT)); shift 2
    FAILED_LOG=$S/$name.log
    until "$@" >/dev/null 2>&1; do
        kill -0 "$(<"$S/$name.pid")" 2>/dev/null || die "$name exited while waiting for $what"
        ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.3
    done
}

KUBECTL=(kubectl --kubeconfig "$S/kubeconfig" --request-timeout=5s)
# https_ok URL: GET with the admin client certificate, expect "ok".
https_ok() {
    [[ $(curl -sS --max-time 5 --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" "$1") == ok ]]
}

log "starting etcd on 127.0.0.1:$ETCD_PORT"
# --unsafe-no-fsync: throwaway test data; saves a lot of time on slow disks.
start etcd etcd --name berth --data-dir "$S/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "berth=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new \
    --unsafe-no-fsync --log-level warn
wait_for "etcd /health" etcd curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

log "starting kube-apiserver on $SERVER"
# --endpoint-reconciler-type=none: the `kubernetes` Service keeps no endpoints,
# since an Endpoints address may not be a loopback IP and nothing runs in pods.
start kube-apiserver kube-apiserver \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
    --client-ca-file="$P/ca.crt" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$P/sa.pub" \
    --service-account-signing-key-file="$P/sa.key" \
    --requestheader-client-ca-file="$P/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-username-headers=X-Remote-User \
    --proxy-client-cert-file="$P/front-proxy-client.crt" \
    --proxy-client-key-file="$P/front-proxy-client.key" \
    --endpoint-reconciler-type=none \
    --profiling=false
wait_for "kube-apiserver /readyz" kube-apiserver https_ok "$SERVER/readyz"

log "starting kube-controller-manager (healthz on 127.0.0.1:$KCM_PORT)"
start kube-controller-manager kube-controller-manager \
    --kubeconfig="$S/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$S/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$S/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --tls-cert-file="$P/components.crt" --tls-private-key-file="$P/components.key" \
    --client-ca-file="$P/ca.crt" \
    --requestheader-client-ca-file="$P/front-proxy-ca.crt" \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$P/sa.key" \
    --root-ca-file="$P/ca.crt" \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --cluster-name=berth \
    --leader-elect=false \
    --profiling=false

log "starting kube-scheduler (healthz on 127.0.0.1:$SCHEDULER_PORT)"
start kube-scheduler kube-scheduler \
    --kubeconfig="$S/scheduler.kubeconfig" \
    --authentication-kubeconfig="$S/scheduler.kubeconfig" \
    --authorization-kubeconfig="$S/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
    --tls-cert-file="$P/components.crt" --tls-private-key-file="$P/components.key" \
    --client-ca-file="$P/ca.crt" \
    --requestheader-client-ca-file="$P/front-proxy-ca.crt" \
    --leader-elect=false \
    --profiling=false

# kwok: the default stages kwokctl uses (node-fast, node heartbeat with Lease,
# pod-fast), handed over as a config file so no Stage CRD is needed. HOME is
# redirected so a developer's ~/.kwok/kwok.yaml is not merged in.
# (No KwokConfiguration document: with one, kwok v0.8.0 leaves options such as
# nodeLeaseParallelism at 0 and refuses to start; the flags below suffice.)
for f in node-initialize node-heartbeat-with-lease pod-ready pod-complete pod-delete; do
    printf -- '---\n'
    cat "$BERTH_KWOK_STAGES/$f.yaml"
done >"$S/kwok.yaml"
log "starting kwok (nodes annotated kwok.x-k8s.io/node=fake)"
start kwok env HOME="$S/kwok-home" kwok \
    --kubeconfig="$S/kwok.kubeconfig" \
    --config="$S/kwok.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 \
    --cidr="$POD_CIDR" \
    --node-ip=127.0.0.1

# Controller-manager and scheduler health (their own serving certs).
wait_for "kube-controller-manager /healthz" kube-controller-manager \
    curl -fsS --max-time 2 --cacert "$P/ca.crt" "https://127.0.0.1:$KCM_PORT/healthz"
wait_for "kube-scheduler /healthz" kube-scheduler \
    curl -fsS --max-time 2 --cacert "$P/ca.crt" "https://127.0.0.1:$SCHEDULER_PORT/healthz"

# ---------------------------------------------------------------- nodes

log "creating $NODES fake node(s)"
for ((i = 0; i < NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
    kubeProxyVersion: fake
EOF
done >"$S/nodes.yaml"
FAILED_LOG=$S/kube-apiserver.log
"${KUBECTL[@]}" apply -f "$S/nodes.yaml" >/dev/null

node_ready() {
    local n
    for ((n = 0; n < NODES; n++)); do
        [[ $("${KUBECTL[@]}" get node "kwok-node-$n" \
            -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]] || return 1
    done
}
wait_for "fake nodes Ready" kwok node_ready
# The service-account controllers are up once `default` has its ServiceAccount.
wait_for "ServiceAccount default/default" kube-controller-manager \
    "${KUBECTL[@]}" get serviceaccount default -n default

cat >"$S/env" <<EOF
export KUBECONFIG=$S/kubeconfig
export BERTH_CLUSTER_DIR=$S
export BERTH_CLUSTER_SERVER=$SERVER
export BERTH_CLUSTER_CA=$P/ca.crt
EOF
cat >"$S/ports" <<EOF
apiserver=$APISERVER_PORT
etcd=$ETCD_PORT
etcd-peer=$ETCD_PEER_PORT
kube-controller-manager=$KCM_PORT
kube-scheduler=$SCHEDULER_PORT
EOF

FAILED_LOG=
log "ready in $((SECONDS - START))s: apiserver $SERVER, $NODES fake node(s), state in $S"
log "stop with: $CLUSTER_DIR/down.sh $S"
cat "$S/env"
