-- pg_metricagg 0.1.0 -> 0.2.0. A released upgrade script: never edit it,
-- add the next one instead. scripts/test-upgrade.sh checks that 0.1.0
-- upgraded with it equals a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION pg_metricagg UPDATE" to load this file. \quit

-- The 0.2.0 library keeps every C symbol the 0.1.0 script declares, with the
-- same arguments and binary formats (see metricagg_core::codec): no function
-- needs re-pointing, and the old objects work with the new library until
-- this script runs.

-- What \dx shows. 0.1.0's scripts/db.sh kept a build hash here.
COMMENT ON EXTENSION pg_metricagg IS 'UTC time binning and exact, parallel-safe percentile aggregates for server metrics';

-- The packed formats: version byte, checks, grants.
COMMENT ON AGGREGATE metricagg_pack_bins(timestamptz, bigint, double precision, double precision, double precision) IS
'The group''s bins as one bytea ordered by ts, little-endian: a version byte (1) and three zero bytes, u32 n; then n records of i64 ts (microseconds since 1970-01-01 UTC; -infinity and infinity as the i64 extremes), i64 count, f64 avg, f64 min, f64 max. A NULL avg/min/max is NaN; rows with a NULL ts or count are skipped; no rows gives NULL; a negative count or a ts after 294246 AD is an error. One transition call per row: a faster way to read whole series than five array_aggs. Decode it with metricagg_core::codec::pack_bins. EXECUTE is granted per role, not to PUBLIC.';

COMMENT ON AGGREGATE metricagg_stats_by_bin_packed(timestamptz, double precision, interval) IS
'metricagg_stats_by_bin as one bytea, for shipping many bins as one value (little-endian: a version byte (1) and three zero bytes, u32 n; n records of i64 bin start in microseconds since 1970-01-01 UTC, i64 count, f64 avg, min, max, p80; bins after 294246 AD are an error); metricagg_unpack_stats turns it back into rows. EXECUTE is granted per role, not to PUBLIC.';

COMMENT ON AGGREGATE metricagg_stats_by_bin_packed(timestamptz, double precision, interval, timestamptz) IS
'metricagg_stats_by_bin_packed with an explicit origin for fixed widths (see metricagg_bin). EXECUTE is granted per role, not to PUBLIC.';

COMMENT ON FUNCTION metricagg_unpack_stats(bytea) IS
'The bins of a metricagg_stats_by_bin_packed value as rows (ts, count, avg, min, max, p80), ordered by ts. The whole value is checked first (version, length, finite timestamps in increasing order, counts of at least 1): anything else is an error saying what is wrong, and no row is returned. A value of another format version (another pg_metricagg across postgres_fdw) is an error naming both versions. EXECUTE is granted per role, not to PUBLIC.';

-- EXECUTE on the packed functions only for the roles that need them: grant
-- it to them (sql/raw.sql, sql/analytics.sql) after this update.
REVOKE EXECUTE ON FUNCTION metricagg_pack_bins(timestamptz, bigint, double precision, double precision, double precision) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION metricagg_stats_by_bin_packed(timestamptz, double precision, interval) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION metricagg_stats_by_bin_packed(timestamptz, double precision, interval, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION metricagg_unpack_stats(bytea) FROM PUBLIC;
