//! In-database tests, run by `cargo pgrx test` (see `scripts/pgrx-test.sh`).
//!
//! Every result is checked against an independent oracle that PostgreSQL
//! already has: `percentile_cont`, `date_bin`, `date_trunc`, `min`, `max`,
//! `avg`, `count`. Data are random but seeded (`setseed`), with the hard
//! values mixed in: NULL, NaN, ±Infinity, -0 and +0, many duplicates.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use metricagg_core::codec::{
        binned_state, pack_bins, rollup_state, stats_packed, values_state,
    };
    use metricagg_core::testing;
    use pgrx::prelude::*;

    type TestResult = Result<(), pgrx::spi::Error>;

    fn count(query: &str) -> Result<i64, pgrx::spi::Error> {
        Ok(Spi::get_one::<i64>(query)?.expect("count is never NULL"))
    }

    fn text(query: &str) -> Result<Option<String>, pgrx::spi::Error> {
        Spi::get_one::<String>(query)
    }

    /// Asserts that `query` (which selects rows that disagree with an oracle)
    /// returns no rows; on failure shows the first few.
    fn assert_no_rows(what: &str, query: &str) -> TestResult {
        let n = count(&format!("SELECT count(*) FROM ({query}) q"))?;
        if n != 0 {
            let sample = text(&format!(
                "SELECT string_agg(q::text, E'\\n') FROM (SELECT * FROM ({query}) q0 LIMIT 5) q"
            ))?;
            panic!(
                "{what}: {n} rows disagree, e.g.\n{}",
                sample.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The text of `EXPLAIN (options) query`.
    fn explain(options: &str, query: &str) -> Result<String, pgrx::spi::Error> {
        Spi::run(
            "CREATE OR REPLACE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $f$
             DECLARE line text; plan text := '';
             BEGIN
               FOR line IN EXECUTE q LOOP plan := plan || line || E'\\n'; END LOOP;
               RETURN plan;
             END $f$",
        )?;
        let q = format!("EXPLAIN ({options}) {query}").replace('\'', "''");
        Ok(text(&format!("SELECT pg_temp.plan_of('{q}')"))?.unwrap_or_default())
    }

    /// `SQLSTATE: message | hint | detail` of the error `query` raises, or
    /// "no error".
    fn error_of(query: &str) -> Result<String, pgrx::spi::Error> {
        Spi::run(
            "CREATE OR REPLACE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $f$
             DECLARE st text; msg text; hint text; detail text;
             BEGIN
               EXECUTE q;
               RETURN 'no error';
             EXCEPTION WHEN OTHERS THEN
               GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT,
                                       detail = PG_EXCEPTION_DETAIL;
               RETURN st || ': ' || msg || ' | ' || hint || ' | ' || detail;
             END $f$",
        )?;
        let quoted = query.replace('\'', "''");
        Ok(text(&format!("SELECT pg_temp.error_of('{quoted}')"))?.expect("text"))
    }

    /// Makes the planner choose parallel plans for the rest of the test's
    /// transaction, with the work done by the workers (so the partial states
    /// really go through serialize, deserialize and combine).
    fn force_parallel_plans() -> TestResult {
        Spi::run(
            "SET LOCAL max_parallel_workers_per_gather = 2;
             SET LOCAL parallel_setup_cost = 0;
             SET LOCAL parallel_tuple_cost = 0;
             SET LOCAL min_parallel_table_scan_size = 0;
             SET LOCAL parallel_leader_participation = off;",
        )
    }

    /// The test table: at least 120k rows in 2,000+ groups of skewed sizes, with
    /// adversarial values, plus special groups (one value, all NULL, all NaN,
    /// only zeros of both signs, only infinities).
    fn make_values_table(name: &str, rows: i64) -> TestResult {
        Spi::run(&format!(
            "SELECT setseed(0.4242);
             CREATE TABLE {name} AS
             SELECT floor(power(random(), 2) * 2500)::int AS grp,
                    CASE WHEN r < 0.02 THEN 'NaN'::float8
                         WHEN r < 0.03 THEN 'Infinity'::float8
                         WHEN r < 0.04 THEN '-Infinity'::float8
                         WHEN r < 0.06 THEN '-0'::float8
                         WHEN r < 0.08 THEN '0'::float8
                         WHEN r < 0.12 THEN NULL
                         WHEN r < 0.40 THEN floor(random() * 5)
                         WHEN r < 0.45 THEN (random() - 0.5) * 1e150
                         ELSE (random() - 0.5) * 1e4 END AS v
             FROM (SELECT g, random() AS r FROM generate_series(1, {rows}) g) s;
             INSERT INTO {name} VALUES
               (-1, 42), (-2, NULL), (-2, NULL), (-3, 'NaN'), (-3, 'NaN'),
               (-4, '-0'), (-4, '0'), (-4, '-0'), (-5, 'Infinity'), (-5, 'Infinity'),
               (-5, '-Infinity'), (-6, '-0'), (-7, 1), (-7, 2);
             ANALYZE {name};"
        ))
    }

    /// Rows where `x` and `y` differ: bit-identical floats agree, and so do
    /// two NULLs; the sign of a zero is free because PostgreSQL's sort leaves
    /// the order of -0 and +0 unspecified.
    fn differ(x: &str, y: &str) -> String {
        format!(
            "(({x} IS NULL AND {y} IS NULL) OR float8send({x}) = float8send({y}) OR ({x} = 0 AND {y} = 0)) IS NOT TRUE"
        )
    }

    /// Rows where two bins' statistics disagree. `x` and `y` name their
    /// (count, avg, min, max, p80) columns: counts must be equal, min, max and
    /// p80 agree as [`differ`] says, and avg within 1e-12 relative of `y`'s.
    fn stats_disagree(x: [&str; 5], y: [&str; 5]) -> String {
        let [xc, xa, xmn, xmx, xp] = x;
        let [yc, ya, ymn, ymx, yp] = y;
        format!(
            "{xc} IS DISTINCT FROM {yc} OR {} OR {} OR {}
                OR ({xa} = {ya} OR abs({xa} - {ya}) <= 1e-12 * abs({ya})) IS NOT TRUE",
            differ(xmn, ymn),
            differ(xmx, ymx),
            differ(xp, yp),
        )
    }

    /// Each query raises an error whose `SQLSTATE: message | hint` starts
    /// with the expected text.
    fn assert_errors(cases: &[(&str, &str)]) -> TestResult {
        for (query, want) in cases {
            let got = error_of(query)?;
            assert!(
                got.starts_with(want),
                "{query}\n  got:  {got}\n  want: {want}…"
            );
        }
        Ok(())
    }

    #[pg_test]
    fn p80_is_percentile_cont_on_adversarial_groups() -> TestResult {
        make_values_table("vals", 120_000)?;
        assert!(count("SELECT count(DISTINCT grp) FROM vals")? >= 2000);
        assert_no_rows(
            "p80 vs percentile_cont(0.8)",
            &format!(
                "SELECT grp, x, y FROM (
                   SELECT grp, p80(v) AS x, percentile_cont(0.8) WITHIN GROUP (ORDER BY v) AS y
                   FROM vals GROUP BY grp) a
                 WHERE {}",
                differ("x", "y")
            ),
        )?;
        // Whole table, one group: no GROUP BY.
        assert_no_rows(
            "p80 over the whole table",
            &format!(
                "SELECT x, y FROM (SELECT p80(v) x, percentile_cont(0.8) WITHIN GROUP (ORDER BY v) y FROM vals) a WHERE {}",
                differ("x", "y")
            ),
        )?;
        assert_eq!(
            text("SELECT p80(v)::text FROM vals WHERE grp = -1")?.as_deref(),
            Some("42")
        );
        assert_eq!(text("SELECT p80(v)::text FROM vals WHERE grp = -2")?, None);
        assert_eq!(
            text("SELECT p80(v)::text FROM vals WHERE grp = -3")?.as_deref(),
            Some("NaN")
        );
        assert_eq!(
            text("SELECT p80(v)::text FROM vals WHERE grp = -7")?.as_deref(),
            Some("1.8")
        );
        assert_eq!(
            text("SELECT p80(v)::text FROM vals WHERE grp = -6")?.as_deref(),
            Some("-0")
        );
        assert_eq!(text("SELECT p80(v)::text FROM vals WHERE false")?, None);
        Ok(())
    }

    #[pg_test]
    fn metricagg_percentile_is_percentile_cont_at_any_fraction() -> TestResult {
        make_values_table("vals", 100_000)?;
        for fraction in ["0", "0.01", "0.25", "0.5", "0.9", "0.99", "0.999", "1"] {
            assert_no_rows(
                &format!("metricagg_percentile(v, {fraction})"),
                &format!(
                    "SELECT grp, x, y FROM (
                       SELECT grp, metricagg_percentile(v, {fraction}) AS x,
                              percentile_cont({fraction}) WITHIN GROUP (ORDER BY v) AS y
                       FROM vals GROUP BY grp) a
                     WHERE {}",
                    differ("x", "y")
                ),
            )?;
        }
        Ok(())
    }

    #[pg_test]
    fn metricagg_stats_matches_builtin_aggregates() -> TestResult {
        make_values_table("vals", 100_000)?;
        assert_no_rows(
            "metricagg_stats vs count/avg/min/max/percentile_cont",
            &format!(
                "SELECT * FROM (
                   SELECT grp, (s).count AS c, (s).avg AS a, (s).min AS mn, (s).max AS mx, (s).p80 AS p,
                          c0, a0, mn0, mx0, p0
                   FROM (SELECT grp, metricagg_stats(v) AS s, count(v) AS c0, avg(v) AS a0,
                                min(v) AS mn0, max(v) AS mx0,
                                percentile_cont(0.8) WITHIN GROUP (ORDER BY v) AS p0
                         FROM vals GROUP BY grp) g) q
                 WHERE c <> c0
                    OR {mn} OR {mx} OR {p}
                    OR ((a IS NULL AND a0 IS NULL)
                        OR (a = a0)  -- also NaN = NaN and equal infinities
                        OR abs(a - a0) <= 1e-12 * abs(a0)) IS NOT TRUE",
                mn = differ("mn", "mn0"),
                mx = differ("mx", "mx0"),
                p = differ("p", "p0"),
            ),
        )?;
        assert_eq!(
            text("SELECT metricagg_stats(v)::text FROM vals WHERE grp = -2")?.as_deref(),
            Some("(0,,,,)")
        );
        assert_eq!(
            text("SELECT metricagg_stats(v)::text FROM vals WHERE grp = -7")?.as_deref(),
            Some("(2,1.5,1,2,1.8)")
        );
        assert_eq!(
            text("SELECT (metricagg_stats(v)).count::text FROM vals WHERE false")?.as_deref(),
            Some("0")
        );
        Ok(())
    }

    #[pg_test]
    fn aggregates_work_as_window_functions() -> TestResult {
        Spi::run("CREATE TABLE w AS SELECT g, (g * 7919 % 101)::float8 AS v FROM generate_series(1, 300) g")?;
        assert_no_rows(
            "running p80",
            &format!(
                "SELECT * FROM (
                   SELECT g, p80(v) OVER w AS x,
                          (SELECT percentile_cont(0.8) WITHIN GROUP (ORDER BY v2.v) FROM w v2 WHERE v2.g <= w1.g) AS y
                   FROM w w1 WINDOW w AS (ORDER BY g)) q WHERE {}",
                differ("x", "y")
            ),
        )
    }

    /// The parallel plan (Partial aggregate under Gather, workers launched)
    /// returns exactly the serial result: this exercises serialize,
    /// deserialize and combine, the same path Citus uses across workers.
    #[pg_test]
    fn parallel_plans_return_the_serial_result() -> TestResult {
        make_values_table("pvals", 200_000)?;
        Spi::run(
            "SET LOCAL max_parallel_workers_per_gather = 0;
             CREATE TABLE serial_res AS
               SELECT grp, p80(v) p, metricagg_percentile(v, 0.99) p99, metricagg_stats(v) s
               FROM pvals GROUP BY grp;
             CREATE TABLE serial_one AS SELECT p80(v) p, metricagg_stats(v) s FROM pvals;",
        )?;
        force_parallel_plans()?;
        let grouped = "SELECT grp, p80(v) p, metricagg_percentile(v, 0.99) p99, metricagg_stats(v) s FROM pvals GROUP BY grp";
        let plan = explain("ANALYZE, COSTS OFF, TIMING OFF", grouped)?;
        assert!(plan.contains("Gather"), "no Gather in plan:\n{plan}");
        assert!(
            plan.contains("Partial"),
            "no Partial aggregate in plan:\n{plan}"
        );
        let launched = plan
            .lines()
            .find_map(|l| l.trim().strip_prefix("Workers Launched: "))
            .and_then(|n| n.parse::<i32>().ok())
            .unwrap_or(0);
        assert!(launched >= 1, "no parallel worker launched:\n{plan}");

        Spi::run(&format!("CREATE TABLE parallel_res AS {grouped}"))?;
        assert_eq!(
            count("SELECT count(*) FROM parallel_res")?,
            count("SELECT count(*) FROM serial_res")?
        );
        assert_no_rows(
            "parallel vs serial",
            &format!(
                "SELECT * FROM serial_res a FULL JOIN parallel_res b USING (grp)
                 WHERE {} OR {} OR {} OR {} OR {} OR (a.s).count IS DISTINCT FROM (b.s).count
                    OR ((a.s).avg IS NOT DISTINCT FROM (b.s).avg
                        OR abs((a.s).avg - (b.s).avg) <= 1e-12 * abs((a.s).avg)) IS NOT TRUE",
                differ("a.p", "b.p"),
                differ("a.p99", "b.p99"),
                differ("(a.s).min", "(b.s).min"),
                differ("(a.s).max", "(b.s).max"),
                differ("(a.s).p80", "(b.s).p80"),
            ),
        )?;
        // Ungrouped: a Partial Aggregate under Gather, then Finalize.
        let plan = explain("COSTS OFF", "SELECT p80(v), metricagg_stats(v) FROM pvals")?;
        assert!(
            plan.contains("Partial Aggregate") && plan.contains("Gather"),
            "{plan}"
        );
        assert_no_rows(
            "ungrouped parallel vs serial",
            &format!(
                "SELECT * FROM serial_one a, (SELECT p80(v) p, metricagg_stats(v) s FROM pvals) b
                 WHERE {} OR {} OR (a.s).count <> (b.s).count",
                differ("a.p", "b.p"),
                differ("(a.s).p80", "(b.s).p80"),
            ),
        )
    }

    /// The state lives in the aggregate's memory context: with a tiny
    /// work_mem a hash aggregate must spill (PostgreSQL sees the memory), and
    /// with enough it must not; both give the oracle's answer.
    #[pg_test]
    fn hash_aggregate_memory_is_visible_to_postgres() -> TestResult {
        Spi::run(
            "SELECT setseed(0.1);
             CREATE TABLE m AS SELECT (g / 60) AS grp, random() * 100 AS v FROM generate_series(0, 119999) g;
             ANALYZE m;
             SET LOCAL enable_sort = off;
             SET LOCAL max_parallel_workers_per_gather = 0;",
        )?;
        let q = "SELECT grp, p80(v) AS x, percentile_cont(0.8) WITHIN GROUP (ORDER BY v) AS y FROM m GROUP BY grp";
        let p = "SELECT grp, p80(v) FROM m GROUP BY grp";
        let plan_of = |work_mem: &str| -> Result<String, pgrx::spi::Error> {
            Spi::run(&format!("SET LOCAL work_mem = '{work_mem}'"))?;
            explain("ANALYZE, COSTS OFF, TIMING OFF", p)
        };
        let small = plan_of("64kB")?;
        assert!(small.contains("HashAggregate"), "{small}");
        assert!(
            small.contains("Disk Usage"),
            "expected a spill with 64kB:\n{small}"
        );
        assert_no_rows(
            "spilled p80",
            &format!("SELECT * FROM ({q}) a WHERE {}", differ("x", "y")),
        )?;
        let large = plan_of("256MB")?;
        assert!(
            large.contains("HashAggregate") && !large.contains("Disk Usage"),
            "{large}"
        );
        Ok(())
    }

    #[pg_test]
    fn bins_equal_date_bin_for_fixed_widths() -> TestResult {
        Spi::run(
            "SELECT setseed(0.77);
             CREATE TABLE ts AS
             SELECT timestamptz '1970-01-01 00:00:00+00'
                    + (random() * 80 * 365 * 86400) * interval '1 second'
                    + (floor(random() * 1000000)) * interval '1 microsecond' AS t
             FROM generate_series(1, 100000);
             CREATE TABLE widths(w) AS VALUES
               (interval '1 microsecond'), (interval '1 second'), (interval '1 minute'),
               (interval '5 minutes'), (interval '15 minutes'), (interval '90 minutes'),
               (interval '1 hour'), (interval '1 day'), (interval '7 days'),
               (interval '1 day -1 hour'), (interval '13 seconds 7 milliseconds');
             CREATE TABLE origins(o) AS VALUES
               (timestamptz '2000-01-03 00:00:00+00'), (timestamptz '1999-12-31 23:59:58.5+00'),
               (timestamptz '2031-06-15 12:34:56.789+00'), (timestamptz '1901-01-01 07:00:00+00');",
        )?;
        for tz in ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata"] {
            Spi::run(&format!("SET LOCAL TimeZone = '{tz}'"))?;
            assert_no_rows(
                &format!("metricagg_bin vs date_bin under {tz}"),
                "SELECT t, w, o FROM ts, widths, origins WHERE metricagg_bin(t, w, o) <> date_bin(w, t, o)",
            )?;
            assert_no_rows(
                &format!("default origin under {tz}"),
                "SELECT t, w FROM ts, widths
                 WHERE metricagg_bin(t, w) <> date_bin(w, t, timestamptz '2000-01-03 00:00:00+00')",
            )?;
            assert_no_rows(
                &format!("timestamp overload under {tz}"),
                "SELECT t, w FROM ts, widths
                 WHERE metricagg_bin(t AT TIME ZONE 'UTC', w) <> metricagg_bin(t, w) AT TIME ZONE 'UTC'
                    OR metricagg_bin(t AT TIME ZONE 'UTC', w) <> date_bin(w, t AT TIME ZONE 'UTC', timestamp '2000-01-03')",
            )?;
        }
        // TimescaleDB time_bucket's default origin is Monday 2000-01-03: weekly
        // bins start on Mondays at 00:00 UTC.
        Spi::run("SET LOCAL TimeZone = 'Pacific/Auckland'")?;
        assert_no_rows(
            "weeks start on Monday 00:00 UTC",
            "SELECT t FROM ts WHERE extract(isodow FROM metricagg_bin(t, '7 days') AT TIME ZONE 'UTC') <> 1
                OR (metricagg_bin(t, '7 days') AT TIME ZONE 'UTC')::time <> '00:00'",
        )
    }

    /// Across DST changes the bins do not move: hourly bins are whole UTC hours,
    /// daily bins start at 00:00 UTC, and the answer is the same whatever the
    /// session time zone.
    #[pg_test]
    fn bins_ignore_session_time_zone_across_dst() -> TestResult {
        Spi::run(
            "SET LOCAL TimeZone = 'UTC';
             CREATE TABLE dst AS
             SELECT t FROM generate_series(timestamptz '2025-03-08 00:00+00', '2025-03-10 00:00+00', '7 minutes') t
             UNION ALL SELECT t FROM generate_series(timestamptz '2025-03-29 00:00+00', '2025-03-31 00:00+00', '7 minutes') t
             UNION ALL SELECT t FROM generate_series(timestamptz '2025-10-25 00:00+00', '2025-10-27 00:00+00', '7 minutes') t
             UNION ALL SELECT t FROM generate_series(timestamptz '2025-11-01 00:00+00', '2025-11-03 00:00+00', '7 minutes') t;
             CREATE TABLE utc_bins AS
             SELECT t, metricagg_bin(t, '1 hour') h, metricagg_bin(t, '1 day') d, metricagg_bin(t, '1 month') m FROM dst;",
        )?;
        for tz in ["America/New_York", "Europe/Berlin"] {
            Spi::run(&format!("SET LOCAL TimeZone = '{tz}'"))?;
            assert_no_rows(
                &format!("bins under {tz} equal bins under UTC"),
                "SELECT * FROM utc_bins
                 WHERE metricagg_bin(t, '1 hour') <> h OR metricagg_bin(t, '1 day') <> d OR metricagg_bin(t, '1 month') <> m
                    OR extract(epoch FROM h)::bigint % 3600 <> 0
                    OR extract(epoch FROM d)::bigint % 86400 <> 0",
            )?;
        }
        Ok(())
    }

    /// Month widths: calendar months in UTC, in multiples of the width counted
    /// from January 2000, checked against date_trunc on the UTC wall clock.
    #[pg_test]
    fn month_bins_are_utc_calendar_months() -> TestResult {
        Spi::run(
            "SET LOCAL TimeZone = 'America/New_York';
             SELECT setseed(0.31);
             CREATE TABLE mts AS
             SELECT timestamptz '1890-01-01 00:00+00' + (random() * 250 * 365 * 86400) * interval '1 second' AS t
             FROM generate_series(1, 50000)
             UNION ALL VALUES (timestamptz '2025-03-01 00:00:00+00'), (timestamptz '2025-02-28 23:59:59.999999+00'),
                              (timestamptz '2000-01-01 00:00:00+00'), (timestamptz '1999-12-31 23:59:59+00');",
        )?;
        for months in [1, 2, 3, 4, 6, 12, 18, 24] {
            assert_no_rows(
                &format!("{months}-month bins"),
                &format!(
                    "SELECT t, got, want FROM (
                       SELECT t, metricagg_bin(t, interval '{months} months') AS got,
                              make_timestamptz(
                                2000 + floor(k / 12.0)::int, (k - 12 * floor(k / 12.0))::int + 1, 1, 0, 0, 0, 'UTC') AS want
                       FROM (SELECT t, {months} * floor(((extract(year FROM u)::int - 2000) * 12
                                                  + extract(month FROM u)::int - 1)::numeric / {months}) AS k
                             FROM (SELECT t, t AT TIME ZONE 'UTC' AS u FROM mts) a) b) c
                     WHERE got <> want"
                ),
            )?;
        }
        assert_no_rows(
            "1 month equals date_trunc('month') in UTC",
            "SELECT t FROM mts WHERE metricagg_bin(t, '1 month') <> date_trunc('month', t, 'UTC')
                OR metricagg_bin(t, '1 year') <> date_trunc('year', t, 'UTC')",
        )?;
        // The origin's day and time never shift month bins.
        assert_no_rows(
            "origin day/time",
            "SELECT t FROM mts WHERE metricagg_bin(t, '3 months', '2000-01-17 13:45+00') <> metricagg_bin(t, '3 months')",
        )
    }

    /// Bins of a group computed inside the aggregate equal a GROUP BY over
    /// the bin with PostgreSQL's own aggregates, whatever the input order.
    /// With `packed`, the bins go through `metricagg_stats_by_bin_packed` and
    /// `metricagg_unpack_stats` instead.
    fn by_bin_oracle_diff(table: &str, width: &str, origin: Option<&str>, packed: bool) -> String {
        let (agg_origin, bin_origin) = match origin {
            Some(o) => (format!(", '{o}'"), format!("'{o}'")),
            None => (String::new(), "'2000-01-03 00:00:00+00'".to_string()),
        };
        let bin = if width.contains("mon") || width.contains("year") {
            format!("metricagg_bin(ts, '{width}')")
        } else {
            format!("date_bin('{width}', ts, {bin_origin})")
        };
        let rows = if packed {
            format!(
                "SELECT grp, b.* FROM (SELECT grp, metricagg_stats_by_bin_packed(ts, v, '{width}'{agg_origin}) AS p
                                      FROM {table} GROUP BY grp) g, metricagg_unpack_stats(g.p) b"
            )
        } else {
            format!(
                "SELECT grp, b.* FROM (SELECT grp, metricagg_stats_by_bin(ts, v, '{width}'{agg_origin}) AS bins
                                      FROM {table} GROUP BY grp) g, unnest(g.bins) b"
            )
        };
        format!(
            "SELECT * FROM ({rows}) a
             FULL JOIN (
               SELECT grp, {bin} AS ts, count(v) AS c0, avg(v) AS a0, min(v) AS mn0, max(v) AS mx0,
                      percentile_cont(0.8) WITHIN GROUP (ORDER BY v) AS p0
               FROM {table} WHERE v IS NOT NULL AND ts IS NOT NULL GROUP BY 1, 2) o USING (grp, ts)
             WHERE {}",
            stats_disagree(
                ["a.count", "a.avg", "a.min", "a.max", "a.p80"],
                ["o.c0", "o.a0", "o.mn0", "o.mx0", "o.p0"],
            ),
        )
    }

    fn make_series_table(name: &str, order: &str) -> TestResult {
        Spi::run(&format!(
            "SELECT setseed(0.2718);
             CREATE TABLE {name}_src AS
             SELECT g % 40 AS grp,
                    timestamptz '2025-11-15 00:00:00+00' + (g / 40) * interval '1 second'
                      + (random() * 3) * interval '1 second' AS ts,
                    CASE WHEN random() < 0.02 THEN 'NaN'::float8 WHEN random() < 0.03 THEN NULL
                         WHEN random() < 0.05 THEN '-0'::float8 ELSE floor(random() * 1000) / 10 END AS v
             FROM generate_series(0, 120000) g;
             INSERT INTO {name}_src VALUES (1, NULL, 5), (2, '1999-12-31 23:59:59.5+00', 1),
                                           (3, '2025-11-16 00:00:00+00', 'Infinity');
             CREATE TABLE {name} AS SELECT * FROM {name}_src ORDER BY {order};
             ANALYZE {name};"
        ))
    }

    #[pg_test]
    fn stats_by_bin_equals_grouping_by_bin() -> TestResult {
        make_series_table("ordered", "ts, grp")?;
        make_series_table("shuffled", "random()")?;
        for table in ["ordered", "shuffled"] {
            for (width, origin) in [
                ("1 minute", None),
                ("1 hour", None),
                ("7 seconds", Some("2001-02-03 04:05:06.789+00")),
                ("1 month", None),
                ("1 day", None),
            ] {
                for packed in [false, true] {
                    assert_no_rows(
                        &format!("metricagg_stats_by_bin({width}) on {table}, packed {packed}"),
                        &by_bin_oracle_diff(table, width, origin, packed),
                    )?;
                }
            }
        }
        // Bins come back in time order, as an array and unpacked.
        for (agg, rows) in [
            ("metricagg_stats_by_bin", "unnest(g.bins)"),
            (
                "metricagg_stats_by_bin_packed",
                "metricagg_unpack_stats(g.bins)",
            ),
        ] {
            assert_eq!(
                count(&format!(
                    "SELECT count(*) FROM (SELECT grp, {agg}(ts, v, '1 minute') bins FROM shuffled GROUP BY grp) g
                     WHERE (SELECT array_agg(b.ts ORDER BY o) FROM {rows} WITH ORDINALITY b(ts, c, a, mn, mx, p, o))
                        <> (SELECT array_agg(b.ts ORDER BY b.ts) FROM {rows} b)"
                ))?,
                0,
                "{agg}"
            );
        }
        assert_eq!(
            text(
                "SELECT metricagg_stats_by_bin(ts, v, '1 minute')::text FROM ordered WHERE false"
            )?,
            None
        );
        assert_eq!(
            text(
                "SELECT metricagg_stats_by_bin_packed(ts, v, '1 minute')::text FROM ordered WHERE false"
            )?,
            None
        );
        Ok(())
    }

    #[pg_test]
    fn stats_by_bin_parallel_equals_serial() -> TestResult {
        make_series_table("pser", "random()")?;
        Spi::run(
            "SET LOCAL max_parallel_workers_per_gather = 0;
             CREATE TABLE by_bin_serial AS
               SELECT grp, b.* FROM (SELECT grp, metricagg_stats_by_bin(ts, v, '1 minute') bins FROM pser GROUP BY grp) g,
                    unnest(g.bins) b;",
        )?;
        force_parallel_plans()?;
        let q = "SELECT grp, metricagg_stats_by_bin(ts, v, '1 minute') bins FROM pser GROUP BY grp";
        let plan = explain("ANALYZE, COSTS OFF, TIMING OFF", q)?;
        assert!(
            plan.contains("Partial") && plan.contains("Gather"),
            "{plan}"
        );
        assert!(!plan.contains("Workers Launched: 0"), "{plan}");
        assert_no_rows(
            "parallel by-bin vs serial",
            &format!(
                "SELECT * FROM by_bin_serial s FULL JOIN (SELECT grp, b.* FROM ({q}) g, unnest(g.bins) b) p USING (grp, ts)
                 WHERE {}",
                stats_disagree(
                    ["p.count", "p.avg", "p.min", "p.max", "p.p80"],
                    ["s.count", "s.avg", "s.min", "s.max", "s.p80"],
                ),
            ),
        )
    }

    #[pg_test]
    fn stats_by_bin_bad_input() -> TestResult {
        let cases: &[(&str, &str)] = &[
            ("SELECT metricagg_stats_by_bin(now(), 1, NULL)", "22004: metricagg_stats_by_bin: width must not be NULL"),
            ("SELECT metricagg_stats_by_bin(now(), 1, '0 minutes')", "22023: metricagg_bin: width must be greater than zero"),
            ("SELECT metricagg_stats_by_bin(now(), 1, '1 month 1 day')", "22023: metricagg_bin: a width in months cannot"),
            ("SELECT metricagg_stats_by_bin('infinity', 1, '1 minute')", "22008: metricagg_bin: cannot bin an infinite timestamp"),
            ("SELECT metricagg_stats_by_bin(now(), 1, '1 minute', 'infinity')", "22008: metricagg_bin: origin must be finite"),
            (
                "SELECT metricagg_stats_by_bin(t, 1, w) FROM (VALUES (now(), interval '1 minute'), (now(), interval '1 hour')) x(t, w)",
                "22023: metricagg_stats_by_bin: width and origin must be the same for every row of a group",
            ),
            ("SELECT * FROM metricagg_unpack_stats('\\x0100')", "22P03: metricagg_unpack_stats: not a metricagg_stats_by_bin_packed value | Pass the bytea"),
            ("SELECT * FROM metricagg_unpack_stats('\\x0200000000000000')", "22P03: metricagg_unpack_stats: not a metricagg_stats_by_bin_packed value"),
            ("SELECT * FROM metricagg_unpack_stats('\\x010000000100000000')", "22P03: metricagg_unpack_stats: not a metricagg_stats_by_bin_packed value"),
        ];
        assert_errors(cases)
    }

    /// metricagg_rollup's rows equal GROUP BY server, metric, bin with
    /// PostgreSQL's own aggregates.
    fn rollup_oracle_diff(table: &str, width: &str, origin: Option<&str>) -> String {
        let (agg_origin, bin_origin) = match origin {
            Some(o) => (format!(", '{o}'"), format!("'{o}'")),
            None => (String::new(), "'2000-01-03 00:00:00+00'".to_string()),
        };
        format!(
            "SELECT * FROM (
               SELECT r.* FROM (SELECT metricagg_rollup(server_id, metric_type, ts, v, '{width}'{agg_origin}) AS a
                                FROM {table}) x, unnest(x.a) r) a
             FULL JOIN (
               SELECT server_id, metric_type, date_bin('{width}', ts, {bin_origin}) AS ts, count(v) AS c0,
                      avg(v) AS a0, min(v) AS mn0, max(v) AS mx0, percentile_cont(0.8) WITHIN GROUP (ORDER BY v) AS p0
               FROM {table}
               WHERE v IS NOT NULL AND ts IS NOT NULL AND server_id IS NOT NULL AND metric_type IS NOT NULL
               GROUP BY 1, 2, 3) o USING (server_id, metric_type, ts)
             WHERE {}",
            stats_disagree(
                ["a.count", "a.avg", "a.min", "a.max", "a.p80"],
                ["o.c0", "o.a0", "o.mn0", "o.mx0", "o.p0"],
            ),
        )
    }

    fn make_fleet_table(name: &str) -> TestResult {
        Spi::run(&format!(
            "SELECT setseed(0.1618);
             CREATE TABLE {name} AS
             SELECT 'srv-' || (g % 23) AS server_id,
                    (ARRAY['cpu', 'memory', 'disk_io', 'network'])[1 + (g / 23) % 4] AS metric_type,
                    timestamptz '2025-11-15 00:00:00+00' + (g / 92) * interval '1 second'
                      + (random() * 2) * interval '1 second' AS ts,
                    CASE WHEN random() < 0.02 THEN 'NaN'::float8 WHEN random() < 0.02 THEN NULL
                         WHEN random() < 0.04 THEN '-0'::float8 ELSE floor(random() * 1000) / 10 END AS v
             FROM generate_series(0, 150000) g ORDER BY random();
             INSERT INTO {name} VALUES (NULL, 'cpu', now(), 1), ('srv-1', NULL, now(), 1),
                                       ('ab', 'c', '2025-11-15 00:00:00+00', 1), ('a', 'bc', '2025-11-15 00:00:00+00', 2),
                                       ('srv-x', 'cpu', NULL, 1), ('srv-é', 'mémoire', '1999-12-31 23:59:59+00', 3);
             ANALYZE {name};"
        ))
    }

    #[pg_test]
    fn rollup_equals_grouping_by_series_and_bin() -> TestResult {
        make_fleet_table("fleet")?;
        for (width, origin) in [
            ("1 minute", None),
            ("1 hour", None),
            ("13 seconds", Some("2020-02-29 12:00:00.5+00")),
        ] {
            assert_no_rows(
                &format!("metricagg_rollup({width})"),
                &rollup_oracle_diff("fleet", width, origin),
            )?;
        }
        assert_eq!(
            count("SELECT count(*) FROM unnest((SELECT metricagg_rollup(server_id, metric_type, ts, v, '1 minute') FROM fleet)) r
                   WHERE (server_id, metric_type) IN (('ab', 'c'), ('a', 'bc'))")?,
            2
        );
        // Ordered by series and bin.
        assert_eq!(
            count("SELECT count(*) FROM (SELECT r, lag(r) OVER (ORDER BY o) AS prev FROM unnest((SELECT metricagg_rollup(server_id, metric_type, ts, v, '1 minute') FROM fleet)) WITH ORDINALITY u(server_id, metric_type, ts, c, a, mn, mx, p, o), LATERAL (SELECT ROW(u.server_id::bytea, u.metric_type::bytea, u.ts) AS r) x) q
                   WHERE prev IS NOT NULL AND prev >= r")?,
            0
        );
        assert_eq!(text("SELECT metricagg_rollup(server_id, metric_type, ts, v, '1 minute')::text FROM fleet WHERE false")?, None);
        Ok(())
    }

    #[pg_test]
    fn rollup_parallel_equals_serial() -> TestResult {
        make_fleet_table("pfleet")?;
        Spi::run(
            "SET LOCAL max_parallel_workers_per_gather = 0;
             CREATE TABLE rollup_serial AS
               SELECT r.* FROM (SELECT metricagg_rollup(server_id, metric_type, ts, v, '1 minute') a FROM pfleet) x, unnest(x.a) r;",
        )?;
        force_parallel_plans()?;
        let q = "SELECT metricagg_rollup(server_id, metric_type, ts, v, '1 minute') a FROM pfleet";
        let plan = explain("ANALYZE, COSTS OFF, TIMING OFF", q)?;
        assert!(
            plan.contains("Partial Aggregate") && plan.contains("Gather"),
            "{plan}"
        );
        assert!(!plan.contains("Workers Launched: 0"), "{plan}");
        assert_no_rows(
            "parallel rollup vs serial",
            &format!(
                "SELECT * FROM rollup_serial s FULL JOIN (SELECT r.* FROM ({q}) x, unnest(x.a) r) p
                   USING (server_id, metric_type, ts)
                 WHERE {}",
                stats_disagree(
                    ["p.count", "p.avg", "p.min", "p.max", "p.p80"],
                    ["s.count", "s.avg", "s.min", "s.max", "s.p80"],
                ),
            ),
        )
    }

    #[pg_test]
    fn rollup_bad_input() -> TestResult {
        let cases: &[(&str, &str)] = &[
            ("SELECT metricagg_rollup('s', 'm', now(), 1, NULL)", "22004: metricagg_rollup: width must not be NULL"),
            ("SELECT metricagg_rollup('s', 'm', now(), 1, '-1 minute')", "22023: metricagg_bin: width must be greater than zero"),
            ("SELECT metricagg_rollup('s', 'm', 'infinity', 1, '1 minute')", "22008: metricagg_bin: cannot bin an infinite timestamp"),
            (
                "SELECT metricagg_rollup('s', 'm', t, 1, w) FROM (VALUES (now(), interval '1 minute'), (now(), interval '2 minutes')) x(t, w)",
                "22023: metricagg_rollup: width and origin must be the same for every row",
            ),
        ];
        assert_errors(cases)
    }

    /// Decodes a `metricagg_pack_bins` result, through the core's decoder
    /// (the one insights-api uses), into (ts µs, count, and the bits of avg,
    /// min, max).
    fn unpack(bytes: &[u8]) -> Vec<(i64, i64, u64, u64, u64)> {
        pack_bins::decode(bytes)
            .expect("metricagg_pack_bins returns a valid value")
            .iter()
            .map(|r| {
                (
                    r.ts,
                    r.count,
                    r.avg.to_bits(),
                    r.min.to_bits(),
                    r.max.to_bits(),
                )
            })
            .collect()
    }

    #[pg_test]
    fn pack_bins_equals_the_rows_in_time_order() -> TestResult {
        Spi::run(
            "SELECT setseed(0.77);
             CREATE TABLE pk AS
             SELECT g % 37 AS grp,
                    CASE WHEN random() < 0.01 THEN NULL
                         ELSE timestamptz '2025-11-15 00:00+00' + floor(random() * 5000) * interval '1 minute'
                              + floor(random() * 1000) * interval '1 microsecond' END AS ts,
                    CASE WHEN random() < 0.01 THEN NULL ELSE floor(random() * 120)::int8 END AS count,
                    CASE WHEN random() < 0.05 THEN NULL ELSE (random() - 0.5) * 1e6 END AS avg,
                    CASE WHEN random() < 0.05 THEN NULL ELSE random() END AS min,
                    CASE WHEN random() < 0.05 THEN NULL ELSE random() * 1e300 END AS max
               FROM generate_series(1, 100000) g;
             INSERT INTO pk VALUES
               (-1, 'infinity', 1, 1, 1, 1), (-1, '-infinity', 2, 2, 2, 2),
               (-1, '1970-01-01 00:00:00.000001+00', 3, 3, 3, 3), (-1, '1960-01-01+00', 4, -4, 4, 4),
               (-2, NULL, 1, 1, 1, 1), (-2, '2025-01-01', NULL, 1, 1, 1);",
        )?;
        let mut groups = 0;
        Spi::connect(|client| -> TestResult {
            let packed = client.select(
                "SELECT grp, metricagg_pack_bins(ts, count, avg, min, max) FROM pk GROUP BY grp ORDER BY grp",
                None,
                &[],
            )?;
            for row in packed {
                let grp = row.get::<i32>(1)?.expect("grp");
                let got = row.get::<Vec<u8>>(2)?.map(|b| unpack(&b));
                let want: Vec<(i64, i64, u64, u64, u64)> = client
                    .select(
                        &format!(
                            "SELECT CASE WHEN ts = 'infinity' THEN 9223372036854775807
                                         WHEN ts = '-infinity' THEN -9223372036854775808
                                         ELSE (extract(epoch FROM ts) * 1000000)::int8 END,
                                    count, coalesce(avg, 'NaN'), coalesce(min, 'NaN'), coalesce(max, 'NaN')
                               FROM pk WHERE grp = {grp} AND ts IS NOT NULL AND count IS NOT NULL
                              ORDER BY ts, count, avg NULLS LAST, min NULLS LAST, max NULLS LAST"
                        ),
                        None,
                        &[],
                    )?
                    .map(|r| -> Result<_, pgrx::spi::Error> {
                        let f = |i| -> Result<u64, pgrx::spi::Error> {
                            Ok(r.get::<f64>(i)?.expect("float").to_bits())
                        };
                        Ok((
                            r.get::<i64>(1)?.expect("ts"),
                            r.get::<i64>(2)?.expect("count"),
                            f(3)?,
                            f(4)?,
                            f(5)?,
                        ))
                    })
                    .collect::<Result<_, _>>()?;
                if want.is_empty() {
                    assert_eq!(got, None, "group {grp}: no rows gives NULL");
                } else {
                    assert_eq!(got.as_deref(), Some(&want[..]), "group {grp}");
                }
                groups += 1;
            }
            Ok(())
        })?;
        assert_eq!(groups, 39);
        Ok(())
    }

    #[pg_test]
    fn nulls_in_nulls_out() -> TestResult {
        assert_eq!(
            text("SELECT metricagg_bin(NULL::timestamptz, '1 minute')::text")?,
            None
        );
        assert_eq!(text("SELECT metricagg_bin(now(), NULL)::text")?, None);
        assert_eq!(
            text("SELECT metricagg_bin(now(), '1 minute', NULL)::text")?,
            None
        );
        assert_eq!(
            text("SELECT metricagg_bin(NULL::timestamp, '1 minute')::text")?,
            None
        );
        assert_eq!(text("SELECT p80(NULL::float8)::text")?, None);
        assert_eq!(
            text("SELECT metricagg_percentile(NULL::float8, 0.5)::text")?,
            None
        );
        Ok(())
    }

    #[pg_test]
    fn bad_input_is_an_error_with_a_hint() -> TestResult {
        let cases: &[(&str, &str)] = &[
            ("SELECT metricagg_bin(now(), '0 seconds')", "22023: metricagg_bin: width must be greater than zero | Use a positive width"),
            ("SELECT metricagg_bin(now(), '-5 minutes')", "22023: metricagg_bin: width must be greater than zero"),
            ("SELECT metricagg_bin(now(), '-1 month')", "22023: metricagg_bin: width must be greater than zero"),
            ("SELECT metricagg_bin(now(), '1 month 1 day')", "22023: metricagg_bin: a width in months cannot also have days or time | Use either whole months"),
            ("SELECT metricagg_bin(now(), '1 year 2 hours')", "22023: metricagg_bin: a width in months cannot"),
            ("SELECT metricagg_bin('infinity'::timestamptz, '1 minute')", "22008: metricagg_bin: cannot bin an infinite timestamp | Filter out infinite timestamps"),
            ("SELECT metricagg_bin('-infinity'::timestamp, '1 minute')", "22008: metricagg_bin: cannot bin an infinite timestamp"),
            ("SELECT metricagg_bin(now(), '1 minute', 'infinity')", "22008: metricagg_bin: origin must be finite | Pass a finite origin"),
            ("SELECT metricagg_bin('4714-11-24 00:00:00+00 BC'::timestamptz, '7 days', '2000-01-05')", "22008: metricagg_bin: bin start out of range"),
            ("SELECT metricagg_percentile(v, 1.5) FROM (VALUES (1.0::float8)) t(v)", "22003: metricagg_percentile: percentile fraction 1.5 is not between 0 and 1 | Pass a fraction between 0 and 1"),
            ("SELECT metricagg_percentile(v, -0.1) FROM (VALUES (1.0::float8)) t(v)", "22003: metricagg_percentile: percentile fraction -0.1 is not between 0 and 1"),
            ("SELECT metricagg_percentile(v, 'NaN') FROM (VALUES (1.0::float8)) t(v)", "22003: metricagg_percentile: percentile fraction NaN is not between 0 and 1"),
            ("SELECT metricagg_percentile(v, NULL) FROM (VALUES (1.0::float8)) t(v)", "22004: metricagg_percentile: fraction must not be NULL | Pass a fraction"),
            ("SELECT metricagg_percentile(v, NULL) FROM (VALUES (NULL::float8)) t(v)", "22004: metricagg_percentile: fraction must not be NULL"),
            ("SELECT metricagg_percentile(v, f) FROM (VALUES (1.0::float8, 0.5::float8), (2.0, 0.9)) t(v, f)", "22023: metricagg_percentile: the fraction must be the same for every row of a group | Pass a constant fraction"),
        ];
        assert_errors(cases)
    }

    #[pg_test]
    fn every_function_aggregate_and_type_is_commented() -> TestResult {
        assert_no_rows(
            "objects without COMMENT",
            "SELECT p.oid::regprocedure::text FROM pg_proc p
               JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_metricagg'
             WHERE obj_description(p.oid, 'pg_proc') IS NULL AND p.pronamespace <> 'tests'::regnamespace",
        )?;
        assert!(count(
            "SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_metricagg'
             WHERE p.prokind = 'a'"
        )? == 10);
        assert_eq!(
            count(
                "SELECT count(*) FROM pg_proc WHERE proname = 'metricagg_bin'
                   AND provolatile = 'i' AND proisstrict AND proparallel = 's'"
            )?,
            2
        );
        // What \dx shows: the control file's description.
        assert_eq!(
            text("SELECT obj_description(oid, 'pg_extension') FROM pg_extension WHERE extname = 'pg_metricagg'")?
                .as_deref(),
            Some("UTC time binning and exact, parallel-safe percentile aggregates for server metrics")
        );
        Ok(())
    }

    /// Feeds `bytes` to the deserial function of `kind` (values, binned,
    /// rollup) as an aggregate would, uses the state (the percentile of the
    /// values, the packed bins of binned states) and serializes it again.
    /// Calls go through `DirectFunctionCall`, so an error raised inside is a
    /// PostgreSQL error here too.
    #[pg_extern]
    fn reserialize(kind: &str, bytes: &[u8]) -> Vec<u8> {
        use crate::{agg, binned, pack, rollup};
        use pgrx::pg_sys::{Datum, DirectFunctionCall1Coll, DirectFunctionCall2Coll, InvalidOid};
        type F = unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> Datum;
        let (deserialize, serialize, then): (F, F, Option<F>) = match kind {
            "values" => (
                agg::metricagg_values_deserialize,
                agg::metricagg_values_serialize,
                values_state::decode(bytes)
                    .is_ok_and(|v| !v.keys.is_empty())
                    .then_some(agg::metricagg_percentile_final as F),
            ),
            "binned" => (
                binned::metricagg_by_bin_deserialize,
                binned::metricagg_by_bin_serialize,
                Some(pack::metricagg_by_bin_packed_final as F),
            ),
            "rollup" => (
                rollup::metricagg_rollup_deserialize,
                rollup::metricagg_rollup_serialize,
                None,
            ),
            other => panic!("no state kind {other}"),
        };
        let input = bytes.into_datum().expect("bytea");
        // SAFETY: each function gets the arguments its SQL declaration has;
        // the internal argument of a deserial function is unused.
        unsafe {
            let state =
                DirectFunctionCall2Coll(Some(deserialize), InvalidOid, input, Datum::from(0usize));
            let out = DirectFunctionCall1Coll(Some(serialize), InvalidOid, state);
            let out = Vec::<u8>::from_datum(out, false).expect("bytea");
            // After serializing: the final functions reorder a bin's values.
            if let Some(then) = then {
                let result = DirectFunctionCall1Coll(Some(then), InvalidOid, state);
                if kind == "binned" {
                    let packed = Vec::<u8>::from_datum(result, false).expect("bytea");
                    stats_packed::decode(&packed).expect("packed bins of a decoded state decode");
                }
            }
            out
        }
    }

    /// Random bytes, and every prefix, one-bit change and one-byte extension
    /// of valid values, into every function that takes a packed or
    /// serialized value: each answers with an ERROR (the right SQLSTATE, a
    /// hint) or a valid value, never a crash. Whatever a deserial function
    /// accepts serializes back to the same bytes; what metricagg_unpack_stats
    /// accepts has counts >= 1 and finite timestamps in order.
    #[pg_test]
    fn crafted_packed_and_serialized_values_are_refused_cleanly() -> TestResult {
        let mut rng = testing::SplitMix64::new(0x5eed_f022);
        let mut inputs: Vec<(&str, Vec<u8>, &str)> = Vec::new();
        let mut add = |kind: &'static str, valid: Vec<u8>, rng: &mut testing::SplitMix64| {
            let m = testing::mutants(rng, &valid, 24);
            inputs.extend(m.prefixes.into_iter().map(|b| (kind, b, "error")));
            inputs.extend(m.flipped.into_iter().map(|b| (kind, b, "any")));
            inputs.push((kind, m.longer, "error"));
            inputs.push((kind, valid, "ok"));
        };
        for i in 0..6 {
            let keys = testing::random_keys(&mut rng, i);
            add(
                "values",
                values_state::encode_to_vec(0.8, 1.5, &keys),
                &mut rng,
            );
            let grid = testing::random_grid(&mut rng);
            let bins = testing::random_bins(&mut rng, &grid, i % 3 + 1);
            add(
                "binned",
                binned_state::encode_to_vec(&grid, &bins),
                &mut rng,
            );
            let series = testing::random_series(&mut rng, &grid, i % 3);
            add(
                "rollup",
                rollup_state::encode_to_vec(&grid, &series),
                &mut rng,
            );
            let stats = testing::random_stats_bins(&mut rng, i % 4);
            add(
                "unpack",
                stats_packed::encode_to_vec(&stats).expect("valid bins"),
                &mut rng,
            );
        }
        for kind in ["values", "binned", "rollup", "unpack"] {
            for _ in 0..150 {
                let n = (rng.next_u64() % 120) as usize;
                inputs.push((kind, testing::random_bytes(&mut rng, n), "any"));
            }
        }
        Spi::run(
            "CREATE TEMP TABLE fuzz_in (id int PRIMARY KEY, kind text, input bytea, expect text);
             CREATE TEMP TABLE fuzz_out (id int, output bytea, st text, msg text, hint text);
             CREATE TEMP TABLE fuzz_rows (id int, o bigint, ts timestamptz, count bigint);",
        )?;
        for (id, (kind, bytes, expect)) in inputs.iter().enumerate() {
            Spi::run_with_args(
                "INSERT INTO fuzz_in VALUES ($1, $2, $3, $4)",
                &[
                    (id as i32).into(),
                    (*kind).into(),
                    bytes.as_slice().into(),
                    (*expect).into(),
                ],
            )?;
        }
        Spi::run(
            "DO $$
             DECLARE r record; res bytea; st text; msg text; hint text;
             BEGIN
               FOR r IN SELECT * FROM fuzz_in ORDER BY id LOOP
                 BEGIN
                   IF r.kind = 'unpack' THEN
                     INSERT INTO fuzz_rows SELECT r.id, u.o, u.ts, u.count
                       FROM metricagg_unpack_stats(r.input) WITH ORDINALITY u(ts, count, a, mn, mx, p, o);
                     res := r.input;
                   ELSE
                     res := tests.reserialize(r.kind, r.input);
                   END IF;
                   INSERT INTO fuzz_out VALUES (r.id, res, NULL, NULL, NULL);
                 EXCEPTION WHEN OTHERS THEN
                   GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
                   INSERT INTO fuzz_out VALUES (r.id, NULL, st, msg, hint);
                 END;
               END LOOP;
             END $$",
        )?;
        assert_eq!(count("SELECT count(*) FROM fuzz_out")?, inputs.len() as i64);
        assert_no_rows(
            "errors that are not clean refusals",
            "SELECT i.kind, o.st, o.msg, o.hint FROM fuzz_in i JOIN fuzz_out o USING (id)
             WHERE o.st IS NOT NULL
               AND (o.st NOT IN ('XX001', '22P03') OR coalesce(o.hint, '') = ''
                    OR o.msg NOT IN ('pg_metricagg: invalid serialized aggregate state',
                                     'metricagg_stats_by_bin: invalid serialized aggregate state',
                                     'metricagg_rollup: invalid serialized aggregate state',
                                     'metricagg_unpack_stats: not a metricagg_stats_by_bin_packed value'))",
        )?;
        assert_no_rows(
            "valid values refused, or prefixes and extensions accepted",
            "SELECT i.kind, i.expect, o.msg FROM fuzz_in i JOIN fuzz_out o USING (id)
             WHERE (i.expect = 'ok' AND o.st IS NOT NULL) OR (i.expect = 'error' AND o.st IS NULL)",
        )?;
        assert_no_rows(
            "accepted states that do not serialize back to their bytes",
            "SELECT i.kind, i.input, o.output FROM fuzz_in i JOIN fuzz_out o USING (id)
             WHERE o.st IS NULL AND o.output IS DISTINCT FROM i.input",
        )?;
        assert_no_rows(
            "unpacked rows that a valid value cannot hold",
            "SELECT * FROM (SELECT id, ts, count, lag(ts) OVER (PARTITION BY id ORDER BY o) AS prev FROM fuzz_rows) r
             WHERE count < 1 OR NOT isfinite(ts) OR prev >= ts",
        )?;
        // The test can fail: both outcomes occur for the bit flips.
        for (kind, min_refused) in [
            ("values", 20),
            ("binned", 20),
            ("rollup", 20),
            ("unpack", 20),
        ] {
            let refused = count(&format!(
                "SELECT count(*) FROM fuzz_in JOIN fuzz_out USING (id) WHERE kind = '{kind}' AND expect = 'any' AND st IS NOT NULL"
            ))?;
            let accepted = count(&format!(
                "SELECT count(*) FROM fuzz_in JOIN fuzz_out USING (id) WHERE kind = '{kind}' AND expect = 'any' AND st IS NULL"
            ))?;
            assert!(
                refused >= min_refused && accepted >= 1,
                "{kind}: {refused} refused, {accepted} accepted"
            );
        }
        Ok(())
    }

    /// Real packed values, cut and altered: refused with the version, the
    /// byte count or the faulty item in the DETAIL.
    #[pg_test]
    fn unpack_stats_says_what_is_wrong() -> TestResult {
        let mut bins = stats_packed::encode_to_vec(&[]).expect("empty");
        bins[0] = 2;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let v2 = format!("SELECT * FROM metricagg_unpack_stats('\\x{}')", hex(&bins));
        let got = error_of(&v2)?;
        assert!(
            got.contains("The value is version 2 of the format; pg_metricagg ")
                && got.contains(" reads version 1.")
                && got.contains("install the same pg_metricagg on every server"),
            "{got}"
        );
        // A timestamp that would wrap when turned back into a timestamptz.
        let mut wrap = stats_packed::encode_to_vec(&[(
            0,
            metricagg_core::stats::Stats {
                count: 1,
                avg: 1.0,
                min: 1.0,
                max: 1.0,
                p80: 1.0,
            },
        )])
        .expect("one bin");
        wrap[8..16].copy_from_slice(&i64::MIN.to_le_bytes());
        let got = error_of(&format!(
            "SELECT * FROM metricagg_unpack_stats('\\x{}')",
            hex(&wrap)
        ))?;
        assert!(got.starts_with("22P03: metricagg_unpack_stats: not a metricagg_stats_by_bin_packed value | Pass the bytea that metricagg_stats_by_bin_packed returned, unchanged. | Item 0 has the timestamp"), "{got}");
        // A negative count, in a value that is otherwise real.
        let real = Spi::get_one::<Vec<u8>>(
            "SELECT metricagg_stats_by_bin_packed(t, 1, '1 minute')
               FROM generate_series(timestamptz '2025-01-01', '2025-01-01 00:05', '1 second') t",
        )?
        .expect("a packed value");
        assert_eq!(stats_packed::decode(&real).expect("valid").len(), 5 + 1);
        let mut neg = real.clone();
        neg[16..24].copy_from_slice(&(-3i64).to_le_bytes());
        let got = error_of(&format!(
            "SELECT * FROM metricagg_unpack_stats('\\x{}')",
            hex(&neg)
        ))?;
        assert!(
            got.ends_with("| Item 0 has the impossible count -3."),
            "{got}"
        );
        let got = error_of(&format!(
            "SELECT * FROM metricagg_unpack_stats('\\x{}')",
            hex(&real[..real.len() - 1])
        ))?;
        assert!(
            got.ends_with(&format!(
                "| The value has {} bytes; its header says {}.",
                real.len() - 1,
                real.len()
            )),
            "{got}"
        );
        Ok(())
    }

    #[pg_test]
    fn packing_refuses_what_the_formats_cannot_hold() -> TestResult {
        let cases: &[(&str, &str)] = &[
            ("SELECT metricagg_pack_bins(now(), -1, 1, 1, 1)", "22003: metricagg_pack_bins: count -1 is negative | Bins count their samples"),
            ("SELECT metricagg_pack_bins('294270-01-01 00:00+00', 1, 1, 1, 1)", "22003: metricagg_pack_bins: a timestamp after 294246 AD does not fit the format's microseconds since 1970 | Filter out timestamps after 294246 AD"),
            ("SELECT metricagg_stats_by_bin_packed('294270-01-01 00:00+00', 1, '1 minute')", "22003: metricagg_stats_by_bin_packed: a timestamp after 294246 AD"),
        ];
        assert_errors(cases)?;
        // Both infinities still pack (as the extremes of the format).
        assert_eq!(
            count("SELECT length(metricagg_pack_bins(t, 1, 1, 1, 1)) FROM (VALUES ('infinity'::timestamptz), ('-infinity')) v(t)")?,
            8 + 2 * 40
        );
        Ok(())
    }

    /// The packed functions are plumbing between the pipeline's roles:
    /// EXECUTE is revoked from PUBLIC and granted per role; everything else
    /// stays callable by anyone.
    #[pg_test]
    fn packed_functions_need_a_grant() -> TestResult {
        Spi::run(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metricagg_test_nobody') THEN
                 CREATE ROLE metricagg_test_nobody;
               END IF;
             END $$;
             SET LOCAL TimeZone = 'UTC';
             SET LOCAL ROLE metricagg_test_nobody;",
        )?;
        let denied: &[(&str, &str)] = &[
            (
                "SELECT * FROM metricagg_unpack_stats('\\x0100000000000000')",
                "42501: permission denied for function metricagg_unpack_stats",
            ),
            (
                "SELECT metricagg_pack_bins(now(), 1, 1, 1, 1)",
                "42501: permission denied for aggregate metricagg_pack_bins",
            ),
            (
                "SELECT metricagg_stats_by_bin_packed(now(), 1, '1 minute')",
                "42501: permission denied for aggregate metricagg_stats_by_bin_packed",
            ),
            (
                "SELECT metricagg_stats_by_bin_packed(now(), 1, '1 minute', now())",
                "42501: permission denied for aggregate metricagg_stats_by_bin_packed",
            ),
        ];
        assert_errors(denied)?;
        assert_eq!(
            text("SELECT (p80(v), metricagg_percentile(v, 0.5), (metricagg_stats(v)).count, metricagg_bin('2025-01-01 00:00:30+00'::timestamptz, '1 minute'),
                          cardinality(metricagg_stats_by_bin(now(), v, '1 minute')), cardinality(metricagg_rollup('s', 'm', now(), v, '1 minute')))::text
                   FROM (VALUES (1.0::float8)) t(v)")?
                .map(|t| t.replace("+00", "")),
            Some("(1,1,1,\"2025-01-01 00:00:00\",1,1)".to_string())
        );
        Spi::run(
            "RESET ROLE;
             GRANT EXECUTE ON FUNCTION metricagg_unpack_stats(bytea) TO metricagg_test_nobody;
             SET LOCAL ROLE metricagg_test_nobody;",
        )?;
        assert_eq!(
            count("SELECT count(*) FROM metricagg_unpack_stats('\\x0100000000000000')")?,
            0
        );
        Spi::run(
            "RESET ROLE;
             REVOKE EXECUTE ON FUNCTION metricagg_unpack_stats(bytea) FROM metricagg_test_nobody;",
        )?;
        Ok(())
    }
}
