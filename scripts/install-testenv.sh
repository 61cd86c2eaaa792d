#!/usr/bin/env bash
# Installs the real etcd and kube-apiserver that fedwasm's tests and demo run against.
#
# Order of preference (see ../README.md, "Test environment"):
#   1. $KUBEBUILDER_ASSETS, if it holds `etcd` and `kube-apiserver` (envtest layout);
#   2. the cache at $FEDWASM_CACHE (default ~/.cache/fedwasm/testenv/<version>);
#   3. etcd from Debian's `etcd-server`, kube-apiserver built from Debian bookworm's
#      `kubernetes` source package with Debian's Go (7-10 minutes cold, progress shown).
#
# On success the last line printed is the directory holding both binaries, so callers
# can do `export KUBEBUILDER_ASSETS=$(scripts/install-testenv.sh | tail -n1)`.
set -euo pipefail

KUBE_VERSION="1.20.5+really1.20.2"
# Bumped when the build changes: "-r1" = vendored reflect2 replaced by 1.0.2.
BUILD_REV="r1"
CACHE_ROOT="${FEDWASM_CACHE:-$HOME/.cache/fedwasm}"
ASSETS="$CACHE_ROOT/testenv/${KUBE_VERSION}-${BUILD_REV}"

log() { echo "[install-testenv] $*" >&2; }

have_assets() { [[ -x "$1/etcd" && -x "$1/kube-apiserver" ]]; }

# kubectl: the end-to-end tests check federation objects with it, as users do
# (`kubectl rollout status`, `kubectl wait`). Debian's matches the 1.20 apiservers.
if ! command -v kubectl >/dev/null 2>&1; then
    log "installing kubectl (Debian's kubernetes-client)"
    if [[ $(id -u) -ne 0 ]]; then SUDO_K="sudo"; else SUDO_K=""; fi
    $SUDO_K apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO_K apt-get install -y -qq kubernetes-client >/dev/null
fi

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && have_assets "$KUBEBUILDER_ASSETS"; then
    log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    echo "$KUBEBUILDER_ASSETS"
    exit 0
fi
if have_assets "$ASSETS"; then
    log "cached binaries in $ASSETS"
    echo "$ASSETS"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$ASSETS"

if ! command -v openssl >/dev/null 2>&1; then
    log "installing openssl (service-account keys of the test clusters)"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq openssl >/dev/null
fi

# --- etcd ------------------------------------------------------------------------
if ! command -v etcd >/dev/null 2>&1; then
    log "installing etcd-server from Debian"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq etcd-server >/dev/null
fi
# Debian's package starts an etcd service on 2379 where systemd runs; we never use it.
ln -sf "$(command -v etcd)" "$ASSETS/etcd"

# --- kube-apiserver ----------------------------------------------------------------
BUILD_DIR="$CACHE_ROOT/build"
mkdir -p "$BUILD_DIR"
SRC_LIST=/etc/apt/sources.list.d/fedwasm-bookworm-src.sources
if [[ ! -f "$SRC_LIST" ]]; then
    log "adding a deb-src entry for bookworm main"
    $SUDO tee "$SRC_LIST" >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi
log "installing the build tools (golang-go rsync jq)"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq golang-go rsync jq golang-github-modern-go-reflect2-dev >/dev/null

cd "$BUILD_DIR"
ORIG=$(ls kubernetes_*.orig.tar.gz 2>/dev/null | head -n1 || true)
if [[ -z "$ORIG" ]]; then
    log "downloading Debian's kubernetes source package ($KUBE_VERSION)"
    apt-get source --download-only "kubernetes=$KUBE_VERSION" >/dev/null 2>&1 \
        || apt-get source --download-only kubernetes >/dev/null
    ORIG=$(ls kubernetes_*.orig.tar.gz | head -n1)
fi
SRC="$BUILD_DIR/src"
if [[ ! -f "$SRC/Makefile" ]]; then
    log "unpacking $ORIG"
    rm -rf "$SRC" && mkdir -p "$SRC"
    tar -xzf "$ORIG" -C "$SRC" --strip-components=1
fi
# Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, which crashes (SIGSEGV in
# mapiterinit) when built with Go >= 1.18, as soon as a custom resource with labels
# is written. 1.0.2 is the upstream fix; Debian packages it.
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
VENDORED="$SRC/vendor/github.com/modern-go/reflect2"
if [[ ! -f "$VENDORED/go_above_118.go" ]]; then
    log "replacing the vendored reflect2 1.0.1 with Debian's 1.0.2 (Go 1.18+ fix)"
    find "$VENDORED" -maxdepth 1 -name '*.go' -delete
    find "$REFLECT2" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -exec cp {} "$VENDORED/" \;
fi
mkdir -p "$SRC/.go/src/k8s.io"
ln -sfn ../../.. "$SRC/.go/src/k8s.io/kubernetes"

log "building kube-apiserver (7-10 minutes on a cold Go cache)"
START=$(date +%s)
(
    cd "$SRC/.go/src/k8s.io/kubernetes"
    GOPATH="$SRC/.go" GOFLAGS=-mod=vendor GO111MODULE=on make WHAT=cmd/kube-apiserver \
        >"$BUILD_DIR/make.log" 2>&1
) &
MAKE_PID=$!
while kill -0 "$MAKE_PID" 2>/dev/null; do
    sleep 30
    if kill -0 "$MAKE_PID" 2>/dev/null; then
        log "still building... $(($(date +%s) - START))s elapsed; last: $(tail -n1 "$BUILD_DIR/make.log" | cut -c1-100)"
    fi
done
if ! wait "$MAKE_PID"; then
    log "kube-apiserver build failed; last lines of $BUILD_DIR/make.log:"
    tail -n 30 "$BUILD_DIR/make.log" >&2
    exit 1
fi
install -m 0755 "$SRC/_output/local/bin/linux/amd64/kube-apiserver" "$ASSETS/kube-apiserver"
log "built kube-apiserver in $(($(date +%s) - START))s"
echo "$ASSETS"
