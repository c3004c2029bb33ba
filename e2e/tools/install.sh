#!/usr/bin/env bash
# Install Berth's pinned test tools into a per-version cache outside the work
# tree. Idempotent: a tool whose binary is already cached is skipped.
#
#   e2e/tools/install.sh                 # tools for the current test tiers
#   e2e/tools/install.sh minio cosign    # just these
#   e2e/tools/install.sh kube etcd kwok  # the local Kubernetes control plane (e2e/cluster)
#   e2e/tools/install.sh all             # everything in versions.env
#   e2e/tools/install.sh --list          # show tools, versions and cache state
#
# Versions: e2e/tools/versions.env. Cache: ${BERTH_CACHE:-$HOME/.cache/berth}/
# <tool>-<version>/bin/<binary>. Afterwards: `source e2e/tools/env.sh`.
# Any failure exits non-zero; nothing is skipped silently.
set -euo pipefail

TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$TOOLS_DIR/versions.env"

BERTH_CACHE=${BERTH_CACHE:-$HOME/.cache/berth}
DEFAULT_TOOLS=(nextest conformance crane oras helm skopeo minio nginx cacerts fincore)
ALL_TOOLS=(nextest conformance crane oras helm skopeo nginx cacerts fincore cosign minio zot distribution etcd kwok kube)

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

TMP_DIRS=()
cleanup() { local d; for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do rm -rf "$d"; done; }
trap cleanup EXIT

# ---------------------------------------------------------------- helpers

