#!/usr/bin/env bash
# make soak: the pipeline under a realistic, hostile load for a while, then
# checked against the from-scratch recompute (issue 12). Not part of make test.
#
#   SOAK_SERVERS=20 SOAK_MINUTES=10 make soak
#
# On a cluster of its own (.metricagg/soak, port SOAK_PORT, default 5475):
# the seeder in live mode (one sample per second per server and metric) and
# loop mode (pg_cron, every minute), and meanwhile, every few seconds, one of:
# late rows for a random server and a random minute of the last hour, a
# poison row (refused at ingest), a poison change-log entry (the job must set
# it aside), a run killed in the middle (pg_terminate_backend). At the end it
# stops the seeder, lets the job catch up and prints: rows ingested, runs,
# runs killed, quarantined entries, the largest lag between a sample's commit
# and the run that aggregated it, and the differences from the recompute
# (which must be 0: the script fails otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SERVERS="${SOAK_SERVERS:-20}"
MINUTES="${SOAK_MINUTES:-10}"
export METRICAGG_HOME="$ROOT/.metricagg/soak" METRICAGG_PORT="${SOAK_PORT:-5475}"
say() { printf 'soak: %s\n' "$*" >&2; }
die() { printf 'soak: FAIL: %s\n' "$*" >&2; exit 1; }
[[ "$SERVERS" =~ ^[1-9][0-9]*$ && "$MINUTES" =~ ^[1-9][0-9]*$ ]] || die "SOAK_SERVERS and SOAK_MINUTES must be positive numbers"

cargo build --release -q -p seeder
bash scripts/db.sh destroy >/dev/null 2>&1 || true
bash scripts/db.sh start
eval "$(bash scripts/db.sh env)"
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# The lag is measured from each change-log entry (logged at the end of its
# statement) to the end of the run that consumed it; the job prunes the log,
# so a copy of each entry's id, xid and time is kept aside for the report.
q "$RAW_DATABASE_URL" <<'SQL'
CREATE TABLE IF NOT EXISTS public.soak_log (xid xid8, logged_at timestamptz);
CREATE OR REPLACE FUNCTION public.soak_copy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.soak_log SELECT xid, logged_at FROM new_entries; RETURN NULL; END $$;
DROP TRIGGER IF EXISTS soak_copy ON metricagg.change_log;
CREATE TRIGGER soak_copy AFTER INSERT ON metricagg.change_log REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION public.soak_copy();
GRANT SELECT ON public.soak_log TO metricagg_job;
SQL
q "$ANALYTICS_DATABASE_URL" <<'SQL'
DROP FOREIGN TABLE IF EXISTS public.soak_log;
CREATE FOREIGN TABLE public.soak_log (xid xid8, logged_at timestamptz)
    SERVER metricagg_raw OPTIONS (schema_name 'public', table_name 'soak_log');
SELECT metricagg_schedule('1 minute');
SQL

say "seeder: live mode, $SERVERS servers, 1 Hz, for $MINUTES minutes; loop mode every minute"
./target/release/seeder --mode live --servers "$SERVERS" --interval 1s --anomaly-rate 4 \
    --database-url "$INGEST_DATABASE_URL" --quiet >"$METRICAGG_HOME/seeder.log" 2>&1 &
seeder=$!
trap 'kill -INT "$seeder" 2>/dev/null || true' EXIT

