#!/usr/bin/env bash
# make bench-api: /insights latency over 24 h x 50 servers x 4 metrics of
# one-minute bins (288,000 bins), mock narrator, one client, measured with wrk.
# Not a test. Measures two configurations of the same binary: cold
# (CACHE_MAX_BINS=0: every request fetches its 288k bins) and the default
# (the fetched bins are reused while metricagg.bins_version is unchanged; the
# analysis and the narrative still run on every request). Prints how a
# request's time splits between the database fetch, the analysis and the
# narrative for each, the shares of CPU time stolen by the host and left idle
# over the runs (context for comparing runs on a shared VM), then the last line
#   p50_ms=… p99_ms=… rps=… cold_p50_ms=… cold_p99_ms=…
# and on TimescaleDB also cold_uncompressed_p50_ms=… cold_uncompressed_p99_ms=….
#
# The bins are stored as scripts/db.sh create-db makes them: a TimescaleDB
# hypertable when TimescaleDB is installed, else native partitions;
# METRICAGG_BINS_ENGINE=native|timescaledb chooses (one database per engine).
# On TimescaleDB the day measured is older than the compression policy's
# compress_after, so production keeps it compressed: the policy runs before
# the measurements (not whenever the scheduler next starts it, which could be
# during one). The cold path is then measured once more with the day
# decompressed, as the last days (not compressed yet) are read.
# The service takes one pooled connection per request (issue 12), so a cold
# fetch is one backend's work, in parallel workers where PostgreSQL can.
#
# Settings: BENCH_SECONDS (20), BENCH_CONNECTIONS (1), BENCH_PORT (3918),
# BENCH_API_BIN (an insights-api binary to measure instead of building this
# tree's release one: before/after comparisons under the same conditions).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_RUN="${BENCH_SECONDS:-20}"
CONNS="${BENCH_CONNECTIONS:-1}"
PORT="${BENCH_PORT:-3918}"
# Bins inserted in time order, as the job writes them.
DB="ia_bench_50x24h_${METRICAGG_BINS_ENGINE:-auto}"
START=2025-11-15T00:00:00Z
END=2025-11-16T00:00:00Z

command -v wrk >/dev/null || { [ "$(id -u)" -eq 0 ] && apt-get install -y wrk >/dev/null; } \
    || { echo "bench-api: wrk is missing (apt-get install wrk)" >&2; exit 1; }

bash scripts/db.sh start
eval "$(bash scripts/db.sh env)"
ADMIN_URL="${ANALYTICS_DATABASE_URL%/*}/$DB"
have="$(psql -X -At "$ANALYTICS_DATABASE_URL" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")"
# The bins' month gets its partition before they are written, as the job's
# metricagg.ensure_bin_partition does in production (native storage; a
# hypertable makes its own chunks and the call returns false). Prints t when
# it created one.
partition_month() {
    psql -X -At "$ADMIN_URL" -c "SELECT metricagg.ensure_bin_partition(timestamptz '$START')"
}
if [ "$have" = 1 ]; then
    bash scripts/db.sh create-db analytics "$DB" >/dev/null # current extension and schema
    rows="$(psql -X -At "$ADMIN_URL" -c "SELECT count(*) FROM metricagg.bins WHERE width = '1 minute'")"
    # built before the bins had their month's partition: build it again
    [ "$(partition_month)" != t ] || rows=0
else
    rows=0
fi
if [ "$rows" != 288000 ]; then
    echo "bench-api: building $DB (288,000 one-minute bins)" >&2
    psql -X -q "$ANALYTICS_DATABASE_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    bash scripts/db.sh create-db analytics "$DB" >/dev/null
    partition_month >/dev/null
    # Daily cycle, a per-server level, noise; a few spikes and level shifts.
    psql -X -q "$ADMIN_URL" <<'SQL'
INSERT INTO metricagg.bins (server_id, metric_type, width, ts, count, avg, min, max, p80)
SELECT 'srv-' || s, m, interval '1 minute', ts, 60, v, v - 2 - random(), v + 2 + random(), v + 1
  FROM generate_series(1, 50) s,
       unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m,
       generate_series(timestamptz '2025-11-15 00:00+00', timestamptz '2025-11-15 23:59+00', interval '1 minute') ts,
       LATERAL (SELECT greatest(0, least(100,
                  30 + (s % 7) * 5 + 10 * sin(2 * pi() * extract(epoch FROM ts) / 86400) + 2 * random()
                  + CASE WHEN s % 10 = 0 AND extract(hour FROM ts) = 13 AND extract(minute FROM ts) < 2 THEN 40 ELSE 0 END
                  + CASE WHEN s % 17 = 0 AND extract(hour FROM ts) = 9 AND extract(minute FROM ts) < 20 THEN 25 ELSE 0 END)) AS v) x
 ORDER BY ts, s, m;
INSERT INTO metricagg.bins (server_id, metric_type, width, ts, count, avg, min, max, p80)
SELECT server_id, metric_type, interval '1 hour', date_trunc('hour', ts), sum(count), avg(avg), min(min), max(max), max(p80)
  FROM metricagg.bins WHERE width = '1 minute' GROUP BY 1, 2, 4;
