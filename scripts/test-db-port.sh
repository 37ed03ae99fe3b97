#!/usr/bin/env bash
# make test-db-port: scripts/db.sh and METRICAGG_PORT. A cluster started on
# one port and started again with another moves to it (it used to fail on a
# socket that did not exist); while it runs, a command given another port
# refuses with a message naming both ports and exits non-zero.
# On a cluster of its own (.metricagg/port-test, ports DB_PORT_TEST_A and
# DB_PORT_TEST_B, default 5477 and 5478).
set -euo pipefail
cd "$(dirname "$0")/.."
export METRICAGG_HOME="$PWD/.metricagg/port-test" METRICAGG_NO_INSTALL=1
A="${DB_PORT_TEST_A:-5477}" B="${DB_PORT_TEST_B:-5478}"
fail() { printf 'test-db-port: FAIL: %s\n' "$*" >&2; exit 1; }
cleanup() { bash scripts/db.sh destroy >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup

on() { METRICAGG_PORT="$1" bash scripts/db.sh psql postgres -Atc "SHOW port"; }
METRICAGG_PORT="$A" bash scripts/db.sh start >/dev/null 2>&1 || fail "start on $A"
[ "$(on "$A")" = "$A" ] || fail "not on $A after the first start"

# another port while it runs: refused, naming both ports, nothing changed
if out="$(METRICAGG_PORT="$B" bash scripts/db.sh psql postgres -Atc "SELECT 1" 2>&1)"; then
    fail "psql with METRICAGG_PORT=$B succeeded against a cluster on $A"
fi
case "$out" in
    *"runs on port $A, not METRICAGG_PORT=$B"*) ;;
    *) fail "unclear error for the wrong port: $out" ;;
esac
if METRICAGG_PORT="$B" bash scripts/db.sh env >/dev/null 2>&1; then
    fail "env printed URLs for port $B while the cluster runs on $A"
fi
[ "$(on "$A")" = "$A" ] || fail "the refused command disturbed the cluster"

# start with the other port: it moves (restart), data and roles intact
METRICAGG_PORT="$B" bash scripts/db.sh start >/dev/null 2>&1 || fail "start on $B"
[ "$(on "$B")" = "$B" ] || fail "not on $B after starting with it"
eval "$(METRICAGG_PORT="$B" bash scripts/db.sh env)"
psql -X -q -At "$API_DATABASE_URL" -c "SELECT count(*) FROM metricagg.bins" >/dev/null \
    || fail "the api role cannot connect on $B"
# and stopped, then started on the first port again
METRICAGG_PORT="$B" bash scripts/db.sh stop >/dev/null 2>&1
METRICAGG_PORT="$A" bash scripts/db.sh start >/dev/null 2>&1 || fail "start back on $A"
[ "$(on "$A")" = "$A" ] || fail "not back on $A"
echo "test-db-port: passed (moved $A -> $B -> $A; another port refused while running)"
