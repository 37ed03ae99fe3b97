#!/usr/bin/env bash
# make demo / make stop: the whole pipeline on the embedded cluster, from a
# fresh Debian 12 machine with Rust.
#
#   scripts/demo.sh start   install what is missing, build and install the
#                           extension, start the cluster, seed a labelled day
#                           for 10 servers, run metricagg_run_once(), schedule
#                           loop mode, start insights-api (mock narrator) in
#                           the background, print /periods and /insights.
#                           Running it again is harmless: nothing is loaded
#                           twice and a running API is reused.
#   scripts/demo.sh stop    stop the API, unschedule loop mode, stop the cluster.
#
# Settings (environment): DEMO_SERVERS (10), DEMO_START (2025-11-16T00:00:00Z),
# DEMO_HOURS (24), DEMO_INTERVAL (1s), DEMO_SEED (42), DEMO_ANOMALY_RATE (4 per
# server-day), DEMO_API_BIND (127.0.0.1:3000), and scripts/db.sh's
# METRICAGG_HOME and METRICAGG_PORT (5433).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

SERVERS="${DEMO_SERVERS:-10}"
START="${DEMO_START:-2025-11-16T00:00:00Z}"
HOURS="${DEMO_HOURS:-24}"
INTERVAL="${DEMO_INTERVAL:-1s}"
SEED="${DEMO_SEED:-42}"
RATE="${DEMO_ANOMALY_RATE:-4}"
BIND="${DEMO_API_BIND:-127.0.0.1:3000}"
MHOME="${METRICAGG_HOME:-$ROOT/.metricagg}"
PIDFILE="$MHOME/insights-api.pid"
APILOG="$MHOME/insights-api.log"
API="http://$BIND"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
redact() { sed -E 's#://([^:/@]+):[^@]*@#://\1:***@#g'; }

api_pid() {
    # The pid in the file, if that process is still our insights-api.
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'insights-api' || return 1
    echo "$pid"
}

