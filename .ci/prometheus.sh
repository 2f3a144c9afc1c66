#!/usr/bin/env bash
# A real Prometheus scrapes a real streampca with the shipped scrape config, and the
# values it stored are checked through Prometheus' HTTP API (issue: operations).
#
#   .ci/prometheus.sh [path/to/streampca]     (default target/debug/streampca)
#
# Needs prometheus + promtool (Debian's `prometheus`), curl and python3. Starts both
# servers on free loopback ports with temporary directories and stops them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/streampca}"
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 200); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; return 1; }

echo "--- static checks of deploy/"
deploy/check.sh >/dev/null

sp_port=$(free_port)
"$bin" serve --listen "127.0.0.1:$sp_port" --data-dir "$tmp/data" >"$tmp/streampca.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$sp_port/readyz"
base="http://127.0.0.1:$sp_port"

echo "--- ingest known data"
curl -fsS -X POST "$base/v1/models" -H 'content-type: application/json' \
  -d '{"name":"ci","dim":6,"components":2}' >/dev/null
rows=$(python3 - "$base" <<'PY'
import json, random, sys, urllib.request
base = sys.argv[1]
rng = random.Random(7)
sent = 0
for batch in range(5):
    x = [[rng.gauss(0, 3) + 2, rng.gauss(0, 2), rng.gauss(0, 1), rng.gauss(0, .5), rng.gauss(0, .3), rng.gauss(0, .1)]
         for _ in range(40 + batch)]
    req = urllib.request.Request(f"{base}/v1/models/ci/samples", data=json.dumps({"x": x}).encode(),
                                 headers={"content-type": "application/json"})
    json.load(urllib.request.urlopen(req))
    sent += len(x)
# one rejected batch (wrong dimension) so the rejection counter has a series
req = urllib.request.Request(f"{base}/v1/models/ci/samples", data=b'{"x": [[1, 2]]}',
                             headers={"content-type": "application/json"})
try:
    urllib.request.urlopen(req)
except urllib.error.HTTPError as e:
    assert e.code == 422, e.code
print(sent)
PY
)
echo "sent $rows rows"
for _ in $(seq 100); do
  curl -fs "$base/v1/models/ci" | grep -q '"converged":true' && break
  sleep 0.1
done

echo "--- promtool check metrics and the dashboard/alert names against the live output"
curl -fsS "$base/metrics" > "$tmp/metrics.txt"
promtool check metrics < "$tmp/metrics.txt"
deploy/check.sh --metrics-url "$base/metrics" \
  --allow-missing streampca_model_subspace_drift_radians,streampca_snapshot_last_success_timestamp_seconds \
  >/dev/null

echo "--- a real Prometheus with the shipped scrape config"
prom_port=$(free_port)
mkdir -p "$tmp/prom"
cp deploy/prometheus/alerts.yml "$tmp/prom/"
sed -e "s/streampca:8080/127.0.0.1:$sp_port/" \
    -e 's/scrape_interval: 15s/scrape_interval: 1s/' \
    -e 's/evaluation_interval: 15s/evaluation_interval: 1s/' \
    -e 's/scrape_timeout: 10s/scrape_timeout: 1s/' \
    deploy/prometheus/prometheus.yml > "$tmp/prom/prometheus.yml"
promtool check config "$tmp/prom/prometheus.yml" >/dev/null
prometheus --config.file="$tmp/prom/prometheus.yml" --storage.tsdb.path="$tmp/prom/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$prom_port/-/ready"

python3 - "http://127.0.0.1:$prom_port" "$rows" <<'PY'
import json, sys, time, urllib.parse, urllib.request
prom, rows = sys.argv[1], float(sys.argv[2])

def query(q):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    out = json.load(urllib.request.urlopen(url))
    assert out["status"] == "success", out
    return out["data"]["result"]

expect = {
    'up{job="streampca"}': 1.0,
    'streampca_model_samples{model="ci"}': rows,
    'streampca_samples_ingested_total{model="ci"}': rows,
    'streampca_batches_ingested_total{model="ci"}': 5.0,
    'streampca_batches_rejected_total{model="ci",code="dimension_mismatch"}': 1.0,
    'streampca_model_converged{model="ci"}': 1.0,
    'streampca_models': 1.0,
    'count(streampca_model_eigenvalue{model="ci"})': 2.0,
}
deadline = time.time() + 30
while True:
    got = {}
    for q in expect:
        r = query(q)
        got[q] = float(r[0]["value"][1]) if r else None
    if all(got[q] == v for q, v in expect.items()):
        break
    if time.time() > deadline:
        sys.exit(f"Prometheus did not store the expected values:\n" +
                 "\n".join(f"  {q}: got {got[q]}, expected {v}" for q, v in expect.items()))
    time.sleep(0.5)
# the request histogram was scraped too, and the alert rules loaded
assert query('sum(streampca_http_request_duration_seconds_count{route="/v1/models/{name}/samples"})'), "no latency series"
rules = json.load(urllib.request.urlopen(f"{prom}/api/v1/rules"))["data"]["groups"]
names = {r["name"] for g in rules for r in g["rules"]}
assert "StreampcaModelNotConverged" in names, names
print("Prometheus scraped and stored: " + ", ".join(f"{q} = {v:g}" for q, v in expect.items()))
print(f"{len(names)} alert rules loaded")
PY
