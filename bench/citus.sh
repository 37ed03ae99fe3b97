#!/usr/bin/env bash
# make bench-citus: the pipeline with its raw side on one node against the
# same pipeline with its raw side on the local Citus cluster (a coordinator
# and two workers, 32 shards), in one run, on the same rows.
#
#  1. load:        the rows of bench-pipeline (10M: 100 servers x 4 metrics x
#                  25,000 s ending at hh:30 of the current hour, the last
#                  2,500 s of servers 1-5 held back as late) through the
#                  ingest role, one INSERT per 1,000 s of data, into a raw
#                  database of the embedded cluster (scripts/db.sh) and into
#                  a distributed one (scripts/citus.sh).
#  2. full:        metricagg_run_once() over everything, best of 3 (the
#                  analytics side reset between runs), on each.
#  3. incremental: +1% rows (the 50k late ones and the next 125 s of every
#                  server), one run each.
#  4. per worker:  the job's 1-minute aggregation through the coordinator
#                  for the servers of one worker only, and for all (best of
#                  3, EXPLAIN ANALYZE execution time): the per-worker cost
#                  behind the scaling model of docs/citus.md.
#  5. ingest:      psql \copy of one 1M-row file through the ingest role
#                  (change-log trigger on) into a day partition of its own,
#                  emptied before every run, best of 3: a single node's COPY
#                  against COPY through the coordinator.
# The bins of both end equal to their from-scratch recompute (checked).
# Last line: citus_full_vs_single=… citus_ingest_vs_single=…
# (full: time ratio, lower is better, goal <= 1.0; ingest: rows/s ratio,
# higher is better, goal >= 0.7.)
set -euo pipefail
shopt -s inherit_errexit   # a failing step inside $(...) stops the benchmark too
cd "$(dirname "$0")/.."

make -s install-release >&2
bash scripts/db.sh start
bash scripts/citus.sh start
S_RAW=bench_citus_single_raw S_AN=bench_citus_single_an
C_RAW=bench_citus_raw C_AN=bench_citus_an
single() { bash scripts/db.sh psql "$@"; }
coordinator() { bash scripts/citus.sh psql coordinator "$@"; }
for db in "$S_AN" "$S_RAW"; do single postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null; done
for db in "$C_AN" "$C_RAW"; do bash scripts/citus.sh drop-db "$db"; done
bash scripts/db.sh create-db raw "$S_RAW" >/dev/null
bash scripts/db.sh create-db analytics "$S_AN" "$S_RAW" >/dev/null
METRICAGG_CITUS_SHARDS=32 bash scripts/citus.sh create-db raw "$C_RAW" >/dev/null
bash scripts/citus.sh create-db analytics "$C_AN" "$C_RAW" >/dev/null
url_of() { sed -n "s/^export $1=//p"; }
S_ENV="$(bash scripts/db.sh env)"
C_ENV="$(bash scripts/citus.sh env)"
S_INGEST="$(url_of INGEST_DATABASE_URL <<<"$S_ENV")"; S_INGEST="${S_INGEST%/*}/$S_RAW"
S_JOB="$(url_of JOB_DATABASE_URL <<<"$S_ENV")"; S_JOB="${S_JOB%/*}/$S_AN"
C_INGEST="$(url_of INGEST_DATABASE_URL <<<"$C_ENV")"; C_INGEST="${C_INGEST%/*}/$C_RAW"
C_JOB="$(url_of JOB_DATABASE_URL <<<"$C_ENV")"; C_JOB="${C_JOB%/*}/$C_AN"
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
now() { date +%s%N; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }

