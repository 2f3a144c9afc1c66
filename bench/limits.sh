#!/usr/bin/env bash
# This machine's ceilings for durable ingest, in one run of about two minutes (plus the
# first release build of the bench): our accumulator update (criterion) beside
# numpy/OpenBLAS `dsyrk` on one thread at n = 64, 784, 2048, the data directory's
# write bandwidth in the write-ahead log's pattern (~800 KB appends, each followed by
# fdatasync), and from them the durable-ingest ceiling in rows/s (bench/limits.py).
#
# Usage: bench/limits.sh [DATA_DIR] [OUT.md]
#   DATA_DIR  directory on the disk to measure (default: ./data of the repository, the
#             service's default data directory; created if absent; a scratch file is
#             written there and removed)
#   OUT.md    where the markdown table goes (default: bench/LIMITS.md)
# The disk of these machines varies from run to run: measure it next to each ingest run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
data_dir=$(realpath -m "${1:-$repo/data}")
out=$(realpath -m "${2:-$repo/bench/LIMITS.md}")
cd "$repo"
mkdir -p "$data_dir"
python3 -c 'import numpy, scipy' 2>/dev/null || python3 -m pip install -q numpy scipy
# Build first, so that dsyrk's first timing sits right before ours.
cargo bench --locked --bench pca --no-run >&2
before=$(mktemp)
trap 'rm -f "$before"' EXIT
echo "--- numpy/OpenBLAS dsyrk (before ours)" >&2
python3 bench/limits.py --data-dir "$data_dir" --out "$out" --dsyrk-only "$before"
echo "--- cargo bench --bench pca -- accumulator_update" >&2
cargo bench --locked --bench pca -- accumulator_update --warm-up-time 1 --measurement-time 3 >&2
echo "--- numpy/OpenBLAS dsyrk (after ours), disk bandwidth in $data_dir" >&2
python3 bench/limits.py --data-dir "$data_dir" --out "$out" --dsyrk-before "$before" \
    --command "bench/limits.sh${*:+ $*}"
