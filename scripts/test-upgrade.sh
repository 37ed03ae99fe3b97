#!/usr/bin/env bash
# make test-upgrade: the previous release, upgraded in place with data in it,
# equals a fresh install of this one.
#
# 1. The previous release as its users have it: pg_metricagg 0.1.0 (the
#    install script of commit $RELEASE, pg_metricagg/sql/released/) and the
#    sql/ schemas of that commit, set up by that release's scripts/db.sh in a
#    raw and an analytics database wired with postgres_fdw. Samples loaded,
#    the job run: bins written by 0.1.0's SQL on the installed library (the
#    new library must serve the old SQL until the update runs).
# 2. The same samples and runs in a fresh install of this tree.
# 3. The old pair upgraded in place: ALTER EXTENSION pg_metricagg UPDATE,
#    then this tree's sql/ applied the way scripts/db.sh applies it (the
#    schema migrations not yet applied, sql/{raw,analytics}/NNN_*.sql, run
#    once each; functions and grants are re-applied).
# 4. New samples and late ones (into bins already written) in both pairs,
#    and the job again.
# 5. Compared: the extension's objects (functions with volatility,
#    strictness, parallel safety, C symbols; aggregates with their support
#    functions and state sizes; types; comments), privileges (the
#    extension's, the schemas', the databases'), the sql/ schemas' objects
#    and their recorded versions, and every bin.
#
# Needs the embedded cluster (make db-start) and the release build installed
# (make install-release: it installs the released install scripts too).
# The four databases are dropped at the end; on a failure they are kept for
# a look and dropped by the next run. Prints its seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# The old release's db.sh (run from a copy of that tree) must find this
# cluster, not look for one under the copy.
export METRICAGG_HOME="${METRICAGG_HOME:-$ROOT/.metricagg}"
RELEASE=e48b597      # pg_metricagg 0.1.0 and its sql/ schemas
RELEASE_DB_SH=8c4c993 # that release's scripts/db.sh, taught PG_CONFIG
OLD_RAW=upgrade_old_raw OLD_ANA=upgrade_old_analytics
NEW_RAW=upgrade_new_raw NEW_ANA=upgrade_new_analytics
t0=$SECONDS
# The samples' days: recent, inside every window (ingest, bins retention on
# TimescaleDB, whose policy may run as soon as it is added) and before any
# compression policy touches them.
D1="$(date -u -d '2 days ago' +%F)"
D2="$(date -u -d '1 day ago' +%F)"

say() { printf 'test-upgrade: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
psql_db() { bash scripts/db.sh psql "$@"; }
q() { local db="$1"; shift; psql_db "$db" -At -c "$@"; }

git cat-file -e "$RELEASE^{commit}" 2>/dev/null \
    || die "commit $RELEASE (the previous release) is not in this clone: fetch the full history"
bash scripts/db.sh status >/dev/null 2>&1 || die "the cluster is not running: make db-start"
for v in 0.1.0 "$(q postgres "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_metricagg'")"; do
    [ "$(q postgres "SELECT count(*) FROM pg_available_extension_versions WHERE name = 'pg_metricagg' AND version = '$v'")" = 1 ] \
        || die "pg_metricagg $v is not installed: make install-release"
done

drop_all() {
    for db in "$OLD_ANA" "$NEW_ANA" "$OLD_RAW" "$NEW_RAW"; do
        psql_db postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    done
}
drop_all

# --- 1. the previous release, provisioned the old way ---------------------
# Under the cluster's home: its psql runs as the cluster's OS user.
old_tree="$(mktemp -d "${METRICAGG_HOME:-$ROOT/.metricagg}/test-upgrade.XXXXXX")"
trap 'rm -rf "$old_tree"' EXIT
chmod 755 "$old_tree"
git archive "$RELEASE" sql Cargo.toml | tar -x -C "$old_tree"
mkdir -p "$old_tree/scripts"
git show "$RELEASE_DB_SH:scripts/db.sh" >"$old_tree/scripts/db.sh"
# What that db.sh left in a database: 0.1.0, and its script's hash in the
# comment (so it does not recreate the extension at today's default).
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}"
old_script="$("$PG_CONFIG" --sharedir)/extension/pg_metricagg--0.1.0.sql"
for db in "$OLD_RAW" "$OLD_ANA"; do
    psql_db postgres -c "CREATE DATABASE $db" >/dev/null
    psql_db "$db" -c "CREATE EXTENSION pg_metricagg VERSION '0.1.0'" \
        -c "COMMENT ON EXTENSION pg_metricagg IS 'script $(md5sum "$old_script" | cut -c1-32)'" >/dev/null
