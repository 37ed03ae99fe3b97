#!/usr/bin/env bash
# make test-demo: `make demo` works, and keeps working after loop mode's raw
# retention has dropped the demo day's raw partitions (issue 12): the second
# run loads nothing, refuses nothing, and /insights still answers from the
# bins, which retention left complete.
# On a cluster of its own (.metricagg/demo-test, port DEMO_TEST_PORT, default
# 5476) with a small demo (2 servers, 2 hours, every 10 s), the API on
# 127.0.0.1:DEMO_TEST_API_PORT (default 3099).
set -euo pipefail
cd "$(dirname "$0")/.."
export METRICAGG_HOME="$PWD/.metricagg/demo-test" METRICAGG_PORT="${DEMO_TEST_PORT:-5476}"
export DEMO_SERVERS=2 DEMO_HOURS=2 DEMO_INTERVAL=10s DEMO_START=2025-11-16T00:00:00Z
export DEMO_API_BIND="127.0.0.1:${DEMO_TEST_API_PORT:-3099}"
fail() { printf 'test-demo: FAIL: %s\n' "$*" >&2; exit 1; }
cleanup() { bash scripts/demo.sh stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
bash scripts/db.sh destroy >/dev/null 2>&1 || true

first="$(bash scripts/demo.sh start 2>&1)" || { echo "$first" >&2; fail "the first make demo failed"; }
eval "$(bash scripts/db.sh env)"
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
bins="$(q "$ANALYTICS_DATABASE_URL" -c "SELECT count(*) FROM metricagg.bins")"
[ "$bins" -gt 0 ] || fail "the demo wrote no bins"
# Loop mode's next run prunes the consumed change log; then its daily raw
# retention (metricagg-raw-retention, 7 days) drops the demo day.
q "$JOB_DATABASE_URL" -c "SELECT metricagg_run_once()" >/dev/null
dropped="$(q "$RAW_DATABASE_URL" -c "SET ROLE metricagg_job; SELECT count(*) FROM metricagg.drop_old_partitions('7 days')")"
[ "$dropped" -gt 0 ] || fail "retention dropped no partition of the demo day"
[ "$(q "$RAW_DATABASE_URL" -c "SELECT count(*) FROM metricagg.samples")" = 0 ] || fail "raw samples left after retention"

second="$(bash scripts/demo.sh start 2>&1)" || { echo "$second" >&2; fail "make demo failed after retention dropped the demo day"; }
grep -q "raw retention has since dropped those days" <<<"$second" || { echo "$second" >&2; fail "the second make demo did not say why it loads nothing"; }
[ "$(q "$ANALYTICS_DATABASE_URL" -c "SELECT count(*) FROM metricagg.bins")" = "$bins" ] || fail "bins changed after retention"
end="$(date -u -d "$DEMO_START + $DEMO_HOURS hours" +%Y-%m-%dT%H:%M:%SZ)"
n="$(curl -fsS "http://$DEMO_API_BIND/insights?start=$DEMO_START&end=$end" | jq '.health | length')"
[ "$n" = "$DEMO_SERVERS" ] || fail "/insights after retention: expected $DEMO_SERVERS servers, got $n"
echo "test-demo: passed (make demo twice, the second after raw retention dropped the demo day; $bins bins kept, /insights answers)"