ANALYZE metricagg.bins;
SQL
fi

ENGINE="$(psql -X -At "$ADMIN_URL" -c "SELECT metricagg.bins_engine()")"
# TimescaleDB: runs the compression policy now; prints nothing.
compress_now() {
    local job
    job="$(psql -X -At "$ADMIN_URL" -c "SELECT job_id FROM timescaledb_information.jobs
        WHERE proc_name = 'policy_compression' AND hypertable_schema = 'metricagg' AND hypertable_name = 'bins'")"
    psql -X -q "$ADMIN_URL" -c "CALL run_job($job)" >/dev/null
}
[ "$ENGINE" != timescaledb ] || compress_now
echo "bench-api: bins storage: $(psql -X -At "$ADMIN_URL" -c "SELECT metricagg.bins_storage()"); load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
BIN="${BENCH_API_BIN:-./target/release/insights-api}"
[ -n "${BENCH_API_BIN:-}" ] || cargo build --release -p insights-api --bin insights-api >&2
API_URL="${API_DATABASE_URL%/*}/$DB"
URL="http://127.0.0.1:$PORT/insights?start=$START&end=$END"
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null || true' EXIT

# One configuration: the server with CACHE_MAX_BINS=$1 (0: every request
# fetches its bins; the default keeps them while metricagg.bins_version is
# unchanged), the split of a request's time, then wrk. Prints
# "p50 p99 rps" on stdout.
measure() {
    BIND="127.0.0.1:$PORT" API_DATABASE_URL="$API_URL" LLM_MODE=mock RUST_LOG=warn CACHE_MAX_BINS="$1" \
        "$BIN" >/tmp/bench-api-server.log 2>&1 &
    PID=$!
    for _ in $(seq 1 50); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
        sleep 0.2
    done
    # Where the time goes: the response's own timing, over 10 requests.
    for _ in $(seq 1 10); do curl -sf "$URL"; echo; done | LABEL="$2" python3 -c '
import json, os, sys
rows = [json.loads(l)["timing_ms"] for l in sys.stdin if l.strip()]
med = lambda k: sorted(r[k] for r in rows)[len(rows) // 2]
caches = sorted(set(r["db_cache"] for r in rows))
print("bench-api %s: median split over %d requests: db_fetch_ms=%.1f analysis_ms=%.1f narrative_ms=%.2f (db_cache: %s)" % (os.environ["LABEL"], len(rows), med("db"), med("analysis"), med("narrative"), "/".join(caches)), file=sys.stderr)
'
    curl -sf "$URL" | python3 -c '
import json, sys
v = json.load(sys.stdin)
print("bench-api: %d bins, %d servers, %d anomalies, %d facts, narrative validated=%s" % (v["period"]["bins"], len(v["servers"]), len(v["anomalies"]), len(v["facts"]), v["llm"]["validated"]), file=sys.stderr)
'
    OUT="$(wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" --timeout 10s --latency "$URL")"
    echo "$OUT" >&2
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    echo "$OUT" | python3 -c '
import re, sys
t = sys.stdin.read()
def ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)", s)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v if u == "ms" else v * 1000 if u == "s" else v * 60000
p = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", t, re.M))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
print("%.0f %.0f %.1f" % (ms(p["50"]), ms(p["99"]), rps))
'
}

# CPU time the hypervisor gave to others (steal) and left idle over the
# runs: context for comparing runs on a shared VM (on 2026-12-01 `top` showed
# 75-100% steal and every figure doubled; on 2026-12-02 1% steal, yet the
# same build's analysis still varied 1.5x from minute to minute).
cpu_times() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9, $5}' /proc/stat; }
read -r total0 steal0 idle0 < <(cpu_times)
read -r cold50 cold99 coldrps < <(measure 0 "cold (CACHE_MAX_BINS=0, every request fetches)")
read -r p50 p99 rps < <(measure 2000000 "default (bins reused while bins_version is unchanged)")
extra=""
if [ "$ENGINE" = timescaledb ]; then
    psql -X -q "$ADMIN_URL" -c "SELECT count(decompress_chunk(c, if_compressed => true)) FROM show_chunks('metricagg.bins') c" >/dev/null
    read -r un50 un99 unrps < <(measure 0 "cold over chunks not compressed (as the last days are)")
    compress_now
    echo "bench-api: cold, not compressed: p50_ms=$un50 p99_ms=$un99 rps=$unrps" >&2
    extra=" cold_uncompressed_p50_ms=$un50 cold_uncompressed_p99_ms=$un99"
fi
read -r total1 steal1 idle1 < <(cpu_times)
awk -v t="$((total1 - total0))" -v s="$((steal1 - steal0))" -v i="$((idle1 - idle0))" \
    'BEGIN { if (t > 0) printf "bench-api: over the runs, CPU time stolen by the host: %.1f%%, idle: %.1f%%\n", 100 * s / t, 100 * i / t }' >&2
echo "bench-api: cold p50_ms=$cold50 p99_ms=$cold99 rps=$coldrps" >&2
echo "p50_ms=$p50 p99_ms=$p99 rps=$rps cold_p50_ms=$cold50 cold_p99_ms=$cold99$extra"
