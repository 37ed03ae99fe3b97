//! The pipeline with its raw side distributed over a real Citus cluster
//! (`scripts/citus.sh`: a coordinator and two workers, `make test-citus`):
//! samples and the change log distributed by server, each worker's entries
//! carrying its own node and local transaction id, the job reading every
//! node's horizon through the coordinator. Every test ends by comparing the
//! bins with a from-scratch recompute.

use std::time::Duration;

use futures_util::SinkExt;

use metricagg_pipeline_tests::citus::{citus, Citus};
use metricagg_pipeline_tests::*;
use tokio_postgres::Client;

/// The message (and detail) of a database error, for assertions.
fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!("{} {}", d.message(), d.detail().unwrap_or_default()))
        .unwrap_or_else(|| e.to_string())
}

fn xid(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|_| panic!("not a transaction id: {s}"))
}

/// Polls `sql` (a boolean query) until it is true, for up to 60 s.
async fn wait_until(client: &Client, sql: &str, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done: bool = client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0);
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 60 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The distribution itself, and what the capture records: every change-log
/// entry lives on the worker that holds its server's shard, carries that
/// worker's group id as node and a transaction id of that worker (committed
/// there), and the horizon view answers for every node.
#[tokio::test]
async fn each_worker_logs_its_own_node_and_local_transaction_ids() {
    let c = Citus::new().await;
    let layout = texts(
        &c.p.raw,
        "SELECT format('%s %s %s', logicalrelid, partmethod,
                       CASE partmethod WHEN 'h' THEN column_to_column_name(logicalrelid, partkey) ELSE '-' END)
         FROM pg_dist_partition
         WHERE logicalrelid IN ('metricagg.samples'::regclass, 'metricagg.change_log'::regclass,
                                'metricagg.ingest_config'::regclass, 'metricagg.retired'::regclass)
         ORDER BY logicalrelid::text",
    )
    .await;
    assert_eq!(
        layout,
        [
            "metricagg.change_log h server_id",
            "metricagg.ingest_config n -",
            "metricagg.retired n -",
            "metricagg.samples h server_id"
        ]
    );
    let colocated: bool = c
        .p
        .raw
        .query_one(
            "SELECT (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'metricagg.samples'::regclass)
                  = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'metricagg.change_log'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(colocated, "change_log is not co-located with samples");

    let servers = c.servers_on_each(3).await;
    // One statement through the coordinator, rows for both workers.
    insert_samples(&c.p.ingest, &servers, T0, 600, 1).await;
    let misplaced = texts(
        &c.p.raw,
        "SELECT format('%s: node %s, shard on group %s', l.server_id, l.node, p.groupid)
         FROM metricagg.change_log l
         JOIN pg_dist_placement p
           ON p.shardid = get_shard_id_for_distribution_column('metricagg.change_log', l.server_id)
         WHERE l.node <> p.groupid",
    )
    .await;
    assert!(misplaced.is_empty(), "{misplaced:?}");
    for w in &c.workers {
        let xids = texts(
            &c.p.raw,
            &format!(
                "SELECT DISTINCT xid::text FROM metricagg.change_log WHERE node = {}",
                w.node
            ),
        )
        .await;
        assert!(!xids.is_empty(), "no entry logged by {}", w.name);
        for x in xids {
            let status: Option<String> = w
                .raw
                .query_one("SELECT pg_xact_status($1::text::xid8)", &[&x])
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                status.as_deref(),
                Some("committed"),
                "{}: xid {x} is not one of its transactions",
                w.name
            );
        }
    }
    let nodes = texts(
        &c.p.raw,
        "SELECT string_agg(node::text, ',' ORDER BY node) FROM metricagg.snapshot_horizon",
    )
    .await;
    assert_eq!(
        nodes,
        [format!("0,{},{}", c.workers[0].node, c.workers[1].node)]
    );
    let summary = c.run_once().await;
    assert!(summary.contains("6 change-log entries"), "{summary}");
    c.assert_equals_oracle("after one statement across both workers")
        .await;

    // Least privilege holds on the distributed tables.
    let err =
        c.p.ingest
            .query_one("SELECT count(*) FROM metricagg.samples", &[])
            .await
            .unwrap_err();
    assert!(db_message(&err).contains("permission denied"), "{err:?}");
    let job_raw = connect(&with_db(&env("JOB_DATABASE_URL"), &c.p.raw_db)).await;
    let err = job_raw
        .execute(
            "INSERT INTO metricagg.samples VALUES ('srv-1', 'cpu', now(), 1)",
            &[],
        )
        .await
        .unwrap_err();
    assert!(db_message(&err).contains("permission denied"), "{err:?}");
}

