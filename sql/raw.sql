-- metricagg raw (OLTP) database: samples, change log, labels.
-- Applied by scripts/db.sh as the administrator; idempotent.
-- Roles (created cluster-wide by scripts/db.sh): metricagg_owner (owns
-- everything, NOLOGIN), metricagg_ingest (INSERT only), metricagg_job (reads
-- through postgres_fdw from the analytics database).

CREATE EXTENSION IF NOT EXISTS pg_metricagg;
CREATE SCHEMA IF NOT EXISTS metricagg AUTHORIZATION metricagg_owner;
SET search_path = metricagg, public;
SET ROLE metricagg_owner;

-- Raw samples, one row per (server, metric, instant). Range-partitioned by
-- UTC day; retention drops whole partitions, never DELETEs.
CREATE TABLE IF NOT EXISTS metricagg.samples (
    server_id   text             NOT NULL,
    metric_type text             NOT NULL,
    ts          timestamptz      NOT NULL,
    value       double precision NOT NULL,
    -- NaN compares above 'Infinity' in PostgreSQL, so this rejects NaN too.
    CONSTRAINT samples_value_finite CHECK (value > '-Infinity' AND value < 'Infinity')
) PARTITION BY RANGE (ts);

-- Last resort for times no day partition covers yet;
-- metricagg.ensure_partitions() moves such rows into their day.
CREATE TABLE IF NOT EXISTS metricagg.samples_default PARTITION OF metricagg.samples DEFAULT;

-- Time-ordered ingest makes a BRIN index on ts small, nearly free to
-- maintain, and selective: the job's recomputes of recent or late ranges
-- read only the block ranges that can hold them.
CREATE INDEX IF NOT EXISTS samples_ts_brin ON metricagg.samples USING brin (ts) WITH (pages_per_range = 32);
-- Late rows are the exception: a recompute for a few servers over a past
-- range would read every server's rows of that range through the BRIN index.
-- A btree on (server_id, ts) reads only theirs (and serves per-server
-- queries); it is the one per-row index cost of ingest.
CREATE INDEX IF NOT EXISTS samples_server_ts ON metricagg.samples (server_id, ts);

COMMENT ON TABLE metricagg.samples IS
'Raw metric samples. Partitioned by UTC day; NULL, NaN and infinite values are rejected; every INSERT/COPY statement is recorded in metricagg.change_log.';

-- The change log: per statement and server, the time range touched and the
-- inserting transaction. metricagg_run_once() consumes entries whose xid is
-- below the raw side's snapshot xmin, so late and out-of-order commits are
-- never skipped.
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
COMMENT ON TABLE metricagg.change_log IS
'One row per (insert statement, server): time range touched and the inserting transaction id. Consumed and pruned by metricagg_run_once().';

CREATE OR REPLACE FUNCTION metricagg.log_sample_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, metricagg, public AS $$
BEGIN
    INSERT INTO metricagg.change_log (server_id, min_ts, max_ts, row_count)
    SELECT server_id, min(ts), max(ts), count(*) FROM new_rows GROUP BY server_id;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS samples_log_changes ON metricagg.samples;
CREATE TRIGGER samples_log_changes
    AFTER INSERT ON metricagg.samples
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION metricagg.log_sample_changes();

