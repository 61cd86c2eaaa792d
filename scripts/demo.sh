#!/usr/bin/env bash
# The main job on a fresh machine: build fedwasm and run the plugin runtime with hot
# reload and the admin API, with requests to try.
set -euo pipefail
cd "$(dirname "$0")/.."

ADMIN=${FEDWASM_ADMIN:-127.0.0.1:8080}
PLUGINS=${FEDWASM_PLUGINS:-$PWD/demo-plugins}

echo "==> rust target wasm32-unknown-unknown" >&2
rustup target add wasm32-unknown-unknown
echo "==> building fedwasm (release; the first build takes several minutes)" >&2
cargo build --release -p fedwasm-host --bin fedwasm
mkdir -p "$PLUGINS"

cat >&2 <<MSG

==> fedwasm run: admin API on http://$ADMIN, plugin directory $PLUGINS
Try, in another terminal:
  curl -s http://$ADMIN/plugins
  curl -s http://$ADMIN/plan -d '{"hook":"distribute","object":"default/web","totalReplicas":9,"clusters":["a","b","c"],"preferences":{"clusters":{"a":{"weight":2},"*":{"weight":1}}}}'
  ./target/release/fedwasm plugin new /tmp/my-policy --hook distribute
  cp "\$(./target/release/fedwasm plugin build /tmp/my-policy | tail -n1)" $PLUGINS/
  curl -s http://$ADMIN/plan -d '{"hook":"distribute","plugin":"my-policy","totalReplicas":9,"clusters":["a","b","c"]}'
Ctrl-C stops it.

MSG
exec ./target/release/fedwasm run --plugins "$PLUGINS" --admin "$ADMIN"