done
say "previous release ($RELEASE): pg_metricagg 0.1.0 and its schemas in $OLD_RAW, $OLD_ANA"
bash "$old_tree/scripts/db.sh" create-db raw "$OLD_RAW" >/dev/null
bash "$old_tree/scripts/db.sh" create-db analytics "$OLD_ANA" "$OLD_RAW" >/dev/null
[ "$(q "$OLD_ANA" "SELECT extversion FROM pg_extension WHERE extname = 'pg_metricagg'")" = 0.1.0 ] \
    || die "the old provisioning did not keep pg_metricagg 0.1.0"

# --- 2. a fresh install of this tree ---------------------------------------
say "this tree: fresh install in $NEW_RAW, $NEW_ANA"
bash scripts/db.sh create-db raw "$NEW_RAW" >/dev/null
bash scripts/db.sh create-db analytics "$NEW_ANA" "$NEW_RAW" >/dev/null

# Samples: 6 servers x 4 metrics every 10 s in [lo, hi), deterministic
# values, written as the ingest role writes them (day partitions, change log).
load() { # raw-db lo hi
    psql_db "$1" >/dev/null <<SQL
SET ROLE metricagg_ingest;
SELECT metricagg.ensure_partitions('$2', '$3');
INSERT INTO metricagg.samples (server_id, metric_type, ts, value)
SELECT 'srv-' || s, m, t,
       round((50 + 30 * sin(extract(epoch FROM t) / 900 + s)
              + (hashtext(m || s || extract(epoch FROM t)) % 1000) / 100.0)::numeric, 3)
FROM generate_series(timestamptz '$2', timestamptz '$3' - interval '1 microsecond', interval '10 seconds') t,
     generate_series(1, 6) s, unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m;
SQL
}
run_job() {
    q "$1" "SET ROLE metricagg_job; SELECT metricagg_run_once()" >/dev/null || die "the job failed in $1"
}

for pair in "$OLD_RAW:$OLD_ANA" "$NEW_RAW:$NEW_ANA"; do
    load "${pair%:*}" "$D1 22:00+00" "$D2 02:00+00"
    run_job "${pair#*:}"
done
[ "$(q "$OLD_ANA" "SELECT count(*) FROM metricagg.bins")" -gt 0 ] || die "the 0.1.0 job wrote no bins"
# 0.1.0's aggregates (internal states, serialized between parallel workers)
# on this library, serial and parallel, against percentile_cont.
for parallel in 0 2; do
    wrong="$(psql_db "$OLD_RAW" -At <<SQL
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = $parallel;
SELECT count(*) FILTER (WHERE p IS DISTINCT FROM pc OR (s).p80 IS DISTINCT FROM pc OR p9 IS DISTINCT FROM pc9
                           OR (s).count <> n)
FROM (SELECT server_id, p80(value) AS p, metricagg_stats(value) AS s, metricagg_percentile(value, 0.9) AS p9,
             percentile_cont(0.8) WITHIN GROUP (ORDER BY value) AS pc,
             percentile_cont(0.9) WITHIN GROUP (ORDER BY value) AS pc9, count(*) AS n
      FROM metricagg.samples GROUP BY server_id) g;
SQL
)"
    [ "$wrong" = 0 ] || die "0.1.0's aggregates on this library: $wrong groups differ from percentile_cont (parallel $parallel)"
done

# --- 3. upgrade in place ----------------------------------------------------
say "upgrading $OLD_RAW and $OLD_ANA in place"
for db in "$OLD_RAW" "$OLD_ANA"; do
    psql_db "$db" -c "ALTER EXTENSION pg_metricagg UPDATE" >/dev/null
done
bash scripts/db.sh create-db raw "$OLD_RAW" >/dev/null
bash scripts/db.sh create-db analytics "$OLD_ANA" "$OLD_RAW" >/dev/null

# --- 4. more data, late data, the job again ----------------------------------
for pair in "$OLD_RAW:$OLD_ANA" "$NEW_RAW:$NEW_ANA"; do
    load "${pair%:*}" "$D2 02:00+00" "$D2 05:00+00"      # a new day
    load "${pair%:*}" "$D1 23:10:05+00" "$D1 23:40:05+00" # late, into written bins
    run_job "${pair#*:}"