cmd_start() {
    local end
    [[ "$SERVERS" =~ ^[1-9][0-9]*$ ]] || die "DEMO_SERVERS must be a number of servers, got $SERVERS"
    end="$(date -u -d "$START + $HOURS hours" +%Y-%m-%dT%H:%M:%SZ)" || die "DEMO_START must be RFC 3339, got $START"

    step "dependencies (scripts/install-deps.sh; skips what is present)"
    bash scripts/install-deps.sh
    for tool in curl jq psql; do
        command -v "$tool" >/dev/null || die "$tool is missing (apt-get install $tool)"
    done

    step "the pg_metricagg extension (release build, installed into PostgreSQL ${PG_MAJOR:-15})"
    make -s install-release

    step "the embedded cluster"
    bash scripts/db.sh start
    eval "$(bash scripts/db.sh env)"

    step "building seeder and insights-api (release)"
    cargo build --release -q -p seeder -p insights-api

    step "seeding $SERVERS servers, $START .. $end, every $INTERVAL, seed $SEED, $RATE anomalies per server-day"
    local rc state servers="ARRAY(SELECT 'srv-' || g FROM generate_series(1, $SERVERS) g)"
    # loaded: an earlier make demo loaded it; retired: it did, and loop mode's
    # raw retention has since dropped those days (their bins remain), so the
    # raw side refuses them again, rightly; empty: load it.
    state="$(psql -X -q -At -v ON_ERROR_STOP=1 "$INGEST_DATABASE_URL" -c "SELECT CASE
        WHEN metricagg.count_samples('$START', '$end', $servers) > 0 THEN 'loaded'
        WHEN EXISTS (SELECT 1 FROM metricagg.retired WHERE server_id = ANY ($servers)
                     AND days && tstzrange('$START', '$end')) THEN 'retired'
        ELSE 'empty' END")"
    case "$state" in
        loaded) echo "already loaded (from an earlier make demo): nothing is loaded twice" ;;
        retired) echo "loaded by an earlier make demo; raw retention has since dropped those days (their bins remain): nothing to load" ;;
        *)
            set +e
            ./target/release/seeder --servers "$SERVERS" --start "$START" --end "$end" --interval "$INTERVAL" \
                --seed "$SEED" --anomaly-rate "$RATE" --database-url "$INGEST_DATABASE_URL" --quiet 2>&1 | redact
            rc="${PIPESTATUS[0]}"
            set -e
            case "$rc" in
                0) ;;
                3) echo "(the demo day is already loaded, by an earlier make demo: nothing is loaded twice)" ;;
                *) die "seeder failed (exit $rc)" ;;
            esac ;;
    esac

    step "once mode, as the job role: SELECT metricagg_run_once()"
    psql -X -q -At "$JOB_DATABASE_URL" -c "SELECT metricagg_run_once()"

    step "loop mode, as the administrator: SELECT metricagg_schedule('1 minute')"
    psql -X -q -At "$ANALYTICS_DATABASE_URL" -c "SELECT metricagg_schedule('1 minute')" >/dev/null
    psql -X -q "$ANALYTICS_DATABASE_URL" -c \
        "SELECT jobname, schedule, database, username FROM cron.job WHERE jobname LIKE 'metricagg-%' ORDER BY jobid"

    step "insights-api (mock narrator) on $API"
    local pid
    if pid="$(api_pid)" && curl -fsS "$API/health" >/dev/null 2>&1; then
        echo "already running (pid $pid)"
    else
        if pid="$(api_pid)"; then kill "$pid"; sleep 1; fi
        mkdir -p "$MHOME"
        BIND="$BIND" API_DATABASE_URL="$API_DATABASE_URL" LLM_MODE=mock OPENAI_API_KEY= \
            RUST_LOG="${RUST_LOG:-insights_api=info}" \
            nohup ./target/release/insights-api >"$APILOG" 2>&1 </dev/null &
        echo $! >"$PIDFILE"
        echo "started (pid $!, log $APILOG)"
    fi
    local i
    for i in $(seq 1 60); do
        curl -fsS "$API/health" >/dev/null 2>&1 && break
        api_pid >/dev/null || { tail -20 "$APILOG" >&2; die "insights-api exited (log: $APILOG)"; }
        sleep 0.5
    done
    curl -fsS "$API/health" | jq -c . || { tail -20 "$APILOG" >&2; die "insights-api did not answer /health"; }

    step "GET /periods"
    curl -fsS "$API/periods" | jq -r '
        (.periods // .) as $p | if ($p | length) == 0 then "no periods yet" else
        ($p[] | "\(.start) .. \(.end)  \(.servers | length) servers  \(.bins) bins") end'

    step "GET /insights?start=$START&end=$end"
    curl -fsS "$API/insights?start=$START&end=$end" | jq -r '
        "Summary: \(.narrative.summary)",
        "",
        "Health:",
        (.health[]? | "  \(.server | .+ (" " * (8 - length)))  \(.status | .+ (" " * (8 - length)))  score \(.score)  anomalies \(.anomalies)"),
        "",
        "Anomalies by kind: " + ([.anomalies[]?.kind] | group_by(.) | map("\(.[0])=\(length)") | join(", ")),
        "",
        "Top findings (evidence = fact ids):",
        (.narrative.findings[:8][] | "  - \(.text)  [\(.evidence | join(", "))]"),
        "",
        "Narrator: \(.llm.mode), validated=\(.llm.validated)"'

    cat <<EOF

==> the demo is running
  Connection URLs:    eval "\$(make -s db-env)"
  Bins in psql:       psql "\$ANALYTICS_DATABASE_URL" -c "SELECT * FROM metricagg.bins WHERE server_id = 'srv-2' AND width = '1 hour' ORDER BY ts LIMIT 5"
  Raw in psql:        psql "\$RAW_DATABASE_URL" -c "SELECT server_id, metricagg_bin(ts, '5 minutes') AS bin, p80(value) FROM metricagg.samples WHERE metric_type = 'cpu' GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 5"
  Aggregate now:      psql "\$JOB_DATABASE_URL" -c "SELECT metricagg_run_once()"
  Loop-mode history:  psql "\$ANALYTICS_DATABASE_URL" -c "SELECT * FROM metricagg.job_runs ORDER BY id DESC LIMIT 5"
  The API:            curl -s $API/periods | jq
                      curl -s '$API/insights?start=$START&end=$end&server=srv-2' | jq .narrative
                      curl -s '$API/series?server=srv-2&metric=cpu&start=$START&end=$end&width=1h' | jq
  API log:            $APILOG
  Stop everything:    make stop
EOF
}

cmd_stop() {
    local pid
    if pid="$(api_pid)"; then
        kill "$pid"
        for _ in $(seq 1 20); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
        echo "demo: insights-api stopped (pid $pid)"
    else
        echo "demo: insights-api not running"
    fi
    rm -f "$PIDFILE"
    if bash scripts/db.sh status >/dev/null 2>&1; then
        echo "demo: loop mode unscheduled ($(bash scripts/db.sh psql metrics_analytics -At -c "SELECT metricagg_unschedule()") pg_cron jobs removed)"
    fi
    bash scripts/db.sh stop
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
