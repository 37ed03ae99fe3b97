//! Fault injection (issue 12): the raw server killed (`kill -9` of its
//! postmaster) in the middle of a run, the raw server down between runs, the
//! FDW backend terminated mid-run, and the job's own backend killed in the
//! analytics server. Each run that is hit fails cleanly and says why; after
//! recovery the bins equal the from-scratch recompute, nothing lost or
//! doubled. Raw and analytics are two clusters of this test's own
//! (.metricagg/faults-raw and .metricagg/faults-an), so killing them
//! disturbs nothing else.

use std::sync::OnceLock;
use std::time::Duration;

use metricagg_pipeline_tests::*;
use tokio_postgres::Client;

const RAW_PORT: u16 = 5471;
const ANALYTICS_PORT: u16 = 5472;

struct Clusters {
    raw: OwnCluster,
    analytics: OwnCluster,
}

fn clusters() -> &'static Clusters {
    static C: OnceLock<Clusters> = OnceLock::new();
    C.get_or_init(|| Clusters {
        raw: OwnCluster::start("faults-raw", RAW_PORT),
        analytics: OwnCluster::start("faults-an", ANALYTICS_PORT),
    })
}

/// A raw database in the raw cluster and an analytics database in the
/// other, its FDW server pointing across.
struct Split {
    raw: Client,
    ingest: Client,
    analytics: Client,
    raw_db: String,
    analytics_db: String,
}

impl Split {
    async fn new() -> Split {
        let c = clusters();
        let raw_db = unique("f_raw");
        let analytics_db = unique("f_an");
        let raw_url = c.raw.db_sh(&["create-db", "raw", &raw_db]);
        let an_url = c.analytics.db_sh(&[
            "create-db",
            "analytics",
            &analytics_db,
            &raw_db,
            &RAW_PORT.to_string(),
        ]);
        let analytics = connect(an_url.trim()).await;
        assert_bins_engine(&analytics).await;
        Split {
            raw: connect(raw_url.trim()).await,
            ingest: connect(&c.raw.url(&env("INGEST_DATABASE_URL"), &raw_db)).await,
            analytics,
            raw_db,
            analytics_db,
        }
    }

    async fn reconnect(&mut self) {
        let c = clusters();
        self.raw = connect(&c.raw.url(&env("RAW_DATABASE_URL"), &self.raw_db)).await;
        self.ingest = connect(&c.raw.url(&env("INGEST_DATABASE_URL"), &self.raw_db)).await;
        self.analytics = connect(
            &c.analytics
                .url(&env("ANALYTICS_DATABASE_URL"), &self.analytics_db),
        )
        .await;
    }

    async fn job(&self) -> Client {
        connect(
            &clusters()
                .analytics
                .url(&env("JOB_DATABASE_URL"), &self.analytics_db),
        )
        .await
    }

    async fn done_below(&self) -> String {
        done_below(&self.analytics).await
    }

    async fn run_once(&self) -> String {
        wait_for_horizon(&self.raw).await;
        self.job()
            .await
            .query_one("SELECT metricagg_run_once()", &[])
            .await
            .expect("metricagg_run_once")
            .get(0)
    }

    async fn assert_equals_oracle(&self, context: &str) {
        let diff: Vec<String> = self
            .analytics
            .query(ORACLE_DIFF, &[])
            .await
            .expect("oracle comparison")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            diff.is_empty(),
            "{context}: bins differ from the oracle:\n{}",
            diff.join("\n")
        );
        assert!(
            count(&self.analytics, "SELECT count(*) FROM metricagg.bins").await > 0,
            "{context}: no bins at all"
        );
    }
}

/// The message of a failed run, with its detail.
fn failure(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.message(), db.detail().unwrap_or_default()),
        None => e.to_string(),
    }
}

/// Starts a run on its own connection and, after `delay`, does `fault`;
/// returns whether the run failed (it may have finished first).
async fn run_and_fault<F: std::future::Future<Output = ()>>(
    s: &Split,
    delay: Duration,
    fault: F,
) -> Result<String, String> {
    wait_for_horizon(&s.raw).await;
    let (_, run) = start_run(s.job().await).await;
    tokio::time::sleep(delay).await;
    fault.await;
    run.await.unwrap().map_err(|e| failure(&e))
}

/// Two hours of 1 Hz samples for 20 servers (576,000 rows): a run that
/// takes long enough to be hit.
async fn load_a_lot(s: &Split, salt: i64) {
    insert_samples(&s.ingest, &(1..=20).collect::<Vec<_>>(), T0, 2 * 3600, salt).await;
}

