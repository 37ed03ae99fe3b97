#!/usr/bin/env bash
# The embedded metricagg cluster: one PostgreSQL 15 cluster holding both the
# raw (metrics_raw) and the analytics (metrics_analytics) database, wired
# together with postgres_fdw exactly as two separate servers would be.
#
#   scripts/db.sh start                  init (first time), start, install, set up; idempotent
#   scripts/db.sh stop | status | destroy
#   scripts/db.sh env                    export lines for RAW/ANALYTICS/INGEST/API/JOB_DATABASE_URL
#   scripts/db.sh psql DB [psql args]    psql as the administrator
#   scripts/db.sh create-db raw|analytics|local NAME [RAW_NAME]
#                                        a fresh database with the full schema and grants
#                                        (analytics: its FDW server points at RAW_NAME,
#                                        default metrics_raw; local: raw and analytics
#                                        schemas in one database, job source 'local');
#                                        prints its admin URL
#
# Settings (environment): METRICAGG_HOME (default <repo>/.metricagg),
# METRICAGG_PORT (default 5433), METRICAGG_NO_INSTALL=1 (never build or
# install the extension; use the installed one). Passwords are generated on first start and
# kept in $METRICAGG_HOME/secrets.env (mode 600, git-ignored).
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
SECRETS="$MHOME/secrets.env"
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
shared_preload_libraries = 'pg_cron'
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
    # Passwords travel on stdin, never on a command line.
    admin_psql postgres <<EOF
ALTER ROLE postgres PASSWORD '$ADMIN_PASSWORD';
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metricagg_owner') THEN
        CREATE ROLE metricagg_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metricagg_ingest') THEN
        CREATE ROLE metricagg_ingest LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metricagg_job') THEN
        CREATE ROLE metricagg_job LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metricagg_api') THEN
        CREATE ROLE metricagg_api LOGIN;
    END IF;
END
\$\$;
ALTER ROLE metricagg_ingest PASSWORD '$INGEST_PASSWORD' CONNECTION LIMIT 64;
ALTER ROLE metricagg_job PASSWORD '$JOB_PASSWORD' CONNECTION LIMIT 16;
ALTER ROLE metricagg_api PASSWORD '$API_PASSWORD' CONNECTION LIMIT 64;
ALTER ROLE metricagg_ingest SET search_path = metricagg, public;
ALTER ROLE metricagg_job SET search_path = metricagg, public;
ALTER ROLE metricagg_api SET search_path = metricagg, public;
ALTER ROLE metricagg_api SET default_transaction_read_only = on;
EOF
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
    admin_psql postgres -c "REVOKE ALL ON DATABASE \"$db\" FROM PUBLIC"
    admin_psql "$db" -c "REVOKE CREATE ON SCHEMA public FROM PUBLIC"
    refresh_extension "$db"
}

setup_raw() {
    local db="$1"
    create_database "$db"
    admin_psql postgres -c "GRANT CONNECT ON DATABASE \"$db\" TO metricagg_ingest, metricagg_job; GRANT TEMPORARY ON DATABASE \"$db\" TO metricagg_owner"
    admin_psql "$db" -f "$ROOT/sql/raw.sql" >/dev/null
}

setup_analytics() {
    local db="$1" raw_db="$2"
    create_database "$db"
    admin_psql postgres -c "GRANT CONNECT, TEMPORARY ON DATABASE \"$db\" TO metricagg_job; GRANT CONNECT ON DATABASE \"$db\" TO metricagg_api"
    admin_psql "$db" -f "$ROOT/sql/analytics.sql" >/dev/null
    load_secrets
    # The FDW server to the raw database, with the extension's functions
    # shippable so aggregation runs remotely, and the job's user mapping.
    admin_psql "$db" <<EOF >/dev/null
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_foreign_server WHERE srvname = 'metricagg_raw') THEN
        CREATE SERVER metricagg_raw FOREIGN DATA WRAPPER postgres_fdw
            OPTIONS (host '127.0.0.1', port '$PORT', dbname '$raw_db',
                     extensions 'pg_metricagg', fetch_size '10000');
    ELSE
        ALTER SERVER metricagg_raw OPTIONS (SET host '127.0.0.1', SET port '$PORT', SET dbname '$raw_db');
    END IF;
