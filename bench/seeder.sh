#!/usr/bin/env bash
# Seeder benchmark (issue 4). In one run, on the embedded cluster:
#   1. the generator alone (seeder --dry-run: generate + encode + hash, no database);
#   2. the seeder loading the rows (binary COPY over $BENCH_CONNECTIONS connections,
#      default 2, one transaction per batch), wall clock of the whole process, as the
#      ingest role; and, for reference, over a single connection;
#   3. psql running a server-side `COPY metricagg.samples FROM '<file>' (FORMAT binary)`
#      of the very same rows, pre-generated with `seeder --output` (the server's own
#      limit: no client, no network), wall clock of psql.
# Both loads go into fresh databases made by `scripts/db.sh create-db raw`, with the
# change-log trigger on, day partitions created by metricagg.ensure_partitions inside
# the timed part, and a CHECKPOINT before each. Each is run $BENCH_REPEAT times,
# alternating, and the best rate of each is kept.
# Last line: seeder_vs_copy=R generator_vs_load=G seeder_rows_per_s=N
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

SERVERS="${BENCH_SERVERS:-50}"
SECONDS_RANGE="${BENCH_SECONDS:-25000}"   # 50 servers x 4 metrics x 25000 s = 5M rows
CONNECTIONS="${BENCH_CONNECTIONS:-2}"
REPEAT="${BENCH_REPEAT:-3}"
START=2025-06-01T00:00:00Z
ARGS=(--servers "$SERVERS" --start "$START" --duration "${SECONDS_RANGE}s" --seed 1)

say() { printf 'bench-seeder: %s\n' "$*" >&2; }
now() { date +%s.%N; }

cargo build --release -q -p seeder
SEEDER="$ROOT/target/release/seeder"
bash scripts/db.sh start
eval "$(bash scripts/db.sh env)"

WORK="$(mktemp -d /tmp/seeder-bench.XXXXXX)"
chmod 755 "$WORK"
DBS=()
cleanup() {
    for db in "${DBS[@]}"; do
        psql "$RAW_DATABASE_URL" -X -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

best() { printf '%s\n' "$@" | sort -g | tail -1; }
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }

# 1. The generator alone.
gen_rates=()
for i in $(seq "$REPEAT"); do
    line="$("$SEEDER" "${ARGS[@]}" --dry-run -q)"
    gen_rates+=("$(echo "$line" | field rows_per_s)")
done
ROWS="$(echo "$line" | field rows)"
GEN="$(best "${gen_rates[@]}")"
say "generator alone: ${gen_rates[*]} rows/s (rows=$ROWS)"

# The same rows as a binary COPY file, readable by the server.
"$SEEDER" "${ARGS[@]}" --output "$WORK/samples.bin" -q >/dev/null
chmod 644 "$WORK/samples.bin"
say "binary COPY file: $(du -h "$WORK/samples.bin" | cut -f1)"

END="$(date -u -d "$START + $SECONDS_RANGE seconds" +%Y-%m-%dT%H:%M:%SZ)"
fresh_db() { # name -> admin URL
    DBS+=("$1")
    bash scripts/db.sh create-db raw "$1"
}
check_rows() { # admin_url
    local n
    n="$(psql "$1" -X -Atc "SELECT count(*) FROM metricagg.samples")"
    [ "$n" = "$ROWS" ] || { say "expected $ROWS rows, found $n"; exit 1; }
    n="$(psql "$1" -X -Atc "SELECT coalesce(sum(row_count), 0) FROM metricagg.change_log")"
    [ "$n" = "$ROWS" ] || { say "change log saw $n rows, expected $ROWS"; exit 1; }
}
rate() { awk -v r="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", r / (b - a) }'; }

copy_rates=(); seeder_rates=(); one_rates=()
for i in $(seq "$REPEAT"); do
    # psql COPY FROM the file, as the administrator (server-side COPY needs it).
    url="$(fresh_db "seeder_bench_copy_$$_$i")"
    psql "$url" -X -q -c CHECKPOINT
    t0="$(now)"
    psql "$url" -X -q -v ON_ERROR_STOP=1 \
        -c "SELECT metricagg.ensure_partitions('$START', '$END')" \
        -c "COPY metricagg.samples (server_id, metric_type, ts, value) FROM '$WORK/samples.bin' (FORMAT binary)" >/dev/null
    t1="$(now)"
    check_rows "$url"
    copy_rates+=("$(rate "$ROWS" "$t0" "$t1")")
    psql "$RAW_DATABASE_URL" -X -q -c "DROP DATABASE \"seeder_bench_copy_$$_$i\" WITH (FORCE)"

    # The seeder, as the ingest role.
    name="seeder_bench_load_$$_$i"
    url="$(fresh_db "$name")"
    psql "$url" -X -q -c CHECKPOINT
    t0="$(now)"
    "$SEEDER" "${ARGS[@]}" -q --connections "$CONNECTIONS" \
        --database-url "${INGEST_DATABASE_URL%/*}/$name" >/dev/null
    t1="$(now)"
    check_rows "$url"
    seeder_rates+=("$(rate "$ROWS" "$t0" "$t1")")
    psql "$RAW_DATABASE_URL" -X -q -c "DROP DATABASE \"$name\" WITH (FORCE)"

    # For reference: the seeder over a single connection (one backend, like psql).
    name="seeder_bench_one_$$_$i"
    url="$(fresh_db "$name")"
    psql "$url" -X -q -c CHECKPOINT
    t0="$(now)"
    "$SEEDER" "${ARGS[@]}" -q --connections 1 \
        --database-url "${INGEST_DATABASE_URL%/*}/$name" >/dev/null
    t1="$(now)"
    check_rows "$url"
    one_rates+=("$(rate "$ROWS" "$t0" "$t1")")
    psql "$RAW_DATABASE_URL" -X -q -c "DROP DATABASE \"$name\" WITH (FORCE)"
    say "round $i: psql COPY ${copy_rates[-1]} rows/s, seeder ${seeder_rates[-1]} rows/s ($CONNECTIONS connections), ${one_rates[-1]} rows/s (1 connection)"
done

COPY="$(best "${copy_rates[@]}")"
LOAD="$(best "${seeder_rates[@]}")"
ONE="$(best "${one_rates[@]}")"
say "best: generator $GEN, seeder $LOAD ($CONNECTIONS connections) / $ONE (1 connection), psql COPY $COPY rows/s; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v o="$ONE" -v c="$COPY" 'BEGIN { printf "bench-seeder: single connection: seeder_1conn_vs_copy=%.2f\n", o / c }' >&2
awk -v s="$LOAD" -v c="$COPY" -v g="$GEN" \
    'BEGIN { printf "seeder_vs_copy=%.2f generator_vs_load=%.1f seeder_rows_per_s=%.0f\n", s / c, g / s, s }'
