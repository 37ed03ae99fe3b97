-- metricagg raw (OLTP) database: samples, change log, labels, retention.
-- Applied as the administrator, in the raw database, by scripts/db.sh and by
-- the compose init script (after sql/roles.sql); idempotent, and the way to
-- upgrade: migrations not yet applied run once each (metricagg.schema_version),
-- then functions, views, triggers and grants are re-applied.
--   psql -v ON_ERROR_STOP=1 -d metrics_raw -f sql/raw.sql
\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS pg_metricagg;
ALTER EXTENSION pg_metricagg UPDATE;
CREATE SCHEMA IF NOT EXISTS metricagg AUTHORIZATION metricagg_owner;
\ir lib/version.sql

SELECT NOT metricagg.schema_has('raw', 1) AS todo \gset
\if :todo
\ir raw/001_baseline.sql
\endif
SELECT NOT metricagg.schema_has('raw', 2) AS todo \gset
\if :todo
\ir raw/002_nodes_window_retired.sql
\endif

\ir raw/functions.sql
