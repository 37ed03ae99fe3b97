//! What a client can send that must neither stop the pipeline nor lose data
//! (issue 12): timestamps and names ingest refuses, change-log entries the job
//! sets aside, late rows for days retention dropped, concurrent writers, and
//! the bounds on what the ingest role may create. Against the real embedded
//! cluster; every test that writes bins ends with the from-scratch oracle.

use metricagg_pipeline_tests::*;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// The error a statement fails with: SQLSTATE, message and hint.
async fn refused(client: &Client, sql: &str) -> (SqlState, String, String) {
    let e = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("accepted: {sql}"));
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {e}"));
    (
        db.code().clone(),
        db.message().to_string(),
        db.hint().unwrap_or_default().to_string(),
    )
}

/// One sample per (server, ts) as a VALUES row of an INSERT into samples.
fn insert_sql(rows: &[(&str, &str, &str)]) -> String {
    let values: Vec<String> = rows
        .iter()
        .map(|(s, m, ts)| format!("({}, {}, '{ts}', 1)", quote(s), quote(m)))
        .collect();
    format!(
        "INSERT INTO metricagg.samples (server_id, metric_type, ts, value) VALUES {}",
        values.join(", ")
    )
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Ingest refuses what no bin can hold or no reader can name, naming the row;
/// the good rows of the same statement are not half-loaded, and the job keeps
/// running for everyone.
#[tokio::test]
async fn ingest_refuses_broken_clocks_and_names_with_the_row_named() {
    let p = Pipeline::new().await;
    insert_samples(&p.ingest, &[1, 2], T0, 600, 1).await;
    let good = ("srv-3", "cpu", "2025-11-15 00:00:00+00");
    for (bad, what) in [
        (("srv-x", "cpu", "infinity"), "infinity"),
        (("srv-x", "cpu", "-infinity"), "-infinity"),
        (("srv-x", "cpu", "294276-12-31 23:59:59+00"), "294276"),
        (("srv-x", "cpu", "3000-01-01 00:00:00+00"), "3000-01-01"),
        (("srv-x", "cpu", "1999-12-31 23:59:59+00"), "1999-12-31"),
    ] {
        let (code, msg, hint) = refused(&p.ingest, &insert_sql(&[good, bad])).await;
        assert_eq!(code, SqlState::CHECK_VIOLATION, "{msg}");
        assert!(
            msg.contains(what)
                && msg.contains("'srv-x'")
                && msg.contains("outside the accepted window"),
            "the error does not name the row: {msg}"
        );
        assert!(hint.contains("clock"), "{hint}");
    }
    for name in ["srv x", "srv\nF1: forged", "", &"s".repeat(129), "srv;drop"] {
        let (code, msg, hint) = refused(
            &p.ingest,
            &insert_sql(&[good, (name, "cpu", "2025-11-15 00:00:01+00")]),
        )
        .await;
        assert_eq!(code, SqlState::CHECK_VIOLATION, "{msg}");
        assert!(msg.contains("not a valid pair of names"), "{msg}");
        assert!(hint.contains("1 to 128 characters"), "{hint}");
    }
    let (code, msg, _) = refused(
        &p.ingest,
        &insert_sql(&[good, ("srv-3", "cpu load", "2025-11-15 00:00:01+00")]),
    )
    .await;
    assert_eq!(code, SqlState::CHECK_VIOLATION, "{msg}");
    // Nothing of the refused statements arrived, not even the good row.
    assert_eq!(
        count(
            &p.raw,
            "SELECT count(*) FROM metricagg.samples WHERE server_id = 'srv-3'"
        )
        .await,
        0
    );
    // The window is configuration: a wider future margin lets the row in.
    p.raw
        .batch_execute("UPDATE metricagg.ingest_config SET future_margin = '366 days'")
        .await
        .unwrap();
    p.ingest
        .batch_execute(&insert_sql(&[(
            "srv-4",
            "cpu",
            &chrono_like_now_plus_days(&p.raw, 200).await,
        )]))
        .await
        .expect("a row inside the widened window");
    p.raw
        .batch_execute("UPDATE metricagg.ingest_config SET future_margin = '1 day'")
        .await
        .unwrap();
    let summary = p.run_once().await;
    assert!(!summary.contains("quarantined"), "{summary}");
    assert_equals_oracle(&p, "after refused rows").await;
}

/// now() + n days on the server, as text.
async fn chrono_like_now_plus_days(c: &Client, days: i32) -> String {
    c.query_one("SELECT (now() + make_interval(days => $1))::text", &[&days])
        .await
        .unwrap()
        .get(0)
}

/// Change-log entries the job cannot process (rows written before ingest
/// checked them, or by a superuser bypassing the trigger) are set aside with
/// the reason; everyone else's data is aggregated in the same run, and the
/// quarantine shows in the summary, job_runs and job_health. Released, an
/// entry is taken again.
#[tokio::test]
async fn unprocessable_entries_are_quarantined_and_the_run_goes_on() {
    let p = Pipeline::new().await;
    insert_samples(&p.ingest, &[1, 2, 3], T0, 900, 1).await;
    // As pre-upgrade rows would be: the log says what a statement touched.
    p.raw
        .batch_execute(
            "INSERT INTO metricagg.change_log (server_id, min_ts, max_ts, row_count) VALUES
                ('srv-x', '2025-11-15 00:00+00', 'infinity', 2),
                ('srv-y', '294276-12-31 00:00+00', '294276-12-31 00:00+00', 1),
                ('srv-z', '-infinity', '2025-11-15 00:00+00', 1)",
        )
        .await
        .unwrap();
    let summary = p.run_once().await;
    assert!(
        summary.contains("3 quarantined") && summary.contains("bins written: 1 minute=180"),
        "{summary}"
    );
    let reasons = texts(
        &p.analytics,
        "SELECT server_id || ': ' || reason FROM metricagg.quarantine ORDER BY server_id",
    )
    .await;
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("outside the times the pipeline can bin")),
        "{reasons:?}"
    );
    let (runs_q, health_q): (i64, i64) = {
        let r = p
            .analytics
            .query_one(
                "SELECT (SELECT quarantined FROM metricagg.job_runs ORDER BY id DESC LIMIT 1),
                        (SELECT quarantined FROM metricagg.job_health)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((runs_q, health_q), (3, 3));
    // The api role sees the health view.
    let api = connect(&with_db(&env("API_DATABASE_URL"), &p.analytics_db)).await;
    assert_eq!(
        count(&api, "SELECT quarantined FROM metricagg.job_health").await,
        3
    );
    // Later runs do not see them again (the watermark moved past them).
    let again = p.run_once().await;
    assert!(!again.contains("quarantined"), "{again}");
    // An operator fixes the data and releases an entry: it is taken again
    // (and set aside again while it still cannot be processed).
    let released: i64 = p
        .analytics
        .query_one("SELECT metricagg.release_quarantine(NULL)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(released, 3);
    let third = p.run_once().await;
    assert!(third.contains("3 quarantined"), "{third}");
    assert_equals_oracle(&p, "after quarantine").await;
}

/// An error no check foresaw, in one server's recompute: that server's work is
/// set aside and everybody else's bins are written in the same run. The same
/// error for every server is not one agent's bad data: the run fails and
/// changes nothing.
#[tokio::test]
async fn a_failure_in_one_servers_recompute_is_isolated() {
    let p = Pipeline::new().await;
    insert_samples(&p.ingest, &[1, 2, 3], T0, 600, 1).await;
    // Fault injection: bins of srv-2 cannot be written (a data exception).
    let fail_on = |servers: &str| {
        format!(
            "ALTER DATABASE {} SET metricagg_test.fail = '{servers}'",
            p.analytics_db
        )
    };
    p.analytics
        .batch_execute(
            "CREATE FUNCTION metricagg.fail_srv() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.server_id = ANY (string_to_array(current_setting('metricagg_test.fail', true), ',')) THEN
                     RAISE EXCEPTION 'injected failure for %', NEW.server_id USING ERRCODE = 'invalid_parameter_value';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER fail_srv BEFORE INSERT ON metricagg.bins FOR EACH ROW EXECUTE FUNCTION metricagg.fail_srv();",
        )
        .await
        .unwrap();
    p.analytics.batch_execute(&fail_on("srv-2")).await.unwrap();
    let job = p.job_client().await; // picks up the database setting
    wait_for_horizon(&p.raw).await;
    let summary: String = job
        .query_one("SELECT metricagg_run_once()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(summary.contains("1 quarantined"), "{summary}");
    let per_server: Vec<(String, i64)> = p
        .analytics
        .query(
            "SELECT server_id, count(*) FROM metricagg.bins GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        per_server,
        vec![("srv-1".to_string(), 44), ("srv-3".to_string(), 44)]
    );
    let reason: String = p
        .analytics
        .query_one("SELECT reason FROM metricagg.quarantine", &[])
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("injected failure for srv-2"), "{reason}");

    // Now every server fails: the run fails with the error, nothing changes.
    insert_samples(&p.ingest, &[1, 3], T0 + 600, 60, 2).await;
    p.analytics
        .batch_execute(&fail_on("srv-1,srv-3"))
        .await
        .unwrap();
    let job = p.job_client().await;
    wait_for_horizon(&p.raw).await;
    let before = p.done_below().await;
    let err = job
        .query_one("SELECT metricagg_run_once()", &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("database error");
    assert!(
        db.message().contains("injected failure"),
        "{}",
        db.message()
    );
    assert!(
        db.hint().unwrap_or_default().contains("not one bad agent"),
        "{:?}",
        db.hint()
    );
    assert_eq!(p.done_below().await, before);
    assert_eq!(
        count(&p.analytics, "SELECT count(*) FROM metricagg.quarantine").await,
        1
    );

    // Fault removed, the quarantined entry released: everything converges.
    p.analytics
        .batch_execute(
            "DROP TRIGGER fail_srv ON metricagg.bins; SELECT metricagg.release_quarantine()",
        )
        .await
        .unwrap();
    p.run_once().await;
    assert_eq!(
        count(&p.analytics, "SELECT count(*) FROM metricagg.quarantine").await,
        0
    );
    assert_equals_oracle(&p, "after the isolated failure").await;
}

/// A late row for a day whose raw rows retention dropped is refused at
/// ingest: the day's complete bins are never recomputed from what is left.
/// The same day for a server that never had data, and another day of the
/// same server, still load.
#[tokio::test]
async fn late_rows_for_a_retired_day_are_refused_and_complete_bins_survive() {
    let p = Pipeline::new().await;
    let day: i64 = p
        .raw
        .query_one(
            "SELECT extract(epoch FROM date_trunc('day', now() - interval '30 days'))::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    p.ingest
        .execute(
            "SELECT metricagg.ensure_partitions(to_timestamp($1::float8), to_timestamp($1::float8) + interval '2 days')",
            &[&(day as f64)],
        )
        .await
        .unwrap();
    insert_samples(&p.ingest, &[1], day, 3600, 1).await;
    p.run_once().await;
    p.run_once().await; // prunes the consumed log entries
    let snapshot = format!(
        "SELECT string_agg(format('%s %s %s %s %s %s', metric_type, width, ts, count, min, p80), ';'
                           ORDER BY metric_type, width, ts)
         FROM metricagg.bins WHERE server_id = 'srv-1' AND ts < to_timestamp({})",
        day + 86400
    );
    let before = text(&p.analytics, &snapshot).await;
    let dropped: Vec<String> = p
        .raw
        .query_one(
            "SELECT coalesce(array_agg(d), '{}') FROM metricagg.drop_old_partitions('7 days') d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert!(
        dropped
            .iter()
            .all(|d| d.trim_start_matches("metricagg.").starts_with("samples_2")),
        "retention returns the dropped partitions' names: {dropped:?}"
    );
    let retired: String = p
        .raw
        .query_one(
            "SELECT string_agg(server_id || ' ' || days::text, ';') FROM metricagg.retired",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(retired.starts_with("srv-1 {["), "{retired}");

    // Late rows of srv-1 for that day: refused, naming the row.
    let late = format!(
        "INSERT INTO metricagg.samples VALUES ('srv-1', 'cpu', to_timestamp({}), 99)",
        day + 61
    );
    let (code, msg, hint) = refused(&p.ingest, &late).await;
    assert_eq!(code, SqlState::CHECK_VIOLATION);
    assert!(
        msg.contains("'srv-1'") && msg.contains("retention already dropped"),
        "{msg}"
    );
    assert!(hint.contains("metricagg.retired"), "{hint}");
    // A loader claiming it is told before it loads anything.
    let (code, msg, _) = refused(
        &p.ingest,
        &format!(
            "SELECT metricagg.claim_load('{{srv-1}}', to_timestamp({day}), to_timestamp({}))",
            day + 86400
        ),
    )
    .await;
    assert_eq!(code, SqlState::CHECK_VIOLATION, "{msg}");
    p.ingest
        .batch_execute("SELECT metricagg.release_load()")
        .await
        .unwrap();

    // Never had data: srv-2 that day, srv-1 the next day.
    insert_samples(&p.ingest, &[2], day, 600, 2).await;
    insert_samples(&p.ingest, &[1], day + 86400, 600, 3).await;
    p.run_once().await;
    assert_eq!(
        text(&p.analytics, &snapshot).await,
        before,
        "the retired day's bins of srv-1 changed"
    );
    // The oracle can only speak for what raw still has: everything but the
    // retired day of srv-1, which it sees as empty.
    let retired_day = format!(
        "server_id = 'srv-1' AND ts >= to_timestamp({day}) AND ts < to_timestamp({})",
        day + 86400
    );
    let diff = texts(&p.analytics, &oracle_diff_excluding(&retired_day)).await;
    assert!(diff.is_empty(), "{diff:?}");
    assert!(
        count(
            &p.analytics,
            &format!("SELECT count(*) FROM metricagg.bins WHERE {retired_day}")
        )
        .await
            > 0
    );
}

/// Two loads of the same servers and range at once: exactly one gets the
/// claim; after it loaded, the range is refused as already loaded. Other
/// ranges of the same servers are not blocked. A crashed loader's claim
/// does not block anybody.
#[tokio::test]
async fn load_claims_let_exactly_one_of_two_concurrent_loads_through() {
    let p = Pipeline::new().await;
    let a = p.ingest_client().await;
    let b = p.ingest_client().await;
    let claim = |from: &str, to: &str| {
        format!("SELECT metricagg.claim_load('{{srv-1,srv-2}}', '{from}', '{to}')")
    };
    a.batch_execute(&claim("2025-11-15", "2025-11-16"))
        .await
        .unwrap();
    let (code, msg, _) = refused(&b, &claim("2025-11-15 12:00+00", "2025-11-17")).await;
    assert_eq!(code, SqlState::LOCK_NOT_AVAILABLE, "{msg}");
    assert!(msg.contains("another load"), "{msg}");
    b.batch_execute(&claim("2025-11-16", "2025-11-17"))
        .await
        .expect("an adjacent range of the same servers");
    insert_samples(&a, &[1, 2], T0, 60, 1).await;
    a.batch_execute("SELECT metricagg.release_load()")
        .await
        .unwrap();
    let (code, msg, _) = refused(&b, &claim("2025-11-15", "2025-11-16")).await;
    assert_eq!(code, SqlState::UNIQUE_VIOLATION, "{msg}");
    assert!(msg.contains("already exist"), "{msg}");
    // A loader that dies keeps no claim.
    let c = p.ingest_client().await;
    c.batch_execute(&claim("2025-12-01", "2025-12-02"))
        .await
        .unwrap();
    drop(c);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match b.batch_execute(&claim("2025-12-01", "2025-12-02")).await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("a dead session's claim still blocks: {e}"),
        }
    }
    p.run_once().await;
    assert_equals_oracle(&p, "after claimed loads").await;
}

/// Writers creating the same new day's partition at the same moment all
/// succeed (an advisory lock left the catalog stale: "already exists").
#[tokio::test]
async fn concurrent_partition_creation_never_fails_a_writer() {
    let p = Pipeline::new().await;
    let mut writers = Vec::new();
    for _ in 0..4 {
        writers.push(p.ingest_client().await);
    }
    for d in 0..6i64 {
        let start = T0 + 86400 * (10 + d);
        let tasks: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(i, w)| async move {
                w.execute(
                    "SELECT metricagg.ensure_partitions(to_timestamp($1::float8), to_timestamp($1::float8) + interval '1 day')",
                    &[&(start as f64)],
                )
                .await?;
                insert_samples(w, &[i as u32 + 1], start, 30, d).await;
                Ok::<_, tokio_postgres::Error>(())
            })
            .collect();
        for r in futures_util::future::join_all(tasks).await {
            r.expect("a writer failed while creating the same partition");
        }
    }
    let parts = count(
        &p.raw,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'metricagg.samples'::regclass",
    )
    .await;
    assert_eq!(parts, 6 + 1, "six day partitions and the default");
    assert_eq!(
        count(&p.raw, "SELECT count(*) FROM metricagg.samples_default").await,
        0
    );
    p.run_once().await;
    assert_equals_oracle(&p, "after concurrent partition creation").await;
}

/// The ingest role creates partitions only inside the ingest window (and a
/// week past it); bins partitions (or chunks) exist only for months that
/// have bins, even when one statement spans decades.
#[tokio::test]
async fn partitions_are_bounded_and_only_where_data_is() {
    let p = Pipeline::new().await;
    let (code, msg, _) = refused(
        &p.ingest,
        "SELECT metricagg.ensure_partitions('2500-01-01', '2500-01-05')",
    )
    .await;
    assert_eq!(code, SqlState::RAISE_EXCEPTION);
    assert!(msg.contains("outside the ingest window"), "{msg}");
    let created: i32 = p
        .ingest
        .query_one(
            "SELECT metricagg.ensure_partitions('1999-12-30', '2000-01-02')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 1, "only 2000-01-01 lies in the window");
    let engine = bins_engine(&p.analytics).await;
    if engine == "timescaledb" {
        // The retention job (400 days) runs in TimescaleDB's own scheduler:
        // between the listing and the count below it could drop the 2001
        // and 2013 chunks this test writes. Paused for this database only.
        p.analytics
            .batch_execute(
                "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs
                 WHERE proc_schema = 'metricagg' AND proc_name = 'bins_retention_job'",
            )
            .await
            .unwrap();
    }
    // One statement with a sample in January 2001 and one in November 2025.
    p.ingest
        .batch_execute(
            "INSERT INTO metricagg.samples VALUES
                ('srv-1', 'cpu', '2001-01-15 10:00:00+00', 1), ('srv-1', 'cpu', '2025-11-15 10:00:00+00', 2),
                ('srv-1', 'cpu', '2013-06-01 00:00:00+00', 3)",
        )
        .await
        .unwrap();
    let summary = p.run_once().await;
    assert!(summary.contains("1 minute=3"), "{summary}");
    let units = texts(
        &p.analytics,
        if engine == "native" {
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'metricagg.bins'::regclass ORDER BY 1"
        } else {
            "SELECT to_char(range_start AT TIME ZONE 'UTC', 'YYYYMM') FROM timescaledb_information.chunks
             WHERE hypertable_schema = 'metricagg' AND hypertable_name = 'bins' ORDER BY 1"
        },
    )
    .await;
    let expected: &[&str] = if engine == "native" {
        &["bins_200101", "bins_201306", "bins_202511", "bins_default"]
    } else {
        &["200101", "201306", "202511"]
    };
    assert_eq!(units, expected, "{engine}");
    assert_eq!(
        count(
            &p.analytics,
            "SELECT count(*) FROM metricagg.bins WHERE width = '1 hour'"
        )
        .await,
        3
    );
    assert_equals_oracle(&p, "after a statement spanning decades").await;
}

/// Every SECURITY DEFINER function of both schemas pins its search_path and
/// ends it with pg_temp (so no temporary object can shadow what it calls),
/// and nothing in the schemas is executable by PUBLIC.
#[tokio::test]
async fn security_definer_functions_pin_search_path_and_public_has_nothing() {
    let p = Pipeline::new().await;
    for (side, db) in [("raw", &p.raw), ("analytics", &p.analytics)] {
        let bad = texts(db, "SELECT p.oid::regprocedure::text || ' ' || coalesce(array_to_string(p.proconfig, ','), 'no search_path')
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'metricagg' AND p.prosecdef
                   AND NOT coalesce((SELECT c ~ '^search_path=.*pg_temp$' FROM unnest(p.proconfig) c
                                     WHERE c LIKE 'search_path=%'), false)").await;
        assert!(bad.is_empty(), "{side}: {bad:?}");
        let definers = count(
            db,
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'metricagg' AND p.prosecdef",
        )
        .await;
        assert!(
            definers > 0,
            "{side}: no SECURITY DEFINER function to check"
        );
        let public = texts(db, "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'metricagg' AND has_function_privilege('public', p.oid, 'EXECUTE')").await;
        assert!(
            public.is_empty(),
            "{side}: executable by PUBLIC: {public:?}"
        );
    }
}
