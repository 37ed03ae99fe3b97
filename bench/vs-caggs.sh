#!/usr/bin/env bash
# make bench-vs-caggs: metricagg's job against TimescaleDB's continuous
# aggregates, what TimescaleDB users run today, in one TimescaleDB database
# and one run (issue 11).
#
#  1. One database (`scripts/db.sh create-db local`, bins in a hypertable)
#     gets the rows of make bench-pipeline (100 servers x 4 metrics x 25,000
#     s at 1 Hz = 10M, the same generator; BENCH_SECONDS scales the time
#     span) twice: into metricagg.samples through the ingest role (what our
#     job reads), and into the hypertable public.samples_ht (what the
#     continuous aggregates read). The span ends hours ago: every bin is
#     closed, for both.
#  2. The peer: two continuous aggregates over samples_ht, count, avg, min,
#     max and percentile_cont(0.8) WITHIN GROUP (ORDER BY value) per
#     (server, metric, time_bucket): one per minute and one per hour. The
#     hourly one is built on the raw hypertable too, not on the minute one:
#     an 80th percentile of minute percentiles is not the hour's percentile,
#     so a hierarchical cagg could not be exact.
#  3. full: refresh_continuous_aggregate of both caggs vs one
#     metricagg_run_once() writing both widths (its own duration_ms).
#     late: +1% rows spread over 5 servers across the whole span, into both
#     tables; the caggs' refresh (TimescaleDB invalidates whole time ranges,
#     for all series) vs our incremental run (recomputes those servers' bins).
#     read: one server's day of minute bins, all four metrics, from bins and
#     from the minute cagg (materialized only), best of 20, EXPLAIN ANALYZE.
#     correctness: every bin of both widths equal to the cagg's, bit for bit
#     (avg to 1e-12 relative): the cagg is the oracle.
# Last line: full_vs_cagg=… late_vs_cagg=… read_vs_cagg=…
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_SPAN="${BENCH_SECONDS:-25000}"
DB=bench_caggs

make -s install-release >&2
bash scripts/db.sh start
eval "$(bash scripts/db.sh env)"
[ "$(bash scripts/db.sh psql postgres -Atc 'SHOW shared_preload_libraries')" = "timescaledb,pg_cron" ] \
    || { echo "bench-vs-caggs: TimescaleDB is not installed (docs/operations.md, TimescaleDB)" >&2; exit 1; }
psql_admin() { bash scripts/db.sh psql "$DB" "$@"; }
bash scripts/db.sh psql postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
METRICAGG_BINS_ENGINE=timescaledb bash scripts/db.sh create-db local "$DB" >/dev/null
INGEST="${INGEST_DATABASE_URL%/*}/$DB"
JOB="${JOB_DATABASE_URL%/*}/$DB"
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
now() { date +%s%N; }
timed() { # psql args...: the statement's own time, from \timing
    psql_admin -At -c '\timing on' "$@" | grep -oP 'Time: \K[0-9.]+' | tail -1
}

# The span ends at the start of the previous hour: all bins closed.
T0="$(bash scripts/db.sh psql postgres -Atc "SELECT date_trunc('hour', now()) - interval '2 hours' - interval '$SECONDS_SPAN seconds'")"
VALUE="greatest(0, 40 + 20 * sin(2 * pi() * t / 3600.0 + s) + 10 * random())"
psql "$INGEST" -Xqc "SELECT metricagg.ensure_partitions('$T0', timestamptz '$T0' + interval '2 days')" >/dev/null
echo "loading $((SECONDS_SPAN * 400)) rows into metricagg.samples (ingest role) and samples_ht..." >&2
psql_admin -q <<SQL
CREATE TABLE public.samples_ht (server_id text NOT NULL, metric_type text NOT NULL,
                                ts timestamptz NOT NULL, value double precision NOT NULL);
SELECT create_hypertable('public.samples_ht', 'ts', chunk_time_interval => interval '1 day');
CREATE INDEX ON public.samples_ht (server_id, metric_type, ts);
SQL
for ((lo = 0; lo < SECONDS_SPAN; lo += 1000)); do
    hi=$((lo + 999)); [ "$hi" -ge "$SECONDS_SPAN" ] && hi=$((SECONDS_SPAN - 1))
    psql "$INGEST" -Xq <<SQL
INSERT INTO metricagg.samples
SELECT 'srv-' || s, m, timestamptz '$T0' + t * interval '1 second', $VALUE
FROM generate_series($lo, $hi) t, generate_series(1, 100) s, unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m;
SQL
done
psql_admin -qc "INSERT INTO public.samples_ht SELECT * FROM metricagg.samples" \
           -c "VACUUM (ANALYZE) metricagg.samples" -c "VACUUM (ANALYZE) public.samples_ht" >/dev/null
for w in "1 minute" "1 hour"; do
    name="cagg_$(echo "$w" | tr -d ' ')"
    psql_admin -q <<SQL
CREATE MATERIALIZED VIEW public.$name WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT server_id, metric_type, time_bucket('$w', ts) AS ts, count(*) AS count, avg(value) AS avg,
       min(value) AS min, max(value) AS max, percentile_cont(0.8) WITHIN GROUP (ORDER BY value) AS p80
