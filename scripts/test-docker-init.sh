#!/usr/bin/env bash
# make test-docker-init: runs the compose init scripts (docker/raw-db/initdb,
# docker/analytics-db/initdb) the way the images' entrypoint does, against two
# throwaway local PostgreSQL servers (the development machines have
# PostgreSQL 15 and no Docker engine), then checks the two-server topology
# end to end: ingest role loads rows, the job role runs metricagg_run_once()
# through postgres_fdw with the aggregation pushed down, the bins equal the
# oracle, the api role can read but not write, and the pg_cron jobs exist.
# The analytics server preloads TimescaleDB, as the compose image does, so
# bins are a hypertable; without TimescaleDB installed the analytics init runs
# with METRICAGG_BINS_ENGINE=native and says so (REQUIRE_TIMESCALEDB=1 makes
# that a failure).
# Settings: DOCKER_INIT_TEST_PORT (first of two ports, default 5461).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PG_MAJOR="${PG_MAJOR:-15}"
B="/usr/lib/postgresql/${PG_MAJOR}/bin"
P1="${DOCKER_INIT_TEST_PORT:-5461}"; P2=$((P1 + 1))
W="$ROOT/.metricagg/docker-init-test"
fail() { printf 'test-docker-init: FAIL: %s\n' "$*" >&2; exit 1; }
for t in "$B/initdb" "$B/pg_ctl" psql; do command -v "$t" >/dev/null || fail "$t not found"; done
for p in "$P1" "$P2"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then fail "port $p is in use (set DOCKER_INIT_TEST_PORT)"; fi
done

if [ "$(id -u)" -eq 0 ]; then as_pg() { runuser -u postgres -- "$@"; }; OWNER=postgres; else as_pg() { "$@"; }; OWNER="$(id -un)"; fi
stop_all() {
    for d in raw analytics; do
        [ -f "$W/$d/postmaster.pid" ] && as_pg "$B/pg_ctl" -D "$W/$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$W"
}
trap stop_all EXIT
stop_all
mkdir -p "$W/run" "$W/sql"
[ "$(id -u)" -eq 0 ] && { chmod o+x "$ROOT" "$ROOT/.metricagg"; chown -R "$OWNER" "$W"; }

