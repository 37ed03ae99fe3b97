#!/usr/bin/env bash
# analytics-db first start (docker-entrypoint-initdb.d): roles (sql/roles.sql),
# the analytics schema (sql/analytics.sql; bins are a TimescaleDB hypertable,
# the image preloads TimescaleDB), the postgres_fdw server to raw-db with the
# job's user mapping (sql/fdw.sql), and loop mode (pg_cron): the same SQL files
# scripts/db.sh applies to the embedded cluster. Passwords come from
# docker/analytics-db/.env.
set -euo pipefail
: "${METRICAGG_JOB_PASSWORD:?set it in docker/analytics-db/.env (the same as in docker/raw-db/.env)}"
: "${METRICAGG_API_PASSWORD:?set it in docker/analytics-db/.env}"
DB="${POSTGRES_DB:-metrics_analytics}"
RAW_HOST="${METRICAGG_RAW_HOST:-raw-db}"
RAW_PORT="${METRICAGG_RAW_PORT:-5432}"
RAW_DB="${METRICAGG_RAW_DB:-metrics_raw}"
LOOP="${METRICAGG_LOOP_INTERVAL:-1 minute}"
ENGINE="${METRICAGG_BINS_ENGINE:-timescaledb}"
SQL="${METRICAGG_SQL:-/metricagg/sql}"
psql=(psql -X -q -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$DB")

"${psql[@]}" -v job_pw="$METRICAGG_JOB_PASSWORD" -v api_pw="$METRICAGG_API_PASSWORD" -f "$SQL/roles.sql" >/dev/null
"${psql[@]}" -v engine="$ENGINE" -f "$SQL/analytics.sql" >/dev/null
"${psql[@]}" -v raw_host="$RAW_HOST" -v raw_port="$RAW_PORT" -v raw_db="$RAW_DB" -v job_pw="$METRICAGG_JOB_PASSWORD" \
    -f "$SQL/fdw.sql" >/dev/null

# Loop mode (cron.database_name = metrics_analytics). The raw database is
# another server here: its partition and retention jobs run in raw-db's own
# pg_cron (docker/raw-db/initdb), hence raw_database => NULL.
"${psql[@]}" -v loop="$LOOP" <<SQL >/dev/null
CREATE EXTENSION IF NOT EXISTS pg_cron;
\i $SQL/schedule.sql
SELECT metricagg.metricagg_schedule(:'loop', NULL);
SQL
echo "metricagg: analytics database $DB ready ($("${psql[@]}" -Atc 'SELECT metricagg.bins_storage()'); loop mode every $LOOP, raw at $RAW_HOST:$RAW_PORT/$RAW_DB)"
