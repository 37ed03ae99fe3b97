-- metricagg analytics (OLAP) database: bins, job state, the job itself.
-- Applied by scripts/db.sh as the administrator; idempotent.
--
-- The job, metricagg_run_once(), pulls from the raw database through
-- postgres_fdw (foreign tables metricagg.raw_*, created by scripts/db.sh
-- with the server `metricagg_raw`), or from local tables of this database
-- when metricagg.job_config.source = 'local'.

CREATE EXTENSION IF NOT EXISTS pg_metricagg;
CREATE EXTENSION IF NOT EXISTS postgres_fdw;
-- TimescaleDB is used when the server has it (production images); the
-- embedded development cluster does not, and gets native partitions.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    END IF;
END
$$;
CREATE SCHEMA IF NOT EXISTS metricagg AUTHORIZATION metricagg_job;
SET search_path = metricagg, public;
SET ROLE metricagg_job;

-- Aggregated bins: one row per (server, metric, width, bin start). A
-- TimescaleDB hypertable with compression and retention when TimescaleDB is
-- installed in this database; native monthly range partitions otherwise.
DO $do$
DECLARE
    columns constant text := 'server_id text COLLATE "C" NOT NULL, metric_type text COLLATE "C" NOT NULL, width interval NOT NULL,
        ts timestamptz NOT NULL, count bigint NOT NULL, avg double precision, min double precision,
        max double precision, p80 double precision, PRIMARY KEY (server_id, metric_type, width, ts)';
BEGIN
    IF to_regclass('metricagg.bins') IS NOT NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE format('CREATE TABLE metricagg.bins (%s)', columns);
        PERFORM create_hypertable('metricagg.bins', 'ts', chunk_time_interval => interval '7 days');
        ALTER TABLE metricagg.bins SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'server_id, metric_type, width',
            timescaledb.compress_orderby = 'ts');
        PERFORM add_compression_policy('metricagg.bins', interval '7 days');
        PERFORM add_retention_policy('metricagg.bins', interval '400 days');
    ELSE
        EXECUTE format('CREATE TABLE metricagg.bins (%s) PARTITION BY RANGE (ts)', columns);
        CREATE TABLE metricagg.bins_default PARTITION OF metricagg.bins DEFAULT;
    END IF;
END
$do$;
-- Fleet-wide reads of a time range (insights-api, dashboards) filter on ts
-- alone, which the primary key cannot serve. The job writes bins in time
-- order, so a BRIN index narrows such a scan to the range's pages for almost
-- no write cost. (TimescaleDB chunks are time ranges with their own index.)
DO $do$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'metricagg.bins'::regclass) = 'p' THEN
        CREATE INDEX IF NOT EXISTS bins_ts_brin ON metricagg.bins USING brin (ts);
    END IF;
END
$do$;
COMMENT ON TABLE metricagg.bins IS
'Aggregated metrics: count, avg, min, max and exact p80 per (server_id, metric_type, width, ts), ts being the UTC bin start. Written only by metricagg_run_once(). Monthly range partitions (a TimescaleDB hypertable when TimescaleDB is installed).';

-- Configuration of the job (one row).
CREATE TABLE IF NOT EXISTS metricagg.job_config (
    singleton        boolean    PRIMARY KEY DEFAULT true CHECK (singleton),
    source           text       NOT NULL DEFAULT 'fdw' CHECK (source IN ('fdw', 'local')),
    widths           interval[] NOT NULL DEFAULT '{1 minute, 1 hour}',
    bins_retention   interval   NOT NULL DEFAULT '400 days',
    -- Bins of the finest width are recomputed on every run that touches
    -- them; coarser bins, when this is on, once they are closed: once their
    -- end is at least close_grace in the past (see docs/architecture.md).
    defer_open_bins  boolean    NOT NULL DEFAULT true,
    close_grace      interval   NOT NULL DEFAULT '1 minute',
    CHECK (cardinality(widths) BETWEEN 1 AND 8)
);
ALTER TABLE metricagg.job_config ADD COLUMN IF NOT EXISTS defer_open_bins boolean NOT NULL DEFAULT true;
ALTER TABLE metricagg.job_config ADD COLUMN IF NOT EXISTS close_grace interval NOT NULL DEFAULT '1 minute';
INSERT INTO metricagg.job_config DEFAULT VALUES ON CONFLICT DO NOTHING;
COMMENT ON TABLE metricagg.job_config IS
'metricagg_run_once() settings: source (fdw: raw database through postgres_fdw; local: metricagg.samples of this database), bin widths, retention of bins.';