async fn first_hour_cpu_count(c: &Citus, server: u32) -> i64 {
    c.p.analytics
        .query_one(
            "SELECT count FROM metricagg.bins WHERE server_id = $1 AND metric_type = 'cpu'
             AND width = '1 hour' AND ts = to_timestamp($2::float8)",
            &[&format!("srv-{server}"), &(T0 as f64)],
        )
        .await
        .unwrap()
        .get(0)
}

/// Rows an hour late, on both workers, re-aggregate their bins.
#[tokio::test]
async fn late_rows_on_both_workers_reaggregate_their_bins() {
    let c = Citus::new().await;
    let a = c.servers_on(&c.workers[0], 1).await[0];
    let b = c.servers_on(&c.workers[1], 1).await[0];
    insert_samples(&c.p.ingest, &[a, b], T0, 7200, 1).await;
    c.run_once().await;
    assert_eq!(first_hour_cpu_count(&c, a).await, 3600);
    assert_eq!(first_hour_cpu_count(&c, b).await, 3600);
    insert_samples(&c.p.ingest, &[a, b], T0 + 100, 120, 99).await;
    let summary = c.run_once().await;
    assert!(summary.contains("2 change-log entries"), "{summary}");
    assert_eq!(first_hour_cpu_count(&c, a).await, 3720);
    assert_eq!(first_hour_cpu_count(&c, b).await, 3720);
    c.assert_equals_oracle("after late rows").await;
}

/// Two transactions on one worker commit out of order: the later one's
/// entry waits below that worker's horizon until the earlier one ends.
#[tokio::test]
async fn out_of_order_commits_on_one_worker_are_not_lost() {
    let c = Citus::new().await;
    let w = &c.workers[0];
    let s = c.servers_on(w, 3).await;
    insert_samples(&c.p.ingest, &[s[0]], T0, 600, 1).await;
    c.wait_for_horizons().await;
    let mut slow = c.p.ingest_client().await;
    let tx = slow.transaction().await.unwrap();
    insert_samples(&tx, &[s[1]], T0, 600, 2).await;
    // A later transaction on the same worker commits first.
    insert_samples(&c.p.ingest, &[s[2]], T0 + 600, 600, 3).await;
    let later =
        c.p.raw
            .query_one(
                "SELECT node, xid::text FROM metricagg.change_log WHERE server_id = $1",
                &[&format!("srv-{}", s[2])],
            )
            .await
            .unwrap();
    assert_eq!(later.get::<_, i32>(0), w.node);
    let later_xid = xid(later.get(1));
    let summary = c.p.run_once_now().await;
    assert!(summary.contains("1 change-log entries"), "{summary}");
    let mark = xid(&c.done_below(w.node).await);
    assert!(
        mark <= later_xid,
        "watermark {mark} passed xid {later_xid} while an older transaction was open"
    );
    assert_eq!(c.servers_with_bins().await, [format!("srv-{}", s[0])]);
    tx.commit().await.unwrap();
    c.run_once().await;
    assert_eq!(c.servers_with_bins().await.len(), 3);
    c.assert_equals_oracle("after the slow transaction committed")
        .await;
}

/// Undoes the cluster settings the in-doubt test changes, however it ends.
struct CoordinatorSettings;

impl CoordinatorSettings {
    fn set(settings: &[(&str, &str)]) -> CoordinatorSettings {
        let mut args = vec!["psql", "coordinator", "postgres"];
        let sql: Vec<String> = settings
            .iter()
            .map(|(k, v)| format!("ALTER SYSTEM SET {k} = '{v}'"))
            .collect();
        for s in &sql {
            args.extend(["-c", s]);
        }
        args.extend(["-c", "SELECT pg_reload_conf()"]);
        citus(&args);
        CoordinatorSettings
    }
}

impl Drop for CoordinatorSettings {
    fn drop(&mut self) {
        citus(&[
            "psql",
            "coordinator",
            "postgres",
            "-c",
            "ALTER SYSTEM RESET synchronous_standby_names",
            "-c",
            "ALTER SYSTEM RESET citus.recover_2pc_interval",
            "-c",
            "SELECT pg_reload_conf()",
        ]);
    }
}