FROM public.samples_ht GROUP BY 1, 2, 3 WITH NO DATA;
SQL
done
refresh_ms() { # both caggs, their whole range
    local a b
    a=$(timed -c "CALL refresh_continuous_aggregate('public.cagg_1minute', NULL, NULL)")
    b=$(timed -c "CALL refresh_continuous_aggregate('public.cagg_1hour', NULL, NULL)")
    awk -v a="$a" -v b="$b" 'BEGIN { print a + b }'
}
wait_horizon() {
    psql_admin -qc "DO \$\$ DECLARE t xid8 := pg_snapshot_xmax(pg_current_snapshot()); BEGIN
        FOR i IN 1..600 LOOP EXIT WHEN pg_snapshot_xmin(pg_current_snapshot()) >= t; PERFORM pg_sleep(0.1); END LOOP; END \$\$"
}
run_ms() { # one metricagg_run_once() as the job role; its own duration
    wait_horizon
    echo "  $(psql "$JOB" -XAtc "SELECT metricagg_run_once()")" >&2
    psql_admin -Atc "SELECT round(duration_ms::numeric, 1) FROM metricagg.job_runs ORDER BY id DESC LIMIT 1"
}

echo "full materialization..." >&2
cagg_full=$(refresh_ms)
ours_full=$(run_ms)

echo "late data: +1% rows, 5 servers, spread over the whole span..." >&2
psql "$INGEST" -Xq <<SQL
INSERT INTO metricagg.samples
SELECT 'srv-' || s, m, timestamptz '$T0' + t * interval '1 second' + interval '500 milliseconds', $VALUE
FROM generate_series(0, $SECONDS_SPAN - 1) t, generate_series(1, 5) s, unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m
WHERE t % 5 = 0;
SQL
psql_admin -qc "INSERT INTO public.samples_ht SELECT * FROM metricagg.samples WHERE ts - date_trunc('second', ts) = interval '500 milliseconds'" >/dev/null
cagg_late=$(refresh_ms)
ours_late=$(run_ms)

echo "reading one server's day of minute bins..." >&2
DAY_END="$(bash scripts/db.sh psql postgres -Atc "SELECT timestamptz '$T0' + interval '$SECONDS_SPAN seconds'")"
DAY_START="$(bash scripts/db.sh psql postgres -Atc "SELECT greatest(timestamptz '$T0', timestamptz '$DAY_END' - interval '1 day')")"
read_best() { # query
    local best="" t
    for _ in $(seq 1 20); do
        t=$(psql_admin -At -c "EXPLAIN (ANALYZE, TIMING OFF) $1" | grep -oP 'Execution Time: \K[0-9.]+')
        if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
    done
    echo "$best"
}
ours_read=$(read_best "SELECT metric_type, ts, count, avg, min, max, p80 FROM metricagg.bins
    WHERE server_id = 'srv-42' AND width = '1 minute' AND ts >= '$DAY_START' AND ts < '$DAY_END' ORDER BY metric_type, ts")
cagg_read=$(read_best "SELECT metric_type, ts, count, avg, min, max, p80 FROM public.cagg_1minute
    WHERE server_id = 'srv-42' AND ts >= '$DAY_START' AND ts < '$DAY_END' ORDER BY metric_type, ts")
read_rows=$(psql_admin -Atc "SELECT count(*) FROM metricagg.bins WHERE server_id = 'srv-42' AND width = '1 minute' AND ts >= '$DAY_START' AND ts < '$DAY_END'")

echo "correctness: every bin against the caggs..." >&2
read -r compared differ < <(psql_admin -At -F ' ' -c "
    WITH c AS (SELECT server_id, metric_type, interval '1 minute' AS width, ts, count, avg, min, max, p80 FROM public.cagg_1minute
               UNION ALL
               SELECT server_id, metric_type, interval '1 hour', ts, count, avg, min, max, p80 FROM public.cagg_1hour)
    SELECT count(*), count(*) FILTER (WHERE
               b.count IS DISTINCT FROM c.count
            OR float8send(b.min) IS DISTINCT FROM float8send(c.min)
            OR float8send(b.max) IS DISTINCT FROM float8send(c.max)
            OR float8send(b.p80) IS DISTINCT FROM float8send(c.p80)
            OR (b.avg = c.avg OR abs(b.avg - c.avg) <= 1e-12 * abs(c.avg)) IS NOT TRUE)
    FROM metricagg.bins b FULL JOIN c USING (server_id, metric_type, width, ts)")
[ "$differ" = 0 ] || { echo "bench-vs-caggs: $differ of $compared bins differ from the continuous aggregates" >&2; exit 1; }

printf '\n%-48s %10s %10s\n' measurement "metricagg" "caggs"
printf '%-48s %10s %10s\n' "full materialization, both widths (ms)" "$ours_full" "$cagg_full"
printf '%-48s %10s %10s\n' "after +1% late rows on 5 servers (ms)" "$ours_late" "$cagg_late"
printf '%-48s %10s %10s\n' "read srv-42's day of minute bins, $read_rows rows (ms)" "$ours_read" "$cagg_read"
printf '%-48s %10s\n' "bins compared with the caggs, all equal" "$compared"
[ "${BENCH_KEEP:-0}" = 1 ] || bash scripts/db.sh psql postgres -qc "DROP DATABASE $DB WITH (FORCE)" >/dev/null
awk -v f="$ours_full" -v cf="$cagg_full" -v l="$ours_late" -v cl="$cagg_late" -v r="$ours_read" -v cr="$cagg_read" \
    'BEGIN { printf "full_vs_cagg=%.3f late_vs_cagg=%.3f read_vs_cagg=%.2f\n", f / cf, l / cl, r / cr }'
