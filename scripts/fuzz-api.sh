#!/usr/bin/env bash
# make test-api-fuzz: the HTTP API fuzzed from its own /openapi.json with
# schemathesis (positive and negative cases, a fixed seed and number of
# examples). A scratch analytics database of the embedded cluster gets a few
# hours of bins; insights-api serves it as the api role with a bearer token.
# Fails on any 5xx, any 4xx/5xx that is not the service's JSON error (the
# error_bodies_are_json check in scripts/fuzz_api_hooks.py), a status or
# content type the document does not list, a response that does not match its
# schema, and an endpoint that answers without the token where the document
# says it needs one.
#
# Settings: FUZZ_EXAMPLES (30 per operation), FUZZ_SEED (20251115),
# FUZZ_PORT (3919), SCHEMATHESIS (the schemathesis executable).
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES="${FUZZ_EXAMPLES:-30}"
SEED="${FUZZ_SEED:-20251115}"
PORT="${FUZZ_PORT:-3919}"
ST="${SCHEMATHESIS:-.metricagg/venv/bin/schemathesis}"
[ -x "$ST" ] || { echo "fuzz-api: $ST is missing (make test-api-fuzz installs it)" >&2; exit 1; }

bash scripts/db.sh start >/dev/null
eval "$(bash scripts/db.sh env)"
DB="ia_fuzz_$$"
ADMIN_URL="$(bash scripts/db.sh create-db analytics "$DB" | tail -n 1)"
API_URL="${API_DATABASE_URL%/*}/$DB"
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    psql -X -q "$ANALYTICS_DATABASE_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Six hours of one-minute bins and their hourly bins: three servers, two
# metrics, a spike on srv-2 cpu.
DATA_START=2025-11-15T10:00:00+00:00
DATA_HOURS=6
psql -X -q -v ON_ERROR_STOP=1 "$ADMIN_URL" <<SQL
INSERT INTO metricagg.bins (server_id, metric_type, width, ts, count, avg, min, max, p80)
SELECT 'srv-' || s, m, interval '1 minute', ts, 60, v, v - 2, v + 2, v + 1
  FROM generate_series(1, 3) s, unnest(ARRAY['cpu', 'memory']) m,
       generate_series(timestamptz '$DATA_START', timestamptz '$DATA_START' + interval '$DATA_HOURS hours' - interval '1 minute', interval '1 minute') ts,
       LATERAL (SELECT 30 + s * 5 + 3 * sin(extract(epoch FROM ts) / 900)
                       + CASE WHEN s = 2 AND m = 'cpu' AND ts = timestamptz '$DATA_START' + interval '3 hours' THEN 40 ELSE 0 END AS v) x;
INSERT INTO metricagg.bins (server_id, metric_type, width, ts, count, avg, min, max, p80)
SELECT server_id, metric_type, interval '1 hour', date_trunc('hour', ts), sum(count), avg(avg), min(min), max(max), max(p80)
  FROM metricagg.bins WHERE width = '1 minute' GROUP BY 1, 2, 4;
SQL

cargo build -q -p insights-api --bin insights-api
TOKEN="fuzz-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
BIND="127.0.0.1:$PORT" API_DATABASE_URL="$API_URL" API_TOKEN="$TOKEN" LLM_MODE=mock RUST_LOG=warn \
    REQUEST_TIMEOUT_SECS=15 ./target/debug/insights-api >/tmp/fuzz-api-$$.log 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { echo "fuzz-api: the service did not start" >&2; cat /tmp/fuzz-api-$$.log >&2; exit 1; }

FUZZ_ERROR_CODES="$(curl -sf "http://127.0.0.1:$PORT/openapi.json" | python3 -c '
import json, sys
print(",".join(json.load(sys.stdin)["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]))')"
export FUZZ_ERROR_CODES DATA_START DATA_HOURS
export FUZZ_SERVERS=srv-1,srv-2,srv-3 FUZZ_METRICS=cpu,memory FUZZ_DATA_START="$DATA_START" FUZZ_DATA_HOURS="$DATA_HOURS"
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=fuzz_api_hooks

status=0
SCHEMATHESIS_TELEMETRY=false "$ST" --config-file scripts/fuzz-api.toml run "http://127.0.0.1:$PORT/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth,unsupported_method,error_bodies_are_json \
    --mode all --phases examples,coverage,fuzzing \
    --max-examples "$EXAMPLES" --seed "$SEED" --workers 1 --request-timeout 20 \
    --suppress-health-check all --output-sanitize true || status=$?
if [ "$status" -ne 0 ]; then
    echo "fuzz-api: schemathesis found failures (server log: /tmp/fuzz-api-$$.log)" >&2
    exit "$status"
fi
if grep -q "panicked" /tmp/fuzz-api-$$.log; then
    echo "fuzz-api: the service panicked:" >&2
    grep -A3 panicked /tmp/fuzz-api-$$.log >&2
    exit 1
fi
rm -f /tmp/fuzz-api-$$.log
echo "fuzz-api: no failures (seed $SEED, $EXAMPLES examples per operation)"
