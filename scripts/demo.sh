#!/usr/bin/env bash
# The main job on a fresh machine: `fedwasm demo`, the 2016 Kubernetes Federation
# walk-through replayed on a local federation of nine member clusters (real
# kube-apiservers). Installs what it needs (the wasm target, etcd, a kube-apiserver
# build, cached), builds fedwasm, then narrates each step with its outcome and stays
# up for exploring; Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${FEDWASM_DEMO_DIR:-$PWD/.fedwasm-demo}
ADMIN=${FEDWASM_ADMIN:-127.0.0.1:8080}
INGRESS=${FEDWASM_INGRESS:-127.0.0.1:8081}

echo "==> rust target wasm32-unknown-unknown" >&2
rustup target add wasm32-unknown-unknown
echo "==> etcd and kube-apiserver (built once, then cached; 5-10 minutes the first time)" >&2
KUBEBUILDER_ASSETS="$(bash scripts/install-testenv.sh | tail -n1)"
export KUBEBUILDER_ASSETS
echo "==> building fedwasm (release; the first build takes several minutes)" >&2
cargo build --release -p fedwasm-host --bin fedwasm
exec ./target/release/fedwasm demo --dir "$DIR" --admin "$ADMIN" --ingress "$INGRESS"
