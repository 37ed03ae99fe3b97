-- analytics schema: functions, views, triggers, comments and grants.
-- Re-applied on every install (after the migrations), so everything here is
-- CREATE OR REPLACE or otherwise idempotent. Tables live in the migrations.
SET search_path = metricagg, public;
SET ROLE metricagg_job;

COMMENT ON TABLE metricagg.bins IS
'Aggregated metrics: count, avg, min, max and exact p80 per (server_id, metric_type, width, ts), ts being the UTC bin start. Written only by metricagg_run_once(). A TimescaleDB hypertable or native monthly range partitions: metricagg.bins_storage() says which.';
COMMENT ON TABLE metricagg.job_config IS
'metricagg_run_once() settings: source (fdw: raw database through postgres_fdw; local: metricagg.samples of this database), bin widths, defer_open_bins and close_grace (coarser bins once closed), bins retention, and on TimescaleDB the age after which bins chunks are compressed.';
COMMENT ON TABLE metricagg.job_state IS 'When the job last ran, and up to where coarser bins were closed.';
COMMENT ON TABLE metricagg.job_watermarks IS
'Per raw node: every change-log entry whose transaction id is below done_below has been aggregated. Committed with the bins.';
COMMENT ON TABLE metricagg.pending_bins IS
'Ranges of coarser-width bins touched by processed changes but still open: recomputed once closed. Committed with the bins.';
COMMENT ON TABLE metricagg.job_runs IS
'History of metricagg_run_once(): one row per run that consumed changes, wrote bins or quarantined entries.';
COMMENT ON TABLE metricagg.quarantine IS
'Change-log entries the job set aside because it could not process them, with the reason; the run goes on for everyone else. metricagg.release_quarantine() hands them back to the next run.';
COMMENT ON TABLE metricagg.bins_version IS
'Bumped by every statement that inserts, updates, deletes or truncates metricagg.bins, and when retention drops bins: a cache of bins is current while this version is unchanged.';

-- '1 minute', '5 minutes', '1 hour', '1 day', '3 months': for summaries.
CREATE OR REPLACE FUNCTION metricagg.interval_label(w interval) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog AS $$
DECLARE
    months integer := (extract(year FROM w) * 12 + extract(month FROM w))::integer;
    secs   numeric := extract(epoch FROM w - make_interval(months => months));
    n      numeric;
    unit   text;
BEGIN
    IF months <> 0 AND secs = 0 THEN
        n := months; unit := 'month';
    ELSIF months <> 0 THEN
        RETURN w::text;
    ELSIF secs % 86400 = 0 THEN
        n := secs / 86400; unit := 'day';
    ELSIF secs % 3600 = 0 THEN
        n := secs / 3600; unit := 'hour';
    ELSIF secs % 60 = 0 THEN
        n := secs / 60; unit := 'minute';
    ELSE
        n := secs; unit := 'second';
    END IF;
    RETURN trim_scale(n) || ' ' || unit || CASE WHEN n = 1 THEN '' ELSE 's' END;
END
$$;

-- How bins are stored: 'timescaledb' (a hypertable) or 'native' (partitions).
CREATE OR REPLACE FUNCTION metricagg.bins_engine() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE relkind WHEN 'p' THEN 'native' ELSE 'timescaledb' END
    FROM pg_class WHERE oid = 'metricagg.bins'::regclass
$$;
COMMENT ON FUNCTION metricagg.bins_engine() IS
'How metricagg.bins is stored: timescaledb (a hypertable) or native (monthly range partitions).';

-- The same, for people: engine, version, chunking, policies.
CREATE OR REPLACE FUNCTION metricagg.bins_storage() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    chunk  interval;
    after  interval := (SELECT bins_compress_after FROM metricagg.job_config);
    keep   interval := (SELECT bins_retention FROM metricagg.job_config);
BEGIN
    IF metricagg.bins_engine() = 'native' THEN
        RETURN format('native: monthly range partitions (PostgreSQL %s), retention %s',
                      current_setting('server_version'), keep);
    END IF;
    SELECT time_interval INTO chunk FROM timescaledb_information.dimensions
    WHERE hypertable_schema = 'metricagg' AND hypertable_name = 'bins';
    RETURN format('timescaledb: hypertable (TimescaleDB %s), %s chunks, compressed after %s, retention %s',
                  (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), chunk, after, keep);
END
$$;
COMMENT ON FUNCTION metricagg.bins_storage() IS
'A description of how metricagg.bins is stored (engine, chunking, compression, retention).';

