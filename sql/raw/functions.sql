-- raw schema: functions, views, triggers, comments and grants. Re-applied on
-- every install (after the migrations), so everything here is CREATE OR
-- REPLACE or otherwise idempotent. Tables live in the migrations.
SET search_path = metricagg, public;
SET ROLE metricagg_owner;

COMMENT ON TABLE metricagg.samples IS
'Raw metric samples. Partitioned by UTC day; NULL, NaN and infinite values, names that are not identifiers and timestamps outside metricagg.ingest_config''s window are refused; every INSERT/COPY statement is recorded in metricagg.change_log.';
COMMENT ON TABLE metricagg.change_log IS
'One row per (insert statement, server): time range touched, the node and its local transaction id. Consumed and pruned by metricagg_run_once().';
COMMENT ON TABLE metricagg.anomaly_labels IS
'Injected anomalies (seeder ground truth), each over [start_ts, end_ts).';
COMMENT ON TABLE metricagg.ingest_config IS
'The ingest window: samples with ts before min_ts or at/after now() + future_margin are refused (ERROR naming the row).';
COMMENT ON TABLE metricagg.retired IS
'Per server, the days whose raw rows retention dropped (metricagg.drop_old_partitions). A late sample for such a day is refused: its bins were computed from the complete day and a recompute from what is left would replace them with partial ones.';
COMMENT ON TABLE metricagg.load_claims IS
'Bulk loads in progress (metricagg.claim_load): a (server, time range) claimed by one loader cannot be claimed by another until it is released or its session ends.';