/// The prepared transactions of this database on a worker, as xids.
async fn prepared_xids(w: &Client) -> Vec<u64> {
    texts(
        w,
        "SELECT transaction::text FROM pg_prepared_xacts WHERE database = current_database()",
    )
    .await
    .iter()
    .map(|x| xid(x))
    .collect()
}

/// A transaction that writes to both workers commits with two-phase commit.
/// Its part on each worker is aggregated once, by that worker's watermark;
/// while a part is only prepared (here: the coordinator has committed, one
/// worker went down before COMMIT PREPARED reached it, and came back), it
/// holds that worker's horizon and waits, and the other worker's part goes
/// ahead. Citus's recovery then commits it and the next run takes it.
#[tokio::test]
async fn a_transaction_across_workers_is_aggregated_once_per_worker() {
    let mut c = Citus::new().await;
    let a = c.servers_on(&c.workers[0], 2).await;
    let b = c.servers_on(&c.workers[1], 2).await;
    {
        let mut ingest = c.p.ingest_client().await;
        let tx = ingest.transaction().await.unwrap();
        insert_samples(&tx, &[a[0], b[0]], T0, 600, 1).await;
        insert_samples(&tx, &[a[0], b[0]], T0 + 300, 600, 2).await;
        tx.commit().await.unwrap();
    }
    let nodes = texts(
        &c.p.raw,
        "SELECT DISTINCT node::text FROM metricagg.change_log ORDER BY 1",
    )
    .await;
    assert_eq!(
        nodes,
        [c.workers[0].node.to_string(), c.workers[1].node.to_string()]
    );
    let summary = c.run_once().await;
    assert!(summary.contains("4 change-log entries"), "{summary}");
    c.assert_equals_oracle("after a committed two-worker transaction")
        .await;

    // Hold the next one in doubt: the coordinator's commit waits for a
    // synchronous standby that does not exist, after both workers prepared.
    // (Citus's own 2PC recovery is paused so that the test decides when.)
    let settings = CoordinatorSettings::set(&[
        ("synchronous_standby_names", "metricagg_test_nobody"),
        ("citus.recover_2pc_interval", "-1"),
    ]);
    let mut writer = c.p.ingest_client().await;
    writer
        .batch_execute("SET synchronous_commit = on")
        .await
        .unwrap();
    let pid: i32 = writer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let (a1, b1) = (a[1], b[1]);
    let commit = tokio::spawn(async move {
        let tx = writer.transaction().await?;
        insert_samples(&tx, &[a1, b1], T0 + 1200, 600, 3).await;
        tx.commit().await
    });
    for w in &c.workers {
        wait_until(
            &w.raw,
            "SELECT count(*) > 0 FROM pg_prepared_xacts WHERE database = current_database()",
            "the two-phase commit to prepare",
        )
        .await;
    }
    wait_until(
        &c.p.raw,
        &format!(
            "SELECT coalesce((SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = {pid}), false)"
        ),
        "the coordinator's commit to wait",
    )
    .await;
    let prepared: Vec<u64> = {
        let mut v = Vec::new();
        for w in &c.workers {
            v.push(prepared_xids(&w.raw).await[0]);
        }
        v
    };
    // Both parts prepared: neither is taken.
    c.p.run_once_now().await;
    for (w, x) in c.workers.iter().zip(&prepared) {
        let mark = xid(&c.done_below(w.node).await);
        assert!(
            mark <= *x,
            "{}: watermark {mark} passed prepared xid {x}",
            w.name
        );
    }
    let without = [format!("srv-{}", a[0]), format!("srv-{}", b[0])];
    assert_eq!(c.servers_with_bins().await, without);

    // Worker 2 goes down; the coordinator's commit goes on: COMMIT PREPARED
    // reaches worker 1 only.
    c.stop_worker(&c.workers[1]);
    c.p.raw
        .execute("SELECT pg_cancel_backend($1::integer)", &[&pid])
        .await
        .unwrap();
    commit
        .await
        .unwrap()
        .expect("the coordinator committed (locally, before the workers)");
    drop(settings);
    c.start_worker(1).await;
    assert_eq!(
        prepared_xids(&c.workers[1].raw).await,
        [prepared[1]],
        "worker 2 kept its part prepared across the restart"
    );
    wait_for_horizon(&c.p.raw).await;
    wait_for_horizon(&c.workers[0].raw).await;
    c.p.run_once_now().await;
    let mut expect = vec![
        format!("srv-{}", a[0]),
        format!("srv-{}", a[1]),
        format!("srv-{}", b[0]),
    ];
    expect.sort();
    assert_eq!(
        c.servers_with_bins().await,
        expect,
        "worker 1's part is aggregated, worker 2's waits"
    );
    assert!(xid(&c.done_below(c.workers[1].node).await) <= prepared[1]);
    c.assert_equals_oracle("with one part still prepared").await;

    let recovered: i32 =
        c.p.raw
            .query_one("SELECT recover_prepared_transactions()", &[])
            .await
            .unwrap()
            .get(0);
    assert!(recovered >= 1, "nothing to recover");
    c.run_once().await;
    assert_eq!(c.servers_with_bins().await.len(), 4);
    c.assert_equals_oracle("after recovery committed worker 2's part")
        .await;
}

