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

-- p80, metricagg_percentile and metricagg_stats get a real transition type,
-- metricagg_values, instead of internal: Citus partially aggregates only
-- such aggregates on its workers (it ships the state as text). Their support
-- functions and transition type cannot be altered, so they are re-created,
-- with new support functions (0.1.0's C entry points stay in the library
-- for 0.1.0's SQL). A view that uses one makes the DROP fail, naming the
-- view: drop the view, update, re-create it.
DROP AGGREGATE p80(double precision);
DROP AGGREGATE metricagg_percentile(double precision, double precision);
DROP AGGREGATE metricagg_stats(double precision);
DROP FUNCTION metricagg_values_trans(internal, double precision);
DROP FUNCTION metricagg_percentile_trans(internal, double precision, double precision);
DROP FUNCTION metricagg_values_combine(internal, internal);
DROP FUNCTION metricagg_values_serialize(internal);
DROP FUNCTION metricagg_values_deserialize(bytea, internal);
DROP FUNCTION metricagg_percentile_final(internal);
DROP FUNCTION metricagg_stats_final(internal);

CREATE TYPE metricagg_values;

CREATE FUNCTION metricagg_values_in(cstring) RETURNS metricagg_values
    AS 'MODULE_PATHNAME', 'metricagg_values_in'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_values_in(cstring) IS
'Input function of metricagg_values: base64 of its binary form, checked.';

CREATE FUNCTION metricagg_values_out(metricagg_values) RETURNS cstring
    AS 'MODULE_PATHNAME', 'metricagg_values_out'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_values_out(metricagg_values) IS
'Output function of metricagg_values: base64 of its binary form.';

CREATE FUNCTION metricagg_values_recv(internal) RETURNS metricagg_values
    AS 'MODULE_PATHNAME', 'metricagg_values_recv'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_values_recv(internal) IS
'Binary input function of metricagg_values, checked.';

CREATE FUNCTION metricagg_values_send(metricagg_values) RETURNS bytea
    AS 'MODULE_PATHNAME', 'metricagg_values_send'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_values_send(metricagg_values) IS
'Binary output function of metricagg_values: a version byte and three zero bytes, u32 count, f64 fraction, f64 sum, then the values as order-preserving u64 keys, little-endian.';

CREATE TYPE metricagg_values (
    INPUT = metricagg_values_in,
    OUTPUT = metricagg_values_out,
    RECEIVE = metricagg_values_recv,
    SEND = metricagg_values_send,
    INTERNALLENGTH = VARIABLE,
    ALIGNMENT = double,
    STORAGE = extended
);
COMMENT ON TYPE metricagg_values IS
'Transition state of p80, metricagg_percentile and metricagg_stats: every value of the group (as an order-preserving key), the percentile fraction and the running sum. At most 134,217,724 values (1 GB). Its text and binary forms carry a format version; input is checked. Not meant for storing.';

CREATE FUNCTION metricagg_values_trans(metricagg_values, double precision) RETURNS metricagg_values
    AS 'MODULE_PATHNAME', 'metricagg_values_add'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_values_trans(metricagg_values, double precision) IS
'Transition function of p80 and metricagg_stats (aggregates only).';

CREATE FUNCTION metricagg_percentile_trans(metricagg_values, double precision, double precision) RETURNS metricagg_values
    AS 'MODULE_PATHNAME', 'metricagg_percentile_add'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_percentile_trans(metricagg_values, double precision, double precision) IS
'Transition function of metricagg_percentile (aggregates only).';

CREATE FUNCTION metricagg_values_combine(metricagg_values, metricagg_values) RETURNS metricagg_values
    AS 'MODULE_PATHNAME', 'metricagg_values_merge'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_values_combine(metricagg_values, metricagg_values) IS
'Combine function of p80, metricagg_percentile and metricagg_stats: merges two partial states exactly (aggregates only).';

CREATE FUNCTION metricagg_percentile_final(metricagg_values) RETURNS double precision
    AS 'MODULE_PATHNAME', 'metricagg_percentile_final'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_percentile_final(metricagg_values) IS
'Final function of p80 and metricagg_percentile: exact percentile_cont by O(n) selection.';

CREATE FUNCTION metricagg_stats_final(metricagg_values) RETURNS metricagg_stats_result
    AS 'MODULE_PATHNAME', 'metricagg_stats_final'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_stats_final(metricagg_values) IS
'Final function of metricagg_stats.';

CREATE AGGREGATE p80(double precision) (
    SFUNC = metricagg_values_trans,
    STYPE = metricagg_values,
    SSPACE = 512,
    FINALFUNC = metricagg_percentile_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_values_combine,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE p80(double precision) IS
'80th percentile, exact and bit-identical to percentile_cont(0.8) WITHIN GROUP (ORDER BY value): NULLs ignored, NaN above every number. Parallel safe and partially aggregated by Citus workers (combine function, state metricagg_values). At most 134 million values per group. NULL for an empty group.';

CREATE AGGREGATE metricagg_percentile(value double precision, fraction double precision) (
    SFUNC = metricagg_percentile_trans,
    STYPE = metricagg_values,
    SSPACE = 512,
    FINALFUNC = metricagg_percentile_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_values_combine,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_percentile(double precision, double precision) IS
'Exact percentile at fraction (0.9 for p90, 0.99 for p99), bit-identical to percentile_cont(fraction) WITHIN GROUP (ORDER BY value). The fraction must be constant within a group, not NULL, and between 0 and 1. Parallel safe and partially aggregated by Citus workers.';

CREATE AGGREGATE metricagg_stats(value double precision) (
    SFUNC = metricagg_values_trans,
    STYPE = metricagg_values,
    SSPACE = 512,
    FINALFUNC = metricagg_stats_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_values_combine,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_stats(double precision) IS
'count, avg, min, max and p80 of a group in one pass, as a metricagg_stats_result. min, max and p80 are exact (p80 = percentile_cont(0.8)); avg is sum/count as avg(float8). Parallel safe and partially aggregated by Citus workers.';

-- metricagg_pack_bins runs in parallel plans now (combine, serialize,
-- deserialize). An aggregate's support functions cannot be altered, so it is
-- re-created, privileges included (revoked below; sql/ grants them again).
-- A view that uses it makes the DROP fail, naming the view: drop the view,
-- update, re-create it.
CREATE FUNCTION metricagg_pack_combine(internal, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_pack_combine'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_pack_combine(internal, internal) IS
'Combine function of metricagg_pack_bins: concatenates two groups'' records (internal).';

CREATE FUNCTION metricagg_pack_serialize(internal) RETURNS bytea
    AS 'MODULE_PATHNAME', 'metricagg_pack_serialize'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_pack_serialize(internal) IS
'Serializes a partial metricagg_pack_bins state, as a packed value (internal).';

CREATE FUNCTION metricagg_pack_deserialize(bytea, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_pack_deserialize'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_pack_deserialize(bytea, internal) IS
'Deserializes a partial metricagg_pack_bins state, checking it (internal).';

DROP AGGREGATE metricagg_pack_bins(timestamptz, bigint, double precision, double precision, double precision);
-- SSPACE: a day of one-minute bins (1,440 × 40 bytes).
CREATE AGGREGATE metricagg_pack_bins(ts timestamptz, count bigint, avg double precision, min double precision, max double precision) (
    SFUNC = metricagg_pack_trans,
    STYPE = internal,
    SSPACE = 65536,
    FINALFUNC = metricagg_pack_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_pack_combine,
    SERIALFUNC = metricagg_pack_serialize,
    DESERIALFUNC = metricagg_pack_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_pack_bins(timestamptz, bigint, double precision, double precision, double precision) IS
'The group''s bins as one bytea ordered by ts, little-endian: a version byte (1) and three zero bytes, u32 n; then n records of i64 ts (microseconds since 1970-01-01 UTC; -infinity and infinity as the i64 extremes), i64 count, f64 avg, f64 min, f64 max. A NULL avg/min/max is NaN; rows with a NULL ts or count are skipped; no rows gives NULL; a negative count or a ts after 294246 AD is an error. One transition call per row: a faster way to read whole series than five array_aggs. Parallel safe (combine, serialize, deserialize). Decode it with metricagg_core::codec::pack_bins. EXECUTE is granted per role, not to PUBLIC.';

-- The packed formats: version byte, checks, grants.
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
