#!/usr/bin/env bash
# The main job on a fresh machine: a local federation demo. Installs what it needs
# (the wasm target, etcd, a kube-apiserver build, cached), builds fedwasm, starts a
# federation plane and three member clusters (real kube-apiservers), joins them and
# runs the host against them, with the workload simulator playing the members'
# missing kubelets. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${FEDWASM_DEV_DIR:-$PWD/.fedwasm-dev}
ADMIN=${FEDWASM_ADMIN:-127.0.0.1:8080}
PLUGINS=${FEDWASM_PLUGINS:-$PWD/demo-plugins}

echo "==> rust target wasm32-unknown-unknown" >&2
rustup target add wasm32-unknown-unknown
echo "==> etcd and kube-apiserver (built once, then cached; 5-10 minutes the first time)" >&2
KUBEBUILDER_ASSETS="$(bash scripts/install-testenv.sh | tail -n1)"
export KUBEBUILDER_ASSETS
echo "==> building fedwasm (release; the first build takes several minutes)" >&2
cargo build --release -p fedwasm-host --bin fedwasm
mkdir -p "$PLUGINS"
# A demo left running by a killed terminal would hold the directory.
if [[ -f "$DIR/state.json" ]]; then
    ./target/release/fedwasm dev down --dir "$DIR" || true
fi

K="kubectl --kubeconfig $DIR/kubeconfig"
cat >&2 <<MSG

==> starting the local federation in $DIR (admin API http://$ADMIN, plugins $PLUGINS)
When it says "admin API", try in another terminal:
  $K --context federation get clusters
  $K --context federation create namespace demo
  $K --context federation -n demo create deployment web --image=nginx --replicas=6
  $K --context federation -n demo annotate deployment web \\
      federation.kubernetes.io/replica-set-preferences='{"rebalance":true,"clusters":{"m1":{"weight":2},"*":{"weight":1}}}'
  for m in m1 m2 m3; do $K --context \$m -n demo get deployment web; done   # 2 each; after the annotation m1 has 3
  $K --context federation -n demo get deployment web -o jsonpath='{.metadata.annotations.fedwasm\.io/placement}'
  ./target/release/fedwasm dev stop m3 --dir $DIR   # an outage; 'dev start m3' brings it back
  curl -s http://$ADMIN/plugins
Ctrl-C stops everything.

MSG
exec ./target/release/fedwasm dev up --dir "$DIR" --members 3 --simulate-workloads \
    --plugins "$PLUGINS" --admin "$ADMIN"