done

# --- 5. compare ---------------------------------------------------------------
work="$(mktemp -d)"
trap 'rm -rf "$old_tree" "$work"' EXIT
# Extension members only, found through pg_depend (the member's own catalog
# decides which branch above describes it).
ext_query="
WITH members AS (
    SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'pg_metricagg')
SELECT kind || ': ' || line FROM (
  SELECT 'extension' AS kind, e.extname || ' ' || e.extversion || ' in ' || e.extnamespace::regnamespace
         || ' relocatable=' || e.extrelocatable || ': ' || coalesce(obj_description(e.oid, 'pg_extension'), '-') AS line
  FROM pg_extension e WHERE e.extname = 'pg_metricagg'
  UNION ALL
  SELECT 'function', p.oid::regprocedure || ' -> ' || p.prorettype::regtype
         || ' kind=' || p.prokind::text || ' volatile=' || p.provolatile::text || ' strict=' || p.proisstrict
         || ' parallel=' || p.proparallel::text || ' secdef=' || p.prosecdef || ' leakproof=' || p.proleakproof
         || ' cost=' || p.procost || ' rows=' || p.prorows || ' set=' || coalesce(p.proconfig::text, '-')
         || ' symbol=' || p.prosrc || ' in ' || coalesce(p.probin, '-')
         || ' acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(p.proacl, acldefault('f', p.proowner))) a), '-')
         || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
  FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
  UNION ALL
  SELECT 'aggregate', a.aggfnoid::regprocedure || ' kind=' || a.aggkind::text || ' sfunc=' || a.aggtransfn::regprocedure
         || ' stype=' || a.aggtranstype::regtype || ' sspace=' || a.aggtransspace
         || ' final=' || a.aggfinalfn::regproc || ' modify=' || a.aggfinalmodify::text
         || ' combine=' || a.aggcombinefn::regproc || ' serial=' || a.aggserialfn::regproc
         || ' deserial=' || a.aggdeserialfn::regproc || ' init=' || coalesce(a.agginitval, '-')
  FROM pg_aggregate a JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = a.aggfnoid
  UNION ALL
  SELECT 'type', t.oid::regtype || ' ' || t.typtype::text || ' ('
         || coalesce((SELECT string_agg(at.attname || ' ' || format_type(at.atttypid, at.atttypmod), ', ' ORDER BY at.attnum)
                      FROM pg_attribute at WHERE at.attrelid = t.typrelid AND at.attnum > 0 AND NOT at.attisdropped), '')
         || ') comment=' || coalesce(obj_description(t.oid, 'pg_type'), '-')
  FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
  UNION ALL
  SELECT 'other member', pg_describe_object(m.classid, m.objid, 0)
  FROM members m WHERE m.classid NOT IN ('pg_proc'::regclass, 'pg_type'::regclass)
  UNION ALL
  SELECT 'initial privileges', pg_describe_object(i.classoid, i.objoid, i.objsubid) || ' '
         || (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(i.initprivs) a)
  FROM pg_init_privs i JOIN members m ON m.classid = i.classoid AND m.objid = i.objoid
) x ORDER BY 1"
# The sql/ schemas: every object of schema metricagg and the non-extension
# functions of public, with privileges and comments; columns by name (a
# migration appends where a fresh table has them in place); the database's
# privileges and per-database role settings. Privileges are the effective
# ones: a NULL ACL is written out as its default (re-running a REVOKE makes
# an owner-only default explicit without changing who may do what).
schema_query="
SELECT kind || ': ' || line FROM (
  SELECT 'relation' AS kind, c.oid::regclass || ' kind=' || c.relkind::text
         || ' acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(c.relacl, acldefault('r', c.relowner))) a), '-')
         || ' options=' || coalesce(c.reloptions::text, '-') || ' owner=' || c.relowner::regrole
         || ' partition=' || coalesce(pg_get_expr(c.relpartbound, c.oid), '-')
         || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-') AS line
  FROM pg_class c WHERE c.relnamespace = 'metricagg'::regnamespace AND c.relkind NOT IN ('i', 'I', 'S')
  UNION ALL
  SELECT 'column', a.attrelid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
         || ' collation=' || coalesce(NULLIF(a.attcollation, 0)::regcollation::text, '-')
         || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE c.relnamespace = 'metricagg'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind NOT IN ('i', 'I', 'S')
  UNION ALL
  SELECT 'constraint', conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'metricagg'::regnamespace
  UNION ALL
  SELECT 'index', pg_get_indexdef(indexrelid) FROM pg_index
  WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'metricagg'::regnamespace)
  UNION ALL
  SELECT 'trigger', pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
  WHERE c.relnamespace = 'metricagg'::regnamespace AND NOT t.tgisinternal
  UNION ALL
  SELECT 'view', c.oid::regclass || ' ' || pg_get_viewdef(c.oid) FROM pg_class c
  WHERE c.relnamespace = 'metricagg'::regnamespace AND c.relkind IN ('v', 'm')
  UNION ALL
  SELECT 'foreign table', ft.ftrelid::regclass || ' ' || coalesce(ft.ftoptions::text, '-') FROM pg_foreign_table ft
  UNION ALL
  SELECT 'function', pg_get_functiondef(p.oid)
         || ' acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(p.proacl, acldefault('f', p.proowner))) a), '-')
         || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
  FROM pg_proc p
  WHERE (p.pronamespace = 'metricagg'::regnamespace OR p.pronamespace = 'public'::regnamespace)
    AND p.prokind <> 'a'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
  UNION ALL
  SELECT 'schema', n.nspname || ' owner=' || n.nspowner::regrole
         || ' acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(n.nspacl, acldefault('n', n.nspowner))) a), '-')
  FROM pg_namespace n WHERE n.nspname IN ('metricagg', 'public')
  UNION ALL
  SELECT 'database', 'acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(coalesce(datacl, acldefault('d', datdba))) a), '-')
  FROM pg_database WHERE datname = current_database()
  UNION ALL
  SELECT 'role setting', coalesce(setrole::regrole::text, 'all') || ' ' || setconfig::text
  FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  UNION ALL
  SELECT 'extension', extname || ' ' || extversion FROM pg_extension
) x ORDER BY 1"
# avg to 9 decimals: a sum's last bits depend on the order the plan reads
# rows in (the other columns do not).
bins_query="COPY (SELECT server_id, metric_type, width, ts, count, round(avg::numeric, 9), min, max, p80 FROM metricagg.bins
                  ORDER BY server_id, metric_type, width, ts) TO STDOUT"

