-- raw schema version 1: the tables as released before schema versions
-- existed (commit e48b597). On a database installed by that release every
-- statement here is a no-op; on a new one it creates them. Never edit a
-- migration that has been released: add the next one.
BEGIN;
SET LOCAL ROLE metricagg_owner;

CREATE TABLE IF NOT EXISTS metricagg.samples (
    server_id   text             NOT NULL,
    metric_type text             NOT NULL,
    ts          timestamptz      NOT NULL,
    value       double precision NOT NULL,
    CONSTRAINT samples_value_finite CHECK (value > '-Infinity' AND value < 'Infinity')
) PARTITION BY RANGE (ts);
CREATE TABLE IF NOT EXISTS metricagg.samples_default PARTITION OF metricagg.samples DEFAULT;
CREATE INDEX IF NOT EXISTS samples_ts_brin ON metricagg.samples USING brin (ts) WITH (pages_per_range = 32);
CREATE INDEX IF NOT EXISTS samples_server_ts ON metricagg.samples (server_id, ts);

CREATE TABLE IF NOT EXISTS metricagg.change_log (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    server_id  text        NOT NULL,
    min_ts     timestamptz NOT NULL,
    max_ts     timestamptz NOT NULL,
    row_count  bigint      NOT NULL,
    logged_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS change_log_xid ON metricagg.change_log (xid);

CREATE TABLE IF NOT EXISTS metricagg.job_progress (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    done_below  xid8        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE metricagg.job_progress ADD COLUMN IF NOT EXISTS pending_from timestamptz;
INSERT INTO metricagg.job_progress (done_below) VALUES ('0') ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS metricagg.anomaly_labels (
    id          bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server_id   text             NOT NULL,
    metric_type text             NOT NULL,
    kind        text             NOT NULL CHECK (kind IN
                    ('spike', 'level_shift', 'leak', 'stuck', 'dropout', 'noisy_neighbour')),
    start_ts    timestamptz      NOT NULL,
    end_ts      timestamptz      NOT NULL,
    magnitude   double precision,
    seed        bigint,
    CHECK (end_ts > start_ts)
);

RESET ROLE;
INSERT INTO metricagg.schema_version (component, version, description)
VALUES ('raw', 1, 'baseline: samples, change_log, job_progress, anomaly_labels');
COMMIT;
