#!/usr/bin/env bash
# make eval-nab: scores /insights on labelled real-world series (NAB, see
# ../shared/data/nab-dev/README.md) through the whole pipeline, against a
# rolling 3-sigma peer scored in the same run.
#
# Two fresh databases of the embedded cluster, wired as in production (raw
# database, analytics database reading it through postgres_fdw). Every series
# is loaded by the ingest role as one server (its own timestamps), the job
# role runs metricagg_run_once(), and /insights (the api role, the real app on
# a socket) is asked for each series' whole range. The last line is
#   nab_window_recall=… nab_fp_per_file=… peer_recall=… peer_fp_per_file=…
#
# Settings: NAB_DIR (../shared/data/nab-dev), NAB_REUSE=1 (keep the loaded
# databases of an earlier run when they exist: only /insights is asked again),
# NAB_VERBOSE=1 (every window, detection and false alarm).
set -euo pipefail
cd "$(dirname "$0")/.."

NAB_DIR="${NAB_DIR:-../shared/data/nab-dev}"
RAW=nab_raw
AN=nab_analytics
[ -f "$NAB_DIR/labels/combined_windows.json" ] || {
    echo "eval-nab: $NAB_DIR/labels/combined_windows.json not found (set NAB_DIR)" >&2
    exit 2
}

bash scripts/db.sh start
eval "$(bash scripts/db.sh env)"
redact() { sed -E 's#://([^:/@]+):[^@]*@#://\1:***@#g'; }

cargo build --release -p insights-api --bin eval_nab >&2

exists() {
    [ "$(psql -X -q -At "$ANALYTICS_DATABASE_URL" -c "SELECT count(*) FROM pg_database WHERE datname = '$1'")" = 1 ]
}
LOAD=--load
if [ -n "${NAB_REUSE:-}" ] && exists "$RAW" && exists "$AN"; then
    echo "eval-nab: reusing $RAW and $AN (NAB_REUSE)" >&2
    LOAD=
else
    echo "eval-nab: fresh databases $RAW (raw) and $AN (analytics, postgres_fdw to $RAW)" >&2
    psql -X -q "$ANALYTICS_DATABASE_URL" -c "DROP DATABASE IF EXISTS $AN WITH (FORCE)" 2>&1 | grep -v NOTICE >&2 || true
    psql -X -q "$ANALYTICS_DATABASE_URL" -c "DROP DATABASE IF EXISTS $RAW WITH (FORCE)" 2>&1 | grep -v NOTICE >&2 || true
    bash scripts/db.sh create-db raw "$RAW" | tail -1 | redact >&2
    bash scripts/db.sh create-db analytics "$AN" "$RAW" | tail -1 | redact >&2
    # NAB's series are from 2011-2015: keep their bins past the default
    # retention (TimescaleDB's policy would drop them within minutes).
    psql -X -q "${ANALYTICS_DATABASE_URL%/*}/$AN" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
UPDATE metricagg.job_config SET bins_retention = interval '100 years';
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM remove_retention_policy('metricagg.bins', if_exists => true);
    END IF;
END $$;
SQL
fi

export NAB_INGEST_DATABASE_URL="${INGEST_DATABASE_URL%/*}/$RAW"
export NAB_JOB_DATABASE_URL="${JOB_DATABASE_URL%/*}/$AN"
export NAB_API_DATABASE_URL="${API_DATABASE_URL%/*}/$AN"
./target/release/eval_nab --data-dir "$NAB_DIR" $LOAD ${NAB_VERBOSE:+--verbose}
