-- metricagg roles, cluster-wide. Applied as the administrator by
-- scripts/db.sh (all of them) and by the compose init scripts (raw-db: ingest
-- and job; analytics-db: job and api); idempotent. Passwords arrive as psql
-- variables (`psql -v job_pw=...`), never in a file:
--   ingest_pw  metricagg_ingest: writes raw samples (raw database)
--   job_pw     metricagg_job: the aggregation job (both databases)
--   api_pw     metricagg_api: insights-api, read-only (analytics database)
-- A role whose variable is not set is left alone. metricagg_owner (NOLOGIN)
-- owns the raw schema; its SECURITY DEFINER functions run as it.
\set ON_ERROR_STOP on

SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metricagg_owner') AS missing \gset
\if :missing
CREATE ROLE metricagg_owner NOLOGIN;
\endif

\if :{?ingest_pw}
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metricagg_ingest') AS missing \gset
\if :missing
CREATE ROLE metricagg_ingest LOGIN;
\endif
ALTER ROLE metricagg_ingest LOGIN PASSWORD :'ingest_pw' CONNECTION LIMIT 64;
ALTER ROLE metricagg_ingest SET search_path = metricagg, public;
\endif

\if :{?job_pw}
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metricagg_job') AS missing \gset
\if :missing
CREATE ROLE metricagg_job LOGIN;
\endif
ALTER ROLE metricagg_job LOGIN PASSWORD :'job_pw' CONNECTION LIMIT 16;
ALTER ROLE metricagg_job SET search_path = metricagg, public;
\endif

\if :{?api_pw}
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metricagg_api') AS missing \gset
\if :missing
CREATE ROLE metricagg_api LOGIN;
\endif
ALTER ROLE metricagg_api LOGIN PASSWORD :'api_pw' CONNECTION LIMIT 64;
ALTER ROLE metricagg_api SET search_path = metricagg, public;
-- Read-only, and no statement may hold a connection for long: insights-api
-- answers within its request deadline or not at all.
ALTER ROLE metricagg_api SET default_transaction_read_only = on;
ALTER ROLE metricagg_api SET statement_timeout = '15s';
ALTER ROLE metricagg_api SET idle_in_transaction_session_timeout = '30s';
-- insights-api prepares its statements once per connection and runs them
-- with new ranges: a generic plan cannot prune bins partitions or size the
-- range, and after five runs PostgreSQL switches to one (a serial aggregate
-- of the whole fetch, 3x slower for a day of the fleet). Plan every run.
ALTER ROLE metricagg_api SET plan_cache_mode = force_custom_plan;
\endif