/// A worker stopped in the middle of a run: the run fails and changes
/// nothing (bins, watermarks, the raw log); runs while it is down fail at
/// once, saying which worker; once it is back the next run catches up.
#[tokio::test]
async fn a_worker_stopped_during_a_run_fails_it_cleanly() {
    let mut c = Citus::new().await;
    let a = c.servers_on(&c.workers[0], 2).await;
    let b = c.servers_on(&c.workers[1], 2).await;
    let all = [a[0], a[1], b[0], b[1]];
    insert_samples(&c.p.ingest, &all, T0, 1200, 1).await;
    c.run_once().await;
    insert_samples(&c.p.ingest, &all, T0 + 60, 300, 2).await;
    c.wait_for_horizons().await;
    let state = "SELECT format('%s bins, %s counted; marks %s', count(*), sum(count),
                               (SELECT string_agg(node || ':' || done_below, ' ' ORDER BY node) FROM metricagg.job_watermarks))
                 FROM metricagg.bins";
    let before = texts(&c.p.analytics, state).await;
    let entries = c.log_entries().await;

    // Hold the run after it read the horizons and the log, before it reads
    // the samples: it needs metricagg.bins, which this transaction locks.
    let mut blocker = connect(&with_db(&env("ANALYTICS_DATABASE_URL"), &c.p.analytics_db)).await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE metricagg.bins IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let job = c.p.job_client().await;
    let run = tokio::spawn(async move { job.query_one("SELECT metricagg_run_once()", &[]).await });
    wait_until(
        &c.p.analytics,
        "SELECT count(*) > 0 FROM pg_stat_activity
         WHERE datname = current_database() AND usename = 'metricagg_job' AND wait_event_type = 'Lock'",
        "the run to reach metricagg.bins",
    )
    .await;
    c.stop_worker(&c.workers[1]);
    lock.commit().await.unwrap();
    let err = run
        .await
        .unwrap()
        .expect_err("the run went on without worker 2");
    let port = c.workers[1].port.to_string();
    assert!(
        db_message(&err).contains(&port) || db_message(&err).contains("connection"),
        "unclear error: {}",
        db_message(&err)
    );
    assert_eq!(texts(&c.p.analytics, state).await, before);

    // While it is down, a run fails at once at the horizon.
    let job = c.p.job_client().await;
    let err = job
        .query_one("SELECT metricagg_run_once()", &[])
        .await
        .unwrap_err();
    let msg = db_message(&err);
    assert!(
        msg.contains("cannot be asked for its horizon") && msg.contains(&port),
        "unclear error: {msg}"
    );
    assert!(!msg.contains("password"), "error leaks secrets: {msg}");
    assert_eq!(texts(&c.p.analytics, state).await, before);

    c.start_worker(1).await;
    assert_eq!(c.log_entries().await, entries, "the raw log changed");
    let summary = c.run_once().await;
    assert!(summary.contains("4 change-log entries"), "{summary}");
    c.assert_equals_oracle("after worker 2 came back").await;
}

