#!/usr/bin/env bash
# make bench-pipeline: the dual-database job against its peers, in one run.
#
#  1. Loads 10M raw rows (100 servers x 4 metrics x 25,000 s, ending at
#     hh:30 of the current hour) through the
#     ingest role, one INSERT statement per 1,000 s of data (the change-log
#     trigger on), except the last 2,500 s of servers 1-5: those agents are
#     "slow" and deliver late.
#  2. full:        metricagg_run_once() over everything (as metricagg_job, FDW).
#     direct:      the same aggregation (both widths) queried directly on raw:
#                  the job's own query (run_vs_direct: what FDW and insert
#                  add), and the plain GROUP BY with metricagg_stats.
#  3. incremental: +1% rows (the 50k late ones, and 50k current: the next 125 s
#                  of every server), then metricagg_run_once() again.
#  4. COPY of 1M rows from a file into samples with the trigger, and with it
#     disabled; best of 3 each.
# Last line: run_vs_direct=… incremental_fraction=… trigger_overhead=…
set -euo pipefail
cd "$(dirname "$0")/.."

# Bins in native partitions, as in every earlier run of this benchmark (set
# METRICAGG_BINS_ENGINE=timescaledb for a hypertable; make bench-vs-caggs
# measures the job on TimescaleDB against continuous aggregates).
export METRICAGG_BINS_ENGINE="${METRICAGG_BINS_ENGINE:-native}"
make -s install-release >&2
bash scripts/db.sh start
eval "$(bash scripts/db.sh env)"
RAW=bench_pipe_raw
AN=bench_pipe_an
psql_admin() { bash scripts/db.sh psql "$@"; }
for db in "$AN" "$RAW"; do psql_admin postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null; done
bash scripts/db.sh create-db raw "$RAW" >/dev/null
bash scripts/db.sh create-db analytics "$AN" "$RAW" >/dev/null
INGEST="${INGEST_DATABASE_URL%/*}/$RAW"
JOB="${JOB_DATABASE_URL%/*}/$AN"
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
now() { date +%s%N; }

# Live data: the 25,000 s end at hh:30 of the current hour, so "current"
# rows land in an hour that is still open, as they do in loop mode (coarser
# bins are materialized once closed; see docs/architecture.md).
T0="$(bash scripts/db.sh psql postgres -Atc "SELECT date_trunc('hour', now()) + interval '30 minutes' - interval '25000 seconds'")"
VALUE="greatest(0, 40 + 20 * sin(2 * pi() * t / 3600.0 + s) + 10 * random())"
psql "$INGEST" -Xqc "SELECT metricagg.ensure_partitions('$T0', timestamptz '$T0' + interval '2 days')" >/dev/null
echo "loading 10M rows through the ingest role..." >&2
start=$(now)
for chunk in $(seq 0 24); do
    lo=$((chunk * 1000)); hi=$((lo + 999))
    psql "$INGEST" -Xq <<SQL
INSERT INTO metricagg.samples
SELECT 'srv-' || s, m, timestamptz '$T0' + t * interval '1 second', $VALUE
FROM generate_series($lo, $hi) t, generate_series(1, 100) s, unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m
WHERE NOT (s <= 5 AND t >= 22500);
SQL
done
load_ms=$(ms "$start" "$(now)")
psql_admin "$RAW" -qc "VACUUM (ANALYZE) metricagg.samples" >/dev/null