END
\$\$;
GRANT USAGE ON FOREIGN SERVER metricagg_raw TO metricagg_job;
DROP USER MAPPING IF EXISTS FOR metricagg_job SERVER metricagg_raw;
CREATE USER MAPPING FOR metricagg_job SERVER metricagg_raw
    OPTIONS (user 'metricagg_job', password '$JOB_PASSWORD');
DROP USER MAPPING IF EXISTS FOR postgres SERVER metricagg_raw;
CREATE USER MAPPING FOR postgres SERVER metricagg_raw
    OPTIONS (user 'metricagg_job', password '$JOB_PASSWORD');
SET ROLE metricagg_job;
CREATE FOREIGN TABLE IF NOT EXISTS metricagg.raw_samples (
    server_id text, metric_type text, ts timestamptz, value double precision)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'samples');
CREATE FOREIGN TABLE IF NOT EXISTS metricagg.raw_change_log (
    id bigint, xid xid8, server_id text, min_ts timestamptz, max_ts timestamptz,
    row_count bigint, logged_at timestamptz)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'change_log');
CREATE FOREIGN TABLE IF NOT EXISTS metricagg.raw_snapshot_horizon (horizon xid8)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'snapshot_horizon');
CREATE FOREIGN TABLE IF NOT EXISTS metricagg.raw_job_progress (
    singleton boolean, done_below xid8, updated_at timestamptz, pending_from timestamptz)
    SERVER metricagg_raw OPTIONS (schema_name 'metricagg', table_name 'job_progress');
ALTER FOREIGN TABLE metricagg.raw_job_progress ADD COLUMN IF NOT EXISTS pending_from timestamptz;
RESET ROLE;
EOF
    # pg_cron lives in the analytics database (cron.database_name).
    if [ "$db" = "$ANALYTICS_DB" ]; then
        admin_psql "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null
        admin_psql "$db" -f "$ROOT/sql/schedule.sql" >/dev/null
    fi
}

url() { # user password db
    printf 'postgres://%s:%s@127.0.0.1:%s/%s' "$1" "$2" "$PORT" "$3"
}

cmd_start() {
    [ -x "$PGBIN/initdb" ] || die "PostgreSQL ${PG_MAJOR} is not installed: run 'make deps'"
    [ -f "$DATA/PG_VERSION" ] || init_cluster
    install_extension
    if ! is_running; then
        say "starting PostgreSQL on 127.0.0.1:$PORT (log: $LOG)"
        [ "$(id -u)" -eq 0 ] && { touch "$LOG"; chown "$PGUSER_OS" "$LOG"; }
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null \
            || { tail -20 "$LOG" >&2; die "PostgreSQL did not start"; }
    fi
    setup_roles
    setup_raw "$RAW_DB"
    setup_analytics "$ANALYTICS_DB" "$RAW_DB"
    say "ready: raw=$RAW_DB analytics=$ANALYTICS_DB on 127.0.0.1:$PORT ('make db-env' prints the URLs)"
}

cmd_stop() {
    if is_running; then
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
        say "stopped"
    else
        say "not running"
    fi
}

cmd_status() {
    if is_running; then
        say "running on 127.0.0.1:$PORT, data in $DATA"
        admin_psql "$ANALYTICS_DB" -At -c "SELECT 'bins: ' || count(*) FROM metricagg.bins" 2>/dev/null || true
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
    local kind="${1:-}" name="${2:-}" raw="${3:-$RAW_DB}"
    [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "create-db: NAME must be a lower-case identifier"
    [[ "$raw" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "create-db: RAW_NAME must be a lower-case identifier"
    is_running || die "the cluster is not running: run 'make db-start'"
    case "$kind" in
        raw) setup_raw "$name" ;;
        analytics) setup_analytics "$name" "$raw" ;;
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
    stop) cmd_stop ;;
    status) cmd_status ;;
    destroy) cmd_destroy ;;
    env) cmd_env ;;
    psql) shift; db="${1:?psql: database}"; shift; admin_psql "$db" "$@" ;;
    create-db) shift; cmd_create_db "$@" ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