failed=0
compare() { # what old-db new-db query
    local what="$1" old="$2" new="$3" query="$4"
    q "$old" "$query" >"$work/old" || die "$what: query failed in $old"
    q "$new" "$query" >"$work/new" || die "$what: query failed in $new"
    [ -s "$work/new" ] || die "$what: nothing to compare in $new"
    if diff -u --label "$what, upgraded ($old)" --label "$what, fresh ($new)" "$work/old" "$work/new" >"$work/diff"; then
        say "equal: $what ($(wc -l <"$work/new") lines)"
    else
        say "DIFFERENT: $what"
        head -60 "$work/diff" >&2
        failed=1
    fi
}
compare "pg_metricagg objects and privileges, raw" "$OLD_RAW" "$NEW_RAW" "$ext_query"
compare "pg_metricagg objects and privileges, analytics" "$OLD_ANA" "$NEW_ANA" "$ext_query"
compare "raw schema" "$OLD_RAW" "$NEW_RAW" "$schema_query"
compare "analytics schema" "$OLD_ANA" "$NEW_ANA" "$schema_query"
versions_query="SELECT component, version, description FROM metricagg.schema_version ORDER BY 1, 2"
compare "schema versions, raw" "$OLD_RAW" "$NEW_RAW" "$versions_query"
compare "schema versions, analytics" "$OLD_ANA" "$NEW_ANA" "$versions_query"
compare "bins" "$OLD_ANA" "$NEW_ANA" "$bins_query"
runs="$(q "$OLD_ANA" "SELECT count(*) FROM metricagg.job_runs WHERE bins_written <> '{}'")"
[ "$runs" = 2 ] || die "expected 2 runs that wrote bins in $OLD_ANA (before and after the update), got $runs"
[ "$failed" = 0 ] || die "the upgraded install differs from a fresh one (databases kept: $OLD_RAW $OLD_ANA $NEW_RAW $NEW_ANA)"
drop_all
say "ok: pg_metricagg 0.1.0 with data, upgraded in place, equals a fresh install ($((SECONDS - t0)) s)"
