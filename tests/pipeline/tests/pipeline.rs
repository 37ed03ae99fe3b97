//! The dual-database pipeline against the real embedded cluster: two
//! databases per test, postgres_fdw between them, pg_cron, the real roles.
//! Every test ends by comparing the bins with a from-scratch recompute.

use std::time::Duration;

use futures_util::SinkExt;
use metricagg_pipeline_tests::*;

/// The job's aggregation runs on the raw server: EXPLAIN VERBOSE of the very
/// query `metricagg_run_once()` inserts from shows the GROUP BY and our
/// functions inside the Remote SQL, and no aggregation on this side.
#[tokio::test]
async fn aggregation_is_pushed_down_through_postgres_fdw() {
    let p = Pipeline::new().await;
    for width in ["1 minute", "1 hour", "1 month"] {
        let query: String = p
            .job
            .query_one(
                "SELECT metricagg.bins_query($1::text::interval, 'metricagg.raw_samples',
                        $$ts >= '2025-11-15' AND ts < '2025-11-16' AND server_id = ANY ('{srv-1,srv-2}')$$)",
                &[&width],
            )
            .await
            .unwrap()
            .get(0);
        let plan = texts(&p.job, &format!("EXPLAIN (VERBOSE, COSTS OFF) {query}"))
            .await
            .join("\n");
        let remote = plan
            .lines()
            .find(|l| l.contains("Remote SQL"))
            .unwrap_or_else(|| panic!("{plan}"));
        assert!(
            remote.contains("GROUP BY"),
            "{width}: aggregation not pushed down:\n{plan}"
        );
        assert!(
            remote.contains("metricagg_stats_by_bin_packed(ts, value,")
                && remote.contains("metricagg_bin(ts,")
                && remote.contains("server_id = ANY"),
            "{width}: {plan}"
        );
        assert!(
            !plan.contains("HashAggregate") && !plan.contains("GroupAggregate"),
            "{width}: local aggregation:\n{plan}"
        );
    }
    // Both widths in one pass: one Remote SQL with one FILTERed aggregate
    // per width, each width's own ranges.
    let query = text(
        &p.job,
        "SELECT metricagg.bins_query('{1 minute, 1 hour}'::interval[], 'metricagg.raw_samples',
                ARRAY[$$ts >= '2025-11-15 10:00' AND ts < '2025-11-15 10:05'$$,
                      $$ts >= '2025-11-15' AND ts < '2025-11-15 10:00' AND server_id = ANY ('{srv-1}')$$])",
    )
    .await;
    let plan = texts(&p.job, &format!("EXPLAIN (VERBOSE, COSTS OFF) {query}"))
        .await
        .join("\n");
    let remote: Vec<&str> = plan.lines().filter(|l| l.contains("Remote SQL")).collect();
    assert_eq!(remote.len(), 1, "one pass over raw:\n{plan}");
    assert_eq!(
        remote[0]
            .matches("metricagg_stats_by_bin_packed(ts, value,")
            .count(),
        2,
        "{plan}"
    );
    assert_eq!(remote[0].matches("FILTER (WHERE").count(), 2, "{plan}");
    assert!(remote[0].contains("GROUP BY"), "{plan}");
    assert!(
        !plan.contains("HashAggregate") && !plan.contains("GroupAggregate"),
        "local aggregation:\n{plan}"
    );
}

