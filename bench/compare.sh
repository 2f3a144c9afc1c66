#!/usr/bin/env bash
# streampca against scikit-learn's IncrementalPCA, side by side in one run.
# Usage: bench/compare.sh [--quick]    (writes BENCHMARKS.md and bench/plots/*.png)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
fi
python3 -m pip install -q numpy scikit-learn matplotlib
cargo build --release --locked --bin streampca --example load
target_dir="${CARGO_TARGET_DIR:-target}"
data_dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$target_dir"/release/streampca serve --listen "127.0.0.1:$port" --data-dir "$data_dir" > "$data_dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data_dir"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" > /dev/null && break; sleep 0.1; done
python3 bench/compare.py --url "http://127.0.0.1:$port" --load-bin "$target_dir"/release/examples/load "$@"