#[tokio::test]
async fn raw_server_killed_in_the_middle_of_a_run() {
    let mut s = Split::new().await;
    load_a_lot(&s, 1).await;
    let before = s.done_below().await;
    let mut hit = false;
    for delay_ms in [200u64, 100, 400, 50] {
        let r = run_and_fault(&s, Duration::from_millis(delay_ms), async {
            clusters().raw.kill_postmaster();
        })
        .await;
        clusters().raw.restart();
        s.reconnect().await;
        match r {
            Ok(summary) => eprintln!("run finished before the kill ({delay_ms} ms): {summary}"),
            Err(msg) => {
                hit = true;
                assert!(
                    msg.contains("metricagg_raw")
                        || msg.contains("connection")
                        || msg.contains("terminat"),
                    "unclear error: {msg}"
                );
                assert!(!msg.contains("password"), "error leaks secrets: {msg}");
                assert_eq!(
                    s.done_below().await,
                    before,
                    "a failed run moved the watermark"
                );
                break;
            }
        }
    }
    assert!(
        hit,
        "no run was hit by the kill: the test did not exercise a crash"
    );
    // After recovery: more data arrives, and the next run catches up.
    insert_samples(&s.ingest, &[3, 21], T0 + 100, 600, 2).await;
    let summary = s.run_once().await;
    assert!(summary.contains("change-log entries"), "{summary}");
    s.assert_equals_oracle("after the raw server was killed mid-run")
        .await;
}

#[tokio::test]
async fn raw_server_down_between_runs() {
    let mut s = Split::new().await;
    insert_samples(&s.ingest, &[1, 2], T0, 600, 1).await;
    wait_for_horizon(&s.raw).await;
    s.run_once().await;
    insert_samples(&s.ingest, &[1], T0 + 600, 600, 2).await;
    wait_for_horizon(&s.raw).await;
    let before = s.done_below().await;
    clusters().raw.db_sh(&["stop"]);
    let err = s
        .job()
        .await
        .query_one("SELECT metricagg_run_once()", &[])
        .await
        .unwrap_err();
    let msg = failure(&err);
    assert!(
        msg.contains("could not connect to server \"metricagg_raw\""),
        "unclear error: {msg}"
    );
    assert!(!msg.contains("password"), "error leaks secrets: {msg}");
    assert_eq!(s.done_below().await, before);
    clusters().raw.restart();
    s.reconnect().await;
    let summary = s.run_once().await;
    assert!(summary.contains("1 change-log entries"), "{summary}");
    s.assert_equals_oracle("after the raw server came back")
        .await;
}

#[tokio::test]
async fn fdw_backend_terminated_in_the_middle_of_a_run() {
    let s = Split::new().await;
    load_a_lot(&s, 3).await;
    let before = s.done_below().await;
    let raw = &s.raw;
    let mut hit = false;
    for delay_ms in [200u64, 100, 400, 50] {
        let r = run_and_fault(&s, Duration::from_millis(delay_ms), async {
            raw.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE usename = 'metricagg_job' AND application_name = 'postgres_fdw' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        })
        .await;
        if let Err(msg) = r {
            hit = true;
            assert!(
                msg.contains("metricagg_raw")
                    || msg.contains("terminat")
                    || msg.contains("connection"),
                "unclear error: {msg}"
            );
            assert_eq!(s.done_below().await, before);
            break;
        }
    }
    assert!(hit, "no run was hit: the test did not exercise the fault");
    s.run_once().await;
    s.assert_equals_oracle("after the FDW backend was terminated")
        .await;
}

#[tokio::test]
async fn job_backend_killed_in_the_analytics_server() {
    let mut s = Split::new().await;
    load_a_lot(&s, 4).await;
    wait_for_horizon(&s.raw).await;
    let before = s.done_below().await;
    let mut hit = false;
    for delay_ms in [200u64, 100, 400, 50] {
        let (pid, run) = start_run(s.job().await).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        kill9(pid); // the analytics server resets every session and recovers
        let r = run.await.unwrap();
        clusters().analytics.restart();
        s.reconnect().await;
        if r.is_err() {
            hit = true;
            assert_eq!(
                s.done_below().await,
                before,
                "a killed run moved the watermark"
            );
            break;
        }
    }
    assert!(hit, "no run was hit: the test did not exercise a crash");
    s.run_once().await;
    // Nothing doubled: bins are recomputed, never added to.
    s.assert_equals_oracle("after the job's backend was killed")
        .await;
}