/// Widths that nest (1 minute, 1 hour) share one pass over raw
/// (local_source_without_fdw counts it); those that cannot (1 minute and 90
/// seconds: neither divides the other; calendar months never share) get
/// one pass each. Either way the bins equal the oracle, and the summary
/// counts the raw rows each pass read. (The oracle's date_bin has no
/// months, so none here.)
#[tokio::test]
async fn widths_share_one_pass_over_raw_when_they_nest() {
    drop_earlier_test_databases().await;
    let db = unique("t_passes");
    created(&db);
    let admin = connect(&create_db("local", &db, None)).await;
    let ingest = connect(&with_db(&env("INGEST_DATABASE_URL"), &db)).await;
    let job = connect(&with_db(&env("JOB_DATABASE_URL"), &db)).await;
    let spans: Vec<Option<String>> = admin
        .query(
            "SELECT metricagg.pass_span(w)::text FROM (VALUES
                 ('{1 minute, 1 hour}'::interval[]), ('{10 seconds, 1 minute, 1 day}'),
                 ('{1 minute, 90 seconds}'), ('{1 minute, 1 month}'), ('{1 month}'), ('{5 minutes}')) v(w)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let spans: Vec<Option<&str>> = spans.iter().map(|s| s.as_deref()).collect();
    assert_eq!(
        spans,
        [
            Some("01:00:00"),
            Some("24:00:00"),
            None,
            None,
            Some("1 year"),
            Some("05:00:00")
        ]
    );
    admin
        .execute(
            "UPDATE metricagg.job_config SET widths = '{1 minute, 90 seconds}'",
            &[],
        )
        .await
        .unwrap();
    insert_samples(&ingest, &[1, 2], T0, 600, 7).await;
    wait_for_horizon(&admin).await;
    let summary = text(&job, "SELECT metricagg_run_once()").await;
    // 2 servers x 600 s x 4 metrics = 4,800 rows, read by each width's pass.
    assert!(summary.contains("9600 raw rows read"), "{summary}");
    for width in ["1 minute=", "90 seconds="] {
        assert!(summary.contains(width), "{width}: {summary}");
    }
    assert_bins_equal_oracle(&admin, "widths that nest and widths that do not").await;
}

/// (a) Random interleavings of inserts (current and late, several servers)
/// and runs: the bins always converge to the oracle.
#[tokio::test]
async fn random_interleavings_of_inserts_and_runs_match_the_oracle() {
    let p = Pipeline::new().await;
    let mut rng = Rng::new(20251115);
    let mut now = T0 + 3600;
    for step in 0..24 {
        match rng.below(3) {
            0 => {
                p.run_once().await;
            }
            1 => {
                let servers: Vec<u32> = (1..=5).filter(|_| rng.below(2) == 0).collect();
                let servers = if servers.is_empty() { vec![1] } else { servers };
                insert_samples(&p.ingest, &servers, now, 90, step).await;
                now += 90;
            }
            _ => {
                // Late: somewhere in the past two hours, possibly overlapping
                // bins that were already aggregated.
                let back = rng.below(7200) as i64;
                insert_samples(&p.ingest, &[1 + rng.below(5) as u32], now - back, 30, step).await;
            }
        }
    }
    p.run_once().await;
    assert_equals_oracle(&p, "after random interleaving").await;
    // A run with nothing new changes nothing and says so.
    let before = p.bin_count().await;
    let summary = p.run_once().await;
    assert!(summary.contains("0 change-log entries"), "{summary}");
    assert_eq!(p.bin_count().await, before);
}

async fn first_hour_cpu_count(p: &Pipeline) -> i64 {
    let q = "SELECT count FROM metricagg.bins WHERE server_id = 'srv-1' AND metric_type = 'cpu'
             AND width = '1 hour' AND ts = to_timestamp($1::float8)";
    p.analytics
        .query_one(q, &[&(T0 as f64)])
        .await
        .unwrap()
        .get(0)
}

/// (b) Rows an hour late re-aggregate their (already written) bins.
#[tokio::test]
async fn rows_an_hour_late_reaggregate_their_bins() {
    let p = Pipeline::new().await;
    insert_samples(&p.ingest, &[1, 2], T0, 7200, 1).await;
    p.run_once().await;
    assert_eq!(first_hour_cpu_count(&p).await, 3600);
    // An hour later a slow agent delivers 120 more samples for the first hour.
    insert_samples(&p.ingest, &[1], T0 + 100, 120, 99).await;
    let summary = p.run_once().await;
    assert!(summary.contains("1 change-log entries"), "{summary}");
    assert_eq!(first_hour_cpu_count(&p).await, 3720);
    assert_equals_oracle(&p, "after late rows").await;
}

