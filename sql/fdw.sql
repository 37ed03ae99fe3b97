-- The analytics database's link to the raw database: the postgres_fdw server
-- `metricagg_raw`, the job's user mappings and the foreign tables the job
-- reads (metricagg.raw_*). Applied as the administrator in the analytics
-- database, after sql/analytics.sql, by scripts/db.sh and the compose init
-- script; idempotent. psql variables:
--   raw_host, raw_port, raw_db   where the raw database is
--   job_pw                       metricagg_job's password on the raw server
-- pg_metricagg is listed in the server's `extensions`, so its functions and
-- aggregates are shippable: the job's GROUP BY runs on the raw server.
\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS postgres_fdw;

SELECT NOT EXISTS (SELECT 1 FROM pg_foreign_server WHERE srvname = 'metricagg_raw') AS missing \gset
\if :missing
CREATE SERVER metricagg_raw FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (host :'raw_host', port :'raw_port', dbname :'raw_db',
             extensions 'pg_metricagg', fetch_size '10000');
\else
ALTER SERVER metricagg_raw OPTIONS (SET host :'raw_host', SET port :'raw_port', SET dbname :'raw_db');
\endif
GRANT USAGE ON FOREIGN SERVER metricagg_raw TO metricagg_job;

-- The job connects as metricagg_job on the raw side; so does the
-- administrator running the job by hand (psql -U postgres ... metricagg_run_once()).
DROP USER MAPPING IF EXISTS FOR metricagg_job SERVER metricagg_raw;
CREATE USER MAPPING FOR metricagg_job SERVER metricagg_raw
    OPTIONS (user 'metricagg_job', password :'job_pw');
DROP USER MAPPING IF EXISTS FOR postgres SERVER metricagg_raw;
CREATE USER MAPPING FOR postgres SERVER metricagg_raw
    OPTIONS (user 'metricagg_job', password :'job_pw');

-- The raw tables the job reads, column for column (sql/raw/*.sql). A foreign
-- table holds no data: re-creating it keeps the columns in step with the raw
-- schema.
SET ROLE metricagg_job;
DROP FOREIGN TABLE IF EXISTS metricagg.raw_samples, metricagg.raw_change_log, metricagg.raw_snapshot_horizon,
                             metricagg.raw_job_progress, metricagg.raw_retired;
CREATE FOREIGN TABLE metricagg.raw_samples (
    server_id text, metric_type text, ts timestamptz, value double precision)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'samples');
CREATE FOREIGN TABLE metricagg.raw_change_log (
    id bigint, node integer, xid xid8, server_id text, min_ts timestamptz, max_ts timestamptz,
    row_count bigint, logged_at timestamptz)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'change_log');
CREATE FOREIGN TABLE metricagg.raw_snapshot_horizon (node integer, horizon xid8)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'snapshot_horizon');
CREATE FOREIGN TABLE metricagg.raw_job_progress (
    singleton boolean, updated_at timestamptz, pending_from timestamptz)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'job_progress');
CREATE FOREIGN TABLE metricagg.raw_retired (server_id text, days tstzmultirange)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'retired');
RESET ROLE;
