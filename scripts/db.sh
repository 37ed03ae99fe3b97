#!/usr/bin/env bash
# The embedded metricagg cluster: one PostgreSQL 15 cluster holding both the
# raw (metrics_raw) and the analytics (metrics_analytics) database, wired
# together with postgres_fdw exactly as two separate servers would be.
#
#   scripts/db.sh start                  init (first time), start, install, set up; idempotent
#   scripts/db.sh start-node             the same without the two databases: the server and
#                                        the roles only (a Citus node, see scripts/citus.sh)
#   scripts/db.sh stop | status | destroy
#   scripts/db.sh env                    export lines for RAW/ANALYTICS/INGEST/API/JOB_DATABASE_URL
#   scripts/db.sh psql DB [psql args]    psql as the administrator
#   scripts/db.sh create-db raw|analytics|local NAME [RAW_NAME [RAW_PORT]]
#                                        a fresh database with the full schema and grants
#                                        (analytics: its FDW server points at RAW_NAME,
#                                        default metrics_raw, on RAW_PORT, default this
#                                        cluster's; local: raw and analytics schemas in one
#                                        database, job source 'local'); prints its admin URL
#
# The schemas and roles are the SQL files in sql/ (roles.sql, raw.sql,
# analytics.sql, fdw.sql, schedule.sql), the same ones the compose images run.
# TimescaleDB, when installed, is preloaded (beside pg_cron), and analytics
# databases then keep bins in a hypertable; METRICAGG_BINS_ENGINE=native|
# timescaledb|auto (default auto) chooses for databases created from now on.
# METRICAGG_PRELOAD overrides the preloaded list (Citus nodes: citus first).
#
# Settings (environment): METRICAGG_HOME (default <repo>/.metricagg),
# METRICAGG_PORT (default 5433; a cluster moves to it at its next start, and
# the commands that connect refuse another port than the running one),
# METRICAGG_NO_INSTALL=1 (never build or
# install the extension; use the installed one). Passwords are generated on first start and
# kept in $METRICAGG_HOME/secrets.env (mode 600, git-ignored), or in
# METRICAGG_SECRETS when set (clusters that must share passwords).
# As root, the cluster runs as the `postgres` OS user; otherwise as you.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_MAJOR="${PG_MAJOR:-15}"
# PG_CONFIG picks the PostgreSQL installation (default: Debian's for PG_MAJOR).
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config}"
PGBIN="$("$PG_CONFIG" --bindir 2>/dev/null || echo "/usr/lib/postgresql/${PG_MAJOR}/bin")"
MHOME="${METRICAGG_HOME:-$ROOT/.metricagg}"
PORT="${METRICAGG_PORT:-5433}"
DATA="$MHOME/data"
RUN="$MHOME/run"
LOG="$MHOME/postgres.log"
SECRETS="${METRICAGG_SECRETS:-$MHOME/secrets.env}"
RAW_DB=metrics_raw
ANALYTICS_DB=metrics_analytics

say() { printf 'db: %s\n' "$*" >&2; }
die() { printf 'db: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    PGUSER_OS=postgres
    as_pg() { runuser -u postgres -- "$@"; }
else
    PGUSER_OS="$(id -un)"
    as_pg() { "$@"; }
fi

# psql as the administrator over the private Unix socket (only the cluster's
# OS user can reach it: the socket directory is mode 700).
admin_psql() {
    local db="$1"; shift
    as_pg env PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U postgres -d "$db" "$@"
}

# shared_preload_libraries: pg_cron, and TimescaleDB first when it is
# installed (an analytics database may only CREATE EXTENSION timescaledb on a
# server that preloads it; without, the backend ends with a FATAL error).
# Written at every start; a running server whose list differs is restarted.
preload_libraries() {
    local libdir
    if [ -n "${METRICAGG_PRELOAD:-}" ]; then echo "$METRICAGG_PRELOAD"; return; fi
    libdir="$("$PGBIN/pg_config" --pkglibdir)"
    if [ -f "$libdir/timescaledb.so" ]; then echo "timescaledb,pg_cron"; else echo "pg_cron"; fi
}

write_preload() {
    local want="$1" conf="$DATA/metricagg-preload.conf"
    {
        echo "# written by scripts/db.sh at every start: do not edit"
        echo "shared_preload_libraries = '$want'"
        case "$want" in *timescaledb*) echo "timescaledb.telemetry_level = off" ;; esac
        # Solid-state storage (what timescaledb-tune sets too): with the
        # default 4 the planner sorts one server's bins rather than read
        # them in the primary key's order (docs/operations.md).
        echo "random_page_cost = 1.1"
        # METRICAGG_PORT of this start (included last: it wins over the one
        # postgresql.conf got at initdb), so a cluster can move port.
        echo "port = $PORT"
    } | as_pg tee "$conf" >/dev/null
}

