-- metricagg raw database on Citus: distributes the schema of sql/raw.sql.
-- sql/raw.sql ends with it when the database has the citus extension, so
-- every install or upgrade of the raw schema on a Citus coordinator re-applies
-- it (as the administrator); idempotent. The database must have the citus
-- extension on every node and its workers registered (scripts/citus.sh
-- create-db raw does that); the number of shards is Citus's
-- citus.shard_count (default 32) when the tables are distributed.
-- What becomes what (docs/citus.md says why):
--   samples      distributed by server_id (its day partitions with it)
--   change_log   distributed by server_id, co-located with samples: the
--                change-log trigger runs on each shard and writes its
--                entries into the co-located shard, on the same worker, in
--                the same local transaction, with that worker's local xid
--                and its Citus group id as node
--   ingest_config, retired
--                reference tables (a copy on every node: the trigger reads
--                them on the workers)
--   job_progress, load_claims, anomaly_labels, schema_version
--                local tables of the coordinator
--   snapshot_horizon
--                one row per node, each node's own snapshot xmin, read from
--                every node at once; an ERROR when any node cannot answer
\set ON_ERROR_STOP on
SET client_min_messages = warning;

SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS has_citus \gset
\if :has_citus
\else
DO $$ BEGIN RAISE EXCEPTION 'sql/citus/raw.sql: this database has no citus extension'
    USING HINT = 'Create the database with scripts/citus.sh create-db raw NAME (CREATE EXTENSION citus on every node, workers added), then apply sql/raw.sql and this file.'; END $$;
\endif
SELECT count(*) = 0 AS no_workers FROM pg_dist_node WHERE groupid <> 0 AND noderole = 'primary' \gset
\if :no_workers
DO $$ BEGIN RAISE EXCEPTION 'sql/citus/raw.sql: no Citus worker is registered in this database'
    USING HINT = 'SELECT citus_add_node(host, port) for each worker first.'; END $$;
\endif

-- Citus refuses triggers on distributed tables unless told that they are
-- safe; ours only writes the co-located shard of change_log and reads
-- reference tables. Every session in this database (re-applying
-- sql/raw.sql re-creates the trigger; new partitions carry it).
SET citus.enable_unsafe_triggers = on;
DO $do$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET citus.enable_unsafe_triggers = on', current_database());
END
$do$;

SET search_path = metricagg, public;

-- The Citus node group this runs on: 0 on the coordinator (and on a single
-- server), the worker's group id on a worker. A change-log entry's node.
CREATE OR REPLACE FUNCTION metricagg.citus_node() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog AS $$
    SELECT groupid FROM pg_dist_local_group
$$;
ALTER FUNCTION metricagg.citus_node() OWNER TO metricagg_owner;
COMMENT ON FUNCTION metricagg.citus_node() IS
'The Citus node group id of the node this runs on (0: the coordinator): the node of the change-log entries written here.';

-- Distribution, once.
SELECT NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'metricagg.samples'::regclass) AS todo \gset
\if :todo
BEGIN;
-- A distributed table's unique keys include its distribution column.
ALTER TABLE metricagg.change_log DROP CONSTRAINT change_log_pkey, ADD PRIMARY KEY (server_id, id);
ALTER TABLE metricagg.change_log ALTER COLUMN node SET DEFAULT metricagg.citus_node();
SELECT create_distributed_table('metricagg.samples', 'server_id');
SELECT create_distributed_table('metricagg.change_log', 'server_id', colocate_with => 'metricagg.samples');
SELECT create_reference_table('metricagg.ingest_config');
SELECT create_reference_table('metricagg.retired');
COMMIT;
\endif

-- Retention's list of the servers in a day partition (drop_old_partitions):
-- each shard finds its own, instead of sql/raw/functions.sql's loose index
-- scan, a recursive query, which Citus does not run on distributed tables.
CREATE OR REPLACE FUNCTION metricagg.partition_servers(part regclass) RETURNS SETOF text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE format('SELECT DISTINCT server_id FROM %s', part);
END
$$;
ALTER FUNCTION metricagg.partition_servers(regclass) OWNER TO metricagg_owner;