/// The job's query goes to the coordinator through postgres_fdw with its
/// GROUP BY, and the coordinator runs that grouping on the workers, shard by
/// shard: nothing is aggregated on the analytics side or on the coordinator.
/// Planned as the job's role is (its settings hold on the workers): one
/// serial aggregate per shard.
#[tokio::test]
async fn the_job_aggregation_runs_on_the_workers() {
    let c = Citus::new().await;
    let servers = c.servers_on_each(2).await;
    insert_samples(&c.p.ingest, &servers, T0, 900, 1).await;
    for w in &c.workers {
        let settings = texts(
            &w.raw,
            "SELECT array_to_string(setconfig, ' ') FROM pg_db_role_setting
             WHERE setrole = 'metricagg_job'::regrole
               AND setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await;
        assert!(
            settings.len() == 1
                && settings[0].contains("max_parallel_workers_per_gather=0")
                && settings[0].contains("hash_mem_multiplier=4")
                && settings[0].contains("enable_sort=off"),
            "{}: the job's settings are not there: {settings:?}",
            w.name
        );
    }
    let job_raw = connect(&with_db(&env("JOB_DATABASE_URL"), &c.p.raw_db)).await;
    job_raw
        .batch_execute("SET citus.explain_all_tasks = on")
        .await
        .unwrap();
    for width in ["1 minute", "1 hour"] {
        let query: String =
            c.p.job
                .query_one(
                    "SELECT metricagg.bins_query($1::text::interval, 'metricagg.raw_samples',
                        $$ts >= '2025-11-15' AND ts < '2025-11-16'$$)",
                    &[&width],
                )
                .await
                .unwrap()
                .get(0);
        let plan = texts(&c.p.job, &format!("EXPLAIN (VERBOSE, COSTS OFF) {query}"))
            .await
            .join("\n");
        assert!(
            !plan.contains("HashAggregate") && !plan.contains("GroupAggregate"),
            "{width}: aggregation on the analytics side:\n{plan}"
        );
        let remote = plan
            .lines()
            .find_map(|l| l.trim().strip_prefix("Remote SQL: "))
            .unwrap_or_else(|| panic!("{plan}"));
        assert!(
            remote.contains("GROUP BY")
                && remote.contains("metricagg_stats_by_bin_packed(ts, value,"),
            "{width}: not pushed to the coordinator:\n{plan}"
        );
        // What the coordinator does with that query.
        let dist = texts(&job_raw, &format!("EXPLAIN (VERBOSE, COSTS OFF) {remote}")).await;
        assert!(
            dist[0].starts_with("Custom Scan (Citus Adaptive)"),
            "{width}: the coordinator does more than gather:\n{}",
            dist.join("\n")
        );
        let dist = dist.join("\n");
        assert!(dist.contains("Task Count: 4"), "{dist}");
        for w in &c.workers {
            assert!(
                dist.contains(&format!("port={}", w.port)),
                "{width}: no task on {}:\n{dist}",
                w.name
            );
        }
        let per_shard = dist
            .split("->  Task")
            .skip(1)
            .filter(|task| {
                task.contains("Aggregate")
                    && !task.contains("Gather")
                    && task.contains("metricagg_stats_by_bin_packed(samples.ts, samples.value")
            })
            .count();
        assert_eq!(
            per_shard, 4,
            "{width}: not one serial aggregate in every shard:\n{dist}"
        );
    }
    c.run_once().await;
    c.assert_equals_oracle("after the pushed-down run").await;
}

