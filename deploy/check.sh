#!/usr/bin/env bash
# Validates the deploy/ monitoring files.
#
#   deploy/check.sh                          static checks (no service needed)
#   deploy/check.sh --metrics-url URL        also checks a running service's /metrics
#   deploy/check.sh --metrics-url URL --allow-missing a,b
#                                            names that may be absent from the live output
#
# Static checks:
#   1. promtool check config / check rules / test rules (run from deploy/prometheus so
#      rule_files resolves);
#   2. the Grafana dashboard is valid JSON with uid, schemaVersion, unique panel ids and the
#      `model` variable, and every panel expression parses as PromQL (each is wrapped into a
#      recording rule with the template variables substituted and fed to promtool);
#   3. every streampca_* name used in alerts.yml and in the dashboard's expr fields
#      (histogram suffixes _bucket/_sum/_count stripped) is listed in deploy/metrics.txt.
# Live checks (--metrics-url): the used names of metrics.txt each appear in the scraped text
# (as a # TYPE line or a sample), and `promtool check metrics` accepts the text. Families
# with labels have no samples until a model exists, so create a model and ingest first.
# Requires: promtool, python3 (standard library only), curl for --metrics-url.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
metrics_url=""
allow_missing=""

usage() { sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "check.sh: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

while (($#)); do
  case "$1" in
    --metrics-url) [[ $# -ge 2 ]] || die "--metrics-url needs a URL"; metrics_url="$2"; shift 2 ;;
    --metrics-url=*) metrics_url="${1#*=}"; shift ;;
    --allow-missing) [[ $# -ge 2 ]] || die "--allow-missing needs a list"; allow_missing="$2"; shift 2 ;;
    --allow-missing=*) allow_missing="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

command -v promtool >/dev/null || die "promtool not found"
command -v python3 >/dev/null || die "python3 not found"
[[ -z "$metrics_url" ]] || command -v curl >/dev/null || die "curl not found"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

dashboard="$here/grafana/streampca.json"
alerts="$here/prometheus/alerts.yml"
catalogue="$here/metrics.txt"

step "promtool check config"
(cd "$here/prometheus" && promtool check config prometheus.yml)

step "promtool check rules"
(cd "$here/prometheus" && promtool check rules alerts.yml)

step "promtool test rules"
(cd "$here/prometheus" && promtool test rules alerts_test.yml)

step "promtool: cluster-mode rules"
(cd "$here/prometheus" && promtool check rules cluster_alerts.yml && promtool test rules cluster_alerts_test.yml)

step "dashboard JSON"
# Writes the panel expressions (one per line) and a rules file wrapping each of them.
python3 - "$dashboard" "$tmp/dashboard_exprs.txt" "$tmp/dashboard_rules.yml" <<'PY'
import json, sys

path, exprs_out, rules_out = sys.argv[1:4]
with open(path, encoding="utf-8") as f:
    d = json.load(f)

problems = []
if d.get("uid") != "streampca":
    problems.append(f"uid is {d.get('uid')!r}, expected 'streampca'")
if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
    problems.append(f"schemaVersion {d.get('schemaVersion')!r} is missing or too old")
variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
model = variables.get("model")
if not model or "label_values(streampca_model_samples, model)" not in json.dumps(model.get("query")):
    problems.append("templating variable 'model' must query label_values(streampca_model_samples, model)")
if variables.get("datasource", {}).get("type") != "datasource":
    problems.append("templating variable 'datasource' (type datasource) is missing")

def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))

ids, exprs = [], []
for p in walk(d.get("panels", [])):
    ids.append(p.get("id"))
    if p.get("type") != "row" and not p.get("targets"):
        problems.append(f"panel {p.get('title')!r} has no targets")
    for t in p.get("targets", []):
        e = t.get("expr", "")
        if not e.strip():
            problems.append(f"panel {p.get('title')!r} target {t.get('refId')} has no expr")
        exprs.append(" ".join(e.split()))
dupes = sorted({i for i in ids if ids.count(i) > 1}, key=str)
if dupes:
    problems.append(f"duplicate panel ids: {dupes}")
if problems:
    sys.exit("dashboard: " + "; ".join(problems))

# Substitute Grafana's variables with values of the same PromQL type.
def concrete(e):
    for k, v in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h"),
                 ("${model}", "m"), ("$model", "m"), ("${datasource}", "x"), ("$datasource", "x")):
        e = e.replace(k, v)
    return e

