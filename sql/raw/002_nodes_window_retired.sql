-- raw schema version 2:
-- * change capture per node: each change-log entry records the node whose
--   local transaction id it carries (0 on a single server; a Citus worker's
--   group id on a distributed raw side, see sql/citus/), and the job keeps a
--   watermark per node;
-- * retention no longer reads the job's watermark here: a day is kept while
--   any change-log entry touches it (the job prunes what it has aggregated);
-- * the ingest window (ingest_config): timestamps outside it are refused;
-- * retired: per server, the days whose raw rows retention dropped, so that a
--   late row for such a day is refused instead of replacing a complete bin;
-- * load_claims: bulk loaders (the seeder) claim (server, time range) before
--   loading, so two loads of the same range cannot both go ahead.
BEGIN;
SET LOCAL ROLE metricagg_owner;

ALTER TABLE metricagg.change_log ADD COLUMN IF NOT EXISTS node integer NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS metricagg.change_log_xid;
CREATE INDEX IF NOT EXISTS change_log_node_xid ON metricagg.change_log (node, xid);
ALTER TABLE metricagg.job_progress DROP COLUMN IF EXISTS done_below;

CREATE TABLE metricagg.ingest_config (
    singleton     boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    -- History is accepted back to here (backfills of years of data are legitimate).
    min_ts        timestamptz NOT NULL DEFAULT '2000-01-01 00:00+00' CHECK (isfinite(min_ts)),
    -- and up to now() + future_margin (agents' clocks run a little fast).
    future_margin interval    NOT NULL DEFAULT '1 day'
                              CHECK (future_margin >= interval '0' AND future_margin <= interval '366 days')
);
INSERT INTO metricagg.ingest_config DEFAULT VALUES;

CREATE TABLE metricagg.retired (
    server_id text           PRIMARY KEY,
    days      tstzmultirange NOT NULL
);

CREATE TABLE metricagg.load_claims (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server_id     text        NOT NULL,
    during        tstzrange   NOT NULL,
    -- The claiming session; it holds the advisory lock
    -- (hashtext('metricagg.load_claims'), id) for as long as the claim lives.
    pid           integer     NOT NULL DEFAULT pg_backend_pid(),
    claimed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX load_claims_server ON metricagg.load_claims (server_id);

RESET ROLE;
INSERT INTO metricagg.schema_version (component, version, description)
VALUES ('raw', 2, 'per-node change log, ingest window, retired days, load claims');
COMMIT;