/// Fleet-wide ad-hoc percentiles through the coordinator, across both
/// workers: p80 and metricagg_stats equal percentile_cont bit for bit, per
/// metric and per metric and minute. Per server, Citus runs them wholly on
/// the workers; across servers the workers aggregate partially and the
/// coordinator combines (their state type, metricagg_values, has text I/O,
/// which Citus needs to ship partial states; see docs/citus.md).
#[tokio::test]
async fn fleet_wide_percentiles_equal_percentile_cont() {
    let c = Citus::new().await;
    let servers = c.servers_on_each(3).await;
    insert_samples(&c.p.ingest, &servers, T0, 1800, 7).await;
    let per_metric = texts(
        &c.p.raw,
        "SELECT format('%s: p80 %s stats %s oracle %s %s %s %s %s', metric_type, p80(value), metricagg_stats(value),
                       percentile_cont(0.8) WITHIN GROUP (ORDER BY value), count(*), avg(value), min(value), max(value))
         FROM metricagg.samples GROUP BY metric_type
         HAVING float8send(p80(value)) IS DISTINCT FROM float8send(percentile_cont(0.8) WITHIN GROUP (ORDER BY value))
             OR float8send((metricagg_stats(value)).p80) IS DISTINCT FROM float8send(percentile_cont(0.8) WITHIN GROUP (ORDER BY value))
             OR (metricagg_stats(value)).count IS DISTINCT FROM count(*)
             OR float8send((metricagg_stats(value)).min) IS DISTINCT FROM float8send(min(value))
             OR float8send((metricagg_stats(value)).max) IS DISTINCT FROM float8send(max(value))
             OR abs((metricagg_stats(value)).avg - avg(value)) > 1e-12 * abs(avg(value))",
    )
    .await;
    assert!(per_metric.is_empty(), "{per_metric:?}");
    let groups = c
        .p
        .raw
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE float8send(p) IS DISTINCT FROM float8send(o))
             FROM (SELECT p80(value) AS p, percentile_cont(0.8) WITHIN GROUP (ORDER BY value) AS o
                   FROM metricagg.samples GROUP BY metric_type, metricagg_bin(ts, '1 minute')) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(groups.get::<_, i64>(0), 4 * 30, "metric-minutes");
    assert_eq!(groups.get::<_, i64>(1), 0, "fleet-wide minutes disagree");
    // Per server and metric the whole aggregate runs in the shards.
    let plan = texts(
        &c.p.raw,
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT server_id, metric_type, p80(value), metricagg_stats(value)
         FROM metricagg.samples GROUP BY 1, 2",
    )
    .await
    .join("\n");
    let task = plan
        .lines()
        .find_map(|l| l.trim().strip_prefix("Query: "))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        task.contains("p80(value)")
            && task.contains("metricagg_stats(value)")
            && task.contains("GROUP BY"),
        "per-server aggregation not pushed down:\n{plan}"
    );
    // Fleet-wide (per metric, across servers): every worker aggregates its
    // shards partially (pg_metricagg's varlena state crosses as text) and the
    // coordinator combines the partial states, for all three aggregates.
    let plan = texts(
        &c.p.raw,
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT metric_type, p80(value), metricagg_stats(value),
                metricagg_percentile(value, 0.99) FROM metricagg.samples GROUP BY 1",
    )
    .await
    .join("\n");
    let task = plan
        .lines()
        .find_map(|l| l.trim().strip_prefix("Query: "))
        .unwrap_or_else(|| panic!("{plan}"));
    for agg in ["p80(", "metricagg_stats(", "metricagg_percentile("] {
        assert!(
            task.contains("worker_partial_agg") && task.contains(agg),
            "{agg}: not aggregated partially on the workers:\n{plan}"
        );
    }
    assert!(
        plan.matches("coord_combine_agg").count() >= 3,
        "partial states not combined on the coordinator:\n{plan}"
    );
    c.run_once().await;
    c.assert_equals_oracle("fleet-wide").await;
}

