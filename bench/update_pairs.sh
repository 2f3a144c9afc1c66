#!/usr/bin/env bash
# The accumulator update against numpy, in alternating back-to-back pairs: criterion's
# `accumulator_update` group, then `bench/kernels.py`, the order swapped every other pair
# so that neither side always runs second on a machine whose load drifts.
# Usage: bench/update_pairs.sh [pairs]    (default 6; prints ours ÷ numpy per n and pair)
set -euo pipefail
cd "$(dirname "$0")/.."
ours() {
  cargo bench --bench pca -- accumulator_update --warm-up-time 1 --measurement-time 4 2>&1 |
    sed -nE 's/^accumulator_update\/([0-9]+) +time: +\[[^ ]+ [^ ]+ ([0-9.]+) ([µm]s).*/\1 \2 \3/p'
}
theirs() {
  python3 bench/kernels.py | sed -nE 's/^update_b256,n=([0-9]+),([^,]+),.*/\1 \2/p'
}
for i in $(seq 1 "${1:-6}"); do
  if [ $((i % 2)) -eq 1 ]; then o=$(ours); t=$(theirs); else t=$(theirs); o=$(ours); fi
  python3 - "$i" "$o" "$t" <<'PY'
import sys

pair, ours_out, theirs_out = sys.argv[1:4]
unit = {"µs": 1e-6, "ms": 1e-3}
ours = {n: float(t) * unit[u] for n, t, u in (l.split() for l in ours_out.splitlines())}
theirs = {n: float(t) for n, t in (l.split() for l in theirs_out.splitlines())}
cells = [f"n={n}: {ours[n] * 1e3:.3f} / {theirs[n] * 1e3:.3f} ms = {ours[n] / theirs[n]:.2f}"
         for n in sorted(ours, key=int)]
print(f"pair {pair}: " + "  ".join(cells), flush=True)
PY
done
