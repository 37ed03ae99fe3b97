#!/usr/bin/env bash
# make bench-aggregate: pg_metricagg's aggregates against PostgreSQL's own, on
# the same 10M-row table in the same run.
#
# Table: 100 servers x 4 metrics x 25,000 one-second samples, inserted in time
# order (as an agent fleet writes them), VACUUM ANALYZEd. Every query runs
# three times; the best time counts. Times come from EXPLAIN (ANALYZE, TIMING
# OFF), so no result rows travel to the client; spills and hash-aggregate
# memory come from the same plans. Settings are identical for every query:
# work_mem = 512MB, jit = off, serial unless stated.
#
# Environment: BENCH_ROWS_SECONDS (default 25000), BENCH_SERVERS (100),
# BENCH_RUNS (3), BENCH_KEEP=1 to keep the database.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_SERIES="${BENCH_ROWS_SECONDS:-25000}"
SERVERS="${BENCH_SERVERS:-100}"
RUNS="${BENCH_RUNS:-3}"
DB=metricagg_bench

make -s install-release >&2
bash scripts/db.sh start
psql_db() { bash scripts/db.sh psql "$DB" -At "$@"; }

bash scripts/db.sh psql postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
psql_db -c "CREATE EXTENSION pg_metricagg" -c "CREATE EXTENSION tdigest" >/dev/null
rows=$((SECONDS_PER_SERIES * SERVERS * 4))
echo "loading $rows rows ($SERVERS servers x 4 metrics x $SECONDS_PER_SERIES s)..." >&2
psql_db >/dev/null <<SQL
SELECT setseed(0.5);
CREATE TABLE samples (server_id text NOT NULL, metric_type text NOT NULL,
                      ts timestamptz NOT NULL, value double precision NOT NULL);
INSERT INTO samples
SELECT 'srv-' || s, m, timestamptz '2025-11-15 00:00:00+00' + t * interval '1 second',
       greatest(0, 40 + 20 * sin(2 * pi() * t / 3600.0 + s) + 10 * random() + CASE WHEN random() < 0.001 THEN 50 ELSE 0 END)
FROM generate_series(0, $SECONDS_PER_SERIES - 1) t,
     generate_series(1, $SERVERS) s,
     unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m;
VACUUM (FREEZE, ANALYZE) samples;
SQL

SETTINGS="SET work_mem = '512MB'; SET jit = off; SET max_parallel_workers_per_gather = 0;"
PARALLEL="SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;"
KEYS="server_id, metric_type"
PLAIN="date_bin('1 minute', ts, '2000-01-03 00:00:00+00') AS bin, avg(value), min(value), max(value)"

names=(count group_only plain percentile_cont tdigest p80 stats stats_parallel stats_by_bin rollup rollup_parallel)
declare -A query settings
query[count]="SELECT count(*) FROM samples"
# The floor of every GROUP BY form: the same scan and grouping, no aggregate.
query[group_only]="SELECT $KEYS, date_bin('1 minute', ts, '2000-01-03 00:00:00+00') AS bin FROM samples GROUP BY 1, 2, 3"
query[plain]="SELECT $KEYS, $PLAIN FROM samples GROUP BY 1, 2, 3"
query[percentile_cont]="SELECT $KEYS, $PLAIN, percentile_cont(0.8) WITHIN GROUP (ORDER BY value) FROM samples GROUP BY 1, 2, 3"
query[tdigest]="SELECT $KEYS, $PLAIN, tdigest_percentile(value, 100, 0.8) FROM samples GROUP BY 1, 2, 3"
query[p80]="SELECT $KEYS, metricagg_bin(ts, '1 minute') AS bin, avg(value), min(value), max(value), p80(value) FROM samples GROUP BY 1, 2, 3"
query[stats]="SELECT $KEYS, metricagg_bin(ts, '1 minute') AS bin, metricagg_stats(value) FROM samples GROUP BY 1, 2, 3"
query[stats_parallel]="${query[stats]}"
# The same 166,800 rows, binned inside the aggregate: GROUP BY (server, metric) only.
query[stats_by_bin]="SELECT g.server_id, g.metric_type, b.* FROM (SELECT $KEYS, metricagg_stats_by_bin(ts, value, '1 minute') AS bins FROM samples GROUP BY 1, 2) g, unnest(g.bins) b"
# The same rows again, grouped inside one aggregate (no GROUP BY at all).
query[rollup]="SELECT r.* FROM (SELECT metricagg_rollup(server_id, metric_type, ts, value, '1 minute') AS a FROM samples) x, unnest(x.a) r"
query[rollup_parallel]="${query[rollup]}"
for n in "${names[@]}"; do settings[$n]="$SETTINGS"; done
settings[stats_parallel]="$SETTINGS $PARALLEL"
settings[rollup_parallel]="$SETTINGS $PARALLEL"