with open(exprs_out, "w", encoding="utf-8") as f:
    f.write("\n".join(exprs) + "\n")
with open(rules_out, "w", encoding="utf-8") as f:
    f.write("groups:\n  - name: dashboard_expressions\n    rules:\n")
    for i, e in enumerate(exprs):
        f.write(f"      - record: dashboard:expr_{i}\n        expr: {json.dumps(concrete(e))}\n")
print(f"{path}: valid, {len(ids)} panels, {len(exprs)} expressions")
PY
promtool check rules "$tmp/dashboard_rules.yml" >/dev/null \
  || { promtool check rules "$tmp/dashboard_rules.yml" || true; die "a dashboard expression does not parse"; }
echo "every dashboard expression parses as PromQL"

step "metric names used by alerts and dashboard are in deploy/metrics.txt"
grep -Ev '^[[:space:]]*(#|$)' "$catalogue" | sed -E 's/[[:space:]]+//g' | sort -u > "$tmp/catalogue.txt" || true
# Comment lines are skipped; everything else in alerts.yml (expressions and annotations)
# counts, so a name quoted in a description must be real too.
{ grep -Ev '^[[:space:]]*#' "$alerts" | grep -oE 'streampca_[a-z_]+' || true
  grep -oE 'streampca_[a-z_]+' "$tmp/dashboard_exprs.txt" || true
} | sed -E 's/_(bucket|sum|count)$//' | sort -u > "$tmp/used.txt"
[[ -s "$tmp/used.txt" ]] || die "found no streampca_* names in alerts or dashboard"
missing="$(comm -23 "$tmp/used.txt" "$tmp/catalogue.txt")"
if [[ -n "$missing" ]]; then
  echo "not listed in deploy/metrics.txt:" >&2
  printf '  %s\n' $missing >&2
  die "metric names used but not in the catalogue"
fi
echo "$(wc -l < "$tmp/used.txt") names used, all in deploy/metrics.txt ($(wc -l < "$tmp/catalogue.txt") listed)"
unused="$(comm -13 "$tmp/used.txt" "$tmp/catalogue.txt")"
[[ -z "$unused" ]] || { echo "listed but not used by alerts or dashboard (fine):"; printf '  %s\n' $unused; }

if [[ -n "$metrics_url" ]]; then
  step "live metrics from $metrics_url"
  curl -fsS --max-time 10 "$metrics_url" -o "$tmp/live.txt" || die "cannot fetch $metrics_url"
  comm -12 "$tmp/used.txt" "$tmp/catalogue.txt" > "$tmp/expected.txt"
  tr ',' '\n' <<<"$allow_missing" | sed -E 's/[[:space:]]+//g' | grep -v '^$' | sort -u > "$tmp/allowed.txt" || true
  failed=0
  while read -r name; do
    if grep -qE "^# TYPE ${name} " "$tmp/live.txt" \
       || grep -qE "^${name}(_bucket|_sum|_count)?(\{| )" "$tmp/live.txt"; then
      continue
    fi
    if grep -qxF "$name" "$tmp/allowed.txt"; then
      echo "absent (allowed): $name"
    else
      echo "absent from live output: $name" >&2
      failed=1
    fi
  done < "$tmp/expected.txt"
  # Families the service exports that the catalogue does not list yet.
  { grep -oE '^# TYPE streampca_[a-z_]+' "$tmp/live.txt" | awk '{print $3}' || true; } | sort -u > "$tmp/live_names.txt"
  extra="$(comm -23 "$tmp/live_names.txt" "$tmp/catalogue.txt")"
  [[ -z "$extra" ]] || { echo "warning: exported but not in deploy/metrics.txt:" >&2; printf '  %s\n' $extra >&2; }
  ((failed == 0)) || die "used metric names missing from the live output (per-model counters should be initialised to 0 when a model is created)"
  echo "all $(wc -l < "$tmp/expected.txt") used names present (or allowed to be absent)"

  step "promtool check metrics"
  promtool check metrics < "$tmp/live.txt"
  echo "promtool check metrics: OK"
fi

step "all checks passed"
