#!/usr/bin/env bash
# Where the CPU goes while a model ingests: the release server, `examples/load` sending
# Fashion-MNIST (n = 784) as binary (or JSON) bodies of b = 256 rows from P producers into a fresh
# model of K partitions, and `perf record -a -g` over the whole machine meanwhile (root,
# or perf_event_paranoid ≤ 0). Prints the load tool's rate, then
# bench/profile_breakdown.py's tables: each process's share of the two cores per time
# bucket (idle included) and the server's samples by kind of work.
#
# Usage: bench/profile_ingest.sh [K] [SYNC] [PRODUCERS] [FORMAT]   (defaults: 2 always 4 binary)
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-2}
sync=${2:-always}
producers=${3:-4}
format=${4:-binary}
cargo build --release --quiet --bin streampca --example load
work=$(mktemp -d -p "$PWD" .bench-profile.XXXX)
trap 'rm -rf "$work"' EXIT
port=18195
url=http://127.0.0.1:$port
target/release/streampca --listen 127.0.0.1:$port --data-dir "$work/data" --sync "$sync" \
    --log warn &
pid=$!
for _ in $(seq 100); do curl -sf $url/readyz >/dev/null && break; sleep 0.1; done
perf record -q -F 1999 -a -g -o "$work/perf.data" 2>/dev/null &
perf_pid=$!
sleep 0.3
echo "K = $k, --sync $sync, $producers producers, $format bodies, load average $(cut -d' ' -f1 /proc/loadavg)"
target/release/examples/load ingest --url $url --model m --fresh --data fashion-mnist \
    --rows 60000 --passes 4 --producers "$producers" --partitions "$k" --format "$format" \
    --converge-timeout 1 --quiet 2>&1 | grep -o '[0-9.]* rows/s' | head -1
kill -INT "$perf_pid"; wait "$perf_pid" || true
kill "$pid"; wait "$pid" 2>/dev/null || true
perf script -i "$work/perf.data" -F comm,pid,tid,time,ip,sym 2>/dev/null |
    python3 bench/profile_breakdown.py --pid "$pid"
