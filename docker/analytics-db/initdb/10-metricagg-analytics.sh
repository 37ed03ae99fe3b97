#!/usr/bin/env bash
# analytics-db first start (docker-entrypoint-initdb.d): roles, the analytics
# schema (sql/analytics.sql; TimescaleDB hypertable since the image has it),
# the postgres_fdw server to raw-db with the job's user mapping, and loop mode
# (pg_cron). Passwords come from docker/analytics-db/.env.
set -euo pipefail
: "${METRICAGG_JOB_PASSWORD:?set it in docker/analytics-db/.env (the same as in docker/raw-db/.env)}"
: "${METRICAGG_API_PASSWORD:?set it in docker/analytics-db/.env}"
DB="${POSTGRES_DB:-metrics_analytics}"
RAW_HOST="${METRICAGG_RAW_HOST:-raw-db}"
RAW_PORT="${METRICAGG_RAW_PORT:-5432}"
RAW_DB="${METRICAGG_RAW_DB:-metrics_raw}"
LOOP="${METRICAGG_LOOP_INTERVAL:-1 minute}"
psql=(psql -X -q -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$DB")

"${psql[@]}" -v db="$DB" -v job_pw="$METRICAGG_JOB_PASSWORD" -v api_pw="$METRICAGG_API_PASSWORD" <<'EOF'
CREATE ROLE metricagg_job LOGIN CONNECTION LIMIT 16 PASSWORD :'job_pw';
CREATE ROLE metricagg_api LOGIN CONNECTION LIMIT 64 PASSWORD :'api_pw';
ALTER ROLE metricagg_job SET search_path = metricagg, public;
ALTER ROLE metricagg_api SET search_path = metricagg, public;
ALTER ROLE metricagg_api SET default_transaction_read_only = on;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO metricagg_job;
GRANT CONNECT ON DATABASE :"db" TO metricagg_api;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
EOF

"${psql[@]}" -f /metricagg/sql/analytics.sql >/dev/null

# The raw database through postgres_fdw: pg_metricagg's functions are
# shippable (extensions), so the job's GROUP BY runs on raw-db.
"${psql[@]}" -v host="$RAW_HOST" -v port="$RAW_PORT" -v rawdb="$RAW_DB" -v job_pw="$METRICAGG_JOB_PASSWORD" <<'EOF' >/dev/null
CREATE SERVER metricagg_raw FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (host :'host', port :'port', dbname :'rawdb', extensions 'pg_metricagg', fetch_size '10000');
GRANT USAGE ON FOREIGN SERVER metricagg_raw TO metricagg_job;
CREATE USER MAPPING FOR metricagg_job SERVER metricagg_raw
    OPTIONS (user 'metricagg_job', password :'job_pw');
-- The administrator may run the job by hand (docker compose exec ... psql -U postgres).
CREATE USER MAPPING FOR postgres SERVER metricagg_raw
    OPTIONS (user 'metricagg_job', password :'job_pw');
SET ROLE metricagg_job;
CREATE FOREIGN TABLE metricagg.raw_samples (
    server_id text, metric_type text, ts timestamptz, value double precision)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'samples');
CREATE FOREIGN TABLE metricagg.raw_change_log (
    id bigint, xid xid8, server_id text, min_ts timestamptz, max_ts timestamptz,
    row_count bigint, logged_at timestamptz)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'change_log');
CREATE FOREIGN TABLE metricagg.raw_snapshot_horizon (horizon xid8)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'snapshot_horizon');
-- pending_from: see sql/raw.sql (retention keeps what parked coarser bins still need).
CREATE FOREIGN TABLE metricagg.raw_job_progress (
    singleton boolean, done_below xid8, updated_at timestamptz, pending_from timestamptz)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'job_progress');
RESET ROLE;
EOF

# Loop mode (cron.database_name = metrics_analytics). The raw database is
# another server here: its partition and retention jobs run in raw-db's own
# pg_cron (docker/raw-db/initdb), hence raw_database => NULL.
"${psql[@]}" -v loop="$LOOP" <<'EOF' >/dev/null
CREATE EXTENSION IF NOT EXISTS pg_cron;
\i /metricagg/sql/schedule.sql
SELECT metricagg.metricagg_schedule(:'loop', NULL);
EOF
echo "metricagg: analytics database $DB ready (loop mode every $LOOP, raw at $RAW_HOST:$RAW_PORT/$RAW_DB)"
