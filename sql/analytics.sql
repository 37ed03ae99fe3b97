-- metricagg analytics (OLAP) database: bins, the job and its state.
-- Applied as the administrator, in the analytics database, by scripts/db.sh
-- and by the compose init script (after sql/roles.sql; sql/fdw.sql follows);
-- idempotent, and the way to upgrade: migrations not yet applied run once
-- each (metricagg.schema_version), then functions, views, triggers and grants
-- are re-applied.
--   psql -v ON_ERROR_STOP=1 [-v engine=auto|timescaledb|native] -d metrics_analytics -f sql/analytics.sql
-- engine: how bins are stored when they are first created. auto (default):
-- a TimescaleDB hypertable when TimescaleDB is installed AND preloaded
-- (shared_preload_libraries), native monthly partitions otherwise;
-- timescaledb: the hypertable or an error; native: partitions. An existing
-- bins table keeps its storage; metricagg.bins_storage() says which it is.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
\if :{?engine}
\else
\set engine auto
\endif

SELECT :'engine' IN ('auto', 'timescaledb', 'native') AS engine_known,
       current_setting('shared_preload_libraries') ~ '(^|[\s,])"?timescaledb"?([\s,]|$)'
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS tsdb_usable \gset
\if :engine_known
\else
\echo 'sql/analytics.sql: engine must be auto, timescaledb or native, got' :'engine'
DO $$ BEGIN RAISE EXCEPTION 'sql/analytics.sql: unknown engine' USING HINT = 'psql -v engine=auto|timescaledb|native'; END $$;
\endif
SELECT CASE WHEN :'engine' = 'native' OR NOT :'tsdb_usable'::boolean THEN 'native' ELSE 'timescaledb' END AS bins_engine,
       :'engine' = 'timescaledb' AND NOT :'tsdb_usable'::boolean AS engine_missing \gset
\if :engine_missing
DO $$ BEGIN RAISE EXCEPTION 'sql/analytics.sql: engine=timescaledb, but TimescaleDB is not installed or not preloaded'
    USING HINT = 'Install TimescaleDB (docs/operations.md), add timescaledb to shared_preload_libraries and restart, or use engine=auto or native.'; END $$;
\endif
SELECT CASE :'bins_engine' WHEN 'native' THEN 'PARTITION BY RANGE (ts)' ELSE '' END AS bins_partitioning,
       :'bins_engine' = 'timescaledb' AS use_tsdb \gset

CREATE EXTENSION IF NOT EXISTS pg_metricagg;
ALTER EXTENSION pg_metricagg UPDATE;
CREATE EXTENSION IF NOT EXISTS postgres_fdw;
\if :use_tsdb
CREATE EXTENSION IF NOT EXISTS timescaledb;
\endif
CREATE SCHEMA IF NOT EXISTS metricagg AUTHORIZATION metricagg_job;
\ir lib/version.sql

SELECT NOT metricagg.schema_has('analytics', 1) AS todo \gset
\if :todo
\ir analytics/001_baseline.sql
\endif
SELECT NOT metricagg.schema_has('analytics', 2) AS todo \gset
\if :todo
\ir analytics/002_nodes_quarantine_policies.sql
\endif

\ir analytics/functions.sql