-- The watermark: every raw change whose transaction id is below done_below
-- has been aggregated. Updated in the same transaction as the bins.
CREATE TABLE IF NOT EXISTS metricagg.job_state (
    singleton    boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    done_below   xid8        NOT NULL DEFAULT '0',
    last_run_at  timestamptz,
    -- now() - close_grace at the last run: bins of the coarser widths that
    -- ended by then are materialized.
    closed_before timestamptz
);
ALTER TABLE metricagg.job_state DROP COLUMN IF EXISTS data_watermark;
ALTER TABLE metricagg.job_state ADD COLUMN IF NOT EXISTS closed_before timestamptz;

-- Ranges of coarser-width bins touched by processed changes but still open:
-- recomputed once closed. Committed with the bins, so nothing is lost.
CREATE TABLE IF NOT EXISTS metricagg.pending_bins (
    width     interval    NOT NULL,
    server_id text        NOT NULL,
    lo        timestamptz NOT NULL,
    hi        timestamptz NOT NULL,
    CHECK (hi > lo)
);
INSERT INTO metricagg.job_state DEFAULT VALUES ON CONFLICT DO NOTHING;

-- One row per completed run (committed with it).
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
COMMENT ON TABLE metricagg.job_runs IS 'History of metricagg_run_once(): one row per run that consumed changes or wrote bins.';

-- Creates monthly partitions of metricagg.bins covering [from_ts, to_ts).
CREATE OR REPLACE FUNCTION metricagg.ensure_bin_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public AS $$
DECLARE
    m       timestamptz := metricagg_bin(from_ts, interval '1 month');
    name    text;
    created integer := 0;
BEGIN
    -- A TimescaleDB hypertable makes its own chunks.
    IF (SELECT relkind FROM pg_class WHERE oid = 'metricagg.bins'::regclass) <> 'p' THEN
        RETURN 0;
    END IF;
    WHILE m < to_ts LOOP
        name := 'bins_' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM');
        IF to_regclass('metricagg.' || name) IS NULL THEN
            IF EXISTS (SELECT 1 FROM metricagg.bins_default WHERE ts >= m AND ts < m + interval '1 month') THEN
                CREATE TEMP TABLE IF NOT EXISTS pg_temp.moving_bins (LIKE metricagg.bins) ON COMMIT DROP;
                WITH gone AS (DELETE FROM metricagg.bins_default
                              WHERE ts >= m AND ts < m + interval '1 month' RETURNING *)
                INSERT INTO pg_temp.moving_bins SELECT * FROM gone;
            END IF;
            EXECUTE format('CREATE TABLE metricagg.%I PARTITION OF metricagg.bins FOR VALUES FROM (%L) TO (%L)',
                           name, m, m + interval '1 month');
            IF to_regclass('pg_temp.moving_bins') IS NOT NULL THEN
                INSERT INTO metricagg.bins SELECT * FROM pg_temp.moving_bins;
                TRUNCATE pg_temp.moving_bins;
            END IF;
            created := created + 1;
        END IF;
        m := m + interval '1 month';
    END LOOP;
    RETURN created;
END
$$;

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