-- The identifier rule for server and metric names (the API's too).
CREATE OR REPLACE FUNCTION metricagg.valid_name(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog AS $$
    SELECT name ~ '^[A-Za-z0-9._-]{1,128}$'
$$;

-- Every insert statement: validate what arrived (per server and metric, not
-- per row: the transition table is grouped once) and record per server the
-- time range it touched. An ERROR here undoes the whole statement.
CREATE OR REPLACE FUNCTION metricagg.log_sample_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
DECLARE
    lo_bound   timestamptz;
    hi_bound   timestamptz;
    servers    text[];
    los        timestamptz[];
    his        timestamptz[];
    counts     bigint[];
    bad_name   boolean;
    bad_time   boolean;
    hit_ids    text[];
    hit_days   tstzmultirange[];
    r          record;
BEGIN
    SELECT c.min_ts, now() + c.future_margin INTO lo_bound, hi_bound FROM metricagg.ingest_config c;
    -- Only local queries read the transition table; the log is written from
    -- arrays. On Citus (sql/citus/raw.sql) this runs on each shard, where
    -- change_log and retired are Citus tables, and a Citus statement cannot
    -- read a transition table.
    SELECT array_agg(server_id), array_agg(lo), array_agg(hi), array_agg(n),
           bool_or(NOT names_ok), bool_or(lo < lo_bound OR hi >= hi_bound)
      INTO servers, los, his, counts, bad_name, bad_time
      FROM (SELECT server_id, min(lo) AS lo, max(hi) AS hi, sum(n)::bigint AS n,
                   bool_and(metricagg.valid_name(metric_type)) AND metricagg.valid_name(server_id) AS names_ok
            FROM (SELECT server_id, metric_type, min(ts) AS lo, max(ts) AS hi, count(*) AS n
                  FROM new_rows GROUP BY server_id, metric_type) g
            GROUP BY server_id) s;
    INSERT INTO metricagg.change_log (server_id, min_ts, max_ts, row_count)
    SELECT * FROM unnest(servers, los, his, counts);
    IF bad_name THEN
        SELECT * INTO r FROM new_rows n
        WHERE NOT (metricagg.valid_name(n.server_id) AND metricagg.valid_name(n.metric_type)) LIMIT 1;
        RAISE EXCEPTION 'metricagg.samples: (server_id %, metric_type %) is not a valid pair of names (row ts %, value %)',
                        quote_literal(r.server_id), quote_literal(r.metric_type), r.ts, r.value
            USING ERRCODE = 'check_violation',
                  DETAIL = 'Server and metric names are 1 to 128 characters of A-Z, a-z, 0-9, ".", "_" and "-".',
                  HINT = 'Server and metric names are 1 to 128 characters of A-Z, a-z, 0-9, ".", "_" and "-".';
    END IF;
    IF bad_time THEN
        SELECT * INTO r FROM new_rows n WHERE NOT (n.ts >= lo_bound AND n.ts < hi_bound) LIMIT 1;
        RAISE EXCEPTION 'metricagg.samples: ts % of (server_id %, metric_type %, value %) is outside the accepted window [%, now() + %)',
                        r.ts, quote_literal(r.server_id), quote_literal(r.metric_type), r.value, lo_bound,
                        (SELECT future_margin FROM metricagg.ingest_config)
            USING ERRCODE = 'check_violation',
                  DETAIL = 'The window is metricagg.ingest_config (min_ts, now() + future_margin).',
                  HINT = 'Check the sending agent''s clock. The window is metricagg.ingest_config (min_ts, now() + future_margin).';
    END IF;
    SELECT array_agg(t.server_id), array_agg(t.days) INTO hit_ids, hit_days
      FROM metricagg.retired t, unnest(servers, los, his) s(server_id, lo, hi)
     WHERE t.server_id = s.server_id AND t.days && tstzrange(s.lo, s.hi, '[]');
    IF hit_ids IS NOT NULL THEN
        SELECT n.* INTO r FROM new_rows n JOIN unnest(hit_ids, hit_days) t(server_id, days) USING (server_id)
        WHERE t.days @> n.ts LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'metricagg.samples: ts % of (server_id %, metric_type %) falls in a day whose raw samples retention already dropped',
                            r.ts, quote_literal(r.server_id), quote_literal(r.metric_type)
                USING ERRCODE = 'check_violation',
                      DETAIL = 'Its bins were computed from the complete day; recomputing them from this sample alone would lose data.',
                      HINT = 'Its bins were computed from the complete day; recomputing them from this sample alone would lose data. See metricagg.retired.';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS samples_log_changes ON metricagg.samples;
CREATE TRIGGER samples_log_changes
    AFTER INSERT ON metricagg.samples
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION metricagg.log_sample_changes();

-- The snapshot horizon of every node that writes change-log entries, read by
-- the job through postgres_fdw in the same remote transaction as the log and
-- the samples. One server: one node, 0. (sql/citus/ replaces this view with
-- one row per worker.)
-- Version 1's view had the horizon alone: CREATE OR REPLACE VIEW cannot put
-- a column before it, so that view is dropped first.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('metricagg.snapshot_horizon')
                                            AND attnum = 1 AND attname = 'horizon') THEN
        DROP VIEW metricagg.snapshot_horizon;
    END IF;
END
$$;
CREATE OR REPLACE VIEW metricagg.snapshot_horizon AS
    SELECT 0 AS node, pg_snapshot_xmin(pg_current_snapshot()) AS horizon;

-- Creates the day partitions covering [from_ts, to_ts) that lie in the
-- ingest window (up to a week past its end, for partitions ahead of time)
-- and moves any rows the default partition holds for those days into them.
CREATE OR REPLACE FUNCTION metricagg.ensure_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
DECLARE
    lo_bound timestamptz;
    hi_bound timestamptz;
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
    SELECT c.min_ts, now() + c.future_margin + interval '7 days' INTO lo_bound, hi_bound
      FROM metricagg.ingest_config c;
    IF to_ts <= lo_bound OR from_ts >= hi_bound THEN
        RAISE EXCEPTION 'ensure_partitions: range % to % lies outside the ingest window [%, %)', from_ts, to_ts, lo_bound, hi_bound
            USING HINT = 'Samples outside metricagg.ingest_config''s window are refused, so they need no partition.';
    END IF;
    day := metricagg_bin(greatest(from_ts, lo_bound), interval '1 day');
    WHILE day < least(to_ts, hi_bound) LOOP
        name := 'samples_' || to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD');
        IF to_regclass('metricagg.' || name) IS NULL THEN
            -- Serialize concurrent creators of partitions. A relation lock
            -- (unlike an advisory lock) also makes this session see the
            -- catalog as the previous holder committed it, so the check
            -- below finds a partition created meanwhile. Inserts (ROW
            -- EXCLUSIVE) are not blocked by it.
            LOCK TABLE metricagg.samples IN SHARE UPDATE EXCLUSIVE MODE;
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
'Creates the day partitions of metricagg.samples covering [from_ts, to_ts) within the ingest window (and up to a week past it), moving rows out of the default partition. Safe to call concurrently. Returns the number created.';

-- Rows present in [from_ts, to_ts) for the given servers: lets the ingest
-- role check for overlaps without SELECT on the samples. (PL/pgSQL: Citus
-- cannot plan a SQL function's parameters.)
CREATE OR REPLACE FUNCTION metricagg.count_samples(from_ts timestamptz, to_ts timestamptz, server_ids text[])
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
BEGIN
    RETURN (SELECT count(*) FROM metricagg.samples
            WHERE ts >= from_ts AND ts < to_ts AND server_id = ANY (server_ids));
END
$$;
COMMENT ON FUNCTION metricagg.count_samples(timestamptz, timestamptz, text[]) IS
'Number of samples in [from_ts, to_ts) for the given servers (for overlap checks by the ingest role).';

-- A bulk load claims its servers and range before it loads: atomically (under
-- a lock on the claims) no other live claim may overlap, no sample may exist
-- there yet and no day of it may be retired. The claim lives until
-- release_load() or until the claiming session ends (a crashed loader's
-- claim is ignored and removed). Callers need no separate overlap check.
CREATE OR REPLACE FUNCTION metricagg.claim_load(server_ids text[], from_ts timestamptz, to_ts timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
DECLARE
    other   metricagg.load_claims;
    retired_hit record;
    n       bigint;
    span    tstzrange;
BEGIN
    IF server_ids IS NULL OR cardinality(server_ids) = 0 OR from_ts IS NULL OR to_ts IS NULL OR NOT from_ts < to_ts THEN
        RAISE EXCEPTION 'claim_load: need servers and a non-empty range, got % [%, %)', server_ids, from_ts, to_ts
            USING HINT = 'e.g. claim_load(ARRAY[''srv-1''], ''2025-11-15'', ''2025-11-16'')';
    END IF;
    span := tstzrange(from_ts, to_ts);
    LOCK TABLE metricagg.load_claims IN SHARE ROW EXCLUSIVE MODE;
    -- Claims of sessions that are gone: nobody holds their advisory lock.
    DELETE FROM metricagg.load_claims c
    WHERE c.pid <> pg_backend_pid()
      AND pg_try_advisory_lock(hashtext('metricagg.load_claims'), (c.id % 2147483647)::integer)
      AND pg_advisory_unlock(hashtext('metricagg.load_claims'), (c.id % 2147483647)::integer);
    SELECT * INTO other FROM metricagg.load_claims c
    WHERE c.server_id = ANY (server_ids) AND c.during && span ORDER BY c.id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'claim_load: another load (session %, since %) is loading % over %',
                        other.pid, other.claimed_at, other.server_id, other.during
            USING ERRCODE = 'lock_not_available',
                  HINT = 'Wait for it to finish, or load other servers or another range.';
    END IF;
    SELECT t.server_id, t.days * tstzmultirange(span) AS days INTO retired_hit
      FROM metricagg.retired t WHERE t.server_id = ANY (server_ids) AND t.days && span LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'claim_load: raw samples of % for % were dropped by retention', retired_hit.server_id, retired_hit.days
            USING ERRCODE = 'check_violation',
                  HINT = 'Those days'' bins are complete; loading them again would replace them. See metricagg.retired.';
    END IF;
    n := metricagg.count_samples(from_ts, to_ts, server_ids);
    IF n > 0 THEN
        RAISE EXCEPTION 'claim_load: % samples of these servers already exist in [%, %)', n, from_ts, to_ts
            USING ERRCODE = 'unique_violation',
                  HINT = 'Load another range or other servers, or remove those samples first.';
    END IF;
    -- The session keeps each claim's advisory lock until release_load() or its end.
    WITH c AS (INSERT INTO metricagg.load_claims (server_id, during)
               SELECT s, span FROM unnest(server_ids) s RETURNING id)
    SELECT count(*) INTO n
    FROM c, LATERAL (SELECT pg_advisory_lock(hashtext('metricagg.load_claims'), (c.id % 2147483647)::integer)) l;
END
$$;
COMMENT ON FUNCTION metricagg.claim_load(text[], timestamptz, timestamptz) IS
'Claims (servers, [from_ts, to_ts)) for a bulk load: fails if another live load overlaps, samples already exist there or retention dropped some of those days. Released by metricagg.release_load() or when the session ends. Commit it before loading.';

CREATE OR REPLACE FUNCTION metricagg.release_load() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
    WITH gone AS (DELETE FROM metricagg.load_claims WHERE pid = pg_backend_pid() RETURNING id)
    SELECT count(pg_advisory_unlock(hashtext('metricagg.load_claims'), (id % 2147483647)::integer)) FROM gone
$$;
COMMENT ON FUNCTION metricagg.release_load() IS 'Releases every load claim of this session. Returns how many.';

-- The servers that have samples in a partition of samples: a loose scan of
-- the (server_id, ts) index, one probe per server instead of one row per
-- sample. (sql/citus/raw.sql replaces it: Citus cannot run a recursive query
-- over a distributed table.)
CREATE OR REPLACE FUNCTION metricagg.partition_servers(part regclass) RETURNS SETOF text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        WITH RECURSIVE s(id) AS (
            SELECT min(server_id) FROM %1$s
            UNION ALL
            SELECT (SELECT min(server_id) FROM %1$s WHERE server_id > s.id) FROM s WHERE s.id IS NOT NULL)
        SELECT id FROM s WHERE id IS NOT NULL$q$, part);
END
$$;

-- Retention's lock on a partition it may drop: every writer still inserting
-- into it holds a conflicting lock until it commits. (sql/citus/raw.sql
-- replaces it: through a Citus coordinator a COPY locks only the parent.)
CREATE OR REPLACE FUNCTION metricagg.lock_for_retention(part regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
BEGIN
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', part);
END
$$;

-- Drops day partitions that end before now() - max_age, unless a change the
-- job has not pruned yet touches them, and records per server the days it
-- dropped (metricagg.retired).
CREATE OR REPLACE FUNCTION metricagg.drop_old_partitions(max_age interval DEFAULT '7 days')
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
DECLARE
    part      record;
    pending   timestamptz;
    upper_ts  timestamptz;
    lower_ts  timestamptz;
    dropped   text;
BEGIN
    IF max_age IS NULL OR max_age <= interval '0' THEN
        RAISE EXCEPTION 'drop_old_partitions: max_age must be positive' USING HINT = 'e.g. interval ''7 days''';
    END IF;
    SELECT pending_from INTO pending FROM metricagg.job_progress;
    FOR part IN
        SELECT c.oid::regclass AS rel, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'metricagg.samples'::regclass
          AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
        ORDER BY 1
    LOOP
        lower_ts := substring(part.bound FROM 'FROM \(''([^'']+)''\)')::timestamptz;
        upper_ts := substring(part.bound FROM 'TO \(''([^'']+)''\)')::timestamptz;
        CONTINUE WHEN upper_ts > now() - max_age;
        -- Coarser bins the job has parked until they close still need it.
        CONTINUE WHEN pending IS NOT NULL AND upper_ts > pending;
        -- Lock first: a writer still inserting into this partition holds a
        -- conflicting lock until it commits, and its change-log row is only
        -- visible after that. Then never drop what the job has not
        -- aggregated: it prunes the log only below what it has committed.
        PERFORM metricagg.lock_for_retention(part.rel);
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM metricagg.change_log l
            WHERE l.max_ts >= lower_ts AND l.min_ts < upper_ts);
        INSERT INTO metricagg.retired AS t (server_id, days)
        SELECT id, tstzmultirange(tstzrange(lower_ts, upper_ts)) FROM metricagg.partition_servers(part.rel) id
        ON CONFLICT (server_id) DO UPDATE SET days = t.days + EXCLUDED.days;
        dropped := part.rel::text;   -- its name, while it still has one
        EXECUTE format('DROP TABLE %s', part.rel);
        RETURN NEXT dropped;
    END LOOP;
END
$$;
COMMENT ON FUNCTION metricagg.drop_old_partitions(interval) IS
'Retention: drops day partitions of metricagg.samples older than max_age whose changes the analytics job has processed, recording each server''s dropped days in metricagg.retired. Returns the dropped partitions.';

RESET ROLE;

-- Grants: ingest writes, the job reads and prunes, nobody else.
REVOKE ALL ON ALL TABLES IN SCHEMA metricagg FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA metricagg FROM PUBLIC;
GRANT USAGE ON SCHEMA metricagg TO metricagg_ingest, metricagg_job;
GRANT INSERT ON metricagg.samples, metricagg.anomaly_labels TO metricagg_ingest;
GRANT EXECUTE ON FUNCTION metricagg.ensure_partitions(timestamptz, timestamptz),
                          metricagg.count_samples(timestamptz, timestamptz, text[]) TO metricagg_ingest, metricagg_job;
GRANT EXECUTE ON FUNCTION metricagg.claim_load(text[], timestamptz, timestamptz),
                          metricagg.release_load() TO metricagg_ingest;
GRANT EXECUTE ON FUNCTION metricagg.valid_name(text) TO metricagg_ingest, metricagg_job;
GRANT SELECT ON metricagg.samples, metricagg.change_log, metricagg.snapshot_horizon,
                metricagg.anomaly_labels, metricagg.retired, metricagg.ingest_config TO metricagg_job;
GRANT SELECT ON metricagg.ingest_config, metricagg.retired, metricagg.schema_version TO metricagg_ingest;
GRANT DELETE ON metricagg.change_log TO metricagg_job;
GRANT EXECUTE ON FUNCTION metricagg.drop_old_partitions(interval) TO metricagg_job;
GRANT SELECT, UPDATE ON metricagg.job_progress TO metricagg_job;
-- pg_metricagg keeps its packed-format functions from PUBLIC; the job runs
-- the packed aggregate here, through postgres_fdw.
GRANT EXECUTE ON FUNCTION public.metricagg_stats_by_bin_packed(timestamptz, double precision, interval),
                          public.metricagg_stats_by_bin_packed(timestamptz, double precision, interval, timestamptz)
    TO metricagg_job;
GRANT SELECT ON metricagg.schema_version TO metricagg_job;

-- The job's session settings in this database (re-running this file resets
-- them; change them here to tune):
-- * postgres_fdw runs every query as a cursor, and a cursor is planned for
--   its first 10% of rows by default: a plan that walks the (server_id, ts)
--   index in order over a whole day to avoid a sort. The job reads all rows.
-- * The job's aggregation is one hash aggregate over (server, metric, span of
--   60 bins) that holds the span's values until the end of its input; the
--   planner cannot estimate those groups and plans for spilling, so give it
--   256 MB of hash memory (work_mem × hash_mem_multiplier) before it spills.
-- * It assumes a tenth of the rows are groups, and for a few servers' late
--   rows (hundreds of thousands of rows, a few hundred groups) then sorts the
--   input by its text keys instead: enable_sort = off keeps the hash
--   aggregate, faster at every size measured (600,000 late rows: 1.65 s
--   against 2.84 s), and it spills to disk rather than exceed that memory.
--   Nothing else the job runs here sorts.
DO $do$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO metricagg_ingest, metricagg_job', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO metricagg_owner', current_database());
    EXECUTE format('ALTER ROLE metricagg_job IN DATABASE %I SET cursor_tuple_fraction = 1', current_database());
    EXECUTE format('ALTER ROLE metricagg_job IN DATABASE %I SET work_mem = %L', current_database(), '64MB');
    EXECUTE format('ALTER ROLE metricagg_job IN DATABASE %I SET hash_mem_multiplier = 4', current_database());
    EXECUTE format('ALTER ROLE metricagg_job IN DATABASE %I SET enable_sort = off', current_database());
END
$do$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