-- The job's aggregation of raw samples into bins, as queries. Through
-- postgres_fdw they run entirely on the raw server: per (server, metric, and
-- a coarser span of bins, so that one group's state stays small)
-- metricagg_stats_by_bin_packed returns all the group's bins as one bytea. A
-- few thousand rows cross the connection instead of one text row per bin
-- (whose timestamp and composite parsing cost more than the insert), and
-- metricagg_unpack_stats turns them back into bins locally.
--
-- One pass over raw serves several widths when they nest (fixed lengths,
-- each dividing the coarsest: 1 minute and 1 hour): the group's span is a
-- multiple of every width from the same origin, so no bin straddles two
-- groups, and each width's aggregate takes only the rows of its own work
-- (FILTER): raw rows are read once, not once per width. Calendar widths
-- (months) get a pass of their own. pass_span is NULL when the widths cannot
-- share a pass.
CREATE OR REPLACE FUNCTION metricagg.pass_span(widths interval[]) RETURNS interval
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog AS $$
DECLARE
    w        interval := widths[1];
    calendar boolean;
    coarsest numeric;
    finest   numeric;
BEGIN
    SELECT bool_or(extract(month FROM x) <> 0 OR extract(year FROM x) <> 0),
           max(extract(epoch FROM x)), min(extract(epoch FROM x))
      INTO calendar, coarsest, finest FROM unnest(widths) x;
    IF cardinality(widths) = 1 THEN
        RETURN CASE WHEN calendar THEN w * 12 ELSE w * 60 END;
    ELSIF calendar OR finest <= 0
          OR EXISTS (SELECT 1 FROM unnest(widths) x WHERE coarsest % extract(epoch FROM x) <> 0) THEN
        RETURN NULL;
    END IF;
    -- At least 60 of the finest bins per group, a whole number of the coarsest.
    RETURN make_interval(secs => coarsest * ceil(60 * finest / coarsest));
END
$$;
COMMENT ON FUNCTION metricagg.pass_span(interval[]) IS
'The span of the groups in which one pass over raw samples computes bins of all these widths (a multiple of each), or NULL when they cannot share a pass (calendar widths, or widths that do not divide the coarsest).';

-- The grouped part, shipped whole to where the samples are: one row per
-- group with the raw rows it read and packed_1 .. packed_n, the bins of each
-- width (NULL when none of the group's rows is in that width's predicate).
CREATE OR REPLACE FUNCTION metricagg.bins_groups_query(widths interval[], source text, predicates text[])
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
DECLARE
    span interval := metricagg.pass_span(widths);
BEGIN
    IF cardinality(widths) IS DISTINCT FROM cardinality(predicates) OR span IS NULL THEN
        RAISE EXCEPTION 'bins_groups_query: widths % cannot share one pass over raw samples', widths
            USING HINT = 'Give one predicate per width, and widths of fixed length that each divide the coarsest (metricagg.pass_span).';
    END IF;
    RETURN format($q$
        SELECT server_id, metric_type, count(*) AS raw_rows, %1$s
        FROM %2$s WHERE %3$s
        GROUP BY server_id, metric_type, metricagg_bin(ts, %4$L::interval)$q$,
        (SELECT string_agg(format('metricagg_stats_by_bin_packed(ts, value, %L::interval)%s AS packed_%s',
                                  w, CASE WHEN cardinality(widths) > 1 THEN format(' FILTER (WHERE %s)', p) ELSE '' END, i),
                           ', ' ORDER BY i)
           FROM unnest(widths, predicates) WITH ORDINALITY u(w, p, i)),
        source,
        (SELECT string_agg(format('(%s)', p), ' OR ') FROM unnest(predicates) p),
        span);
END
$$;
COMMENT ON FUNCTION metricagg.bins_groups_query(interval[], text, text[]) IS
'The grouped, pushed-down part of metricagg.bins_query: per (server, metric, span) the raw rows read and one packed value of bins per width.';

-- The bins, one row each, from a relation g holding the rows of
-- bins_groups_query for these widths.
CREATE OR REPLACE FUNCTION metricagg.bins_unpack_query(widths interval[], g text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog AS $$
    SELECT format($q$
        SELECT g.server_id, g.metric_type, x.width, u.ts, u.count, u.avg, u.min, u.max, u.p80
        FROM %1$s g CROSS JOIN LATERAL (VALUES %2$s) x(width, packed)
        CROSS JOIN LATERAL metricagg_unpack_stats(x.packed) u$q$,
        g, (SELECT string_agg(format('(%L::interval, g.packed_%s)', w, i), ', ' ORDER BY i)
              FROM unnest(widths) WITH ORDINALITY u(w, i)))
$$;

CREATE OR REPLACE FUNCTION metricagg.bins_query(widths interval[], source text, predicates text[]) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
    SELECT metricagg.bins_unpack_query(widths, format('(%s)', metricagg.bins_groups_query(widths, source, predicates)))
$$;
COMMENT ON FUNCTION metricagg.bins_query(interval[], text, text[]) IS
'The SELECT that metricagg_run_once() inserts into bins for these widths from source (a table or foreign table of raw samples), each width WHERE its predicate, in one pass over the samples: the aggregation runs where the samples are, and each (server, metric, span) comes back as one packed value per width. Returns (server_id, metric_type, width, ts, count, avg, min, max, p80).';

CREATE OR REPLACE FUNCTION metricagg.bins_query(w interval, source text, predicate text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
    SELECT metricagg.bins_query(ARRAY[w], source, ARRAY[predicate])
$$;
COMMENT ON FUNCTION metricagg.bins_query(interval, text, text) IS
'metricagg.bins_query for one width w: each (server, metric, 60 bins; 12 for calendar widths) comes back as one packed value.';

-- Native partitions of bins: one per month, created only for months that
-- have bins. (A hypertable makes its own chunks.)
DROP FUNCTION IF EXISTS metricagg.ensure_bin_partitions(timestamptz, timestamptz);
CREATE OR REPLACE FUNCTION metricagg.ensure_bin_partition(month timestamptz) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
DECLARE
    m    timestamptz := metricagg_bin(month, interval '1 month');
    name text := 'bins_' || to_char(metricagg_bin(month, interval '1 month') AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF metricagg.bins_engine() <> 'native' OR to_regclass('metricagg.' || name) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Bins of that month that landed in the default partition move into it.
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.moving_bins (LIKE metricagg.bins) ON COMMIT DROP;
    WITH gone AS (DELETE FROM metricagg.bins_default
                  WHERE ts >= m AND ts < m + interval '1 month' RETURNING *)
    INSERT INTO pg_temp.moving_bins SELECT * FROM gone;
    EXECUTE format('CREATE TABLE metricagg.%I PARTITION OF metricagg.bins FOR VALUES FROM (%L) TO (%L)',
                   name, m, m + interval '1 month');
    INSERT INTO metricagg.bins SELECT * FROM pg_temp.moving_bins;
    TRUNCATE pg_temp.moving_bins;
    RETURN true;
END
$$;
COMMENT ON FUNCTION metricagg.ensure_bin_partition(timestamptz) IS
'Creates the monthly partition of metricagg.bins holding month (native storage), moving that month''s bins out of the default partition. Returns whether it created one.';

-- One pass over raw samples writing the bins of these widths, each for the
-- ranges in its predicate: the bins are upserted (inserted when fresh: no
-- stored bin in any of the ranges). Counts go to pg_temp.metricagg_written,
-- the raw rows read to pg_temp.metricagg_read. Called by job_apply only.
-- enable_sort = off: the planner cannot estimate the groups (it assumes a
-- tenth of the rows) and then prefers sorting the input by its two text keys
-- to a hash aggregate; the hash aggregate is the faster plan at every size
-- measured (600,000 late rows: 1.65 s against 2.84 s, most of it the sort)
-- and spills to disk within work_mem × hash_mem_multiplier. Local mode only:
-- through postgres_fdw the raw database plans it (sql/raw/functions.sql).
CREATE OR REPLACE FUNCTION metricagg.job_write(widths interval[], predicates text[], fresh boolean, src_samples text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp SET enable_sort = off AS $$
BEGIN
    -- The groups are materialized once: the insert reads the bins from them,
    -- and the count of raw rows read comes from them too.
    EXECUTE format($q$
        WITH g AS MATERIALIZED (%1$s),
        ins AS (
            INSERT INTO metricagg.bins AS b (server_id, metric_type, width, ts, count, avg, min, max, p80)
            %2$s
            %3$s
            RETURNING b.width, b.count),
        written AS (
            INSERT INTO pg_temp.metricagg_written SELECT width, count(*), sum(count) FROM ins GROUP BY width)
        INSERT INTO pg_temp.metricagg_read SELECT coalesce(sum(raw_rows), 0) FROM g$q$,
        metricagg.bins_groups_query(widths, src_samples, predicates),
        metricagg.bins_unpack_query(widths, 'g'),
        CASE WHEN fresh THEN '' ELSE
            'ON CONFLICT (server_id, metric_type, width, ts) DO UPDATE
                SET count = EXCLUDED.count, avg = EXCLUDED.avg, min = EXCLUDED.min,
                    max = EXCLUDED.max, p80 = EXCLUDED.p80' END);
END
$$;

-- The bins for the work the run took on (pg_temp.metricagg_entries), or for
-- one server's share of it: per width the ranges widened to whole bins,
-- coarser ones parked until closed; then recomputed from raw (job_write).
-- Called by metricagg_run_once() only.
CREATE OR REPLACE FUNCTION metricagg.job_apply(cfg metricagg.job_config, src_samples text,
                                               v_closed_before timestamptz, only_server text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
DECLARE
    finest    interval := (SELECT min(x) FROM unnest(cfg.widths) x);
    w         interval;
    cutoff    timestamptz;
    pred      text;
    range_lo  timestamptz;
    range_hi  timestamptz;
    n_logged  bigint;
    fresh     boolean;
    pass_widths interval[] := '{}';
    pass_preds  text[] := '{}';
    pass_fresh  boolean[] := '{}';
BEGIN
    SELECT coalesce(sum(row_count), 0) INTO n_logged FROM pg_temp.metricagg_entries
    WHERE only_server IS NULL OR server_id = only_server;
    -- Native partitions for the months the work certainly has bins in (the
    -- first and last sample of each entry); bins of any month in between
    -- land in the default partition and are placed afterwards, so a
    -- partition exists only for a month that has bins.
    PERFORM metricagg.ensure_bin_partition(m)
    FROM (SELECT DISTINCT metricagg_bin(t, interval '1 month') AS m
          FROM pg_temp.metricagg_entries, LATERAL (VALUES (min_ts), (max_ts)) v(t)
          WHERE only_server IS NULL OR server_id = only_server) months
    WHERE metricagg.bins_engine() = 'native';

    FOREACH w IN ARRAY cfg.widths LOOP
        TRUNCATE pg_temp.metricagg_work;
        -- Every entry's range widened to whole bins of this width.
        INSERT INTO pg_temp.metricagg_work
        SELECT server_id, metricagg_bin(min_ts, w), metricagg_bin(max_ts, w) + w
        FROM pg_temp.metricagg_entries WHERE only_server IS NULL OR server_id = only_server;
        IF cfg.defer_open_bins AND w <> finest THEN
            -- Park the ranges, then take out whatever has closed.
            INSERT INTO metricagg.pending_bins (width, server_id, lo, hi)
            SELECT w, server_id, lo, hi FROM pg_temp.metricagg_work;
            TRUNCATE pg_temp.metricagg_work;
            cutoff := metricagg_bin(v_closed_before, w);
            WITH closed AS (
                DELETE FROM metricagg.pending_bins
                WHERE width = w AND lo < cutoff AND (only_server IS NULL OR server_id = only_server)
                RETURNING server_id, lo, hi),
            kept AS (
                INSERT INTO metricagg.pending_bins (width, server_id, lo, hi)
                SELECT w, server_id, cutoff, hi FROM closed WHERE hi > cutoff)
            INSERT INTO pg_temp.metricagg_work SELECT server_id, lo, least(hi, cutoff) FROM closed;
            -- Keep the parked ranges merged.
            WITH old AS (DELETE FROM metricagg.pending_bins
                         WHERE width = w AND (only_server IS NULL OR server_id = only_server)
                         RETURNING server_id, lo, hi)
            INSERT INTO metricagg.pending_bins (width, server_id, lo, hi)
            SELECT w, server_id, lower(r), upper(r)
            FROM (SELECT server_id, unnest(range_agg(tstzrange(lo, hi))) AS r FROM old GROUP BY server_id) m;
        END IF;
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_temp.metricagg_work);

        -- One predicate per distinct merged range, with the servers it
        -- covers (all servers when it covers many: recomputing a bin is
        -- idempotent, and a long IN list costs more per row than it saves).
        -- It ships to the raw server inside the Remote SQL. Ranges of all
        -- servers come first: OR stops at the first true term, so most rows
        -- never compare their server with a list (a full run of 10M rows
        -- with 5 servers listed first spent ~1.3 s in those comparisons).
        SELECT string_agg(CASE WHEN cardinality(servers) > 16
                               THEN format('(ts >= %L AND ts < %L)', lo, hi)
                               ELSE format('(ts >= %L AND ts < %L AND server_id = ANY (%L::text[]))', lo, hi, servers)
                          END, ' OR ' ORDER BY cardinality(servers) > 16 DESC, hi - lo DESC, lo),
               min(lo), max(hi)
          INTO pred, range_lo, range_hi
          FROM (SELECT lower(rng) AS lo, upper(rng) AS hi, array_agg(server_id ORDER BY server_id) AS servers
                FROM (SELECT server_id, unnest(range_agg(tstzrange(lo, hi))) AS rng
                      FROM pg_temp.metricagg_work GROUP BY server_id) r
                GROUP BY 1, 2) g;
        -- No stored bin of this width anywhere in the range (a first run, a
        -- backfill): a plain INSERT, without a conflict check per bin. Only
        -- this job writes bins, under the advisory lock, so none can appear.
        -- Worth checking only for big runs; small ones just upsert.
        fresh := n_logged >= 100000
                 AND NOT EXISTS (SELECT 1 FROM metricagg.bins
                                 WHERE width = w AND ts >= range_lo AND ts < range_hi);
        IF extract(month FROM w) <> 0 OR extract(year FROM w) <> 0 THEN
            -- A calendar width shares no pass.
            PERFORM metricagg.job_write(ARRAY[w], ARRAY[pred], fresh, src_samples);
        ELSE
            pass_widths := pass_widths || w;
            pass_preds := pass_preds || pred;
            pass_fresh := pass_fresh || fresh;
        END IF;
    END LOOP;

    -- One pass over raw for the fixed widths when they nest, else one each.
    IF cardinality(pass_widths) > 1 AND metricagg.pass_span(pass_widths) IS NOT NULL THEN
        PERFORM metricagg.job_write(pass_widths, pass_preds, true = ALL (pass_fresh), src_samples);
    ELSE
        FOR i IN 1 .. cardinality(pass_widths) LOOP
            PERFORM metricagg.job_write(ARRAY[pass_widths[i]], ARRAY[pass_preds[i]], pass_fresh[i], src_samples);
        END LOOP;
    END IF;

    IF metricagg.bins_engine() = 'native' THEN
        -- (Dynamic SQL: a hypertable has no default partition to name.)
        EXECUTE 'SELECT count(metricagg.ensure_bin_partition(m))
                 FROM (SELECT DISTINCT metricagg_bin(ts, interval ''1 month'') AS m FROM metricagg.bins_default) d';
    END IF;
END
$$;

-- The job. See docs/architecture.md for why this is exactly once.
-- work_mem and hash_mem_multiplier: the aggregation's hash memory in local
-- mode (the raw database sets the same for the job role, see sql/raw/functions.sql).
CREATE OR REPLACE FUNCTION metricagg.metricagg_run_once() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp
    SET work_mem = '64MB' SET hash_mem_multiplier = 4 AS $$
DECLARE
    cfg          metricagg.job_config;
    t0           timestamptz := clock_timestamp();
    fdw          boolean;
    src_samples  text;
    src_log      text;
    src_horizon  text;
    src_progress text;
    src_retired  text;
    pred         text;
    back         record;
    n            bigint;
    n_entries    bigint;
    n_quarantined bigint := 0;
    v_closed_before timestamptz;
    servers      text[];
    srv          text;
    failed       integer := 0;
    err_state    text;
    err_msg      text;
    total_rows   bigint;
    written      jsonb;
    marks        jsonb;
    parts        text;
BEGIN
    -- One run at a time; pg_cron queues rather than skips, so say so and leave.
    IF NOT pg_try_advisory_xact_lock(hashtext('metricagg_run_once'), 0) THEN
        RETURN 'metricagg_run_once: another run is active, nothing done';
    END IF;
    SELECT * INTO STRICT cfg FROM metricagg.job_config;
    PERFORM 1 FROM metricagg.job_state FOR UPDATE;
    fdw := cfg.source = 'fdw';
    src_samples  := CASE WHEN fdw THEN 'metricagg.raw_samples' ELSE 'metricagg.samples' END;
    src_log      := CASE WHEN fdw THEN 'metricagg.raw_change_log' ELSE 'metricagg.change_log' END;
    src_horizon  := CASE WHEN fdw THEN 'metricagg.raw_snapshot_horizon' ELSE 'metricagg.snapshot_horizon' END;
    src_progress := CASE WHEN fdw THEN 'metricagg.raw_job_progress' ELSE 'metricagg.job_progress' END;
    src_retired  := CASE WHEN fdw THEN 'metricagg.raw_retired' ELSE 'metricagg.retired' END;

    CREATE TEMP TABLE IF NOT EXISTS pg_temp.metricagg_horizons (
        node integer, done_below xid8, horizon xid8) ON COMMIT DROP;
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.metricagg_entries (
        node integer, xid xid8, server_id text, min_ts timestamptz, max_ts timestamptz, row_count bigint) ON COMMIT DROP;
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.metricagg_work (
        server_id text, lo timestamptz, hi timestamptz) ON COMMIT DROP;
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.metricagg_written (
        width interval, bins bigint, samples bigint) ON COMMIT DROP;
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.metricagg_read (raw_rows bigint) ON COMMIT DROP;
    TRUNCATE pg_temp.metricagg_horizons, pg_temp.metricagg_entries, pg_temp.metricagg_work,
             pg_temp.metricagg_written, pg_temp.metricagg_read;

    -- 1. Each raw node's snapshot horizon: every transaction of that node
    --    below it has finished, so its change-log entries below it can no
    --    longer change. Read first; the log and the samples are read after,
    --    and each later read sees at least as much. (Through postgres_fdw the
    --    remote transaction is REPEATABLE READ: one snapshot for the run.)
    EXECUTE format('INSERT INTO pg_temp.metricagg_horizons (node, done_below, horizon)
                    SELECT h.node, coalesce(w.done_below, ''0''), h.horizon
                    FROM %s h LEFT JOIN metricagg.job_watermarks w USING (node)', src_horizon);
    SELECT * INTO back FROM pg_temp.metricagg_horizons WHERE horizon < done_below LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'metricagg_run_once: the transaction ids of raw node % went backwards (horizon %, yet everything below % was aggregated)',
                        back.node, back.horizon, back.done_below
            USING HINT = 'The raw database was replaced or restored from a backup. Check that, then SELECT metricagg.reset_watermarks() lets the next run take every change-log entry there is.';
    END IF;

    -- 2. Prune the entries the previous, committed run consumed, and tell the
    --    raw side from where parked coarser bins still need raw rows. Only
    --    committed progress is written there: if this run fails after the
    --    remote commit, nothing not yet aggregated is lost.
    SELECT string_agg(format('(node = %s AND xid < %L)', node, done_below), ' OR ') INTO pred
      FROM metricagg.job_watermarks WHERE done_below > '0';
    IF pred IS NOT NULL THEN
        EXECUTE format('DELETE FROM %s WHERE %s', src_log, pred);
    END IF;
    EXECUTE format('UPDATE %s SET pending_from = $1, updated_at = now()', src_progress)
        USING (SELECT min(lo) FROM metricagg.pending_bins);

    -- 3. This run's work: per node, the entries in [done_below, horizon),
    --    and whatever an operator released from quarantine.
    SELECT string_agg(format('(node = %s AND xid >= %L AND xid < %L)', node, done_below, horizon), ' OR ') INTO pred
      FROM pg_temp.metricagg_horizons WHERE horizon > done_below;
    IF pred IS NOT NULL THEN
        EXECUTE format('INSERT INTO pg_temp.metricagg_entries
                        SELECT node, xid, server_id, min_ts, max_ts, row_count FROM %s WHERE %s', src_log, pred);
    END IF;
    SELECT count(*) INTO n_entries FROM pg_temp.metricagg_entries;
    WITH released AS (DELETE FROM metricagg.quarantine WHERE released_at IS NOT NULL
                      RETURNING node, xid, server_id, min_ts, max_ts, row_count)
    INSERT INTO pg_temp.metricagg_entries SELECT * FROM released;

    -- 4. Set aside what cannot be processed, with the reason: timestamps no
    --    bin can hold, and days whose raw rows retention dropped (their bins
    --    were complete; a recompute would replace them with partial ones).
    WITH bad AS (DELETE FROM pg_temp.metricagg_entries
                 WHERE NOT (min_ts >= '1900-01-01 00:00+00' AND max_ts < '10000-01-01 00:00+00')
                 RETURNING *)
    INSERT INTO metricagg.quarantine (node, xid, server_id, min_ts, max_ts, row_count, reason)
    SELECT node, xid, server_id, min_ts, max_ts, row_count,
           format('samples at %s .. %s: outside the times the pipeline can bin [1900-01-01, 10000-01-01)', min_ts, max_ts)
    FROM bad;
    GET DIAGNOSTICS n = ROW_COUNT;
    n_quarantined := n_quarantined + n;
    IF EXISTS (SELECT 1 FROM pg_temp.metricagg_entries) THEN
        EXECUTE format($q$
            WITH bad AS (DELETE FROM pg_temp.metricagg_entries e USING %s r
                         WHERE r.server_id = e.server_id AND r.days && tstzrange(e.min_ts, e.max_ts, '[]')
                         RETURNING e.*, r.days)
            INSERT INTO metricagg.quarantine (node, xid, server_id, min_ts, max_ts, row_count, reason)
            SELECT node, xid, server_id, min_ts, max_ts, row_count,
                   format('samples at %%s .. %%s touch %%s, whose raw samples retention already dropped: a recompute would replace complete bins with partial ones',
                          min_ts, max_ts, days)
            FROM bad$q$, src_retired);
        GET DIAGNOSTICS n = ROW_COUNT;
        n_quarantined := n_quarantined + n;
    END IF;

    -- 5. Recompute the bins. Should it fail on data (an error no check above
    --    foresaw), retry one server at a time, set aside the servers that
    --    still fail, and go on for everyone else. An error that is not about
    --    data (the raw server down, a timeout) fails the run: it changes
    --    nothing, and the next run starts again from the same watermarks.
    v_closed_before := now() - cfg.close_grace;
    BEGIN
        PERFORM metricagg.job_apply(cfg, src_samples, v_closed_before, NULL);
    EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_msg = MESSAGE_TEXT;
        SELECT array_agg(s ORDER BY s) INTO servers
          FROM (SELECT server_id FROM pg_temp.metricagg_entries
                UNION SELECT server_id FROM metricagg.pending_bins) x(s);
        FOREACH srv IN ARRAY coalesce(servers, '{}') LOOP
            BEGIN
                PERFORM metricagg.job_apply(cfg, src_samples, v_closed_before, srv);
            EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
                failed := failed + 1;
                WITH bad AS (DELETE FROM pg_temp.metricagg_entries WHERE server_id = srv RETURNING *),
                parked AS (DELETE FROM metricagg.pending_bins WHERE server_id = srv RETURNING *)
                INSERT INTO metricagg.quarantine (node, xid, server_id, min_ts, max_ts, row_count, reason)
                SELECT node, xid, server_id, min_ts, max_ts, row_count, 'recomputing its bins failed: ' || SQLERRM FROM bad
                UNION ALL
                SELECT -1, '0', server_id, lo, hi - interval '1 microsecond', 0,
                       format('parked %s bins: recomputing them failed: %s', metricagg.interval_label(width), SQLERRM)
                FROM parked;
                GET DIAGNOSTICS n = ROW_COUNT;
                n_quarantined := n_quarantined + n;
            END;
        END LOOP;
        IF failed = coalesce(cardinality(servers), 0) THEN
            RAISE EXCEPTION USING ERRCODE = err_state, MESSAGE = err_msg,
                HINT = 'The recompute failed for every server it was tried for: this is not one bad agent''s data.';
        END IF;
    END;

    -- 6. The new watermarks, committed with the bins.
    INSERT INTO metricagg.job_watermarks AS w (node, done_below)
    SELECT node, horizon FROM pg_temp.metricagg_horizons
    ON CONFLICT (node) DO UPDATE SET done_below = EXCLUDED.done_below;
    UPDATE metricagg.job_state SET last_run_at = t0, closed_before = v_closed_before;
    SELECT coalesce(sum(raw_rows), 0) INTO total_rows FROM pg_temp.metricagg_read;
    SELECT coalesce(jsonb_object_agg(metricagg.interval_label(x.width), x.bins), '{}') INTO written
      FROM (SELECT width, sum(bins) AS bins FROM pg_temp.metricagg_written GROUP BY width) x;
    SELECT coalesce(jsonb_object_agg(node::text, jsonb_build_object('from', done_below::text, 'to', horizon::text)), '{}')
      INTO marks FROM pg_temp.metricagg_horizons;
    IF n_entries > 0 OR written <> '{}' OR n_quarantined > 0 THEN
        INSERT INTO metricagg.job_runs (started_at, finished_at, from_xid, to_xid, entries, raw_rows,
                                        bins_written, duration_ms, watermarks, quarantined)
        SELECT t0, clock_timestamp(), h.done_below, h.horizon, n_entries, total_rows, written,
               extract(epoch FROM clock_timestamp() - t0) * 1000, marks, n_quarantined
        FROM (SELECT NULL) one LEFT JOIN pg_temp.metricagg_horizons h ON h.node = 0;
    END IF;
    SELECT string_agg(format('%s=%s', key, value), ', ' ORDER BY key::interval) INTO parts
      FROM jsonb_each_text(written);
    RETURN format('metricagg_run_once: %s change-log entries, %s raw rows read, bins written: %s%s, %s ms',
                  n_entries, total_rows, coalesce(parts, 'none'),
                  CASE WHEN n_quarantined > 0
                       THEN format(', %s quarantined (see metricagg.quarantine)', n_quarantined) ELSE '' END,
                  round((extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric, 1));
END
$$;
COMMENT ON FUNCTION metricagg.metricagg_run_once() IS
'Aggregates every raw change not yet processed into metricagg.bins, exactly once, and returns a summary. Entries it cannot process go to metricagg.quarantine. Concurrent calls return at once.';

-- Operator tools for the job's state.
CREATE OR REPLACE FUNCTION metricagg.release_quarantine(entry_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, metricagg, pg_temp AS $$
    WITH r AS (UPDATE metricagg.quarantine SET released_at = now()
               WHERE released_at IS NULL AND (entry_id IS NULL OR id = entry_id) RETURNING 1)
    SELECT count(*) FROM r
$$;
COMMENT ON FUNCTION metricagg.release_quarantine(bigint) IS
'Hands quarantined entries (one, or all when NULL) back to the next metricagg_run_once(), e.g. after the bad raw rows were deleted. Returns how many.';

CREATE OR REPLACE FUNCTION metricagg.reset_watermarks() RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, metricagg, pg_temp AS $$
    WITH r AS (DELETE FROM metricagg.job_watermarks RETURNING 1) SELECT count(*) FROM r
$$;
COMMENT ON FUNCTION metricagg.reset_watermarks() IS
'After the raw database was replaced or restored: forget the per-node watermarks, so the next run takes every change-log entry there is (recomputing is idempotent). Returns how many were reset.';

-- Bins of width w starting at or after this are not materialized yet
-- (coarser widths with defer_open_bins); 'infinity' otherwise.
CREATE OR REPLACE FUNCTION metricagg.open_bins_from(w interval) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
    SELECT CASE WHEN c.defer_open_bins AND w > (SELECT min(x) FROM unnest(c.widths) x)
                THEN coalesce(metricagg_bin(s.closed_before, w), '-infinity')
                ELSE 'infinity' END
    FROM metricagg.job_config c, metricagg.job_state s
$$;
COMMENT ON FUNCTION metricagg.open_bins_from(interval) IS
'Start of the first bin of width w that is still open (not materialized yet); infinity for widths materialized on every run.';

-- Oracle for tests and audits: all bins recomputed from raw, from scratch.
CREATE OR REPLACE FUNCTION metricagg.recompute_all_bins()
RETURNS TABLE (server_id text, metric_type text, width interval, ts timestamptz,
               count bigint, avg double precision, min double precision, max double precision, p80 double precision)
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
DECLARE
    w interval;
    src text := CASE (SELECT source FROM metricagg.job_config) WHEN 'fdw' THEN 'metricagg.raw_samples'
                                                               ELSE 'metricagg.samples' END;
BEGIN
    FOREACH w IN ARRAY (SELECT widths FROM metricagg.job_config) LOOP
        -- The cutoff goes in as a literal so the whole query ships to raw.
        RETURN QUERY EXECUTE format(
            'SELECT server_id, metric_type, %1$L::interval, date_bin(%1$L::interval, ts, ''2000-01-03 00:00+00''),
                    count(*), avg(value), min(value), max(value),
                    percentile_cont(0.8) WITHIN GROUP (ORDER BY value)
             FROM %2$s GROUP BY 1, 2, 4
             HAVING date_bin(%1$L::interval, ts, ''2000-01-03 00:00+00'') < %3$L::timestamptz',
            w, src, metricagg.open_bins_from(w));
    END LOOP;
END
$$;
COMMENT ON FUNCTION metricagg.recompute_all_bins() IS
'Every bin recomputed from raw with PostgreSQL''s own date_bin/avg/min/max/percentile_cont: the oracle the tests compare metricagg.bins against.';

-- A counter that every statement changing bins bumps (a statement trigger,
-- and the retention function below, since dropping a partition or a chunk
-- fires none). Readers that cache what they fetched (insights-api) compare it per request.
CREATE OR REPLACE FUNCTION metricagg.bump_bins_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, metricagg, pg_temp AS $$
BEGIN
    UPDATE metricagg.bins_version SET version = version + 1, changed_at = now();
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS bins_version_bump ON metricagg.bins;
DO $do$
BEGIN
    IF metricagg.bins_engine() = 'native' THEN
        CREATE TRIGGER bins_version_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON metricagg.bins
            FOR EACH STATEMENT EXECUTE FUNCTION metricagg.bump_bins_version();
    ELSE
        -- TimescaleDB refuses TRUNCATE triggers on hypertables; TRUNCATE of
        -- bins is not something the pipeline does.
        CREATE TRIGGER bins_version_bump AFTER INSERT OR UPDATE OR DELETE ON metricagg.bins
            FOR EACH STATEMENT EXECUTE FUNCTION metricagg.bump_bins_version();
    END IF;
END
$do$;

-- Bins retention (job_config.bins_retention): drops monthly partitions, or
-- hypertable chunks, that end before now() - bins_retention.
CREATE OR REPLACE FUNCTION metricagg.drop_old_bin_partitions()
RETURNS SETOF text
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
DECLARE
    part record;
    keep interval := (SELECT bins_retention FROM metricagg.job_config);
    dropped boolean := false;
BEGIN
    IF metricagg.bins_engine() = 'timescaledb' THEN
        FOR part IN SELECT c AS rel FROM drop_chunks('metricagg.bins', older_than => now() - keep) c LOOP
            dropped := true;
            RETURN NEXT part.rel::text;
        END LOOP;
    ELSE
        FOR part IN
            SELECT c.oid::regclass AS rel,
                   substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz AS upper_ts
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'metricagg.bins'::regclass
              AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
        LOOP
            CONTINUE WHEN part.upper_ts > now() - keep;
            EXECUTE format('DROP TABLE %s', part.rel);
            dropped := true;
            RETURN NEXT part.rel::text;
        END LOOP;
    END IF;
    IF dropped THEN
        UPDATE metricagg.bins_version SET version = version + 1, changed_at = now();
    END IF;
END
$$;
COMMENT ON FUNCTION metricagg.drop_old_bin_partitions() IS
'Bins retention: drops the monthly partitions (or TimescaleDB chunks) of metricagg.bins older than job_config.bins_retention and bumps bins_version. Returns what it dropped.';

-- On TimescaleDB, retention runs as a TimescaleDB job (visible in
-- timescaledb_information.jobs) calling the function above. Dropping a chunk
-- the compression policy is compressing at the same moment can deadlock (each
-- holds what the other needs; a CI run saw it): the attempt is rolled back,
-- which releases its locks, and retried up to 5 times, 1 to 4 s apart.
CREATE OR REPLACE PROCEDURE metricagg.bins_retention_job(job_id integer, config jsonb)
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
BEGIN
    FOR attempt IN 1..5 LOOP
        BEGIN
            PERFORM metricagg.drop_old_bin_partitions();
            RETURN;
        EXCEPTION WHEN deadlock_detected OR lock_not_available THEN
            IF attempt = 5 THEN
                RAISE;
            END IF;
            RAISE WARNING 'bins retention: % (attempt %), retrying', SQLERRM, attempt;
            PERFORM pg_sleep(attempt);
        END;
    END LOOP;
END
$$;

-- TimescaleDB policies from job_config: the compression policy
-- (bins_compress_after) and the retention job (bins_retention, read at each
-- execution). Re-applied when job_config changes. Returns what is in force.
-- A compression policy already in force with the same compress_after is
-- kept: a new one starts at once, so re-applying this file (an upgrade,
-- scripts/db.sh create-db on an existing database) would otherwise compress
-- in the background at that moment and lose the job's history.
CREATE OR REPLACE FUNCTION metricagg.apply_bins_policies() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
DECLARE
    after interval := (SELECT bins_compress_after FROM metricagg.job_config);
BEGIN
    IF metricagg.bins_engine() <> 'timescaledb' THEN
        RETURN metricagg.bins_storage();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs
                   WHERE proc_name = 'policy_compression' AND hypertable_schema = 'metricagg'
                     AND hypertable_name = 'bins' AND (config->>'compress_after')::interval = after) THEN
        PERFORM remove_compression_policy('metricagg.bins', if_exists => true);
        PERFORM add_compression_policy('metricagg.bins', compress_after => after);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs
                   WHERE proc_schema = 'metricagg' AND proc_name = 'bins_retention_job') THEN
        PERFORM add_job('metricagg.bins_retention_job', interval '1 day');
    END IF;
    RETURN metricagg.bins_storage();
END
$$;
COMMENT ON FUNCTION metricagg.apply_bins_policies() IS
'On TimescaleDB: (re)creates the compression policy (job_config.bins_compress_after) and the retention job (job_config.bins_retention) of metricagg.bins. Runs by itself when job_config changes. Returns metricagg.bins_storage().';

CREATE OR REPLACE FUNCTION metricagg.job_config_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
BEGIN
    PERFORM metricagg.apply_bins_policies();
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS job_config_policies ON metricagg.job_config;
CREATE TRIGGER job_config_policies AFTER UPDATE OF bins_compress_after, bins_retention ON metricagg.job_config
    FOR EACH STATEMENT EXECUTE FUNCTION metricagg.job_config_changed();
SELECT metricagg.apply_bins_policies() AS bins_storage \gset

-- The job's health at a glance (insights-api's /health reads it).
CREATE OR REPLACE VIEW metricagg.job_health AS
SELECT s.last_run_at,
       (SELECT max(finished_at) FROM metricagg.job_runs) AS last_work_at,
       (SELECT count(*) FROM metricagg.quarantine WHERE released_at IS NULL) AS quarantined,
       (SELECT max(quarantined_at) FROM metricagg.quarantine WHERE released_at IS NULL) AS last_quarantined_at,
       metricagg.bins_engine() AS bins_engine
FROM metricagg.job_state s;
COMMENT ON VIEW metricagg.job_health IS
'When the job last ran and last changed anything, how many change-log entries wait in quarantine, and how bins are stored.';

RESET ROLE;

-- metricagg_run_once() is what users type; keep it reachable from public.
CREATE OR REPLACE FUNCTION public.metricagg_run_once() RETURNS text
LANGUAGE sql AS 'SELECT metricagg.metricagg_run_once()';
ALTER FUNCTION public.metricagg_run_once() OWNER TO metricagg_job;
COMMENT ON FUNCTION public.metricagg_run_once() IS
'Once mode: aggregate everything new from raw into metricagg.bins (see metricagg.metricagg_run_once).';

-- Grants: the api role reads bins and the job's health, nothing else; only
-- the job writes.
REVOKE ALL ON ALL TABLES IN SCHEMA metricagg FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA metricagg FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA metricagg FROM PUBLIC;
REVOKE ALL ON FUNCTION public.metricagg_run_once() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.metricagg_run_once() TO metricagg_job;
GRANT USAGE ON SCHEMA metricagg TO metricagg_api;
GRANT SELECT ON metricagg.bins, metricagg.bins_version, metricagg.job_health TO metricagg_api;
GRANT SELECT (widths) ON metricagg.job_config TO metricagg_api;
GRANT EXECUTE ON FUNCTION metricagg.bins_engine(), metricagg.bins_storage() TO metricagg_api;
-- pg_metricagg keeps its packed-format functions from PUBLIC: the job unpacks
-- what the raw side packed, insights-api reads series packed.
GRANT EXECUTE ON FUNCTION public.metricagg_unpack_stats(bytea) TO metricagg_job;
GRANT EXECUTE ON FUNCTION public.metricagg_pack_bins(timestamptz, bigint, double precision, double precision, double precision)
    TO metricagg_api;
GRANT SELECT ON metricagg.schema_version TO metricagg_job, metricagg_api;
DO $do$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO metricagg_job', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO metricagg_api', current_database());
END
$do$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