run_once() { psql "$JOB" -XAtc "SELECT metricagg_run_once()"; }
# A run's own duration as the job records it (job_runs.duration_ms): from the
# function's start to its end, FDW connection included, without the client's
# process start and login. The ratios use it; the wall clock is printed too.
last_run_ms() { psql_admin "$AN" -Atc "SELECT round(duration_ms::numeric, 1) FROM metricagg.job_runs ORDER BY id DESC LIMIT 1"; }
# Full run, best of 3 like the direct query: between runs the analytics side
# is reset (bins, parked ranges, watermark) so each run redoes everything.
full_ms=""; full_wall_ms=""
for i in 1 2 3; do
    if [ "$i" -gt 1 ]; then
        psql_admin "$AN" -qc "TRUNCATE metricagg.bins, metricagg.pending_bins, metricagg.job_runs;
                              DELETE FROM metricagg.job_watermarks; UPDATE metricagg.job_state SET closed_before = NULL" >/dev/null
    fi
    start=$(now); full_summary="$(run_once)"; wall=$(ms "$start" "$(now)"); t=$(last_run_ms)
    echo "full ($wall ms wall clock): $full_summary" >&2
    if [ -z "$full_ms" ] || awk "BEGIN{exit !($t < $full_ms)}"; then full_ms=$t; full_wall_ms=$wall; fi
done

# The same aggregation directly on raw, both widths, results discarded, in
# two forms: the job's own query (metricagg.bins_query, run where the samples
# are: what the job costs beyond it is the FDW and the insert) and the plain
# GROUP BY server, metric, metricagg_bin with metricagg_stats. Hourly bins of
# the open hour are left out of both, as the job parks them.
HOUR_CUTOFF="$(psql_admin postgres -Atc "SELECT date_trunc('hour', now() - interval '1 minute')")"
explain_ms() { # query
    # The job role's settings in the raw database (sql/raw.sql).
    psql_admin "$RAW" -At -c "SET jit = off" -c "SET max_parallel_workers_per_gather = 0" \
        -c "SET work_mem = '64MB'" -c "SET hash_mem_multiplier = 4" -c "SET enable_sort = off" \
        -c "EXPLAIN (ANALYZE, TIMING OFF) $1" | grep -oP 'Execution Time: \K[0-9.]+'
}
direct_ms=""; groupby_ms=""
# The job's query covers both widths in one pass over raw (each width's
# aggregate FILTERed to its own predicate); the plain GROUP BY takes one per width.
q="$(psql "$JOB" -XAt -c "SELECT metricagg.bins_query('{1 minute, 1 hour}', 'metricagg.samples',
                                                       ARRAY['true', \$p\$ts < '$HOUR_CUTOFF'\$p\$])")"
for _ in 1 2 3; do
    # Serial, like the job's remote side: postgres_fdw reads through a
    # cursor, and PostgreSQL never runs a cursor's query in parallel.
    t=$(explain_ms "$q"); g=0
    for w in "1 minute" "1 hour"; do
        pred="true"; [ "$w" = "1 hour" ] && pred="ts < '$HOUR_CUTOFF'"
        y=$(explain_ms "SELECT server_id, metric_type, metricagg_bin(ts, '$w'), metricagg_stats(value) FROM metricagg.samples WHERE $pred GROUP BY 1, 2, 3")
        g=$(awk -v a="$g" -v b="$y" 'BEGIN { print a + b }')
    done
    if [ -z "$direct_ms" ] || awk "BEGIN{exit !($t < $direct_ms)}"; then direct_ms=$t; fi
    if [ -z "$groupby_ms" ] || awk "BEGIN{exit !($g < $groupby_ms)}"; then groupby_ms=$g; fi
done
psql "$INGEST" -Xq <<SQL
INSERT INTO metricagg.samples   -- the slow agents' last 2,500 s, late
SELECT 'srv-' || s, m, timestamptz '$T0' + t * interval '1 second', $VALUE
FROM generate_series(22500, 24999) t, generate_series(1, 5) s, unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m;
INSERT INTO metricagg.samples   -- the next 125 s of every server
SELECT 'srv-' || s, m, timestamptz '$T0' + t * interval '1 second', $VALUE
FROM generate_series(25000, 25124) t, generate_series(1, 100) s, unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m;
SQL
start=$(now); inc_summary="$(run_once)"; inc_wall_ms=$(ms "$start" "$(now)"); inc_ms=$(last_run_ms)
echo "incremental: $inc_summary" >&2