GO=
need_go() {
    [[ -n $GO ]] && return
    GO=$(command -v go || true)
    [[ -z $GO && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
    [[ -n $GO ]] || die "go not found (looked on PATH and /usr/local/go/bin)"
}

# scratch NAME: make a scratch dir inside the cache and put its path in $SCRATCH
# (same filesystem, so the final mv is an atomic rename and an interrupted
# build never looks like a cached one). Removed at exit unless committed.
# Not used via $(...): the TMP_DIRS bookkeeping must happen in this shell.
SCRATCH=
scratch() {
    SCRATCH=$(mktemp -d "$BERTH_CACHE/.build-$1.XXXXXX")
    TMP_DIRS+=("$SCRATCH")
}

# commit_dir SCRATCH FINAL: publish a finished build.
commit_dir() {
    rm -rf "$2"
    mv "$1" "$2"
}

# run_logged LOGFILE CMD...: run quietly, show the tail of the log on failure.
run_logged() {
    local logfile=$1; shift
    if ! "$@" >"$logfile" 2>&1; then
        tail -n 60 "$logfile" >&2
        return 1
    fi
}

# go_tool NAME VERSION PKG BINARY [LDFLAGS]: `go install PKG@VERSION` into the cache.
go_tool() {
    local name=$1 version=$2 pkg=$3 bin=$4 ldflags=${5:-}
    local dir="$BERTH_CACHE/$name-$version"
    if [[ -x $dir/bin/$bin ]]; then
        log "$name $version cached"
        return
    fi
    need_go
    local tmp start=$SECONDS
    scratch "$name"; tmp=$SCRATCH
    log "$name $version building (go install $pkg@$version) ..."
    # GOTOOLCHAIN=local: never fetch another Go toolchain behind our back; a
    # module needing a newer Go fails loudly instead.
    if ! GOBIN="$tmp/bin" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 \
        run_logged "$tmp/build.log" "$GO" install -trimpath -ldflags "$ldflags" "$pkg@$version"; then
        die "$name $version: go install failed (log above)"
    fi
    [[ -x $tmp/bin/$bin ]] || die "$name $version: go install produced no $bin"
    commit_dir "$tmp" "$dir"
    log "$name $version built in $((SECONDS - start))s"
}

# apt_tool NAME PACKAGE BINARY
apt_tool() {
    local name=$1 pkg=$2 bin=$3
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        log "$name $(dpkg-query -W -f='${Version}' "$pkg") (apt) installed"
    else
        command -v apt-get >/dev/null || die "$name: apt-get not available; install Debian package $pkg by hand"
        local sudo=
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo >/dev/null || die "$name: need root (or sudo) to apt-get install $pkg"
            sudo=sudo
        fi
        local start=$SECONDS logfile
        scratch "$name"; logfile=$SCRATCH/apt.log
        log "$name installing Debian package $pkg ..."
        run_logged "$logfile" $sudo apt-get update -q || die "$name: apt-get update failed"
        # We only want the binaries; tests start their own servers. (Under
        # systemd, docker-registry's postinst would also start a service on
        # :5000; these machines have no systemd, so nothing is started.)
        run_logged "$logfile" $sudo env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q "$pkg" || die "$name: apt-get install $pkg failed"
        log "$name $(dpkg-query -W -f='${Version}' "$pkg") (apt) installed in $((SECONDS - start))s"
    fi
    command -v "$bin" >/dev/null || die "$name: package $pkg installed but $bin is not on PATH"
}

# go_wrapper NAME VERSION GOMOD_BODY: make a scratch dir ($SCRATCH) holding a
# throwaway wrapper module (`module berth.local/NAME-build` + GOMOD_BODY) and
# put its path in $WRAPPER. For modules that `go install` refuses because their
# own go.mod has `replace` directives (k8s.io/kubernetes, etcd's server): the
# wrapper requires them and supplies the replacements itself. Build inside it
# with `go build -mod=mod`, which fills in go.sum and indirect requirements.
WRAPPER=
go_wrapper() {
    local name=$1 body=$3 gov
    scratch "$name"
    WRAPPER=$SCRATCH/wrapper
    mkdir -p "$WRAPPER"
    gov=$("$GO" env GOVERSION); gov=${gov#go}
    printf 'module berth.local/%s-build\n\ngo %s\n\n%s\n' "$name" "$gov" "$body" >"$WRAPPER/go.mod"
}

# module_dir MODULE@VERSION LOGFILE: download a module, print its directory.
module_dir() {
    local dir
    run_logged "$2" "$GO" mod download -json "$1" || die "$1: go mod download failed (log above)"
    dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' "$2")
    [[ -n $dir && -f $dir/go.mod ]] || die "$1: module dir not found"
    printf '%s\n' "$dir"
}

# ---------------------------------------------------------------- tools

install_nextest() {
    local version=$NEXTEST_VERSION dir="$BERTH_CACHE/nextest-$NEXTEST_VERSION"
    if [[ -x $dir/bin/cargo-nextest ]]; then
        log "nextest $version cached"
        return
    fi
    command -v cargo >/dev/null || die "nextest: cargo not found"
    local tmp start=$SECONDS
    scratch nextest; tmp=$SCRATCH
    log "nextest $version building (cargo install) ..."
    # Own target dir inside the scratch dir: no interference with the work
    # tree's target/ or a concurrent build.
    CARGO_TARGET_DIR="$tmp/target" run_logged "$tmp/build.log" \
        cargo install --locked cargo-nextest --version "=$version" --root "$tmp" \
        || die "nextest $version: cargo install failed (log above)"
    rm -rf "$tmp/target"
    [[ -x $tmp/bin/cargo-nextest ]] || die "nextest $version: no cargo-nextest produced"
    commit_dir "$tmp" "$dir"
    log "nextest $version built in $((SECONDS - start))s"
}

install_conformance() {
    # The suite is a `package main` program at this commit; the binary is
    # named `conformance` (BERTH_CONFORMANCE_BIN in env.sh points at it).
    # main.Version is what the reports show as "Conformance Commit" (go install
    # @version records no VCS revision).
    go_tool conformance "$CONFORMANCE_VERSION" "$CONFORMANCE_MODULE" conformance \
        "-X main.Version=$CONFORMANCE_VERSION"
}

install_crane() {
    go_tool crane "$CRANE_VERSION" "$CRANE_MODULE/cmd/crane" crane \
        "-X $CRANE_MODULE/cmd/crane/cmd.Version=$CRANE_VERSION"
}

install_oras() {
    go_tool oras "$ORAS_VERSION" "$ORAS_MODULE/cmd/oras" oras
}

install_helm() {
    go_tool helm "$HELM_VERSION" "$HELM_MODULE/cmd/helm" helm \
        "-X $HELM_MODULE/internal/version.version=$HELM_VERSION"
}

install_cosign() {
    go_tool cosign "$COSIGN_VERSION" "$COSIGN_MODULE/cmd/cosign" cosign
}

install_minio() {
    go_tool minio "$MINIO_VERSION" "$MINIO_MODULE" minio
}

install_zot() {
    # `go install` cannot build zot here: the proxy refuses its vanity paths
    # (zotregistry.dev, zotregistry.io) and the GitHub path's go.mod declares
    # zotregistry.io/zot. So download the module by its GitHub path and build
    # cmd/zot inside a copy of it (its own go.mod/go.sum drive the build).
    local version=$ZOT_VERSION dir="$BERTH_CACHE/zot-$ZOT_VERSION"
    if [[ -x $dir/bin/zot ]]; then
        log "zot $version cached"
        return
    fi
    need_go
    local tmp src start=$SECONDS
    scratch zot; tmp=$SCRATCH
    log "zot $version building (go build $ZOT_MODULE@$version/cmd/zot, minimal) ..."
    run_logged "$tmp/build.log" "$GO" mod download -json "$ZOT_MODULE@$version" \
        || die "zot $version: go mod download failed (log above)"
    src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' "$tmp/build.log")
    [[ -n $src && -f $src/go.mod ]] || die "zot $version: module dir not found"
    cp -r "$src" "$tmp/src"
    chmod -R u+w "$tmp/src"
    # containers_image_openpgp: pure-Go signature code instead of gpgme (cgo).
    if ! (cd "$tmp/src" && GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 \
        run_logged "$tmp/build.log" "$GO" build -trimpath -tags containers_image_openpgp \
            -ldflags "-X zotregistry.io/zot/pkg/api/config.ReleaseTag=$version -X zotregistry.io/zot/pkg/api/config.BinaryType=minimal" \
            -o "$tmp/bin/zot" ./cmd/zot); then
        die "zot $version: go build failed (log above)"
    fi
    rm -rf "$tmp/src"
    commit_dir "$tmp" "$dir"
    log "zot $version built in $((SECONDS - start))s"
}

KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

install_kube() {
    # The control plane for the operator tier, built from k8s.io/kubernetes.
    # Its go.mod requires the staging modules (k8s.io/api, client-go, ...) at
    # v0.0.0 and replaces them with ./staging/src/...; a dependency's replaces
    # are ignored, so the wrapper maps every such module to its published
    # v0.<minor>.<patch> twin. The list is derived from the pinned go.mod.
    local version=$KUBE_VERSION dir="$BERTH_CACHE/kube-$KUBE_VERSION" b missing=
    for b in "${KUBE_BINARIES[@]}"; do [[ -x $dir/bin/$b ]] || missing=1; done
    if [[ -z $missing ]]; then
        log "kube $version cached"
        return
    fi
    need_go
    local tmp src staging replaces= start=$SECONDS major minor build_date pkgs=() ldflags= key val
    [[ $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "kube: KUBE_VERSION must look like v1.N.M, got $version"
    staging=v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}
    major=1 minor=${BASH_REMATCH[1]}
    go_wrapper kube "$version" ""; tmp=$SCRATCH
    log "kube $version building (${KUBE_BINARIES[*]} from k8s.io/kubernetes, staging $staging) ..."
    src=$(module_dir "k8s.io/kubernetes@$version" "$tmp/build.log")
    # Staging modules: required at exactly v0.0.0 (sample-* are only replaced,
    # never required, and are not published).
    local m
    for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$src/go.mod" | sort -u); do
        replaces+=$'\t'"$m => $m $staging"$'\n'
    done
    [[ -n $replaces ]] || die "kube $version: no staging modules found in $src/go.mod"
    printf 'require k8s.io/kubernetes %s\n\nreplace (\n%s)\n' "$version" "$replaces" >>"$WRAPPER/go.mod"
    # What hack/lib/version.sh sets, for both version packages; the build date
    # is the module's publication time, so rebuilds are reproducible. The
    # proxy knows no commit, so gitCommit is set empty (its default is the
    # unexpanded "$Format:%H$").
    build_date=$("$GO" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "k8s.io/kubernetes@$version" 2>/dev/null) \
        || build_date=1970-01-01T00:00:00Z
    for key in gitVersion=$version gitMajor=$major gitMinor=$minor gitCommit= gitTreeState=clean buildDate=$build_date; do
        for val in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
            ldflags+=" -X $val.$key"
        done
    done
    for b in "${KUBE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    if ! (cd "$WRAPPER" && GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 \
        run_logged "$tmp/build.log" "$GO" build -mod=mod -trimpath -ldflags "-s -w$ldflags" \
            -o "$tmp/bin/" "${pkgs[@]}"); then
        die "kube $version: go build failed (log above)"
    fi
    for b in "${KUBE_BINARIES[@]}"; do [[ -x $tmp/bin/$b ]] || die "kube $version: no $b produced"; done
    rm -rf "$WRAPPER"
    commit_dir "$tmp" "$dir"
    log "kube $version built in $((SECONDS - start))s"
}

install_etcd() {
    # etcd's main package is the root of go.etcd.io/etcd/server/v3, whose
    # go.mod replaces api/client/pkg with ../ paths, so `go install` refuses it.
    # The wrapper simply requires it; the published siblings resolve by MVS.
    local version=$ETCD_VERSION dir="$BERTH_CACHE/etcd-$ETCD_VERSION"
    if [[ -x $dir/bin/etcd ]]; then
        log "etcd $version cached"
        return
    fi
    need_go
    local tmp start=$SECONDS
    go_wrapper etcd "$version" "require $ETCD_MODULE $version"; tmp=$SCRATCH
    log "etcd $version building (go build $ETCD_MODULE@$version) ..."
    if ! (cd "$WRAPPER" && GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 \
        run_logged "$tmp/build.log" "$GO" build -mod=mod -trimpath \
            -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$version" \
            -o "$tmp/bin/etcd" "$ETCD_MODULE"); then
        die "etcd $version: go build failed (log above)"
    fi
    [[ -x $tmp/bin/etcd ]] || die "etcd $version: no etcd produced"
    rm -rf "$WRAPPER"
    commit_dir "$tmp" "$dir"
    log "etcd $version built in $((SECONDS - start))s"
}

install_kwok() {
    # kwok fakes nodes and pod lifecycles. Besides the binary, keep the
    # module's default Stage manifests (what kwokctl embeds: node-fast,
    # node-heartbeat-with-lease, pod-fast) under <cache>/kwok-<v>/stages/,
    # so e2e/cluster/up.sh can hand them to kwok via --config with no network.
    local version=$KWOK_VERSION dir="$BERTH_CACHE/kwok-$KWOK_VERSION"
    if [[ -x $dir/bin/kwok && -f $dir/stages/pod-ready.yaml ]]; then
        log "kwok $version cached"
        return
    fi
    need_go
    local tmp src start=$SECONDS f
    scratch kwok; tmp=$SCRATCH
    log "kwok $version building (go install $KWOK_MODULE/cmd/kwok@$version) ..."
    src=$(module_dir "$KWOK_MODULE@$version" "$tmp/build.log")
    mkdir -p "$tmp/stages"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
        pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
        [[ -f $src/kustomize/stage/$f ]] || die "kwok $version: stage $f not in the module"
        cp "$src/kustomize/stage/$f" "$tmp/stages/"
    done
    chmod -R u+w "$tmp/stages"
    if ! GOBIN="$tmp/bin" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 \
        run_logged "$tmp/build.log" "$GO" install -trimpath \
            -ldflags "-s -w -X $KWOK_MODULE/pkg/consts.Version=$version" "$KWOK_MODULE/cmd/kwok@$version"; then
        die "kwok $version: go install failed (log above)"
    fi
    [[ -x $tmp/bin/kwok ]] || die "kwok $version: go install produced no kwok"
    commit_dir "$tmp" "$dir"
    log "kwok $version built in $((SECONDS - start))s"
}

install_skopeo() { apt_tool skopeo "$SKOPEO_APT" skopeo; }

install_distribution() { apt_tool distribution "$DISTRIBUTION_APT" docker-registry; }

install_nginx() { apt_tool nginx "$NGINX_APT" nginx; }

# The CA bundle berth-image puts into the images (/etc/ssl/certs/ca-certificates.crt).
install_cacerts() { apt_tool cacerts "$CACERTS_APT" update-ca-certificates; }

install_fincore() { apt_tool fincore "$FINCORE_APT" fincore; }

# ---------------------------------------------------------------- main

version_of() {
    case $1 in
        nextest) echo "$NEXTEST_VERSION" ;;
        conformance) echo "$CONFORMANCE_VERSION" ;;
        crane) echo "$CRANE_VERSION" ;;
        oras) echo "$ORAS_VERSION" ;;
        helm) echo "$HELM_VERSION" ;;
        cosign) echo "$COSIGN_VERSION" ;;
        minio) echo "$MINIO_VERSION" ;;
        zot) echo "$ZOT_VERSION" ;;
        kube) echo "$KUBE_VERSION" ;;
        etcd) echo "$ETCD_VERSION" ;;
        kwok) echo "$KWOK_VERSION" ;;
        skopeo) echo "apt:$SKOPEO_APT" ;;
        distribution) echo "apt:$DISTRIBUTION_APT" ;;
        nginx) echo "apt:$NGINX_APT" ;;
        cacerts) echo "apt:$CACERTS_APT" ;;
        fincore) echo "apt:$FINCORE_APT" ;;
    esac
}

