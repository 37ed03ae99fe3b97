#!/usr/bin/env bash
# raw-db first start (docker-entrypoint-initdb.d): roles (sql/roles.sql), the
# raw schema (sql/raw.sql), partitions and pg_cron housekeeping: the same SQL
# files scripts/db.sh applies to the embedded cluster. Passwords come from the
# environment (docker/raw-db/.env), never from this file.
set -euo pipefail
: "${METRICAGG_INGEST_PASSWORD:?set it in docker/raw-db/.env}"
: "${METRICAGG_JOB_PASSWORD:?set it in docker/raw-db/.env}"
DB="${POSTGRES_DB:-metrics_raw}"
RETENTION="${METRICAGG_RAW_RETENTION:-7 days}"
SQL="${METRICAGG_SQL:-/metricagg/sql}"
psql=(psql -X -q -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$DB")

"${psql[@]}" -v ingest_pw="$METRICAGG_INGEST_PASSWORD" -v job_pw="$METRICAGG_JOB_PASSWORD" -f "$SQL/roles.sql" >/dev/null
"${psql[@]}" -f "$SQL/raw.sql" >/dev/null

# Day partitions ahead of time and retention that never drops unprocessed
# changes, run by pg_cron here (cron.database_name = metrics_raw) as the job role.
"${psql[@]}" -v retention="$RETENTION" <<'SQL' >/dev/null
CREATE EXTENSION IF NOT EXISTS pg_cron;
SELECT metricagg.ensure_partitions(now() - interval '1 day', now() + interval '3 days');
SELECT cron.schedule_in_database('metricagg-raw-partitions', '7 * * * *',
    $$SELECT metricagg.ensure_partitions(now() - interval '1 day', now() + interval '3 days')$$,
    current_database(), 'metricagg_job');
SELECT cron.schedule_in_database('metricagg-raw-retention', '13 3 * * *',
    format('SELECT metricagg.drop_old_partitions(%L)', :'retention'),
    current_database(), 'metricagg_job');
SELECT cron.schedule_in_database('metricagg-prune-cron-history', '41 3 * * *',
    $$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '7 days'$$,
    current_database(), 'postgres');
SQL
echo "metricagg: raw database $DB ready"