declare -A best spill_kb hash_kb vmhwm plan_kind
for n in "${names[@]}"; do
    best[$n]=""
    for _ in $(seq "$RUNS"); do
        out="$(psql_db <<SQL
${settings[$n]}
EXPLAIN (ANALYZE, TIMING OFF, BUFFERS, COSTS OFF) ${query[$n]};
SELECT 'VmHWM ' || (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'VmHWM:\s+(\d+)'))[1];
SQL
)"
        ms="$(grep -oP 'Execution Time: \K[0-9.]+' <<<"$out")"
        if [ -z "${best[$n]}" ] || awk "BEGIN{exit !($ms < ${best[$n]})}"; then
            best[$n]="$ms"
            # temp blocks written by the whole plan (top node's Buffers line), in kB
            tw="$(grep -m1 -oP 'Buffers:.*temp.*written=\K[0-9]+' <<<"$out" || true)"
            spill_kb[$n]=$(( ${tw:-0} * 8 ))
            hash_kb[$n]="$(grep -oP '(Memory Usage|Memory): \K[0-9]+' <<<"$out" | sort -n | tail -1 || true)"
            vmhwm[$n]="$(grep -oP 'VmHWM \K[0-9]+' <<<"$out")"
            plan_kind[$n]="$(grep -m1 -oP '(Finalize |Partial )?(HashAggregate|GroupAggregate|MixedAggregate|Aggregate)' <<<"$out")"
        fi
    done
done

base="${best[count]}"
printf '\n%-16s %10s %8s %10s %12s %12s  %s\n' query best_ms x_count spill_kB agg_mem_kB vmhwm_kB plan
for n in "${names[@]}"; do
    printf '%-16s %10.1f %8.2f %10s %12s %12s  %s\n' "$n" "${best[$n]}" \
        "$(awk "BEGIN{print ${best[$n]} / $base}")" "${spill_kb[$n]}" "${hash_kb[$n]:--}" "${vmhwm[$n]}" "${plan_kind[$n]}"
done
echo
echo "rows=$rows groups=$(psql_db -c "SELECT count(*) FROM (SELECT DISTINCT server_id, metric_type, date_bin('1 minute', ts, '2000-01-03') FROM samples) g")"
[ "${BENCH_KEEP:-0}" = 1 ] || bash scripts/db.sh psql postgres -c "DROP DATABASE $DB" >/dev/null
# stats = metricagg_rollup (serial): count/avg/min/max/p80 of every
# (server, metric, minute) in one pass, the same rows as the plain query;
# groupby_stats = GROUP BY server, metric, metricagg_bin(...) with metricagg_stats;
# groupby_floor = the same GROUP BY with no aggregate at all, the least any
# aggregate in that form can cost.
awk -v s="${best[rollup]}" -v g="${best[stats]}" -v p="${best[plain]}" -v c="${best[percentile_cont]}" -v f="${best[group_only]}" \
    'BEGIN { printf "stats_vs_plain=%.2f stats_vs_percentile_cont=%.3f groupby_stats_vs_plain=%.2f groupby_floor_vs_plain=%.2f\n", s / p, s / c, g / p, f / p }'
