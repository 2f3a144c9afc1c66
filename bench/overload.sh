#!/usr/bin/env bash
# Overload measurement (not CI): wrk with 64 connections mixing ingest, components and
# projections on one model for DURATION seconds, against the dev-profile binary.
# Samples the server's VmRSS every 5 s, then checks that the model's `samples` equals
# the rows of every acknowledged batch (plus the warm-up rows), and that no 5xx other
# than 503-with-Retry-After was answered.
#
# Usage: bench/overload.sh   (env: DURATION=60, INGEST_QUEUE=16, BIN, PORT)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}
INGEST_QUEUE=${INGEST_QUEUE:-16}
BIN=${BIN:-target/debug/streampca}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
URL="http://127.0.0.1:${PORT}"

data_dir=$(mktemp -d)
"$BIN" serve --listen "127.0.0.1:${PORT}" --data-dir "$data_dir" --log warn \
    --ingest-queue "$INGEST_QUEUE" >"$data_dir.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data_dir"' EXIT
for _ in $(seq 1 100); do curl -fsS "$URL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
echo "rss_kib start $(rss)"

# Warm-up: create the model and ingest enough rows for a first fit.
curl -fsS -X POST "$URL/v1/models" -H 'content-type: application/json' \
    -d '{"name":"load","dim":16,"components":4}' >/dev/null
warm_rows=0
for i in $(seq 1 20); do
    body=$(python3 -c "import json,math;print(json.dumps({'x':[[math.sin($i*3.1+r*1.7+c)*(17-c) for c in range(16)] for r in range(32)]}))")
    curl -fsS -X POST "$URL/v1/models/load/samples" -H 'content-type: application/json' -d "$body" >/dev/null
    warm_rows=$((warm_rows + 32))
done
for _ in $(seq 1 100); do
    curl -fsS "$URL/v1/models/load/components" | grep -q '"components":\[\[' && break
    sleep 0.1
done
echo "rss_kib after_warmup_setup $(rss)"

(
    for t in $(seq 5 5 "$DURATION"); do
        sleep 5
        echo "rss_kib t=${t}s $(rss)"
    done
) &
sampler=$!
wrk -t 4 -c 64 -d "${DURATION}s" --timeout 10s -s bench/overload.lua "$URL" | tee "$data_dir.wrk"
wait "$sampler" || true
echo "rss_kib end $(rss)"

acked=$(grep -o '"acked_rows":[0-9]*' "$data_dir.wrk" | cut -d: -f2)
bad=$(grep -o '"other_5xx":[0-9]*' "$data_dir.wrk" | cut -d: -f2)
samples=$(curl -fsS "$URL/v1/models/load" | python3 -c 'import json,sys;print(int(json.load(sys.stdin)["samples"]))')
expected=$((acked + warm_rows))
echo "samples ${samples}, acknowledged rows ${expected} (warm-up ${warm_rows} + wrk ${acked}), other 5xx ${bad}"
status=0
# wrk stops with up to 64 requests in flight: those batches may be applied without wrk
# seeing the acknowledgement. So applied >= acknowledged (nothing acknowledged is lost)
# and the excess is at most 64 batches.
excess=$((samples - expected))
echo "applied but unacknowledged when wrk stopped: ${excess} rows ($((excess / 32)) batches)"
if [[ "$excess" -lt 0 ]]; then echo "FAIL: acknowledged rows were lost"; status=1; fi
if [[ "$excess" -gt $((64 * 32)) ]]; then echo "FAIL: more unacknowledged rows than requests in flight"; status=1; fi
if [[ "$bad" -ne 0 ]]; then echo "FAIL: 5xx other than 503 with Retry-After"; status=1; fi
rm -f "$data_dir.log" "$data_dir.wrk"
exit "$status"
