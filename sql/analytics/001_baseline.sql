-- analytics schema version 1: the tables as released before schema versions
-- existed (commit e48b597). On a database installed by that release every
-- statement here is a no-op; on a new one it creates them. Never edit a
-- migration that has been released: add the next one.
-- psql variable bins_engine ('timescaledb' or 'native', set by
-- sql/analytics.sql): how metricagg.bins is stored when it is created here.
BEGIN;
SET LOCAL ROLE metricagg_job;

SELECT to_regclass('metricagg.bins') IS NULL AS create_bins \gset
\if :create_bins
CREATE TABLE metricagg.bins (
    server_id text COLLATE "C" NOT NULL, metric_type text COLLATE "C" NOT NULL, width interval NOT NULL,
    ts timestamptz NOT NULL, count bigint NOT NULL, avg double precision, min double precision,
    max double precision, p80 double precision, PRIMARY KEY (server_id, metric_type, width, ts)
) :bins_partitioning;
\endif
SELECT :'create_bins'::boolean AND :'bins_engine' = 'timescaledb' AS create_hypertable,
       :'create_bins'::boolean AND :'bins_engine' = 'native' AS create_partitions \gset
\if :create_hypertable
SELECT create_hypertable('metricagg.bins', 'ts', chunk_time_interval => interval '7 days');
ALTER TABLE metricagg.bins SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'server_id, metric_type, width',
    timescaledb.compress_orderby = 'ts');
SELECT add_compression_policy('metricagg.bins', interval '7 days');
SELECT add_retention_policy('metricagg.bins', interval '400 days');
\endif
\if :create_partitions
CREATE TABLE metricagg.bins_default PARTITION OF metricagg.bins DEFAULT;
\endif
-- Fleet-wide reads of a time range filter on ts alone, which the primary
-- key cannot serve; bins are written in time order, so BRIN narrows such a
-- scan for almost no write cost. (Hypertable chunks are time ranges already.)
SELECT relkind = 'p' AS partitioned FROM pg_class WHERE oid = 'metricagg.bins'::regclass \gset
\if :partitioned
CREATE INDEX IF NOT EXISTS bins_ts_brin ON metricagg.bins USING brin (ts);
\endif

CREATE TABLE IF NOT EXISTS metricagg.job_config (
    singleton        boolean    PRIMARY KEY DEFAULT true CHECK (singleton),
    source           text       NOT NULL DEFAULT 'fdw' CHECK (source IN ('fdw', 'local')),
    widths           interval[] NOT NULL DEFAULT '{1 minute, 1 hour}',
    bins_retention   interval   NOT NULL DEFAULT '400 days',
    defer_open_bins  boolean    NOT NULL DEFAULT true,
    close_grace      interval   NOT NULL DEFAULT '1 minute',
    CHECK (cardinality(widths) BETWEEN 1 AND 8)
);
ALTER TABLE metricagg.job_config ADD COLUMN IF NOT EXISTS defer_open_bins boolean NOT NULL DEFAULT true;
ALTER TABLE metricagg.job_config ADD COLUMN IF NOT EXISTS close_grace interval NOT NULL DEFAULT '1 minute';
INSERT INTO metricagg.job_config DEFAULT VALUES ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS metricagg.job_state (
    singleton     boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    done_below    xid8        NOT NULL DEFAULT '0',
    last_run_at   timestamptz,
    closed_before timestamptz
);
ALTER TABLE metricagg.job_state DROP COLUMN IF EXISTS data_watermark;
ALTER TABLE metricagg.job_state ADD COLUMN IF NOT EXISTS closed_before timestamptz;
INSERT INTO metricagg.job_state DEFAULT VALUES ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS metricagg.pending_bins (
    width     interval    NOT NULL,
    server_id text        NOT NULL,
    lo        timestamptz NOT NULL,
    hi        timestamptz NOT NULL,
    CHECK (hi > lo)
);

CREATE TABLE IF NOT EXISTS metricagg.job_runs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    from_xid     xid8        NOT NULL,
    to_xid       xid8        NOT NULL,
    entries      bigint      NOT NULL,
    raw_rows     bigint      NOT NULL,
    bins_written jsonb       NOT NULL,
    duration_ms  double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS metricagg.bins_version (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    bigint NOT NULL DEFAULT 0,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO metricagg.bins_version DEFAULT VALUES ON CONFLICT DO NOTHING;

RESET ROLE;
INSERT INTO metricagg.schema_version (component, version, description)
VALUES ('analytics', 1, 'baseline: bins, job_config, job_state, pending_bins, job_runs, bins_version');
COMMIT;
