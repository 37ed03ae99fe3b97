-- Schema versions of the metricagg schemas in this database, one row per
-- applied migration (sql/raw/NNN_*.sql, sql/analytics/NNN_*.sql). A
-- migration runs once, in its own transaction, and records itself here;
-- functions, views, triggers and grants are re-applied on every install
-- (sql/raw/functions.sql, sql/analytics/functions.sql). Included by
-- sql/raw.sql and sql/analytics.sql as the administrator.
CREATE TABLE IF NOT EXISTS metricagg.schema_version (
    component   text        NOT NULL CHECK (component IN ('raw', 'analytics')),
    version     integer     NOT NULL CHECK (version > 0),
    description text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
);
COMMENT ON TABLE metricagg.schema_version IS
'Applied schema migrations of the metricagg raw and analytics schemas (sql/raw/NNN_*.sql, sql/analytics/NNN_*.sql).';

-- Whether migration `v` of `c` has been applied.
CREATE OR REPLACE FUNCTION metricagg.schema_has(c text, v integer) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM metricagg.schema_version WHERE component = c AND version = v)
$$;

-- The version a component is at: its highest applied migration (0: none).
CREATE OR REPLACE FUNCTION metricagg.schema_version(c text) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(max(version), 0) FROM metricagg.schema_version WHERE component = c
$$;
COMMENT ON FUNCTION metricagg.schema_version(text) IS
'The schema version of component ''raw'' or ''analytics'' in this database (its highest applied migration).';