/// Retention on the distributed day partitions: nothing unprocessed is
/// dropped; once processed, the day goes on every worker, its servers (from
/// both workers) are recorded as retired, and a late row for it is refused.
#[tokio::test]
async fn retention_drops_distributed_partitions_once_processed() {
    let c = Citus::new().await;
    let old: i64 =
        c.p.raw
            .query_one(
                "SELECT extract(epoch FROM date_trunc('day', now() - interval '30 days'))::bigint",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    c.p.ingest
        .execute(
            "SELECT metricagg.ensure_partitions(to_timestamp($1::float8), to_timestamp($1::float8) + interval '1 day')",
            &[&(old as f64)],
        )
        .await
        .unwrap();
    let a = c.servers_on(&c.workers[0], 1).await[0];
    let b = c.servers_on(&c.workers[1], 1).await[0];
    insert_samples(&c.p.ingest, &[a, b], old, 600, 1).await;
    let drop = "SELECT coalesce(array_agg(d), '{}') FROM metricagg.drop_old_partitions('7 days') d";
    let dropped: Vec<String> = c.p.raw.query_one(drop, &[]).await.unwrap().get(0);
    assert!(dropped.is_empty(), "dropped unprocessed {dropped:?}");
    c.run_once().await;
    c.run_once().await; // prunes what the first run consumed

    // A late COPY into that day is still loading when retention runs: a COPY
    // through the coordinator locks only the parent table there, and
    // retention must still wait for it, then see its log entry and keep the day.
    let late_ts: String =
        c.p.raw
            .query_one(
                "SELECT to_timestamp($1::float8 + 700)::text",
                &[&(old as f64)],
            )
            .await
            .unwrap()
            .get(0);
    let mut loader = c.p.ingest_client().await;
    let tx = loader.transaction().await.unwrap();
    let sink = tx
        .copy_in("COPY metricagg.samples (server_id, metric_type, ts, value) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(format!("srv-{b}\tcpu\t{late_ts}\t1\n")))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);
    let admin = connect(&with_db(&env("RAW_DATABASE_URL"), &c.p.raw_db)).await;
    let retention = tokio::spawn(async move {
        admin
            .query_one(drop, &[])
            .await
            .map(|r| r.get::<_, Vec<String>>(0))
    });
    wait_until(
        &c.p.raw,
        "SELECT count(*) > 0 FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%drop_old_partitions%'",
        "retention to wait for the COPY in flight",
    )
    .await;
    tx.commit().await.unwrap();
    let dropped = retention.await.unwrap().unwrap();
    assert!(
        dropped.is_empty(),
        "dropped the day a COPY was loading: {dropped:?}"
    );
    c.run_once().await;
    c.assert_equals_oracle("before retention").await;
    c.run_once().await;
    let dropped: Vec<String> = c.p.raw.query_one(drop, &[]).await.unwrap().get(0);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(c.p.raw_count().await, 0);
    for w in &c.workers {
        let left = count(
            &w.raw,
            "SELECT count(*) FROM pg_class WHERE relname ~ '^samples_[0-9]{8}_[0-9]+$'",
        )
        .await;
        assert_eq!(left, 0, "{}: shards of the dropped day remain", w.name);
    }
    let retired = texts(
        &c.p.raw,
        "SELECT server_id FROM metricagg.retired ORDER BY 1",
    )
    .await;
    let mut expect = vec![format!("srv-{a}"), format!("srv-{b}")];
    expect.sort();
    assert_eq!(retired, expect);
    let err =
        c.p.ingest
            .execute(
                "INSERT INTO metricagg.samples VALUES ($1, 'cpu', to_timestamp($2::float8 + 5), 1)",
                &[&format!("srv-{b}"), &(old as f64)],
            )
            .await
            .unwrap_err();
    assert!(
        db_message(&err).contains("retention already dropped"),
        "{}",
        db_message(&err)
    );
    assert_eq!(c.log_entries().await, 0);
}

/// Moving a shard (with everything co-located: its change-log entries too)
/// to the other worker keeps exactly-once: entries written on the old
/// worker keep its node and transaction ids and are consumed by its
/// watermark; later ones carry the new worker's.
#[tokio::test]
async fn a_shard_move_keeps_every_change_exactly_once() {
    let c = Citus::new().await;
    let (from, to) = (&c.workers[0], &c.workers[1]);
    let s = c.servers_on(from, 1).await[0];
    let server = format!("srv-{s}");
    insert_samples(&c.p.ingest, &[s], T0, 600, 1).await;
    c.run_once().await;
    insert_samples(&c.p.ingest, &[s], T0 + 600, 600, 2).await;
    c.wait_for_horizons().await;
    c.p.raw
        .execute(
            "SELECT citus_move_shard_placement(
                 get_shard_id_for_distribution_column('metricagg.samples', $1::text),
                 (SELECT nodeid FROM pg_dist_node WHERE groupid = $2),
                 (SELECT nodeid FROM pg_dist_node WHERE groupid = $3),
                 transfer_mode => 'block_writes')",
            &[&server, &from.node, &to.node],
        )
        .await
        .unwrap();
    let placed: i32 = c
        .p
        .raw
        .query_one(
            "SELECT groupid FROM pg_dist_placement
             WHERE shardid = get_shard_id_for_distribution_column('metricagg.change_log', $1::text)",
            &[&server],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(placed, to.node, "the change log did not move with samples");
    insert_samples(&c.p.ingest, &[s], T0 + 1200, 600, 3).await;
    let nodes = texts(
        &c.p.raw,
        "SELECT DISTINCT node::text FROM metricagg.change_log ORDER BY 1",
    )
    .await;
    let mut expect = vec![from.node.to_string(), to.node.to_string()];
    expect.sort();
    assert_eq!(nodes, expect, "entries of both workers, all on the new one");
    let summary = c.run_once().await;
    assert!(summary.contains("2 change-log entries"), "{summary}");
    c.assert_equals_oracle("after the shard move").await;
    c.run_once().await;
    assert_eq!(c.log_entries().await, 0, "moved entries were not pruned");
}