late=0 poison_rows=0 poison_entries=0 kills=0
end=$(( $(date +%s) + MINUTES * 60 ))
while [ "$(date +%s)" -lt "$end" ]; do
    sleep $(( 3 + RANDOM % 8 ))
    kill -0 "$seeder" 2>/dev/null || { cat "$METRICAGG_HOME/seeder.log" >&2; die "the seeder stopped"; }
    case $(( RANDOM % 4 )) in
        0)  # late rows: a random server, a random minute of the last hour
            s=$(( 1 + RANDOM % SERVERS )); back=$(( 120 + RANDOM % 3300 ))
            q "$INGEST_DATABASE_URL" -c "INSERT INTO metricagg.samples
                SELECT 'srv-$s', m, date_trunc('second', now()) - interval '$back seconds' + make_interval(secs => i), random() * 100
                FROM unnest('{cpu,memory}'::text[]) m, generate_series(0, 29) i" && late=$((late + 1)) ;;
        1)  # a poison row: refused, and nothing else is affected
            if q "$INGEST_DATABASE_URL" -c "INSERT INTO metricagg.samples VALUES ('srv-1', 'cpu', 'infinity', 1)" 2>/dev/null; then
                die "a sample at infinity was accepted"
            fi
            poison_rows=$((poison_rows + 1)) ;;
        2)  # a poison change-log entry (as a trigger bypass would leave): quarantined
            q "$RAW_DATABASE_URL" -c "INSERT INTO metricagg.change_log (server_id, min_ts, max_ts, row_count)
                VALUES ('srv-poison', now(), 'infinity', 1)" && poison_entries=$((poison_entries + 1)) ;;
        3)  # kill a run in the middle, if one is running
            n="$(q "$ANALYTICS_DATABASE_URL" -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = current_database() AND query LIKE '%metricagg_run_once()%' AND state = 'active'
                       AND pid <> pg_backend_pid()")"
            kills=$((kills + n)) ;;
    esac
done

say "stopping the seeder, letting the job catch up"
kill -INT "$seeder"; wait "$seeder" || true; trap - EXIT
q "$ANALYTICS_DATABASE_URL" -c "SELECT metricagg_unschedule()" >/dev/null
# Wait until every transaction is below the horizon, then a last run. (Bins
# still open, the current hour, are left out of the comparison by the oracle.)
q "$RAW_DATABASE_URL" -c "DO \$\$ DECLARE t xid8 := pg_snapshot_xmax(pg_current_snapshot()); BEGIN
    FOR i IN 1..600 LOOP EXIT WHEN pg_snapshot_xmin(pg_current_snapshot()) >= t; PERFORM pg_sleep(0.1); END LOOP; END \$\$"
q "$JOB_DATABASE_URL" -c "SELECT metricagg_run_once()" >/dev/null

rows="$(q "$RAW_DATABASE_URL" -c "SELECT count(*) FROM metricagg.samples")"
runs="$(q "$ANALYTICS_DATABASE_URL" -c "SELECT count(*) FROM metricagg.job_runs")"
quarantined="$(q "$ANALYTICS_DATABASE_URL" -c "SELECT count(*) FROM metricagg.quarantine")"
lag="$(q "$ANALYTICS_DATABASE_URL" -c "SELECT coalesce(round(extract(epoch FROM max(r.finished_at - s.logged_at))::numeric, 1), 0)
    FROM public.soak_log s CROSS JOIN LATERAL (
        SELECT finished_at FROM metricagg.job_runs r
        WHERE (r.watermarks->'0'->>'to')::xid8 > s.xid ORDER BY r.id LIMIT 1) r")"
diff="$(q "$ANALYTICS_DATABASE_URL" -c "SELECT count(*) FROM metricagg.bins b
    FULL JOIN metricagg.recompute_all_bins() o USING (server_id, metric_type, width, ts)
    WHERE b.count IS DISTINCT FROM o.count OR float8send(b.min) IS DISTINCT FROM float8send(o.min)
       OR float8send(b.max) IS DISTINCT FROM float8send(o.max) OR float8send(b.p80) IS DISTINCT FROM float8send(o.p80)
       OR (b.avg = o.avg OR abs(b.avg - o.avg) <= 1e-9 * abs(o.avg)) IS NOT TRUE")"
say "late batches=$late poison rows refused=$poison_rows poison entries=$poison_entries runs killed=$kills"
echo "soak_rows=$rows soak_runs=$runs soak_killed=$kills soak_quarantined=$quarantined soak_max_lag_s=$lag soak_oracle_diff=$diff"
[ "$quarantined" = "$poison_entries" ] || die "quarantined $quarantined entries, injected $poison_entries"
[ "$diff" = 0 ] || die "$diff bins differ from the recompute"
bash scripts/db.sh stop
