#!/usr/bin/env bash
# make eval-insights: seeds a labelled day into a scratch database of the
# embedded cluster (raw and analytics schemas in one database), runs
# metricagg_run_once(), calls /insights and scores its anomaly windows against
# metricagg.anomaly_labels. The last line is
#   f1=… precision=… recall=… fp_per_server_day=…
#
# Settings: EVAL_SERVERS (20), EVAL_SEED (42), EVAL_START (2025-11-15T00:00:00Z),
# EVAL_HOURS (24), EVAL_ANOMALY_RATE (4 per server-day), EVAL_VERBOSE (set: list misses).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS="${EVAL_SERVERS:-20}"
SEED="${EVAL_SEED:-42}"
START="${EVAL_START:-2025-11-15T00:00:00Z}"
HOURS="${EVAL_HOURS:-24}"
RATE="${EVAL_ANOMALY_RATE:-4}"
END="$(date -u -d "$START + $HOURS hours" +%Y-%m-%dT%H:%M:%SZ)"
DB="ia_eval_${SERVERS}_${SEED}_${HOURS}h_r${RATE//./_}"

bash scripts/db.sh start
eval "$(bash scripts/db.sh env)"
redact() { sed -E 's#://([^:/@]+):[^@]*@#://\1:***@#g'; }

cargo build --release -p seeder >&2
cargo build -p insights-api --bin eval-insights >&2

echo "eval-insights: fresh database $DB: $SERVERS servers, $START .. $END, seed $SEED, $RATE anomalies per server-day" >&2
psql -X -q "$ANALYTICS_DATABASE_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
URL="$(bash scripts/db.sh create-db local "$DB" | tail -1)"
./target/release/seeder --servers "$SERVERS" --start "$START" --end "$END" --interval 1s \
    --seed "$SEED" --anomaly-rate "$RATE" --database-url "$URL" 2>&1 | tail -1 | redact >&2
psql -X -q -At "$URL" -c "SELECT metricagg_run_once()" | redact >&2

export EVAL_LABELS_DATABASE_URL="$URL"
export EVAL_API_DATABASE_URL="${API_DATABASE_URL%/*}/$DB"
./target/debug/eval-insights --start "$START" --end "$END" ${EVAL_VERBOSE:+--verbose}
