#!/usr/bin/env bash
# Runs every check and test of fedwasm on a fresh machine: installs what it needs
# first (the wasm target, etcd and a kube-apiserver build), then fmt, clippy and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "rust target wasm32-unknown-unknown"
rustup target add wasm32-unknown-unknown

step "test apiservers (etcd + kube-apiserver; built once, then cached)"
KUBEBUILDER_ASSETS="$(bash scripts/install-testenv.sh | tail -n1)"
export KUBEBUILDER_ASSETS

step "cargo fmt --check"
cargo fmt --all -- --check
(cd examples/plugins/aggregate && cargo fmt -- --check)

step "cargo clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings
(cd examples/plugins/aggregate && cargo clippy --all-targets -- -D warnings)

step "cargo test (workspace)"
cargo test --workspace

step "fedwasm demo --exit (the walk-through on nine local clusters, every check must hold)"
DEMO_DIR=$(mktemp -d)
cargo run -q -p fedwasm-host --bin fedwasm -- demo --exit --dir "$DEMO_DIR/demo" \
    --admin 127.0.0.1:0 --ingress 127.0.0.1:0 --dns 127.0.0.1:0
rm -rf "$DEMO_DIR"

step "cargo test (examples/plugins/aggregate, natively)"
(cd examples/plugins/aggregate && cargo test)

step "all checks passed"