# The port a running cluster listens on (its postmaster.pid's 4th line).
running_port() {
    as_pg sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true
}

# The port a running cluster listens on when it is not METRICAGG_PORT;
# nothing when it is, or when no cluster runs.
other_port() {
    local on
    is_running || return 0
    on="$(running_port)"
    [ -z "$on" ] || [ "$on" = "$PORT" ] || echo "$on"
}

# Commands that connect refuse a METRICAGG_PORT other than the running
# cluster's, naming both (psql would fail on a socket that does not exist).
check_port() {
    local on
    on="$(other_port)"
    [ -z "$on" ] \
        || die "the cluster in $DATA runs on port $on, not METRICAGG_PORT=$PORT: use METRICAGG_PORT=$on, or move it with 'METRICAGG_PORT=$PORT scripts/db.sh start'"
}

# Waits (up to 60 s) until a running server accepts connections; returns
# at once when there is no server (any more: a killed postmaster is gone).
wait_ready() {
    local i
    for i in $(seq 1 120); do
        is_running || return 0
        as_pg "$PGBIN/pg_isready" -q -h "$RUN" -p "$PORT" && return 0
        sleep 0.5
    done
    die "PostgreSQL on port $PORT does not accept connections (log: $LOG)"
}

is_running() {
    [ -f "$DATA/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

load_secrets() {
    [ -f "$SECRETS" ] || die "no $SECRETS: run 'make db-start' first"
    # shellcheck disable=SC1090
    . "$SECRETS"
}

gen_secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

init_cluster() {
    say "initialising a PostgreSQL ${PG_MAJOR} cluster in $DATA (port $PORT)"
    mkdir -p "$MHOME"
    [ "$(id -u)" -eq 0 ] && chmod o+x "$ROOT" "$MHOME"
    install -d -m 700 "$DATA" "$RUN"
    [ "$(id -u)" -eq 0 ] && chown "$PGUSER_OS:$PGUSER_OS" "$DATA" "$RUN"
    if [ ! -f "$SECRETS" ]; then
        umask 077
        cat >"$SECRETS" <<EOF
ADMIN_PASSWORD=$(gen_secret)
INGEST_PASSWORD=$(gen_secret)
JOB_PASSWORD=$(gen_secret)
API_PASSWORD=$(gen_secret)
EOF
        umask 022
    fi
    as_pg "$PGBIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    cat >>"$DATA/postgresql.conf" <<EOF

# --- metricagg (scripts/db.sh) ---
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$RUN'
unix_socket_permissions = 0700
include_if_exists = 'metricagg-preload.conf'
cron.database_name = '$ANALYTICS_DB'
cron.use_background_workers = on
max_worker_processes = 24
max_parallel_workers_per_gather = 2
shared_buffers = 512MB
work_mem = 64MB
# JIT compiles each large-cost query with LLVM; for these short analytic
# queries the compile time can exceed the query by orders of magnitude.
jit = off
maintenance_work_mem = 256MB
max_wal_size = 4GB
checkpoint_timeout = 15min
logging_collector = off
log_min_messages = warning
EOF
}

# Installs the release build of the extension when the installed library is
# missing or older than its sources (cargo pgrx test installs a debug build).
install_extension() {
    local libdir so
    # Several checkouts can share one PostgreSQL installation: one of them
    # installs, the others set METRICAGG_NO_INSTALL=1.
    [ -z "${METRICAGG_NO_INSTALL:-}" ] || return 0
    libdir="$("$PGBIN/pg_config" --pkglibdir)"
    so="$libdir/pg_metricagg.so"
    if [ -f "$so" ] && [ -z "$(find "$ROOT/pg_metricagg" "$ROOT/crates" "$ROOT/Cargo.lock" -newer "$so" -type f -print -quit)" ]; then
        return
    fi
    say "building and installing the release extension"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -E env "PATH=$PATH")
    (cd "$ROOT" && "${sudo[@]}" bash scripts/install-extension.sh)
}

setup_roles() {
    load_secrets
    # Passwords travel as psql variables, never on a command line or in a file.
    admin_psql postgres -v ingest_pw="$INGEST_PASSWORD" -v job_pw="$JOB_PASSWORD" -v api_pw="$API_PASSWORD" \
        -f "$ROOT/sql/roles.sql" >/dev/null
    echo "ALTER ROLE postgres PASSWORD :'admin_pw';" | admin_psql postgres -v admin_pw="$ADMIN_PASSWORD" >/dev/null
}

# pg_metricagg in a database: created when missing; updated in place when
# the installed default version is newer (ALTER EXTENSION ... UPDATE, as a
# user upgrades; recreated if there is no update path); and, during
# development, recreated when the installed script of the same version changed
# since this database got it (never CASCADE: if a user object depends on it,
# this fails loudly instead of dropping anything). The script's hash is kept
# in $METRICAGG_HOME/extension-scripts/<cluster id>-<database oid>, not in
# the extension's comment: that is the description \dx shows (databases made
# before kept it there as 'script <md5>'; that is read once and replaced).
refresh_extension() {
    local db="$1" want have script sum stamp old comment
    want="$(admin_psql "$db" -Atc "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_metricagg'")"
    [ -n "$want" ] || return 0
    script="$("$PGBIN/pg_config" --sharedir)/extension/pg_metricagg--$want.sql"
    [ -f "$script" ] || return 0
    sum="$(md5sum "$script" | cut -c1-32)"
    stamp="$MHOME/extension-scripts/$(admin_psql "$db" -Atc "SELECT (SELECT system_identifier FROM pg_control_system()) || '-' || oid FROM pg_database WHERE datname = current_database()")"
    IFS='|' read -r have comment < <(admin_psql "$db" -Atc "SELECT extversion, obj_description(oid, 'pg_extension') FROM pg_extension WHERE extname = 'pg_metricagg'") || true
    old="$(cat "$stamp" 2>/dev/null || true)"
    [ -n "$old" ] || [[ "$comment" != "script "* ]] || old="$have ${comment#script }"
    if [ -z "$have" ]; then
        admin_psql "$db" -c "CREATE EXTENSION pg_metricagg"
    elif [ "$have" != "$want" ]; then
        say "$db: updating pg_metricagg $have to $want"
        admin_psql "$db" -c "ALTER EXTENSION pg_metricagg UPDATE" \
            || admin_psql "$db" -c "DROP EXTENSION pg_metricagg" -c "CREATE EXTENSION pg_metricagg"
    elif [ -n "$old" ] && [ "$old" != "$want $sum" ]; then
        admin_psql "$db" -c "DROP EXTENSION pg_metricagg" -c "CREATE EXTENSION pg_metricagg"
    elif [[ "$comment" == "script "* ]]; then
        admin_psql "$db" -c "COMMENT ON EXTENSION pg_metricagg IS $(admin_psql "$db" -Atc "SELECT quote_literal(comment) FROM pg_available_extensions WHERE name = 'pg_metricagg'")"
    fi
    mkdir -p "$(dirname "$stamp")"
    printf '%s %s\n' "$want" "$sum" >"$stamp"
}

create_database() {
    local db="$1"
    if [ "$(admin_psql postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
        admin_psql postgres -c "CREATE DATABASE \"$db\""
    fi
    refresh_extension "$db"
}

setup_raw() {
    local db="$1"
    create_database "$db"
    admin_psql "$db" -f "$ROOT/sql/raw.sql" >/dev/null
}

setup_analytics() { # db raw_db [raw_port]
    local db="$1" raw_db="$2" raw_port="${3:-$PORT}"
    create_database "$db"
    admin_psql "$db" -v engine="${METRICAGG_BINS_ENGINE:-auto}" -f "$ROOT/sql/analytics.sql" >/dev/null
    load_secrets
    admin_psql "$db" -v raw_host=127.0.0.1 -v raw_port="$raw_port" -v raw_db="$raw_db" -v job_pw="$JOB_PASSWORD" \
        -f "$ROOT/sql/fdw.sql" >/dev/null
    # pg_cron lives in the analytics database (cron.database_name).
    if [ "$db" = "$ANALYTICS_DB" ]; then
        admin_psql "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null
        admin_psql "$db" -f "$ROOT/sql/schedule.sql" >/dev/null
    fi
}

url() { # user password db
    printf 'postgres://%s:%s@127.0.0.1:%s/%s' "$1" "$2" "$PORT" "$3"
}

start_node() {
    [ -x "$PGBIN/initdb" ] || die "PostgreSQL ${PG_MAJOR} is not installed: run 'make deps'"
    [ -f "$DATA/PG_VERSION" ] || init_cluster
    install_extension
    local want
    want="$(preload_libraries)"
    write_preload "$want"
    # Clusters made before the preload file existed: include it (last wins).
    grep -q "metricagg-preload.conf" "$DATA/postgresql.conf" \
        || echo "include_if_exists = 'metricagg-preload.conf'" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
    local on
    on="$(other_port)"
    if [ -n "$on" ]; then
        say "restarting PostgreSQL: port is now $PORT (it ran on $on)"
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    fi
    # A server still in crash recovery refuses connections for a while.
    wait_ready
    if is_running && [ "$(admin_psql postgres -Atc 'SHOW shared_preload_libraries')" != "$want" ]; then
        say "restarting PostgreSQL: shared_preload_libraries is now '$want'"
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    fi
    if ! is_running; then
        say "starting PostgreSQL on 127.0.0.1:$PORT (log: $LOG)"
        [ "$(id -u)" -eq 0 ] && { touch "$LOG"; chown "$PGUSER_OS" "$LOG"; }
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null \
            || { tail -20 "$LOG" >&2; die "PostgreSQL did not start"; }
    fi
    setup_roles
}

cmd_start() {
    start_node
    setup_raw "$RAW_DB"
    setup_analytics "$ANALYTICS_DB" "$RAW_DB"
    say "ready: raw=$RAW_DB analytics=$ANALYTICS_DB on 127.0.0.1:$PORT ('make db-env' prints the URLs)"
}

cmd_stop() {
    if is_running; then
        # fast: roll back open transactions; a server that does not get
        # down in time is stopped immediately (recovery at the next start).
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null \
            || as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null
        say "stopped"
    else
        say "not running"
    fi
}

cmd_status() {
    if is_running; then
        say "running on 127.0.0.1:$PORT, data in $DATA"
        say "preloaded: $(admin_psql postgres -Atc 'SHOW shared_preload_libraries')"
        admin_psql "$ANALYTICS_DB" -At -c "SELECT 'bins: ' || metricagg.bins_storage()" \
            -c "SELECT 'bins: ' || count(*) || ' rows' FROM metricagg.bins" \
            -c "SELECT 'schema: analytics version ' || metricagg.schema_version('analytics')" 2>/dev/null || true
        admin_psql "$RAW_DB" -At -c "SELECT 'schema: raw version ' || metricagg.schema_version('raw')" 2>/dev/null || true
    else
        say "not running"
        return 3
    fi
}

cmd_destroy() {
    cmd_stop || true
    rm -rf "$DATA" "$RUN" "$SECRETS" "$LOG"
    say "destroyed $MHOME cluster"
}

cmd_env() {
    load_secrets
    cat <<EOF
export METRICAGG_PORT=$PORT
export RAW_DATABASE_URL=$(url postgres "$ADMIN_PASSWORD" "$RAW_DB")
export ANALYTICS_DATABASE_URL=$(url postgres "$ADMIN_PASSWORD" "$ANALYTICS_DB")
export INGEST_DATABASE_URL=$(url metricagg_ingest "$INGEST_PASSWORD" "$RAW_DB")
export JOB_DATABASE_URL=$(url metricagg_job "$JOB_PASSWORD" "$ANALYTICS_DB")
export API_DATABASE_URL=$(url metricagg_api "$API_PASSWORD" "$ANALYTICS_DB")
EOF
}

cmd_create_db() {
    local kind="${1:-}" name="${2:-}" raw="${3:-$RAW_DB}" raw_port="${4:-$PORT}"
    [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "create-db: NAME must be a lower-case identifier"
    [[ "$raw" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "create-db: RAW_NAME must be a lower-case identifier"
    [[ "$raw_port" =~ ^[0-9]{1,5}$ ]] || die "create-db: RAW_PORT must be a port number"
    is_running || die "the cluster is not running: run 'make db-start'"
    case "$kind" in
        raw) setup_raw "$name" ;;
        analytics) setup_analytics "$name" "$raw" "$raw_port" ;;
        local)
            setup_raw "$name"
            admin_psql "$name" -c "GRANT CREATE ON SCHEMA metricagg TO metricagg_job" >/dev/null
            setup_analytics "$name" "$name"
            admin_psql "$name" -c "UPDATE metricagg.job_config SET source = 'local'" >/dev/null
            ;;
        *) die "create-db: KIND must be raw, analytics or local" ;;
    esac
    load_secrets
    url postgres "$ADMIN_PASSWORD" "$name"
    echo
}

case "${1:-}" in
    start) cmd_start ;;
    start-node) start_node ;;
    stop) cmd_stop ;;
    status) check_port; cmd_status ;;
    destroy) cmd_destroy ;;
    env) check_port; cmd_env ;;
    psql) shift; db="${1:?psql: database}"; shift; check_port; admin_psql "$db" "$@" ;;
    create-db) shift; check_port; cmd_create_db "$@" ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