# CPU time an instance has used so far, in ms: its postmaster, the children
# it has reaped (cutime, cstime) and the live ones. Deltas of it are what an
# operation cost each node, whatever else shares the machine's cores.
MHOME="${METRICAGG_HOME:-$PWD/.metricagg}"
INSTANCES=("$MHOME/data" "$MHOME/citus/coordinator/data" "$MHOME/citus/worker1/data" "$MHOME/citus/worker2/data")
cpu_ms() { # data directory
    local pm child
    pm=$(head -1 "$1/postmaster.pid")
    {
        awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat"
        for child in $(pgrep -P "$pm"); do awk '{ print $14 + $15 }' "/proc/$child/stat" 2>/dev/null || true; done
    } | awk -v hz="$(getconf CLK_TCK)" '{ s += $1 } END { printf "%.0f", s * 1000 / hz }'
}
cpu_all() { local d; for d in "${INSTANCES[@]}"; do printf '%s ' "$(cpu_ms "$d")"; done; }
cpu_delta() { # before after divisor: per-instance ms, single coordinator worker1 worker2
    paste -d' ' <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) |
        awk -v n="$3" '{ printf "%10.0f", ($2 - $1) / n }'
}

T0="$(single postgres -Atc "SELECT date_trunc('hour', now()) + interval '30 minutes' - interval '25000 seconds'")"
VALUE="greatest(0, 40 + 20 * sin(2 * pi() * t / 3600.0 + s) + 10 * random())"
rows() { # first_second last_second servers_from servers_to [extra condition]
    echo "INSERT INTO metricagg.samples
          SELECT 'srv-' || s, m, timestamptz '$T0' + t * interval '1 second', $VALUE
          FROM generate_series($1, $2) t, generate_series($3, $4) s,
               unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m ${5:+WHERE $5};"
}
load() { # ingest_url
    psql "$1" -Xqc "SELECT metricagg.ensure_partitions('$T0', timestamptz '$T0' + interval '2 days')" >/dev/null
    for chunk in $(seq 0 24); do
        psql "$1" -Xq -c "$(rows $((chunk * 1000)) $((chunk * 1000 + 999)) 1 100 'NOT (s <= 5 AND t >= 22500)')"
    done
}
echo "loading 10M rows into the single node..." >&2
start=$(now); load "$S_INGEST"; s_load_ms=$(ms "$start" "$(now)")
echo "loading the same rows through the Citus coordinator..." >&2
start=$(now); load "$C_INGEST"; c_load_ms=$(ms "$start" "$(now)")
single "$S_RAW" -qc "VACUUM (ANALYZE) metricagg.samples" >/dev/null
coordinator "$C_RAW" -qc "VACUUM (ANALYZE) metricagg.samples" >/dev/null

# A run's own duration as the job records it (job_runs.duration_ms).
last_run_ms() { "$1" "$2" -Atc "SELECT round(duration_ms::numeric, 1) FROM metricagg.job_runs ORDER BY id DESC LIMIT 1"; }
full_best() { # admin_fn analytics_db job_url
    local best="" i summary
    for i in 1 2 3; do
        if [ "$i" -gt 1 ]; then
            "$1" "$2" -qc "TRUNCATE metricagg.bins, metricagg.pending_bins, metricagg.job_runs;
                           DELETE FROM metricagg.job_watermarks; UPDATE metricagg.job_state SET closed_before = NULL" >/dev/null
        fi
        summary="$(psql "$3" -XAtc "SELECT metricagg_run_once()")"
        echo "  $summary" >&2
        best=$(min "$best" "$(last_run_ms "$1" "$2")")
    done
    echo "$best"
}
echo "full runs, single node:" >&2
cpu0=$(cpu_all); s_full_ms=$(full_best single "$S_AN" "$S_JOB"); cpu1=$(cpu_all)
echo "full runs, Citus:" >&2
c_full_ms=$(full_best coordinator "$C_AN" "$C_JOB"); cpu2=$(cpu_all)
s_full_cpu=$(cpu_delta "$cpu0" "$cpu1" 3); c_full_cpu=$(cpu_delta "$cpu1" "$cpu2" 3)

