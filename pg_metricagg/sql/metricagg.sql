-- pg_metricagg: hand-written SQL for the functions and aggregates.
--
-- The support functions are version-1 C functions in the extension's
-- library. Aggregates are declared here rather than with #[pg_aggregate]
-- because pgrx 0.18 generates a wrong deserialize signature for parallel
-- aggregates with an internal state (pgrx#2351).

-------------------------------------------------------------------------------
-- UTC binning
-------------------------------------------------------------------------------

CREATE FUNCTION metricagg_bin(
    ts timestamptz,
    width interval,
    origin timestamptz DEFAULT '2000-01-03 00:00:00+00'
) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'metricagg_bin_tstz'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION metricagg_bin(timestamptz, interval, timestamptz) IS
'Start of the UTC bin of the given width that contains ts. Fixed widths floor toward minus infinity from origin (as date_bin); month widths give UTC calendar months counted from the origin''s month (as TimescaleDB time_bucket). The session TimeZone is never used. Errors on zero/negative widths, months mixed with days or time, and infinite timestamps.';

CREATE FUNCTION metricagg_bin(
    ts timestamp,
    width interval,
    origin timestamp DEFAULT '2000-01-03 00:00:00'
) RETURNS timestamp
    AS 'MODULE_PATHNAME', 'metricagg_bin_ts'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION metricagg_bin(timestamp, interval, timestamp) IS
'Start of the bin of the given width that contains ts, a timestamp without time zone taken as UTC. Same rules as metricagg_bin(timestamptz, interval, timestamptz).';

-------------------------------------------------------------------------------
-- Aggregate support functions (internal state: every value as a sort key)
-------------------------------------------------------------------------------

CREATE FUNCTION metricagg_values_trans(internal, double precision) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_values_trans'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_values_trans(internal, double precision) IS
'Transition function of p80 and metricagg_stats (internal).';

CREATE FUNCTION metricagg_percentile_trans(internal, double precision, double precision) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_percentile_trans'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_percentile_trans(internal, double precision, double precision) IS
'Transition function of metricagg_percentile (internal).';

CREATE FUNCTION metricagg_values_combine(internal, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_values_combine'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_values_combine(internal, internal) IS
'Combine function of the pg_metricagg aggregates: merges two partial states exactly (internal).';

CREATE FUNCTION metricagg_values_serialize(internal) RETURNS bytea
    AS 'MODULE_PATHNAME', 'metricagg_values_serialize'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_values_serialize(internal) IS
'Serializes a partial state of the pg_metricagg aggregates for parallel workers (internal).';

CREATE FUNCTION metricagg_values_deserialize(bytea, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_values_deserialize'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_values_deserialize(bytea, internal) IS
'Deserializes a partial state of the pg_metricagg aggregates (internal).';

CREATE FUNCTION metricagg_percentile_final(internal) RETURNS double precision
    AS 'MODULE_PATHNAME', 'metricagg_percentile_final'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_percentile_final(internal) IS
'Final function of p80 and metricagg_percentile: exact percentile_cont by O(n) selection (internal).';

CREATE TYPE metricagg_stats_result AS (
    count bigint,
    avg double precision,
    min double precision,
    max double precision,
    p80 double precision
);
COMMENT ON TYPE metricagg_stats_result IS
'Result of metricagg_stats: count, avg, min, max and p80 of a group.';

CREATE FUNCTION metricagg_stats_final(internal) RETURNS metricagg_stats_result
    AS 'MODULE_PATHNAME', 'metricagg_stats_final'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_stats_final(internal) IS
'Final function of metricagg_stats (internal).';

-------------------------------------------------------------------------------
-- Aggregates
--
-- SSPACE is the average state size the planner assumes per group: 512 bytes,
-- exactly the chunk that holds a one-minute bin of 1 Hz samples. The real
-- memory lives in the aggregate's memory context, so PostgreSQL accounts for
-- it at run time whatever the bin width.
-------------------------------------------------------------------------------

CREATE AGGREGATE p80(double precision) (
    SFUNC = metricagg_values_trans,
    STYPE = internal,
    SSPACE = 512,
    FINALFUNC = metricagg_percentile_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_values_combine,
    SERIALFUNC = metricagg_values_serialize,
    DESERIALFUNC = metricagg_values_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE p80(double precision) IS
'80th percentile, exact and bit-identical to percentile_cont(0.8) WITHIN GROUP (ORDER BY value): NULLs ignored, NaN above every number. Parallel safe (combine, serialize, deserialize). NULL for an empty group.';

CREATE AGGREGATE metricagg_percentile(value double precision, fraction double precision) (
    SFUNC = metricagg_percentile_trans,
    STYPE = internal,
    SSPACE = 512,
    FINALFUNC = metricagg_percentile_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_values_combine,
    SERIALFUNC = metricagg_values_serialize,
    DESERIALFUNC = metricagg_values_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_percentile(double precision, double precision) IS
'Exact percentile at fraction (0.9 for p90, 0.99 for p99), bit-identical to percentile_cont(fraction) WITHIN GROUP (ORDER BY value). The fraction must be constant within a group, not NULL, and between 0 and 1. Parallel safe.';

CREATE AGGREGATE metricagg_stats(value double precision) (
    SFUNC = metricagg_values_trans,
    STYPE = internal,
    SSPACE = 512,
    FINALFUNC = metricagg_stats_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_values_combine,
    SERIALFUNC = metricagg_values_serialize,
    DESERIALFUNC = metricagg_values_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_stats(double precision) IS
'count, avg, min, max and p80 of a group in one pass, as a metricagg_stats_result. min, max and p80 are exact (p80 = percentile_cont(0.8)); avg is sum/count as avg(float8). Parallel safe.';

-------------------------------------------------------------------------------
-- Statistics of every bin of a group, binned inside the aggregate
-------------------------------------------------------------------------------

CREATE TYPE metricagg_bin_stats AS (
    ts timestamptz,
    count bigint,
    avg double precision,
    min double precision,
    max double precision,
    p80 double precision
);
COMMENT ON TYPE metricagg_bin_stats IS
'One bin of metricagg_stats_by_bin: bin start (UTC) and its count, avg, min, max and p80.';

CREATE FUNCTION metricagg_by_bin_trans(internal, timestamptz, double precision, interval) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_by_bin_trans'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_by_bin_trans(internal, timestamptz, double precision, interval) IS
'Transition function of metricagg_stats_by_bin (internal).';

CREATE FUNCTION metricagg_by_bin_trans(internal, timestamptz, double precision, interval, timestamptz) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_by_bin_trans'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_by_bin_trans(internal, timestamptz, double precision, interval, timestamptz) IS
'Transition function of metricagg_stats_by_bin with an origin (internal).';

CREATE FUNCTION metricagg_by_bin_combine(internal, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_by_bin_combine'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_by_bin_combine(internal, internal) IS
'Combine function of metricagg_stats_by_bin: merges bins exactly (internal).';

CREATE FUNCTION metricagg_by_bin_serialize(internal) RETURNS bytea
    AS 'MODULE_PATHNAME', 'metricagg_by_bin_serialize'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_by_bin_serialize(internal) IS
'Serializes a partial metricagg_stats_by_bin state (internal).';

CREATE FUNCTION metricagg_by_bin_deserialize(bytea, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_by_bin_deserialize'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_by_bin_deserialize(bytea, internal) IS
'Deserializes a partial metricagg_stats_by_bin state (internal).';

CREATE FUNCTION metricagg_by_bin_final(internal) RETURNS metricagg_bin_stats[]
    AS 'MODULE_PATHNAME', 'metricagg_by_bin_final'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_by_bin_final(internal) IS
'Final function of metricagg_stats_by_bin (internal).';

-- SSPACE: a group holds many bins; 64 kB is a day of one-minute bins at a
-- low rate. PostgreSQL accounts for the real memory at run time.
CREATE AGGREGATE metricagg_stats_by_bin(ts timestamptz, value double precision, width interval) (
    SFUNC = metricagg_by_bin_trans,
    STYPE = internal,
    SSPACE = 65536,
    FINALFUNC = metricagg_by_bin_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_by_bin_combine,
    SERIALFUNC = metricagg_by_bin_serialize,
    DESERIALFUNC = metricagg_by_bin_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_stats_by_bin(timestamptz, double precision, interval) IS
'count, avg, min, max and p80 of every bin of the given width (UTC, as metricagg_bin) within the group, as a metricagg_bin_stats[] ordered by bin. Equal to GROUP BY metricagg_bin(ts, width) with metricagg_stats, but bins inside the aggregate: fastest when rows arrive in time order. Rows with NULL ts or value are skipped.';

CREATE AGGREGATE metricagg_stats_by_bin(ts timestamptz, value double precision, width interval, origin timestamptz) (
    SFUNC = metricagg_by_bin_trans,
    STYPE = internal,
    SSPACE = 65536,
    FINALFUNC = metricagg_by_bin_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_by_bin_combine,
    SERIALFUNC = metricagg_by_bin_serialize,
    DESERIALFUNC = metricagg_by_bin_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_stats_by_bin(timestamptz, double precision, interval, timestamptz) IS
'metricagg_stats_by_bin with an explicit origin for fixed widths (see metricagg_bin).';

-------------------------------------------------------------------------------
-- Every bin of every series in one aggregate, grouping done inside
-------------------------------------------------------------------------------

CREATE TYPE metricagg_rollup_row AS (
    server_id text,
    metric_type text,
    ts timestamptz,
    count bigint,
    avg double precision,
    min double precision,
    max double precision,
    p80 double precision
);
COMMENT ON TYPE metricagg_rollup_row IS
'One bin of metricagg_rollup: series, bin start (UTC) and its count, avg, min, max and p80.';

CREATE FUNCTION metricagg_rollup_trans(internal, text, text, timestamptz, double precision, interval) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_rollup_trans'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_rollup_trans(internal, text, text, timestamptz, double precision, interval) IS
'Transition function of metricagg_rollup (internal).';

CREATE FUNCTION metricagg_rollup_trans(internal, text, text, timestamptz, double precision, interval, timestamptz) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_rollup_trans'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_rollup_trans(internal, text, text, timestamptz, double precision, interval, timestamptz) IS
'Transition function of metricagg_rollup with an origin (internal).';

CREATE FUNCTION metricagg_rollup_combine(internal, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_rollup_combine'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_rollup_combine(internal, internal) IS
'Combine function of metricagg_rollup: merges series and bins exactly (internal).';

CREATE FUNCTION metricagg_rollup_serialize(internal) RETURNS bytea
    AS 'MODULE_PATHNAME', 'metricagg_rollup_serialize'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_rollup_serialize(internal) IS
'Serializes a partial metricagg_rollup state (internal).';

CREATE FUNCTION metricagg_rollup_deserialize(bytea, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_rollup_deserialize'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_rollup_deserialize(bytea, internal) IS
'Deserializes a partial metricagg_rollup state (internal).';

CREATE FUNCTION metricagg_rollup_final(internal) RETURNS metricagg_rollup_row[]
    AS 'MODULE_PATHNAME', 'metricagg_rollup_final'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_rollup_final(internal) IS
'Final function of metricagg_rollup (internal).';

CREATE AGGREGATE metricagg_rollup(server_id text, metric_type text, ts timestamptz, value double precision, width interval) (
    SFUNC = metricagg_rollup_trans,
    STYPE = internal,
    SSPACE = 1048576,
    FINALFUNC = metricagg_rollup_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_rollup_combine,
    SERIALFUNC = metricagg_rollup_serialize,
    DESERIALFUNC = metricagg_rollup_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_rollup(text, text, timestamptz, double precision, interval) IS
'Every (server_id, metric_type, bin) of the input with count, avg, min, max and p80, as a metricagg_rollup_row[] ordered by series (bytewise) and bin: the same rows as GROUP BY server_id, metric_type, metricagg_bin(ts, width) with metricagg_stats, with the grouping done inside the aggregate (no GROUP BY needed). Use as SELECT r.* FROM (SELECT metricagg_rollup(...) a FROM t) s, unnest(s.a) r. Rows with a NULL in any input are skipped. A result is one array, so at most about 1 GB of bins.';

CREATE AGGREGATE metricagg_rollup(server_id text, metric_type text, ts timestamptz, value double precision, width interval, origin timestamptz) (
    SFUNC = metricagg_rollup_trans,
    STYPE = internal,
    SSPACE = 1048576,
    FINALFUNC = metricagg_rollup_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_rollup_combine,
    SERIALFUNC = metricagg_rollup_serialize,
    DESERIALFUNC = metricagg_rollup_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_rollup(text, text, timestamptz, double precision, interval, timestamptz) IS
'metricagg_rollup with an explicit origin for fixed widths (see metricagg_bin).';

-- metricagg_pack_bins: a group's bins as one compact binary array, for
-- clients that read whole series (insights-api).

CREATE FUNCTION metricagg_pack_trans(internal, timestamptz, bigint, double precision, double precision, double precision) RETURNS internal
    AS 'MODULE_PATHNAME', 'metricagg_pack_trans'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_pack_trans(internal, timestamptz, bigint, double precision, double precision, double precision) IS
'Transition function of metricagg_pack_bins (internal).';

CREATE FUNCTION metricagg_pack_final(internal) RETURNS bytea
    AS 'MODULE_PATHNAME', 'metricagg_pack_final'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_pack_final(internal) IS
'Final function of metricagg_pack_bins (internal).';

-- SSPACE: a day of one-minute bins (1,440 × 40 bytes).
CREATE AGGREGATE metricagg_pack_bins(ts timestamptz, count bigint, avg double precision, min double precision, max double precision) (
    SFUNC = metricagg_pack_trans,
    STYPE = internal,
    SSPACE = 65536,
    FINALFUNC = metricagg_pack_final,
    FINALFUNC_MODIFY = READ_ONLY,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_pack_bins(timestamptz, bigint, double precision, double precision, double precision) IS
'The group''s bins as one bytea ordered by ts, little-endian: a version byte (1) and three zero bytes, u32 n; then n records of i64 ts (microseconds since 1970-01-01 UTC; -infinity and infinity as the i64 extremes), i64 count, f64 avg, f64 min, f64 max. A NULL avg/min/max is NaN; rows with a NULL ts or count are skipped; no rows gives NULL; a negative count or a ts after 294246 AD is an error. One transition call per row: a faster way to read whole series than five array_aggs. Decode it with metricagg_core::codec::pack_bins. EXECUTE is granted per role, not to PUBLIC.';

-- metricagg_stats_by_bin_packed / metricagg_unpack_stats: the bins of
-- metricagg_stats_by_bin as one bytea, so that a remote aggregation through
-- postgres_fdw ships one value per group instead of one text row per bin.

CREATE FUNCTION metricagg_by_bin_packed_final(internal) RETURNS bytea
    AS 'MODULE_PATHNAME', 'metricagg_by_bin_packed_final'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION metricagg_by_bin_packed_final(internal) IS
'Final function of metricagg_stats_by_bin_packed (internal).';

-- SSPACE: 8 kB, below the real state (about 30 kB for 60 one-minute bins of
-- 1 Hz samples) on purpose. The job groups by a span of bins, an expression
-- whose group count the planner over-estimates by about the span; with the
-- real size it would sort even a few thousand rows rather than hash them.
-- PostgreSQL accounts the real memory at run time and spills past hash_mem.
CREATE AGGREGATE metricagg_stats_by_bin_packed(ts timestamptz, value double precision, width interval) (
    SFUNC = metricagg_by_bin_trans,
    STYPE = internal,
    SSPACE = 8192,
    FINALFUNC = metricagg_by_bin_packed_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_by_bin_combine,
    SERIALFUNC = metricagg_by_bin_serialize,
    DESERIALFUNC = metricagg_by_bin_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_stats_by_bin_packed(timestamptz, double precision, interval) IS
'metricagg_stats_by_bin as one bytea, for shipping many bins as one value (little-endian: a version byte (1) and three zero bytes, u32 n; n records of i64 bin start in microseconds since 1970-01-01 UTC, i64 count, f64 avg, min, max, p80; bins after 294246 AD are an error); metricagg_unpack_stats turns it back into rows. EXECUTE is granted per role, not to PUBLIC.';

CREATE AGGREGATE metricagg_stats_by_bin_packed(ts timestamptz, value double precision, width interval, origin timestamptz) (
    SFUNC = metricagg_by_bin_trans,
    STYPE = internal,
    SSPACE = 8192,
    FINALFUNC = metricagg_by_bin_packed_final,
    FINALFUNC_MODIFY = READ_ONLY,
    COMBINEFUNC = metricagg_by_bin_combine,
    SERIALFUNC = metricagg_by_bin_serialize,
    DESERIALFUNC = metricagg_by_bin_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE metricagg_stats_by_bin_packed(timestamptz, double precision, interval, timestamptz) IS
'metricagg_stats_by_bin_packed with an explicit origin for fixed widths (see metricagg_bin). EXECUTE is granted per role, not to PUBLIC.';

CREATE FUNCTION metricagg_unpack_stats(packed bytea) RETURNS SETOF metricagg_bin_stats
    AS 'MODULE_PATHNAME', 'metricagg_unpack_stats'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 1000;
COMMENT ON FUNCTION metricagg_unpack_stats(bytea) IS
'The bins of a metricagg_stats_by_bin_packed value as rows (ts, count, avg, min, max, p80), ordered by ts. The whole value is checked first (version, length, finite timestamps in increasing order, counts of at least 1): anything else is an error saying what is wrong, and no row is returned. A value of another format version (another pg_metricagg across postgres_fdw) is an error naming both versions. EXECUTE is granted per role, not to PUBLIC.';

-------------------------------------------------------------------------------
-- Privileges
--
-- The packed functions carry the pipeline's binary formats between its
-- roles; nobody else needs them. EXECUTE goes to the roles that do (see
-- sql/raw.sql and sql/analytics.sql): the job role runs
-- metricagg_stats_by_bin_packed on the raw side and metricagg_unpack_stats
-- in the analytics database, the api role runs metricagg_pack_bins. The
-- aggregates' support functions take or return internal, which SQL cannot
-- pass; PostgreSQL checks the aggregate's owner, not the caller, for them.
-------------------------------------------------------------------------------

REVOKE EXECUTE ON FUNCTION metricagg_pack_bins(timestamptz, bigint, double precision, double precision, double precision) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION metricagg_stats_by_bin_packed(timestamptz, double precision, interval) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION metricagg_stats_by_bin_packed(timestamptz, double precision, interval, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION metricagg_unpack_stats(bytea) FROM PUBLIC;