-- Progress of the analytics job, written back by it (through postgres_fdw)
-- after each committed run: retention reads it.
CREATE TABLE IF NOT EXISTS metricagg.job_progress (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    done_below  xid8        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE metricagg.job_progress ADD COLUMN IF NOT EXISTS pending_from timestamptz;
INSERT INTO metricagg.job_progress (done_below) VALUES ('0') ON CONFLICT DO NOTHING;

-- The raw side's snapshot horizon, read by the job through postgres_fdw in
-- the same remote transaction as the change log and the samples.
DROP VIEW IF EXISTS metricagg.snapshot_horizon;
CREATE VIEW metricagg.snapshot_horizon AS
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon;

-- Ground truth written by the seeder: what was injected, where.
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
COMMENT ON TABLE metricagg.anomaly_labels IS
'Injected anomalies (seeder ground truth), each over [start_ts, end_ts).';

-- Creates the day partitions covering [from_ts, to_ts) and moves any rows
-- the default partition holds for those days into them.
CREATE OR REPLACE FUNCTION metricagg.ensure_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, metricagg, public AS $$
DECLARE
    day      timestamptz;
    created  integer := 0;
    name     text;
    moved    bigint;
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL OR NOT isfinite(from_ts) OR NOT isfinite(to_ts) THEN
        RAISE EXCEPTION 'ensure_partitions: range must be finite and not NULL'
            USING HINT = 'Pass two finite timestamps, e.g. now() - interval ''1 day'' and now().';
    END IF;
    IF to_ts - from_ts > interval '3660 days' THEN
        RAISE EXCEPTION 'ensure_partitions: range % to % spans more than 10 years', from_ts, to_ts
            USING HINT = 'Create partitions for the range you load, a few days or months at a time.';
    END IF;
    day := metricagg_bin(from_ts, interval '1 day');
    WHILE day < to_ts LOOP
        name := 'samples_' || to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD');
        IF to_regclass('metricagg.' || name) IS NULL THEN
            -- Serialize concurrent creators of the same day.
            PERFORM pg_advisory_xact_lock(hashtext('metricagg.samples partition'), 0);
            IF to_regclass('metricagg.' || name) IS NULL THEN
                -- Rows that landed in the default partition must move first.
                IF to_regclass('pg_temp.moving') IS NULL THEN
                    CREATE TEMP TABLE moving (LIKE metricagg.samples) ON COMMIT DROP;
                END IF;
                WITH gone AS (
                    DELETE FROM metricagg.samples_default
                    WHERE ts >= day AND ts < day + interval '1 day' RETURNING *)
                INSERT INTO pg_temp.moving SELECT * FROM gone;
                GET DIAGNOSTICS moved = ROW_COUNT;
                EXECUTE format(
                    'CREATE TABLE metricagg.%I PARTITION OF metricagg.samples FOR VALUES FROM (%L) TO (%L)',
                    name, day, day + interval '1 day');
                IF moved > 0 THEN
                    -- Moved rows are logged again by the trigger: their bins are recomputed.
                    INSERT INTO metricagg.samples SELECT * FROM pg_temp.moving;
                    TRUNCATE pg_temp.moving;
                END IF;
                created := created + 1;
            END IF;
        END IF;
        day := day + interval '1 day';
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION metricagg.ensure_partitions(timestamptz, timestamptz) IS
'Creates the day partitions of metricagg.samples covering [from_ts, to_ts), moving rows out of the default partition. Returns the number created.';

-- Rows present in [from_ts, to_ts) for the given servers: lets the ingest
-- role check for overlaps without SELECT on the samples.
CREATE OR REPLACE FUNCTION metricagg.count_samples(from_ts timestamptz, to_ts timestamptz, server_ids text[])
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, metricagg, public AS $$
    SELECT count(*) FROM metricagg.samples
    WHERE ts >= from_ts AND ts < to_ts AND server_id = ANY (server_ids)
$$;
COMMENT ON FUNCTION metricagg.count_samples(timestamptz, timestamptz, text[]) IS
'Number of samples in [from_ts, to_ts) for the given servers (for overlap checks by the ingest role).';

-- Drops day partitions that end before now() - max_age, unless a change not
-- yet processed by the analytics job touches them.
CREATE OR REPLACE FUNCTION metricagg.drop_old_partitions(max_age interval DEFAULT '7 days')
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, metricagg, public AS $$
DECLARE
    part      record;
    done      xid8;
    pending   timestamptz;
    upper_ts  timestamptz;
    lower_ts  timestamptz;
BEGIN
    IF max_age IS NULL OR max_age <= interval '0' THEN
        RAISE EXCEPTION 'drop_old_partitions: max_age must be positive' USING HINT = 'e.g. interval ''7 days''';
    END IF;
    SELECT done_below, pending_from INTO done, pending FROM metricagg.job_progress;
    FOR part IN
        SELECT c.oid::regclass AS rel, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'metricagg.samples'::regclass
          AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
        ORDER BY 1
    LOOP
        lower_ts := substring(part.bound FROM 'FROM \(''([^'']+)''\)')::timestamptz;
        upper_ts := substring(part.bound FROM 'TO \(''([^'']+)''\)')::timestamptz;
        CONTINUE WHEN upper_ts > now() - max_age OR done IS NULL;
        -- Coarser bins the job has parked until they close still need it.
        CONTINUE WHEN pending IS NOT NULL AND upper_ts > pending;
        -- Lock first: a writer still inserting into this partition holds a
        -- conflicting lock until it commits, and its change-log row is only
        -- visible after that. Then never drop what the job has not aggregated.
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', part.rel);
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM metricagg.change_log l
            WHERE l.xid >= done AND l.max_ts >= lower_ts AND l.min_ts < upper_ts);
        EXECUTE format('DROP TABLE %s', part.rel);
        RETURN NEXT part.rel::text;
    END LOOP;
END
$$;
COMMENT ON FUNCTION metricagg.drop_old_partitions(interval) IS
'Retention: drops day partitions of metricagg.samples older than max_age whose changes the analytics job has processed. Returns the dropped partitions.';

RESET ROLE;

-- Grants: ingest writes, the job reads and prunes, nobody else.
REVOKE ALL ON ALL TABLES IN SCHEMA metricagg FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA metricagg FROM PUBLIC;
GRANT USAGE ON SCHEMA metricagg TO metricagg_ingest, metricagg_job;
GRANT INSERT ON metricagg.samples, metricagg.anomaly_labels TO metricagg_ingest;
GRANT EXECUTE ON FUNCTION metricagg.ensure_partitions(timestamptz, timestamptz),
                          metricagg.count_samples(timestamptz, timestamptz, text[]) TO metricagg_ingest, metricagg_job;
GRANT EXECUTE ON FUNCTION metricagg.log_sample_changes() TO metricagg_ingest;
GRANT SELECT ON metricagg.samples, metricagg.change_log, metricagg.snapshot_horizon,
                metricagg.anomaly_labels TO metricagg_job;
GRANT DELETE ON metricagg.change_log TO metricagg_job;
GRANT EXECUTE ON FUNCTION metricagg.drop_old_partitions(interval) TO metricagg_job;
GRANT SELECT, UPDATE ON metricagg.job_progress TO metricagg_job;

-- The job's session settings in this database (re-running this file resets
-- them; change them here to tune):
-- * postgres_fdw runs every query as a cursor, and a cursor is planned for
--   its first 10% of rows by default: a plan that walks the (server_id, ts)
--   index in order over a whole day to avoid a sort. The job reads all rows.
-- * The job's aggregation is one hash aggregate over (server, metric, span of
--   60 bins) that holds the span's values until the end of its input; the
--   planner cannot estimate those groups and plans for spilling, so give it
--   256 MB of hash memory (work_mem × hash_mem_multiplier) before it spills.
DO $do$
BEGIN
    EXECUTE format('ALTER ROLE metricagg_job IN DATABASE %I SET cursor_tuple_fraction = 1', current_database());
    EXECUTE format('ALTER ROLE metricagg_job IN DATABASE %I SET work_mem = %L', current_database(), '64MB');
    EXECUTE format('ALTER ROLE metricagg_job IN DATABASE %I SET hash_mem_multiplier = 4', current_database());
END
$do$;