# The images load sql/ from /metricagg/sql: point the scripts at the checkout.
for s in docker/raw-db/initdb/*.sh docker/analytics-db/initdb/*.sh; do
    sed "s#/metricagg/sql#$ROOT/sql#g" "$s" >"$W/sql/$(basename "$s")"
done
chmod -R a+rX "$W"

if [ -f "$("$B/pg_config" --pkglibdir)/timescaledb.so" ]; then
    AN_PRELOAD="timescaledb,pg_cron"; AN_ENGINE=timescaledb
else
    [ -z "${REQUIRE_TIMESCALEDB:-}" ] || fail "TimescaleDB is not installed and REQUIRE_TIMESCALEDB is set"
    echo "test-docker-init: TimescaleDB is not installed: analytics-db runs with native partitions"
    AN_PRELOAD="pg_cron"; AN_ENGINE=native
fi

start() { # name port database preload
    as_pg "$B/initdb" -D "$W/$1" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    cat >>"$W/$1/postgresql.conf" <<EOC
port = $2
listen_addresses = '127.0.0.1'
unix_socket_directories = '$W/run'
shared_preload_libraries = '$4'
timescaledb.telemetry_level = off
cron.database_name = '$3'
cron.use_background_workers = on
max_worker_processes = 24
jit = off
random_page_cost = 1.1
EOC
    as_pg "$B/pg_ctl" -D "$W/$1" -l "$W/$1.log" -w start >/dev/null || { cat "$W/$1.log" >&2; fail "$1 server did not start"; }
    as_pg psql -X -q -h "$W/run" -p "$2" -U postgres -d postgres -c "ALTER ROLE postgres PASSWORD 'admin-test'" -c "CREATE DATABASE $3"
}
start raw "$P1" metrics_raw pg_cron
start analytics "$P2" metrics_analytics "$AN_PRELOAD"

echo "test-docker-init: raw-db init script"
as_pg env PGHOST="$W/run" PGPORT="$P1" POSTGRES_USER=postgres POSTGRES_DB=metrics_raw \
    METRICAGG_INGEST_PASSWORD=ingest-test METRICAGG_JOB_PASSWORD=job-test bash "$W/sql/10-metricagg-raw.sh" 2>"$W/raw-init.err" \
    || { cat "$W/raw-init.err" >&2; fail "raw-db init script"; }
echo "test-docker-init: analytics-db init script"
as_pg env PGHOST="$W/run" PGPORT="$P2" POSTGRES_USER=postgres POSTGRES_DB=metrics_analytics \
    METRICAGG_JOB_PASSWORD=job-test METRICAGG_API_PASSWORD=api-test METRICAGG_RAW_HOST=127.0.0.1 METRICAGG_RAW_PORT="$P1" \
    METRICAGG_BINS_ENGINE="$AN_ENGINE" \
    bash "$W/sql/10-metricagg-analytics.sh" 2>"$W/an-init.err" || { cat "$W/an-init.err" >&2; fail "analytics-db init script"; }

q() { # user password port db sql
    PGPASSWORD="$2" psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$3" -U "$1" -d "$4" -c "$5"
}
q metricagg_ingest ingest-test "$P1" metrics_raw \
    "SELECT metricagg.ensure_partitions('2025-11-15', '2025-11-16');
     INSERT INTO metricagg.samples SELECT 'srv-' || s, m, '2025-11-15 00:00+00'::timestamptz + i * interval '1 second', (i * s) % 97
     FROM generate_series(1, 3) s, unnest('{cpu,memory}'::text[]) m, generate_series(0, 10799) i" >/dev/null
# Wait until the insert is below the raw server's horizon.
q postgres admin-test "$P1" metrics_raw "DO \$\$ BEGIN FOR i IN 1..600 LOOP
    EXIT WHEN pg_snapshot_xmin(pg_current_snapshot()) > (SELECT max(xid) FROM metricagg.change_log); PERFORM pg_sleep(0.1); END LOOP; END \$\$"
summary="$(q metricagg_job job-test "$P2" metrics_analytics "SELECT metricagg_run_once()")"
echo "test-docker-init: $summary"
[[ "$summary" == *"3 change-log entries"* ]] || fail "the job did not consume the 3 change-log entries (one per statement and server)"
plan="$(q metricagg_job job-test "$P2" metrics_analytics \
    "EXPLAIN (VERBOSE, COSTS OFF) SELECT server_id, metric_type, metricagg_bin(ts, '1 minute'), metricagg_stats(value) FROM metricagg.raw_samples GROUP BY 1, 2, 3")"
grep -q 'Remote SQL: SELECT .*metricagg_stats(value) .*GROUP BY' <<<"$plan" || { echo "$plan" >&2; fail "aggregation not pushed down to raw-db"; }
read -r minute_bins hour_bins diff < <(q metricagg_job job-test "$P2" metrics_analytics \
    "SELECT (SELECT count(*) FROM metricagg.bins WHERE width = '1 minute'), (SELECT count(*) FROM metricagg.bins WHERE width = '1 hour'),
            (WITH b AS (SELECT server_id, metric_type, width, ts, count, round(avg::numeric, 9), min, max, p80 FROM metricagg.bins),
                  o AS (SELECT server_id, metric_type, width, ts, count, round(avg::numeric, 9), min, max, p80
                        FROM metricagg.recompute_all_bins())
             SELECT count(*) FROM ((TABLE o EXCEPT TABLE b) UNION ALL (TABLE b EXCEPT TABLE o)) d)" | tr '|' ' ')
echo "test-docker-init: bins: 1 minute=$minute_bins 1 hour=$hour_bins, differences from the oracle=$diff"
[ "$minute_bins" = 1080 ] || fail "expected 1080 one-minute bins (3 servers x 2 metrics x 180), got $minute_bins"
[ "$diff" = 0 ] || fail "bins differ from metricagg.recompute_all_bins()"
[ "$(q metricagg_api api-test "$P2" metrics_analytics "SELECT count(*) FROM metricagg.bins")" -gt 0 ] || fail "api role cannot read bins"
if q metricagg_api api-test "$P2" metrics_analytics "DELETE FROM metricagg.bins" >/dev/null 2>&1; then fail "api role could delete bins"; fi
if q metricagg_ingest ingest-test "$P1" metrics_raw "SELECT count(*) FROM metricagg.samples" >/dev/null 2>&1; then fail "ingest role could read samples"; fi
jobs_an="$(q postgres admin-test "$P2" metrics_analytics "SELECT string_agg(jobname || '@' || database || ':' || username, ' ' ORDER BY jobname) FROM cron.job")"
jobs_raw="$(q postgres admin-test "$P1" metrics_raw "SELECT string_agg(jobname || '@' || database || ':' || username, ' ' ORDER BY jobname) FROM cron.job")"
echo "test-docker-init: analytics pg_cron: $jobs_an"
echo "test-docker-init: raw pg_cron: $jobs_raw"
[[ "$jobs_an" == *"metricagg-run-once@metrics_analytics:metricagg_job"* ]] || fail "loop mode not scheduled on analytics-db"
[[ "$jobs_an" != *"@metrics_raw"* ]] || fail "analytics-db schedules jobs in a database it does not have"
[[ "$jobs_raw" == *"metricagg-raw-partitions@metrics_raw:metricagg_job"* && "$jobs_raw" == *"metricagg-raw-retention@metrics_raw:metricagg_job"* ]] \
    || fail "raw-db partition/retention jobs missing"
engine="$(q postgres admin-test "$P2" metrics_analytics "SELECT metricagg.bins_engine()")"
echo "test-docker-init: bins storage: $(q postgres admin-test "$P2" metrics_analytics "SELECT metricagg.bins_storage()")"
[ "$engine" = "$AN_ENGINE" ] || fail "bins are stored as $engine, expected $AN_ENGINE"
echo "test-docker-init: passed"