# Oracle check: the bins equal a from-scratch recompute.
bad=$(psql_admin "$AN" -At -c "SELECT count(*) FROM metricagg.bins b FULL JOIN metricagg.recompute_all_bins() o USING (server_id, metric_type, width, ts) WHERE b.count IS DISTINCT FROM o.count OR b.p80 IS DISTINCT FROM o.p80")
[ "$bad" = 0 ] || { echo "bins differ from the oracle in $bad rows" >&2; exit 1; }

# COPY 1M rows from a file, with and without the change-log trigger, into a
# day partition of its own that is emptied before every run.
# (Five days ago: inside the ingest window, and no other data of this run there.)
COPY_DAY="$(psql_admin postgres -Atc "SELECT (date_trunc('day', now()) - interval '5 days')::date")"
psql "$INGEST" -Xqc "SELECT metricagg.ensure_partitions('$COPY_DAY', timestamptz '$COPY_DAY' + interval '1 day')" >/dev/null
COPY_PART="metricagg.samples_$(date -d "$COPY_DAY" +%Y%m%d)"
tmpdir="$(mktemp -d)"; chmod 777 "$tmpdir"   # the server (postgres OS user) writes and reads it
file="$tmpdir/copy-1m.tsv"
psql_admin "$RAW" -qc "COPY (SELECT 'srv-' || s, m, timestamptz '$COPY_DAY 00:00:00+00' + t * interval '1 second', ${VALUE}
                              FROM generate_series(0, 2499) t, generate_series(1, 100) s,
                                   unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m) TO '$file'" >/dev/null
copy_best() { # trigger on|off
    local best="" t
    for _ in 1 2 3; do
        psql_admin "$RAW" -qc "TRUNCATE $COPY_PART" >/dev/null || exit 1
        [ "$1" = off ] && psql_admin "$RAW" -qc "ALTER TABLE metricagg.samples DISABLE TRIGGER samples_log_changes" >/dev/null
        t=$(psql_admin "$RAW" -At -c '\timing on' -c "COPY metricagg.samples FROM '$file'" | grep -oP 'Time: \K[0-9.]+') || exit 1
        [ "$1" = off ] && psql_admin "$RAW" -qc "ALTER TABLE metricagg.samples ENABLE TRIGGER samples_log_changes" >/dev/null
        if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
    done
    echo "$best"
}
copy_on=$(copy_best on) || { echo "COPY benchmark failed" >&2; exit 1; }
copy_off=$(copy_best off) || { echo "COPY benchmark failed" >&2; exit 1; }
rm -rf "$tmpdir"

printf '\n%-34s %10s\n' measurement ms
printf '%-34s %10s\n' "load 10M rows (INSERT, trigger on)" "$load_ms"
printf '%-34s %10s\n' "metricagg_run_once() full (best/3)" "$full_ms"
printf '%-34s %10s\n' "  the same, psql wall clock" "$full_wall_ms"
printf '%-34s %10s\n' "direct, the job's query (best/3)" "$direct_ms"
printf '%-34s %10s\n' "direct, plain GROUP BY (best/3)" "$groupby_ms"
printf '%-34s %10s\n' "metricagg_run_once() +1% rows (1x)" "$inc_ms"
printf '%-34s %10s\n' "  the same, psql wall clock" "$inc_wall_ms"
printf '%-34s %10s\n' "COPY 1M rows, trigger on (best/3)" "$copy_on"
printf '%-34s %10s\n' "COPY 1M rows, trigger off (best/3)" "$copy_off"
[ "${BENCH_KEEP:-0}" = 1 ] || for db in "$AN" "$RAW"; do psql_admin postgres -qc "DROP DATABASE $db" >/dev/null; done
awk -v f="$full_ms" -v g="$groupby_ms" 'BEGIN { printf "full run vs plain GROUP BY on raw: %.2f\n", f / g }' >&2
awk -v f="$full_ms" -v d="$direct_ms" -v i="$inc_ms" -v on="$copy_on" -v off="$copy_off" \
    'BEGIN { printf "run_vs_direct=%.2f incremental_fraction=%.3f trigger_overhead=%.2f\n", f / d, i / f, on / off - 1 }'