-- The job. See docs/architecture.md for why this is exactly once.
-- The job's aggregation of raw samples into bins of width w, as a query
-- returning (server_id, metric_type, width, ts, count, avg, min, max, p80).
-- Through postgres_fdw it runs entirely on the raw server: per (server,
-- metric, and a coarser span of 60 bins, so that one group's state stays
-- small) metricagg_stats_by_bin_packed returns all the group's bins as one
-- bytea. A few thousand rows cross the connection instead of one text row per
-- bin (whose timestamp and composite parsing cost more than the insert), and
-- metricagg_unpack_stats turns them back into bins locally. The span is a
-- multiple of w from the same origin, so a bin never straddles two groups.
CREATE OR REPLACE FUNCTION metricagg.bins_query(w interval, source text, predicate text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT format($q$
        SELECT a.server_id, a.metric_type, %1$L::interval, u.ts, u.count, u.avg, u.min, u.max, u.p80
        FROM (SELECT server_id, metric_type, metricagg_stats_by_bin_packed(ts, value, %1$L::interval) AS packed
              FROM %2$s WHERE %3$s
              GROUP BY server_id, metric_type, metricagg_bin(ts, %4$L::interval)) a
        CROSS JOIN LATERAL metricagg_unpack_stats(a.packed) u$q$,
        w, source, predicate,
        CASE WHEN extract(month FROM w) <> 0 OR extract(year FROM w) <> 0 THEN w * 12 ELSE w * 60 END)
$$;
COMMENT ON FUNCTION metricagg.bins_query(interval, text, text) IS
'The SELECT that metricagg_run_once() inserts into bins for width w from source (a table or foreign table of raw samples) WHERE predicate: the aggregation runs where the samples are, and each (server, metric, 60 bins) comes back as one packed value.';

-- work_mem and hash_mem_multiplier: the aggregation's hash memory in local
-- mode (the raw database sets the same for the job role, see sql/raw.sql).
CREATE OR REPLACE FUNCTION metricagg.metricagg_run_once() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public
    SET work_mem = '64MB' SET hash_mem_multiplier = 4 AS $$
DECLARE
    cfg          metricagg.job_config;
    st           metricagg.job_state;
    t0           timestamptz := clock_timestamp();
    src_samples  text;
    src_log      text;
    src_horizon  text;
    src_progress text;
    horizon      xid8;
    n_entries    bigint;
    pred         text;
    range_lo     timestamptz;
    range_hi     timestamptz;
    finest       interval;
    v_closed_before timestamptz;
    cutoff       timestamptz;
    w            interval;
    n_bins       bigint;
    n_rows       bigint;
    raw_rows     bigint := 0;
    written      jsonb := '{}';
    parts        text;
    fresh        boolean;
    n_logged     bigint;
BEGIN
    -- One run at a time; pg_cron queues rather than skips, so say so and leave.
    IF NOT pg_try_advisory_xact_lock(hashtext('metricagg_run_once'), 0) THEN
        RETURN 'metricagg_run_once: another run is active, nothing done';
    END IF;
    SELECT * INTO STRICT cfg FROM metricagg.job_config;
    SELECT * INTO STRICT st FROM metricagg.job_state FOR UPDATE;
    IF cfg.source = 'fdw' THEN
        src_samples := 'metricagg.raw_samples';
        src_log := 'metricagg.raw_change_log';
        src_horizon := 'metricagg.raw_snapshot_horizon';
        src_progress := 'metricagg.raw_job_progress';
    ELSE
        src_samples := 'metricagg.samples';
        src_log := 'metricagg.change_log';
        src_horizon := 'metricagg.snapshot_horizon';
        src_progress := 'metricagg.job_progress';
    END IF;

    -- Everything below the raw side's snapshot xmin has finished: that set
    -- of change-log entries can no longer grow. (Through postgres_fdw the
    -- remote transaction is REPEATABLE READ: one snapshot for the whole run.)
    EXECUTE format('SELECT horizon FROM %s', src_horizon) INTO STRICT horizon;

    -- Tell the raw side what the previous, committed run finished, and prune
    -- the entries it consumed. Only already-committed progress is written
    -- here, so a failure of this run after the remote commit loses nothing.
    -- pending_from: raw data from there on is still needed by parked bins.
    EXECUTE format('UPDATE %s SET done_below = $1, pending_from = $2, updated_at = now()
                    WHERE done_below <= $1', src_progress)
        USING st.done_below, (SELECT min(lo) FROM metricagg.pending_bins);
    EXECUTE format('DELETE FROM %s WHERE xid < $1', src_log) USING st.done_below;

    -- The ranges to recompute, per width and server: every entry's range
    -- widened to whole bins of that width, overlapping ranges merged. (A
    -- one-minute bin never needs a whole hour of raw rows re-read.)
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.metricagg_entries (
        server_id text, min_ts timestamptz, max_ts timestamptz, row_count bigint) ON COMMIT DROP;
    TRUNCATE pg_temp.metricagg_entries;
    EXECUTE format('INSERT INTO pg_temp.metricagg_entries
                    SELECT server_id, min_ts, max_ts, row_count FROM %s WHERE xid >= $1 AND xid < $2', src_log)
        USING st.done_below, horizon;
    GET DIAGNOSTICS n_entries = ROW_COUNT;
    SELECT coalesce(sum(row_count), 0) INTO n_logged FROM pg_temp.metricagg_entries;

    SELECT min(x) INTO finest FROM unnest(cfg.widths) x;
    v_closed_before := now() - cfg.close_grace;
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.metricagg_work (
        server_id text, lo timestamptz, hi timestamptz) ON COMMIT DROP;

    FOREACH w IN ARRAY cfg.widths LOOP
        TRUNCATE pg_temp.metricagg_work;
        -- Every entry's range widened to whole bins of this width.
        INSERT INTO pg_temp.metricagg_work
        SELECT server_id, metric_bin_lo, metric_bin_hi FROM (
            SELECT server_id, metricagg_bin(min_ts, w) AS metric_bin_lo, metricagg_bin(max_ts, w) + w AS metric_bin_hi
            FROM pg_temp.metricagg_entries) e;
        IF cfg.defer_open_bins AND w <> finest THEN
            -- Park the ranges, then take out whatever has closed.
            INSERT INTO metricagg.pending_bins (width, server_id, lo, hi)
            SELECT w, server_id, lo, hi FROM pg_temp.metricagg_work;
            TRUNCATE pg_temp.metricagg_work;
            cutoff := metricagg_bin(v_closed_before, w);
            WITH closed AS (
                DELETE FROM metricagg.pending_bins WHERE width = w AND lo < cutoff
                RETURNING server_id, lo, hi),
            kept AS (
                INSERT INTO metricagg.pending_bins (width, server_id, lo, hi)
                SELECT w, server_id, cutoff, hi FROM closed WHERE hi > cutoff)
            INSERT INTO pg_temp.metricagg_work SELECT server_id, lo, least(hi, cutoff) FROM closed;
            -- Keep the parked ranges merged.
            WITH old AS (DELETE FROM metricagg.pending_bins WHERE width = w RETURNING server_id, lo, hi)
            INSERT INTO metricagg.pending_bins (width, server_id, lo, hi)
            SELECT w, server_id, lower(r), upper(r)
            FROM (SELECT server_id, unnest(range_agg(tstzrange(lo, hi))) AS r FROM old GROUP BY server_id) m;
        END IF;
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_temp.metricagg_work);

        -- One predicate per distinct merged range, with the servers it
        -- covers (all servers when it covers many: recomputing a bin is
        -- idempotent, and a long IN list costs more per row than it saves).
        -- It ships to the raw server inside the Remote SQL.
        SELECT string_agg(CASE WHEN cardinality(servers) > 16
                               THEN format('(ts >= %L AND ts < %L)', lo, hi)
                               ELSE format('(ts >= %L AND ts < %L AND server_id = ANY (%L::text[]))', lo, hi, servers)
                          END, ' OR '),
               min(lo), max(hi)
          INTO pred, range_lo, range_hi
          FROM (SELECT lower(rng) AS lo, upper(rng) AS hi, array_agg(server_id ORDER BY server_id) AS servers
                FROM (SELECT server_id, unnest(range_agg(tstzrange(lo, hi))) AS rng
                      FROM pg_temp.metricagg_work GROUP BY server_id) r
                GROUP BY 1, 2) g;
        PERFORM metricagg.ensure_bin_partitions(range_lo, range_hi);
        -- No stored bin of this width anywhere in the range (a first run, a
        -- backfill): a plain INSERT, without a conflict check per bin. Only
        -- this job writes bins, under the advisory lock, so none can appear.
        -- Worth checking only for big runs; small ones just upsert.
        fresh := n_logged >= 100000
                 AND NOT EXISTS (SELECT 1 FROM metricagg.bins
                                 WHERE width = w AND ts >= range_lo AND ts < range_hi);
        EXECUTE format($q$
            WITH ins AS (
                INSERT INTO metricagg.bins AS b (server_id, metric_type, width, ts, count, avg, min, max, p80)
                %1$s
                %2$s
                RETURNING b.count)
            SELECT count(*), coalesce(sum(count), 0) FROM ins$q$,
            metricagg.bins_query(w, src_samples, pred),
            CASE WHEN fresh THEN '' ELSE
                'ON CONFLICT (server_id, metric_type, width, ts) DO UPDATE
                    SET count = EXCLUDED.count, avg = EXCLUDED.avg, min = EXCLUDED.min,
                        max = EXCLUDED.max, p80 = EXCLUDED.p80' END)
            INTO n_bins, n_rows;
        written := written || jsonb_build_object(metricagg.interval_label(w), n_bins);
        raw_rows := raw_rows + n_rows;
    END LOOP;

    UPDATE metricagg.job_state SET done_below = horizon, last_run_at = t0, closed_before = v_closed_before;
    IF n_entries > 0 OR written <> '{}' THEN
        INSERT INTO metricagg.job_runs (started_at, finished_at, from_xid, to_xid, entries, raw_rows,
                                        bins_written, duration_ms)
        VALUES (t0, clock_timestamp(), st.done_below, horizon, n_entries, raw_rows, written,
                extract(epoch FROM clock_timestamp() - t0) * 1000);
    END IF;
    SELECT string_agg(format('%s=%s', key, value), ', ' ORDER BY key::interval) INTO parts
      FROM jsonb_each_text(written);
    RETURN format('metricagg_run_once: %s change-log entries, %s raw rows read, bins written: %s, %s ms',
                  n_entries, raw_rows, coalesce(parts, 'none'),
                  round((extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric, 1));
END
$$;
COMMENT ON FUNCTION metricagg.metricagg_run_once() IS
'Aggregates every raw change not yet processed into metricagg.bins, exactly once, and returns a summary. Concurrent calls return at once.';

-- Oracle for tests and audits: all bins recomputed from raw, from scratch.
-- Bins of width w starting at or after this are not materialized yet
-- (coarser widths with defer_open_bins); 'infinity' otherwise.
CREATE OR REPLACE FUNCTION metricagg.open_bins_from(w interval) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, metricagg, public AS $$
    SELECT CASE WHEN c.defer_open_bins AND w > (SELECT min(x) FROM unnest(c.widths) x)
                THEN coalesce(metricagg_bin(s.closed_before, w), '-infinity')
                ELSE 'infinity' END
    FROM metricagg.job_config c, metricagg.job_state s
$$;
COMMENT ON FUNCTION metricagg.open_bins_from(interval) IS
'Start of the first bin of width w that is still open (not materialized yet); infinity for widths materialized on every run.';

CREATE OR REPLACE FUNCTION metricagg.recompute_all_bins()
RETURNS TABLE (server_id text, metric_type text, width interval, ts timestamptz,
               count bigint, avg double precision, min double precision, max double precision, p80 double precision)
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public AS $$
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
-- and the retention function below, since dropping a partition fires none).
-- Readers that cache what they fetched (insights-api) compare it per request.
CREATE TABLE IF NOT EXISTS metricagg.bins_version (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    bigint NOT NULL DEFAULT 0,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO metricagg.bins_version DEFAULT VALUES ON CONFLICT DO NOTHING;
COMMENT ON TABLE metricagg.bins_version IS
'Bumped by every statement that inserts, updates, deletes or truncates metricagg.bins, and when retention drops bins: a cache of bins is current while this version is unchanged.';

CREATE OR REPLACE FUNCTION metricagg.bump_bins_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, metricagg AS $$
BEGIN
    UPDATE metricagg.bins_version SET version = version + 1, changed_at = now();
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS bins_version_bump ON metricagg.bins;
CREATE TRIGGER bins_version_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON metricagg.bins
    FOR EACH STATEMENT EXECUTE FUNCTION metricagg.bump_bins_version();

-- Bins retention: drops monthly partitions older than job_config.bins_retention.
CREATE OR REPLACE FUNCTION metricagg.drop_old_bin_partitions()
RETURNS SETOF text
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public AS $$
DECLARE
    part record;
    keep interval := (SELECT bins_retention FROM metricagg.job_config);
BEGIN
    FOR part IN
        SELECT c.oid::regclass AS rel,
               substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz AS upper_ts
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'metricagg.bins'::regclass
          AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
    LOOP
        CONTINUE WHEN part.upper_ts > now() - keep;
        EXECUTE format('DROP TABLE %s', part.rel);
        UPDATE metricagg.bins_version SET version = version + 1, changed_at = now();
        RETURN NEXT part.rel::text;
    END LOOP;
END
$$;

RESET ROLE;

-- metricagg_run_once() is what users type; keep it reachable from public.
CREATE OR REPLACE FUNCTION public.metricagg_run_once() RETURNS text
LANGUAGE sql AS 'SELECT metricagg.metricagg_run_once()';
ALTER FUNCTION public.metricagg_run_once() OWNER TO metricagg_job;
COMMENT ON FUNCTION public.metricagg_run_once() IS
'Once mode: aggregate everything new from raw into metricagg.bins (see metricagg.metricagg_run_once).';

-- Grants: the api role reads bins and nothing else; only the job writes.
REVOKE ALL ON ALL TABLES IN SCHEMA metricagg FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA metricagg FROM PUBLIC;
REVOKE ALL ON FUNCTION public.metricagg_run_once() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.metricagg_run_once() TO metricagg_job;
GRANT USAGE ON SCHEMA metricagg TO metricagg_api;
GRANT SELECT ON metricagg.bins, metricagg.bins_version TO metricagg_api;
