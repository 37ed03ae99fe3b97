#!/usr/bin/env bash
# A local Citus cluster for the raw side: a coordinator and two workers, each
# its own PostgreSQL 15 instance under $METRICAGG_HOME/citus/, with Citus
# first in shared_preload_libraries and pg_metricagg in every raw database.
# The raw database (metrics_raw) is distributed: samples by server_id, the
# change log co-located with it (sql/citus/raw.sql). The analytics database
# (metrics_analytics, with pg_cron) lives in the coordinator's instance as an
# ordinary database and reads the raw side through postgres_fdw, as it would
# read a single raw server.
#
#   scripts/citus.sh start               init (first time), start the three nodes, set up; idempotent
#   scripts/citus.sh stop | status | destroy
#   scripts/citus.sh env                 the same exports as `scripts/db.sh env`, for this cluster
#   scripts/citus.sh psql NODE DB [psql args]
#                                        psql as the administrator; NODE: coordinator, worker1, worker2
#   scripts/citus.sh create-db raw|analytics NAME [RAW_NAME]
#                                        a fresh distributed raw database (on every node), or an
#                                        analytics database whose FDW reads RAW_NAME through the
#                                        coordinator; prints its admin URL
#   scripts/citus.sh drop-db NAME        drops a database on every node
#   scripts/citus.sh node-stop|node-start NODE
#                                        one node down and back (the tests' failed worker)
#   scripts/citus.sh start-workers       starts the workers that are not running
#
# Every node is started and provisioned by scripts/db.sh (start-node: the
# server and the roles; the coordinator gets the full `start`), with the
# passwords shared through one secrets file. Nodes reach each other over
# their private Unix sockets (trusted, mode 700, the postgres OS user only):
# no password is stored in Citus's catalog.
#
# Settings (environment): METRICAGG_HOME (default <repo>/.metricagg),
# METRICAGG_CITUS_PORT (default 5450; the workers take the next two ports),
# METRICAGG_CITUS_SHARDS (shards per distributed table for databases created
# from now on, default 32), METRICAGG_NO_INSTALL=1 as for scripts/db.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MHOME="${METRICAGG_HOME:-$ROOT/.metricagg}"
CHOME="$MHOME/citus"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}"
BASE_PORT="${METRICAGG_CITUS_PORT:-5450}"
SHARDS="${METRICAGG_CITUS_SHARDS:-32}"
NODES=(coordinator worker1 worker2)
WORKERS=(worker1 worker2)
RAW_DB=metrics_raw
ANALYTICS_DB=metrics_analytics

say() { printf 'citus: %s\n' "$*" >&2; }
die() { printf 'citus: error: %s\n' "$*" >&2; exit 1; }

port_of() {
    case "$1" in
        coordinator) echo "$BASE_PORT" ;;
        worker1) echo $((BASE_PORT + 1)) ;;
        worker2) echo $((BASE_PORT + 2)) ;;
        *) die "unknown node '$1' (coordinator, worker1, worker2)" ;;
    esac
}

# scripts/db.sh for one node: its own home and port, the shared passwords,
# and Citus first in shared_preload_libraries (pg_cron on the coordinator
# only: it runs the analytics database's loop mode).
node_db() { # node db.sh-args...
    local node="$1"; shift
    local preload=citus
    [ "$node" = coordinator ] && preload=citus,pg_cron
    METRICAGG_HOME="$CHOME/$node" METRICAGG_PORT="$(port_of "$node")" \
        METRICAGG_SECRETS="$CHOME/secrets.env" METRICAGG_PRELOAD="$preload" \
        bash "$ROOT/scripts/db.sh" "$@"
}

node_psql() { # node db [psql args]
    local node="$1" db="$2"; shift 2
    node_db "$node" psql "$db" "$@"
}

# The Unix socket directory of a node: its name in pg_dist_node.
socket_of() { echo "$CHOME/$1/run"; }