# The job's 1-minute aggregation through the coordinator for one worker's
# servers, then for all: what one worker costs, and how two overlap.
worker_servers() { # group id
    coordinator "$C_RAW" -Atc "SELECT string_agg('srv-' || s, ',') FROM generate_series(1, 100) s
        JOIN pg_dist_placement p ON p.shardid = get_shard_id_for_distribution_column('metricagg.samples', 'srv-' || s)
        WHERE p.groupid = $1"
}
# What the job sends through postgres_fdw for the 1-minute width (the Remote
# SQL of its query), run as the job role on the raw side. On the single node
# it runs serially, as the FDW cursor does.
remote_sql() { # job_url predicate
    local q
    q="$(psql "$1" -XAt -c "SELECT metricagg.bins_query('1 minute', 'metricagg.raw_samples', \$p\$$2\$p\$)")"
    psql "$1" -XAt -c "EXPLAIN (VERBOSE, COSTS OFF) $q" | grep -oP '^\s*Remote SQL: \K.*'
}
aggregate_ms() { # job_url raw_db predicate [settings]
    local q best="" t
    q="$(remote_sql "$1" "$3")"
    for _ in 1 2 3; do
        # The last Execution Time is the coordinator's (Citus's tasks report their own).
        t=$(psql "${1%/*}/$2" -XAt -c "SET jit = off" ${4:+-c "$4"} -c "EXPLAIN (ANALYZE, TIMING OFF) $q" |
            grep -oP 'Execution Time: \K[0-9.]+' | tail -1)
        best=$(min "$best" "$t")
    done
    echo "$best"
}
groups="$(coordinator "$C_RAW" -Atc "SELECT string_agg(groupid::text, ' ' ORDER BY groupid) FROM pg_dist_node WHERE groupid <> 0")"
per_worker=""
for g in $groups; do
    list="$(worker_servers "$g")"
    n=$(tr ',' '\n' <<<"$list" | grep -c .)
    t=$(aggregate_ms "$C_JOB" "$C_RAW" "server_id = ANY ('{$list}')")
    per_worker+="$(printf '%-34s %10s %10s' "  worker group $g alone ($n servers)" "" "$t")"$'\n'
done
both_ms=$(aggregate_ms "$C_JOB" "$C_RAW" "true")
single_agg_ms=$(aggregate_ms "$S_JOB" "$S_RAW" "true" "SET max_parallel_workers_per_gather = 0")

psql "$S_INGEST" -Xq -c "$(rows 22500 24999 1 5)" -c "$(rows 25000 25124 1 100)"
psql "$C_INGEST" -Xq -c "$(rows 22500 24999 1 5)" -c "$(rows 25000 25124 1 100)"
psql "$S_JOB" -XAtc "SELECT metricagg_run_once()" >&2; s_inc_ms=$(last_run_ms single "$S_AN")
psql "$C_JOB" -XAtc "SELECT metricagg_run_once()" >&2; c_inc_ms=$(last_run_ms coordinator "$C_AN")

# A run with nothing to do: the fixed cost of every run (loop mode runs
# every minute). Its own timing, from the summary.
empty_best() { # job_url
    local best="" t
    for _ in 1 2 3; do
        t=$(psql "$1" -XAtc "SELECT metricagg_run_once()" | sed -n 's/.*0 change-log entries.*, \([0-9.]*\) ms$/\1/p')
        [ -n "$t" ] || { echo "an empty run found work" >&2; exit 1; }
        best=$(min "$best" "$t")
    done
    echo "$best"
}
s_empty_ms=$(empty_best "$S_JOB"); c_empty_ms=$(empty_best "$C_JOB")

# Oracle check on both: the bins equal a from-scratch recompute.
oracle="SELECT count(*) FROM metricagg.bins b FULL JOIN metricagg.recompute_all_bins() o USING (server_id, metric_type, width, ts)
        WHERE b.count IS DISTINCT FROM o.count OR b.p80 IS DISTINCT FROM o.p80"
for side in "single $S_AN" "coordinator $C_AN"; do
    bad=$($side -Atc "$oracle")
    [ "$bad" = 0 ] || { echo "$side: bins differ from the oracle in $bad rows" >&2; exit 1; }
done

