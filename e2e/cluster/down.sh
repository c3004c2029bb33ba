#!/usr/bin/env bash
# Stop the control plane that e2e/cluster/up.sh started in STATE_DIR.
#
#   e2e/cluster/down.sh STATE_DIR           # stop; keeps logs, certs, data
#   e2e/cluster/down.sh --purge STATE_DIR   # stop and delete STATE_DIR
#
# Uses only the pid files in STATE_DIR (kwok, scheduler, controller-manager,
# apiserver, then etcd): SIGTERM, up to 15 s grace, then SIGKILL. A pid is
# signalled only if it still runs the expected binary, so a stale pid file
# never hits an unrelated process. Safe to run twice, or on a missing dir.
set -euo pipefail

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

purge=
if [[ ${1:-} == --purge ]]; then purge=1; shift; fi
[[ $# -eq 1 ]] || die "usage: $0 [--purge] STATE_DIR"
if [[ ! -d $1 ]]; then
    log "$1: no such dir; nothing to stop"
    exit 0
fi
S=$(cd "$1" && pwd)

# alive PID BINARY: PID runs BINARY (checked via /proc/PID/exe's name).
alive() {
    local exe
    kill -0 "$1" 2>/dev/null || return 1
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
    [[ ${exe##*/} == "$2" || ${exe##*/} == "$2 (deleted)" ]]
}

stopped=0
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    f=$S/$name.pid
    [[ -f $f ]] || continue
    pid=$(<"$f")
    if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" "$name"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            alive "$pid" "$name" || break
            sleep 0.1
        done
        if alive "$pid" "$name"; then
            log "$name (pid $pid) ignored SIGTERM for 15s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
        stopped=$((stopped + 1))
    fi
    rm -f "$f"
done
log "stopped $stopped process(es) in $S"

if [[ -n $purge ]]; then
    [[ -f $S/.berth-cluster ]] || die "$S is not a berth cluster state dir; not deleting it"
    rm -rf "$S"
    log "deleted $S"
fi
