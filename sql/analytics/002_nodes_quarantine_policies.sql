-- analytics schema version 2:
-- * the job's watermark per raw node (job_watermarks), since a distributed
--   raw side has one transaction-id space per worker; node 0 takes over the
--   single watermark of version 1;
-- * quarantine: change-log entries the job cannot process, set aside with
--   the reason so that one bad agent never stops the run for everyone else;
-- * job_runs records per-node watermarks and quarantined entries;
-- * job_config.bins_compress_after drives TimescaleDB's compression policy;
--   on TimescaleDB, bins get one-day chunks (see docs/operations.md) and
--   retention runs as metricagg's own TimescaleDB job instead of
--   add_retention_policy, so that it bumps bins_version like every other
--   change of bins.
BEGIN;
SET LOCAL ROLE metricagg_job;

CREATE TABLE metricagg.job_watermarks (
    node       integer PRIMARY KEY,
    done_below xid8    NOT NULL
);
INSERT INTO metricagg.job_watermarks (node, done_below)
SELECT 0, done_below FROM metricagg.job_state WHERE done_below > '0';
ALTER TABLE metricagg.job_state DROP COLUMN done_below;

CREATE TABLE metricagg.quarantine (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node           integer     NOT NULL,
    xid            xid8        NOT NULL,
    server_id      text        NOT NULL,
    min_ts         timestamptz NOT NULL,
    max_ts         timestamptz NOT NULL,
    row_count      bigint      NOT NULL,
    reason         text        NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    released_at    timestamptz
);

ALTER TABLE metricagg.job_runs ALTER COLUMN from_xid DROP NOT NULL, ALTER COLUMN to_xid DROP NOT NULL;
ALTER TABLE metricagg.job_runs ADD COLUMN watermarks jsonb NOT NULL DEFAULT '{}',
                               ADD COLUMN quarantined bigint NOT NULL DEFAULT 0;

ALTER TABLE metricagg.job_config ADD COLUMN bins_compress_after interval NOT NULL DEFAULT '3 days'
    CHECK (bins_compress_after >= interval '1 hour');
ALTER TABLE metricagg.job_config ADD CHECK (bins_retention >= interval '1 day');

SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AS has_tsdb \gset
\set on_tsdb false
\if :has_tsdb
SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
               WHERE hypertable_schema = 'metricagg' AND hypertable_name = 'bins') AS on_tsdb \gset
\endif
\if :on_tsdb
SELECT set_chunk_time_interval('metricagg.bins', interval '1 day');
SELECT remove_retention_policy('metricagg.bins', if_exists => true);
SELECT remove_compression_policy('metricagg.bins', if_exists => true);
\endif

RESET ROLE;
INSERT INTO metricagg.schema_version (component, version, description)
VALUES ('analytics', 2, 'per-node watermarks, quarantine, bins policies from job_config');
COMMIT;