list_tools() {
    local t v state
    for t in "${ALL_TOOLS[@]}"; do
        v=$(version_of "$t")
        case $v in
            apt:*) if dpkg-query -W -f='${Status}' "${v#apt:}" 2>/dev/null | grep -q 'install ok installed'
                   then state=installed; else state=missing; fi ;;
            *) if compgen -G "$BERTH_CACHE/$t-$v/bin/*" >/dev/null
               then state="cached in $BERTH_CACHE/$t-$v/bin"; else state=missing; fi ;;
        esac
        printf '%-13s %-45s %s\n' "$t" "$v" "$state"
    done
}

main() {
    local tools=() arg
    for arg in "$@"; do
        case $arg in
            -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
            --list) list_tools; exit 0 ;;
            all) tools+=("${ALL_TOOLS[@]}") ;;
            docker-registry) tools+=(distribution) ;;
            nextest|cargo-nextest) tools+=(nextest) ;;
            conformance|crane|oras|helm|skopeo|nginx|cacerts|fincore|cosign|minio|zot|distribution|kube|etcd|kwok) tools+=("$arg") ;;
            *) die "unknown tool '$arg' (known: ${ALL_TOOLS[*]}, all)" ;;
        esac
    done
    [[ ${#tools[@]} -gt 0 ]] || tools=("${DEFAULT_TOOLS[@]}")

    mkdir -p "$BERTH_CACHE"
    # One installer at a time per cache (e.g. a developer shell and CI).
    exec 9>"$BERTH_CACHE/.install.lock"
    flock 9

    local t
    for t in "${tools[@]}"; do
        "install_$t"
    done
    log "done; use: source $TOOLS_DIR/env.sh"
}

main "$@"