/// (c) A transaction that began (and wrote) before a run and commits after
/// it is not lost: the run's horizon stops below its xid.
#[tokio::test]
async fn a_transaction_committing_after_a_run_is_not_lost() {
    let p = Pipeline::new().await;
    insert_samples(&p.ingest, &[1], T0, 600, 1).await;
    wait_for_horizon(&p.raw).await;
    let mut slow = p.ingest_client().await;
    let tx = slow.transaction().await.unwrap();
    insert_samples(&tx, &[2], T0, 600, 2).await;
    // Meanwhile a later transaction commits first, and a run happens. The
    // run's horizon stops at the open transaction: srv-3, committed but
    // above it, waits for the next run too (recomputed then, never lost).
    insert_samples(&p.ingest, &[3], T0 + 600, 600, 3).await;
    let summary = p.run_once_now().await;
    assert!(summary.contains("1 change-log entries"), "{summary}");
    let servers: Vec<String> = p
        .analytics
        .query(
            "SELECT DISTINCT server_id FROM metricagg.bins ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(servers, ["srv-1"]);
    tx.commit().await.unwrap();
    p.run_once().await;
    assert_equals_oracle(&p, "after the slow transaction committed").await;
}

/// (d) A run killed halfway (pg_terminate_backend) leaves the old state; the
/// next run produces exactly the oracle, nothing doubled.
#[tokio::test]
async fn a_run_terminated_halfway_loses_and_doubles_nothing() {
    let p = Pipeline::new().await;
    insert_samples(&p.ingest, &(1..=20).collect::<Vec<_>>(), T0, 3000, 1).await;
    wait_for_horizon(&p.raw).await;
    let mut killed = 0;
    for delay_ms in [50u64, 150, 300, 600] {
        let before = p.done_below().await;
        let (pid, run) = start_run(p.job_client().await).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        p.analytics
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        if run.await.unwrap().is_err() {
            killed += 1;
            assert_eq!(
                p.done_below().await,
                before,
                "a killed run moved the watermark"
            );
        }
        // New data keeps arriving between attempts.
        insert_samples(
            &p.ingest,
            &[7],
            T0 + 3000 + delay_ms as i64,
            10,
            delay_ms as i64,
        )
        .await;
    }
    assert!(
        killed > 0,
        "no run was interrupted: the test did not exercise a crash"
    );
    p.run_once().await;
    assert_equals_oracle(&p, "after interrupted runs").await;
}

/// (e) Two concurrent runs: one works, the other returns at once and says so.
#[tokio::test]
async fn concurrent_runs_are_serialized() {
    let p = Pipeline::new().await;
    insert_samples(&p.ingest, &[1], T0, 600, 1).await;
    wait_for_horizon(&p.raw).await;
    let mut first = p.job_client().await;
    let tx = first.transaction().await.unwrap();
    let s1: String = tx
        .query_one("SELECT metricagg_run_once()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(s1.contains("1 change-log entries"), "{s1}");
    let started = std::time::Instant::now();
    let s2 = p.run_once_now().await;
    assert!(s2.contains("another run is active"), "{s2}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the second run waited"
    );
    tx.commit().await.unwrap();
    assert_equals_oracle(&p, "after concurrent runs").await;
}

/// (f) Raw database unreachable: a clear error, the watermark unchanged; once
/// it is back, the next run catches up.
#[tokio::test]
async fn raw_database_unreachable_then_back() {
    let p = Pipeline::new().await;
    insert_samples(&p.ingest, &[1, 2], T0, 600, 1).await;
    wait_for_horizon(&p.raw).await;
    let before = p.done_below().await;
    p.analytics
        .batch_execute("ALTER SERVER metricagg_raw OPTIONS (SET port '1')")
        .await
        .unwrap();
    let err = p
        .job
        .query_one("SELECT metricagg_run_once()", &[])
        .await
        .unwrap_err();
    let msg = err
        .as_db_error()
        .map(|e| format!("{} {:?}", e.message(), e.detail()))
        .unwrap_or_default();
    assert!(
        msg.contains("could not connect to server \"metricagg_raw\""),
        "unclear error: {msg}"
    );
    assert!(
        !msg.contains("password"),
        "error leaks connection secrets: {msg}"
    );
    assert_eq!(p.done_below().await, before);
    assert_eq!(p.bin_count().await, 0);
    let port = env("METRICAGG_PORT");
    p.analytics
        .batch_execute(&format!(
            "ALTER SERVER metricagg_raw OPTIONS (SET port '{port}')"
        ))
        .await
        .unwrap();
    let job = p.job_client().await; // the failed connection is cached per session
    let summary = text(&job, "SELECT metricagg_run_once()").await;
    assert!(
        summary.contains("1 change-log entries") || summary.contains("2 change-log entries"),
        "{summary}"
    );
    assert_equals_oracle(&p, "after the raw database came back").await;
}

/// (g) Loop mode really runs: pg_cron executes the job as metricagg_job and
/// keeps the bins current.
#[tokio::test]
async fn loop_mode_runs_through_pg_cron() {
    let p = Pipeline::new().await;
    insert_samples(&p.ingest, &[1, 2], T0, 300, 1).await;
    // pg_cron lives in metrics_analytics; schedule into this test's database.
    let cron = connect(&env("ANALYTICS_DATABASE_URL")).await;
    let job_name = format!("test-loop-{}", p.analytics_db);
    let jobid: i64 = cron
        .query_one(
            "SELECT metricagg.metricagg_schedule_run($1, '1 minute', $2)",
            &[&job_name, &p.analytics_db],
        )
        .await
        .unwrap()
        .get(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    let mut ok = false;
    while std::time::Instant::now() < deadline {
        let n: i64 = cron
            .query_one(
                "SELECT count(*) FROM cron.job_run_details WHERE jobid = $1 AND status = 'succeeded'",
                &[&jobid],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 && p.bin_count().await > 0 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let details: Vec<String> = cron
        .query("SELECT status || ': ' || coalesce(return_message, '') FROM cron.job_run_details WHERE jobid = $1", &[&jobid])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    cron.execute("SELECT cron.unschedule($1::bigint)", &[&jobid])
        .await
        .unwrap();
    assert!(ok, "pg_cron did not run the job successfully: {details:?}");
    assert!(details.iter().any(|d| d.contains("metricagg_run_once")) || !details.is_empty());
    assert_equals_oracle(&p, "after loop mode").await;
}

/// (h) A COPY batch containing NaN is rejected with the row named; batches
/// committed before it are intact. NULL and infinity are rejected too.
#[tokio::test]
async fn copy_batch_with_nan_is_rejected_and_earlier_batches_survive() {
    let p = Pipeline::new().await;
    let good = "srv-1\tcpu\t2025-11-15 00:00:00+00\t12.5\nsrv-1\tcpu\t2025-11-15 00:00:01+00\t13\n";
    let copy = |data: &'static str| {
        let client = &p.ingest;
        async move {
            let sink = client
                .copy_in("COPY metricagg.samples (server_id, metric_type, ts, value) FROM STDIN")
                .await?;
            futures_util::pin_mut!(sink);
            sink.send(bytes::Bytes::from_static(data.as_bytes()))
                .await?;
            sink.finish().await
        }
    };
    assert_eq!(copy(good).await.unwrap(), 2);
    for (bad, named) in [
        (
            "srv-2\tcpu\t2025-11-15 00:00:02+00\t1\nsrv-2\tcpu\t2025-11-15 00:00:03+00\tNaN\n",
            "NaN",
        ),
        (
            "srv-3\tmemory\t2025-11-15 00:00:04+00\tInfinity\n",
            "Infinity",
        ),
        (
            "srv-4\tdisk_io\t2025-11-15 00:00:05+00\t\\N\n",
            "null value in column \"value\"",
        ),
    ] {
        let err = copy(bad).await.unwrap_err();
        let db = err.as_db_error().expect("a database error");
        let text = format!("{} {}", db.message(), db.detail().unwrap_or(""));
        assert!(text.contains(named), "{text}");
        if named != "null value in column \"value\"" {
            assert!(
                text.contains("Failing row contains") && text.contains("= (srv-"),
                "row not named: {text}"
            );
            assert!(db.message().contains("samples_value_finite"), "{text}");
        }
    }
    assert_eq!(p.raw_count().await, 2);
    p.run_once().await;
    assert_equals_oracle(&p, "after rejected batches").await;
}

/// (i) Retention never drops a raw partition whose changes are unprocessed;
/// once processed (and the watermark written back), it goes.
#[tokio::test]
async fn retention_never_drops_an_unprocessed_partition() {
    let p = Pipeline::new().await;
    let old = p
        .raw
        .query_one(
            "SELECT extract(epoch FROM date_trunc('day', now() - interval '30 days'))::bigint",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    p.ingest
        .execute("SELECT metricagg.ensure_partitions(to_timestamp($1::float8), to_timestamp($1::float8) + interval '1 day')", &[&(old as f64)])
        .await
        .unwrap();
    insert_samples(&p.ingest, &[1], old, 600, 1).await;
    let drop = "SELECT coalesce(array_agg(d), '{}') FROM metricagg.drop_old_partitions('7 days') d";
    let dropped: Vec<String> = p.raw.query_one(drop, &[]).await.unwrap().get(0);
    assert!(
        dropped.is_empty(),
        "dropped unprocessed partitions {dropped:?}"
    );
    p.run_once().await; // aggregates; watermark committed in analytics
    let dropped: Vec<String> = p.raw.query_one(drop, &[]).await.unwrap().get(0);
    assert!(
        dropped.is_empty(),
        "progress is written back only by the next run, not before: {dropped:?}"
    );
    p.run_once().await; // writes the committed watermark back to raw
    let dropped: Vec<String> = p.raw.query_one(drop, &[]).await.unwrap().get(0);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(p.raw_count().await, 0);
    // The bins outlive the raw partition.
    let bins: i64 = p
        .analytics
        .query_one(
            "SELECT count(*) FROM metricagg.bins WHERE ts < now() - interval '7 days'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        bins,
        4 * 10 + 4,
        "1-minute and 1-hour bins of the dropped day"
    );
    // Consumed change-log entries were pruned.
    let log: i64 = p
        .raw
        .query_one("SELECT count(*) FROM metricagg.change_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(log, 0);
}

/// The job also works against a local samples table (no FDW).
#[tokio::test]
async fn local_source_without_fdw() {
    drop_earlier_test_databases().await;
    let db = unique("t_local");
    created(&db);
    let admin = connect(&create_db("local", &db, None)).await;
    assert_bins_engine(&admin).await;
    let ingest = connect(&with_db(&env("INGEST_DATABASE_URL"), &db)).await;
    let job = connect(&with_db(&env("JOB_DATABASE_URL"), &db)).await;
    insert_samples(&ingest, &[1, 2, 3], T0, 900, 1).await;
    wait_for_horizon(&admin).await;
    let summary = text(&job, "SELECT metricagg_run_once()").await;
    // 3 servers x 900 s x 4 metrics, read once for both widths (one pass).
    assert!(
        summary.contains("3 change-log entries") && summary.contains("10800 raw rows read"),
        "{summary}"
    );
    assert_bins_equal_oracle(&admin, "local source").await;
}

/// Least privilege: each role can do its job and nothing else.
#[tokio::test]
async fn roles_have_least_privilege() {
    let p = Pipeline::new().await;
    insert_samples(&p.ingest, &[1], T0, 60, 1).await;
    p.run_once().await;
    let denied = |r: Result<u64, tokio_postgres::Error>| {
        r.err()
            .and_then(|e| e.as_db_error().map(|d| d.message().to_string()))
            .unwrap_or_default()
    };
    assert!(denied(
        p.ingest
            .execute("SELECT 1 FROM metricagg.samples", &[])
            .await
            .map(|_| 0)
    )
    .contains("permission denied"));
    assert!(
        denied(p.ingest.execute("DELETE FROM metricagg.samples", &[]).await)
            .contains("permission denied")
    );
    assert!(denied(
        p.ingest
            .execute("DELETE FROM metricagg.change_log", &[])
            .await
    )
    .contains("permission denied"));
    let api = connect(&with_db(&env("API_DATABASE_URL"), &p.analytics_db)).await;
    let n: i64 = api
        .query_one("SELECT count(*) FROM metricagg.bins", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 8, "4 one-minute and 4 one-hour bins");
    assert!(denied(api.execute("DELETE FROM metricagg.bins", &[]).await).contains("read-only"));
    // The job's runs moved the bins version, which the api role may read only.
    let version: i64 = api
        .query_one("SELECT version FROM metricagg.bins_version", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version > 0, "bins_version not bumped by the job's inserts");
    assert!(denied(
        api.execute("UPDATE metricagg.bins_version SET version = 0", &[])
            .await
    )
    .contains("read-only"));
    assert!(denied(
        api.execute("SELECT 1 FROM metricagg.raw_samples", &[])
            .await
            .map(|_| 0)
    )
    .contains("permission denied"));
    assert!(denied(
        api.execute("SELECT metricagg_run_once()", &[])
            .await
            .map(|_| 0)
    )
    .contains("permission denied"));
    let superuser: bool = p
        .job
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser, "the job must not need a superuser");
}

/// Loop-mode scheduling: interval → cron expression (pg_cron 1.4 has minute
/// resolution), the jobs metricagg_schedule creates and replaces,
/// metricagg_unschedule, and pruning of cron.job_run_details. Runs in a
/// transaction that is rolled back, so no real job is left behind.
#[tokio::test]
async fn scheduling_creates_replaces_and_removes_the_jobs() {
    let mut admin = connect(&env("ANALYTICS_DATABASE_URL")).await;
    let tx = admin.transaction().await.unwrap();
    for (every, want) in [
        ("1 minute", "* * * * *"),
        ("5 minutes", "*/5 * * * *"),
        ("30 minutes", "*/30 * * * *"),
        ("2 hours", "0 */2 * * *"),
        ("1 day", "0 0 * * *"),
    ] {
        let got: String = tx
            .query_one(
                "SELECT metricagg.cron_expression($1::text::interval)",
                &[&every],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, want, "{every}");
    }
    for bad in [
        "30 seconds",
        "90 seconds",
        "7 minutes",
        "0 minutes",
        "-1 hour",
        "5 hours",
    ] {
        tx.batch_execute("SAVEPOINT s").await.unwrap();
        let err = tx
            .query_one(
                "SELECT metricagg.cron_expression($1::text::interval)",
                &[&bad],
            )
            .await
            .unwrap_err();
        let db = err.as_db_error().expect("database error");
        assert!(
            db.message().starts_with("metricagg_schedule:"),
            "{bad}: {}",
            db.message()
        );
        assert!(db.hint().is_some(), "{bad}: no hint");
        tx.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    }
    let jobs = "SELECT count(*) FROM cron.job WHERE jobname LIKE 'metricagg-%'";
    let before: i64 = tx.query_one(jobs, &[]).await.unwrap().get(0);
    tx.execute("SELECT metricagg_unschedule()", &[])
        .await
        .unwrap();
    tx.query_one("SELECT metricagg_schedule('5 minutes')", &[])
        .await
        .unwrap();
    tx.query_one("SELECT metricagg_schedule('1 minute')", &[])
        .await
        .unwrap();
    let n: i64 = tx.query_one(jobs, &[]).await.unwrap().get(0);
    assert_eq!(
        n, 5,
        "run, bins retention, cron history, raw partitions, raw retention; rescheduling replaces"
    );
    let (schedule, user): (String, String) = tx
        .query_one(
            "SELECT schedule, username::text FROM cron.job WHERE jobname = 'metricagg-run-once'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        (schedule.as_str(), user.as_str()),
        ("* * * * *", "metricagg_job")
    );
    tx.execute(
        "INSERT INTO cron.job_run_details (jobid, runid, database, username, command, status, start_time, end_time)
         VALUES (0, -424242, 'x', 'x', 'x', 'succeeded', now() - interval '30 days', now() - interval '30 days')",
        &[],
    )
    .await
    .unwrap();
    let pruned: i64 = tx
        .query_one("SELECT metricagg.prune_cron_history('7 days')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(pruned >= 1);
    let removed: i32 = tx
        .query_one("SELECT metricagg_unschedule()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(removed, 5);
    let n: i64 = tx.query_one(jobs, &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    tx.rollback().await.unwrap();
    let after: i64 = admin.query_one(jobs, &[]).await.unwrap().get(0);
    assert_eq!(
        after, before,
        "the rollback left the real schedule as it was"
    );
}

/// Coarser bins are materialized once closed: rows in the current hour get
/// their one-minute bins at once and their hourly bin only after the hour
/// (plus close_grace) has passed; the parked range survives the runs in
/// between, and retention keeps the raw data it needs.
#[tokio::test]
async fn open_hours_are_parked_until_closed() {
    let p = Pipeline::new().await;
    let now: f64 = p
        .raw
        .query_one(
            "SELECT extract(epoch FROM date_trunc('hour', now()))::float8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The current hour: it cannot close during the test (it ends at least
    // close_grace after now), whatever the minute.
    let start = now as i64;
    p.ingest
        .execute(
            "SELECT metricagg.ensure_partitions(to_timestamp($1::float8) - interval '1 day', to_timestamp($1::float8) + interval '1 day')",
            &[&now],
        )
        .await
        .unwrap();
    insert_samples(&p.ingest, &[1], start, 60, 1).await;
    let summary = p.run_once().await;
    assert!(
        summary.contains("1 minute=") && !summary.contains("1 hour="),
        "{summary}"
    );
    let hourly = "SELECT count(*) FROM metricagg.bins WHERE width = '1 hour'";
    let parked = "SELECT count(*) FROM metricagg.pending_bins";
    assert_eq!(count(&p.analytics, hourly).await, 0);
    assert!(count(&p.analytics, parked).await >= 1);
    assert_equals_oracle(&p, "with the hour open").await;
    // A run with nothing new keeps it parked.
    p.run_once().await;
    assert!(count(&p.analytics, parked).await >= 1);
    let from: Option<String> = p
        .raw
        .query_one("SELECT pending_from::text FROM metricagg.job_progress", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        from.is_some(),
        "retention is told where parked ranges start"
    );
    // Pretend the hour is over: a negative grace closes bins ending in the future.
    p.analytics
        .batch_execute("UPDATE metricagg.job_config SET close_grace = '-2 hours'")
        .await
        .unwrap();
    let summary = p.run_once().await;
    assert!(summary.contains("1 hour=4"), "{summary}");
    assert_eq!(count(&p.analytics, hourly).await, 4);
    assert_eq!(count(&p.analytics, parked).await, 0);
    assert_equals_oracle(&p, "after the hour closed").await;
}