is_up() {
    [ -f "$CHOME/$1/data/PG_VERSION" ] && node_db "$1" status >/dev/null 2>&1
}

# Settings every Citus node needs, written with ALTER SYSTEM (they survive
# scripts/db.sh rewriting its own files); a node whose pending settings need
# a restart is restarted once.
#  * max_prepared_transactions: Citus commits a transaction that wrote to
#    several nodes with two-phase commit;
#  * citus.max_adaptive_executor_pool_size: connections one session opens
#    per worker for a multi-shard statement (the roles' CONNECTION LIMIT
#    applies on every worker; two cores here);
#  * synchronous_commit = local: the same as `on` without synchronous
#    standbys; a session that wants to wait for one says so (the tests hold
#    a two-phase commit open that way);
#  * citus.local_hostname: how a node reaches itself (a shard move does),
#    over its socket like every other connection between nodes;
#  * shared_buffers: three instances share this machine.
# And metricagg_owner may log in: Citus runs DDL on the workers as the role
# that issues it, and sql/raw.sql creates the schema's functions and views as
# metricagg_owner. It has no password, so only the nodes' private sockets
# (the postgres OS user) can log in as it.
configure_node() {
    local node="$1"
    node_psql "$node" postgres -c "ALTER ROLE metricagg_owner LOGIN" \
        -c "ALTER SYSTEM SET max_prepared_transactions = 64" \
        -c "ALTER SYSTEM SET citus.max_adaptive_executor_pool_size = 4" \
        -c "ALTER SYSTEM SET citus.local_hostname = '$(socket_of "$node")'" \
        -c "ALTER SYSTEM SET synchronous_commit = 'local'" \
        -c "ALTER SYSTEM SET shared_buffers = '256MB'" \
        -c "SELECT pg_reload_conf()" >/dev/null
    if [ "$(node_psql "$node" postgres -Atc "SELECT count(*) FROM pg_settings WHERE pending_restart")" != 0 ]; then
        say "restarting $node for its Citus settings"
        node_db "$node" stop
        node_db "$node" start-node
    fi
}

# Runs `FUNCTION NODE ARGS...` for the three nodes at once; fails if any fails.
on_every_node() {
    local fn="$1" node pids=() failed=0 pid
    shift
    for node in "${NODES[@]}"; do
        "$fn" "$node" "$@" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "$fn $* failed on a node (see above)"
}

node_citus_database() { # node db
    local node="$1" db="$2"
    if [ "$(node_psql "$node" postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = '$db'")" = 0 ]; then
        node_psql "$node" postgres -c "CREATE DATABASE \"$db\"" >/dev/null
    fi
    node_psql "$node" "$db" -c "CREATE EXTENSION IF NOT EXISTS citus" >/dev/null
}

# A database with Citus on every node, the coordinator knowing the workers;
# tables distributed in it from now on get METRICAGG_CITUS_SHARDS shards.
citus_database() {
    local db="$1"
    on_every_node node_citus_database "$db"
    node_psql coordinator "$db" -v coordinator="$(socket_of coordinator)" -v coordinator_port="$(port_of coordinator)" \
        -v w1="$(socket_of worker1)" -v w1_port="$(port_of worker1)" \
        -v w2="$(socket_of worker2)" -v w2_port="$(port_of worker2)" -v shards="$SHARDS" <<'SQL' >/dev/null
SELECT citus_set_coordinator_host(:'coordinator', :'coordinator_port'::integer);
SELECT format('ALTER DATABASE %I SET citus.shard_count = %s', current_database(), :'shards'::integer) \gexec
SELECT citus_add_node(:'w1', :'w1_port'::integer) WHERE NOT EXISTS
    (SELECT 1 FROM pg_dist_node WHERE nodename = :'w1' AND nodeport = :'w1_port'::integer);
SELECT citus_add_node(:'w2', :'w2_port'::integer) WHERE NOT EXISTS
    (SELECT 1 FROM pg_dist_node WHERE nodename = :'w2' AND nodeport = :'w2_port'::integer);
SQL
}