# Ingest: the same 1M-row file through the ingest role, into an empty day.
COPY_DAY="$(single postgres -Atc "SELECT (date_trunc('day', now()) - interval '3 days')::date")"  # empty, and inside the ingest window
COPY_PART="metricagg.samples_$(date -d "$COPY_DAY" +%Y%m%d)"
tmpdir="$(mktemp -d)"; chmod 777 "$tmpdir"   # the administrator's psql runs as the postgres OS user
trap 'rm -rf "$tmpdir"' EXIT
file="$tmpdir/copy-1m.tsv"
single "$S_RAW" -qc "\\copy (SELECT 'srv-' || s, m, timestamptz '$COPY_DAY 00:00:00+00' + t * interval '1 second', ${VALUE}
                             FROM generate_series(0, 2499) t, generate_series(1, 100) s,
                                  unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m) TO '$file'" >/dev/null
copy_best() { # admin_fn raw_db ingest_url
    local best="" t start
    psql "$3" -Xqc "SELECT metricagg.ensure_partitions('$COPY_DAY', timestamptz '$COPY_DAY' + interval '1 day')" >/dev/null
    for _ in 1 2 3; do
        "$1" "$2" -qc "TRUNCATE $COPY_PART" >/dev/null
        start=$(now)
        psql "$3" -Xq -c "\\copy metricagg.samples FROM '$file'"
        t=$(ms "$start" "$(now)")
        best=$(min "$best" "$t")
    done
    echo "$best"
}
cpu0=$(cpu_all); s_copy_ms=$(copy_best single "$S_RAW" "$S_INGEST"); cpu1=$(cpu_all)
c_copy_ms=$(copy_best coordinator "$C_RAW" "$C_INGEST"); cpu2=$(cpu_all)
s_copy_cpu=$(cpu_delta "$cpu0" "$cpu1" 3); c_copy_cpu=$(cpu_delta "$cpu1" "$cpu2" 3)

printf '\n%-34s %10s %10s\n' "measurement (ms)" single citus
printf '%-34s %10s %10s\n' "load 10M rows (25 INSERTs)" "$s_load_ms" "$c_load_ms"
printf '%-34s %10s %10s\n' "metricagg_run_once() full (best/3)" "$s_full_ms" "$c_full_ms"
printf '%-34s %10s %10s\n' "metricagg_run_once() +1% rows" "$s_inc_ms" "$c_inc_ms"
printf '%-34s %10s %10s\n' "\\copy 1M rows, trigger on (best/3)" "$s_copy_ms" "$c_copy_ms"
printf '%-34s %10s %10s\n' "a run with nothing new (best/3)" "$s_empty_ms" "$c_empty_ms"
printf '%-34s %10s %10s\n' "1-minute aggregation (best/3)" "$single_agg_ms" "$both_ms"
printf '%s' "$per_worker"
printf '\n%-34s %10s %10s %10s %10s\n' "CPU ms per operation" single coordinator worker1 worker2
printf '%-34s %s\n' "full run, single node" "$s_full_cpu"
printf '%-34s %s\n' "full run, Citus" "$c_full_cpu"
printf '%-34s %s\n' "\\copy 1M rows, single node" "$s_copy_cpu"
printf '%-34s %s\n' "\\copy 1M rows, Citus" "$c_copy_cpu"
if [ "${BENCH_KEEP:-0}" != 1 ]; then
    for db in "$S_AN" "$S_RAW"; do single postgres -qc "DROP DATABASE $db" >/dev/null; done
    for db in "$C_AN" "$C_RAW"; do bash scripts/citus.sh drop-db "$db"; done
fi
awk -v s="$s_load_ms" -v c="$c_load_ms" -v si="$s_inc_ms" -v ci="$c_inc_ms" \
    'BEGIN { printf "load through the coordinator vs single node: %.2f (rows/s ratio); incremental run: %.2f (time ratio)\n", s / c, ci / si }' >&2
awk -v sf="$s_full_ms" -v cf="$c_full_ms" -v sc="$s_copy_ms" -v cc="$c_copy_ms" \
    'BEGIN { printf "citus_full_vs_single=%.2f citus_ingest_vs_single=%.2f\n", cf / sf, sc / cc }'