-- Retention's lock before it checks the log and drops a day partition: a
-- COPY through the coordinator locks only the parent `samples` there, not
-- the partition, and holds that lock until the workers have committed. So retention waits for every writer in flight and keeps
-- new ones out until it commits (a daily pause of ingest for as long as the
-- drops take), then locks the partition itself.
CREATE OR REPLACE FUNCTION metricagg.lock_for_retention(part regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, metricagg, public, pg_temp AS $$
BEGIN
    LOCK TABLE metricagg.samples IN SHARE MODE;
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', part);
END
$$;
ALTER FUNCTION metricagg.lock_for_retention(regclass) OWNER TO metricagg_owner;

-- Every node's snapshot horizon, read at once: the coordinator's here, each
-- worker's over a connection of its own (run_command_on_workers, as the
-- calling role). Every transaction of a node below its horizon has ended, so
-- a read of that node that starts afterwards sees all of them. A node that
-- cannot be asked (down, unreachable, disabled) makes this fail: the job's
-- run fails and changes nothing, and the next run retries; a partial set of
-- nodes is never returned.
CREATE OR REPLACE FUNCTION metricagg.citus_horizons() RETURNS TABLE (node integer, horizon xid8)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w record;
BEGIN
    node := 0;
    horizon := pg_snapshot_xmin(pg_current_snapshot());
    RETURN NEXT;
    FOR w IN
        SELECT n.groupid, n.nodename, n.nodeport, n.isactive, h.success, h.result
        FROM pg_dist_node n
        LEFT JOIN run_command_on_workers('SELECT pg_snapshot_xmin(pg_current_snapshot())') h USING (nodename, nodeport)
        WHERE n.groupid <> 0 AND n.noderole = 'primary'
        ORDER BY n.groupid
    LOOP
        IF w.success IS NOT TRUE THEN
            RAISE EXCEPTION 'metricagg.snapshot_horizon: Citus worker %:% (node %) cannot be asked for its horizon: %',
                            w.nodename, w.nodeport, w.groupid,
                            CASE WHEN NOT w.isactive THEN 'the node is disabled' ELSE coalesce(w.result, 'no answer') END
                USING ERRCODE = 'connection_failure',
                      HINT = 'Nothing is lost: the job changes nothing and retries on its next run. Bring the worker back (or citus_activate_node it).';
        END IF;
        node := w.groupid;
        horizon := w.result::xid8;
        RETURN NEXT;
    END LOOP;
END
$$;
ALTER FUNCTION metricagg.citus_horizons() OWNER TO metricagg_owner;
COMMENT ON FUNCTION metricagg.citus_horizons() IS
'Each Citus node''s snapshot horizon (node = group id, 0 the coordinator), asked of every node; fails when a node cannot answer.';

CREATE OR REPLACE VIEW metricagg.snapshot_horizon AS
    SELECT node, horizon FROM metricagg.citus_horizons();
ALTER VIEW metricagg.snapshot_horizon OWNER TO metricagg_owner;

REVOKE ALL ON FUNCTION metricagg.citus_horizons(), metricagg.citus_node(), metricagg.partition_servers(regclass),
                        metricagg.lock_for_retention(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION metricagg.citus_horizons() TO metricagg_job;
GRANT EXECUTE ON FUNCTION metricagg.citus_node() TO metricagg_ingest, metricagg_job;
GRANT SELECT ON metricagg.snapshot_horizon TO metricagg_job;
DO $do$
BEGIN
    -- Citus runs DDL on the workers as the role that issues it.
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO metricagg_owner', current_database());
END
$do$;

-- Grants on pg_metricagg's own functions (sql/raw/functions.sql lets the job
-- run the packed aggregate, which the extension keeps from PUBLIC) belong to
-- an extension, and Citus does not propagate them: every worker gets the
-- coordinator's. (Re-apply sql/raw.sql after adding a worker.)
DO $do$
DECLARE
    grants text;
    bad    record;
BEGIN
    SELECT string_agg(format('GRANT EXECUTE ON FUNCTION %I.%I(%s) TO %I',
                             n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), r.rolname), '; ')
      INTO grants
      FROM pg_extension e
      JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
                      AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
      JOIN pg_proc p ON p.oid = d.objid
      JOIN pg_namespace n ON n.oid = p.pronamespace
      CROSS JOIN LATERAL aclexplode(p.proacl) a
      JOIN pg_roles r ON r.oid = a.grantee
     WHERE e.extname = 'pg_metricagg' AND a.privilege_type = 'EXECUTE' AND r.rolname LIKE 'metricagg\_%';
    IF grants IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO bad FROM run_command_on_workers(grants) WHERE NOT success LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'sql/citus/raw.sql: granting pg_metricagg''s functions on worker %:% failed: %',
                        bad.nodename, bad.nodeport, bad.result;
    END IF;
END
$do$;

-- The job's aggregation runs serially inside each shard: Citus already runs
-- one task per shard in parallel, while a parallel plan inside a shard would
-- serialize and combine the aggregates' (large) partial states and, on the
-- planner's group estimates, sort instead of hash (measured: five times the
-- CPU with 4 shards of 1M rows). Citus propagates this, like the job's other
-- settings in this database (sql/raw/functions.sql), to every worker, where
-- its pushed-down queries run.
DO $do$
BEGIN
    EXECUTE format('ALTER ROLE metricagg_job IN DATABASE %I SET max_parallel_workers_per_gather = 0',
                   current_database());
END
$do$;