cmd_start() {
    local node
    mkdir -p "$CHOME"
    [ "$(id -u)" -eq 0 ] && chmod o+x "$ROOT" "$MHOME" "$CHOME"
    [ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ] \
        || die "Citus is not installed: CITUS_SOURCE=<citus tarball> bash scripts/install-deps.sh"
    for node in "${NODES[@]}"; do
        node_db "$node" start-node
        configure_node "$node"
    done
    # The raw schema (sql/raw.sql, which distributes it on Citus: sql/citus/raw.sql),
    # the analytics database, its FDW to the coordinator and pg_cron.
    citus_database "$RAW_DB"
    node_db coordinator start
    say "ready: coordinator 127.0.0.1:$(port_of coordinator), workers $(port_of worker1) and $(port_of worker2); raw=$RAW_DB (distributed) analytics=$ANALYTICS_DB ('make citus-env' prints the URLs)"
}

cmd_stop() {
    local node
    for node in worker2 worker1 coordinator; do
        [ -f "$CHOME/$node/data/PG_VERSION" ] && node_db "$node" stop
    done
    return 0
}

cmd_status() {
    local node rc=0
    for node in "${NODES[@]}"; do
        if is_up "$node"; then say "$node: running on 127.0.0.1:$(port_of "$node")"; else say "$node: not running"; rc=3; fi
    done
    if is_up coordinator; then
        node_psql coordinator "$RAW_DB" -At -c "SELECT format('node group %s: %s:%s%s', groupid, nodename, nodeport,
                CASE WHEN shouldhaveshards THEN '' ELSE ' (no shards)' END) FROM pg_dist_node ORDER BY groupid" 2>/dev/null >&2 || true
    fi
    return $rc
}

cmd_destroy() {
    local node
    for node in "${NODES[@]}"; do
        [ -d "$CHOME/$node" ] && node_db "$node" destroy
    done
    rm -rf "$CHOME"
    say "destroyed the Citus cluster in $CHOME"
}

cmd_create_db() {
    local kind="${1:-}" name="${2:-}" raw="${3:-$RAW_DB}"
    [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "create-db: NAME must be a lower-case identifier"
    [[ "$SHARDS" =~ ^[1-9][0-9]{0,3}$ ]] || die "METRICAGG_CITUS_SHARDS must be a number of shards"
    case "$kind" in
        raw) citus_database "$name"; node_db coordinator create-db raw "$name" ;;
        analytics) node_db coordinator create-db analytics "$name" "$raw" "$(port_of coordinator)" ;;
        *) die "create-db: KIND must be raw or analytics" ;;
    esac
}

# Transactions of the database left prepared (an interrupted two-phase
# commit) are rolled back first: they would keep the database, and hold back
# the node's horizon for every database on it.
node_drop_db() { # node db
    local node="$1" name="$2" gid
    for gid in $(node_psql "$node" postgres -Atc "SELECT gid FROM pg_prepared_xacts WHERE database = '$name'"); do
        node_psql "$node" "$name" -c "ROLLBACK PREPARED '$gid'" >/dev/null
    done
    node_psql "$node" postgres -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null
}

cmd_drop_db() {
    local name="${1:-}"
    [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "drop-db: NAME must be a lower-case identifier"
    on_every_node node_drop_db "$name"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    destroy) cmd_destroy ;;
    env) node_db coordinator env ;;
    psql) shift; node="${1:?psql: node}"; db="${2:?psql: database}"; shift 2; node_psql "$node" "$db" "$@" ;;
    create-db) shift; cmd_create_db "$@" ;;
    drop-db) shift; cmd_drop_db "$@" ;;
    node-stop) port_of "${2:?node}" >/dev/null; node_db "$2" stop ;;
    node-start) port_of "${2:?node}" >/dev/null; node_db "$2" start-node ;;
    start-workers) for node in "${WORKERS[@]}"; do is_up "$node" || node_db "$node" start-node; done ;;
    *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
