//! Harness for the Citus tests (`make test-citus`): a scratch raw database
//! distributed over the local Citus cluster of `scripts/citus.sh` (a
//! coordinator and two workers), an analytics database in the coordinator's
//! instance whose FDW reads the raw side through the coordinator, and direct
//! connections to each worker. Both databases are dropped on every node when
//! the test ends, passed or failed (each Citus database keeps a maintenance
//! daemon running on every node).
//!
//! The URLs come from `make citus-env` (`make test-citus` exports them).

use std::path::PathBuf;
use std::process::Command;

use tokio_postgres::Client;

use crate::{connect, count, env, texts, unique, wait_for_horizon, with_db, Pipeline};

/// Shards per distributed table in the test databases: two per worker keeps
/// their DDL quick; the job cannot tell the difference.
const TEST_SHARDS: &str = "4";

fn citus_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/citus.sh")
}

/// Runs `scripts/citus.sh ARGS` and returns its standard output.
pub fn citus(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(citus_sh())
        .args(args)
        .env("METRICAGG_CITUS_SHARDS", TEST_SHARDS)
        .output()
        .expect("run scripts/citus.sh");
    assert!(
        out.status.success(),
        "scripts/citus.sh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Databases that earlier test processes left behind (killed before their
/// `Drop` ran) are dropped once per process: a transaction they left
/// prepared would hold back a worker's horizon for every test after.
fn drop_leftovers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mine = format!("_{}_", std::process::id());
        let mut names = std::collections::BTreeSet::new();
        for node in ["coordinator", "worker1", "worker2"] {
            let listed = citus(&[
                "psql",
                node,
                "postgres",
                "-Atc",
                r"SELECT datname FROM pg_database WHERE datname ~ '^t_c(raw|an)_[0-9]+_[0-9]+$'",
            ]);
            names.extend(listed.lines().map(str::to_string));
        }
        for name in names.iter().filter(|n| !n.contains(&mine)) {
            citus(&["drop-db", name]);
        }
    });
}

/// `url` with its port replaced.
fn with_port(url: &str, port: u16) -> String {
    let at = url.rfind('@').expect("URL has credentials");
    let slash = at + url[at..].find('/').expect("URL has a database");
    format!("{}@127.0.0.1:{port}{}", &url[..at], &url[slash..])
}

fn port_of(url: &str) -> u16 {
    let at = url.rfind('@').expect("URL has credentials");
    let host_port = &url[at + 1..at + url[at..].find('/').expect("URL has a database")];
    host_port
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("URL has a port")
}

/// A worker of the cluster: its name in `scripts/citus.sh`, its Citus group
/// id (the `node` of the change-log entries written there) and an
/// administrator connection to its copy of the raw database.
pub struct Worker {
    pub name: &'static str,
    pub node: i32,
    pub port: u16,
    pub raw: Client,
}

/// The pipeline with its raw side on Citus. `p` is the ordinary harness
/// (its `raw` and `ingest` connections go to the coordinator).
pub struct Citus {
    pub p: Pipeline,
    pub workers: Vec<Worker>,
}

impl Citus {
    pub async fn new() -> Citus {
        drop_leftovers();
        let raw_db = unique("t_craw");
        let analytics_db = unique("t_can");
        let raw_url = citus(&["create-db", "raw", &raw_db]);
        let analytics_url = citus(&["create-db", "analytics", &analytics_db, &raw_db]);
        let base = port_of(&raw_url);
        let mut workers = Vec::new();
        for (i, name) in ["worker1", "worker2"].into_iter().enumerate() {
            let port = base + 1 + i as u16;
            let raw = connect(&with_port(&raw_url, port)).await;
            let node: i32 = raw
                .query_one("SELECT metricagg.citus_node()", &[])
                .await
                .unwrap()
                .get(0);
            workers.push(Worker {
                name,
                node,
                port,
                raw,
            });
        }
        let p = Pipeline {
            raw: connect(&raw_url).await,
            analytics: connect(&analytics_url).await,
            ingest: connect(&with_db(&env("INGEST_DATABASE_URL"), &raw_db)).await,
            job: connect(&with_db(&env("JOB_DATABASE_URL"), &analytics_db)).await,
            raw_db,
            analytics_db,
        };
        Citus { p, workers }
    }

    /// `metricagg_run_once()` once every transaction that began on any node
    /// before this call has ended.
    pub async fn run_once(&self) -> String {
        self.wait_for_horizons().await;
        self.p.run_once_now().await
    }

    /// [`wait_for_horizon`] on the coordinator and on every worker.
    pub async fn wait_for_horizons(&self) {
        wait_for_horizon(&self.p.raw).await;
        for w in &self.workers {
            wait_for_horizon(&w.raw).await;
        }
    }

    /// `n` server numbers (srv-N) whose shard is placed on `worker`.
    pub async fn servers_on(&self, worker: &Worker, n: i64) -> Vec<u32> {
        self.p
            .raw
            .query(
                "SELECT s FROM generate_series(1, 10000) s
                 JOIN pg_dist_placement p
                   ON p.shardid = get_shard_id_for_distribution_column('metricagg.samples', 'srv-' || s)
                 WHERE p.groupid = $1 ORDER BY s LIMIT $2",
                &[&worker.node, &n],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i32>(0) as u32)
            .collect()
    }

    /// `n` servers on each worker, the first worker's first.
    pub async fn servers_on_each(&self, n: i64) -> Vec<u32> {
        let mut all = Vec::new();
        for w in &self.workers {
            all.extend(self.servers_on(w, n).await);
        }
        all
    }

    /// The job's watermark for a node ("0" before any run).
    pub async fn done_below(&self, node: i32) -> String {
        self.p
            .analytics
            .query_one(
                "SELECT coalesce((SELECT done_below::text FROM metricagg.job_watermarks WHERE node = $1), '0')",
                &[&node],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Servers that have bins, sorted.
    pub async fn servers_with_bins(&self) -> Vec<String> {
        texts(
            &self.p.analytics,
            "SELECT DISTINCT server_id FROM metricagg.bins ORDER BY 1",
        )
        .await
    }

    /// Change-log entries still in the raw log (all nodes).
    pub async fn log_entries(&self) -> i64 {
        count(&self.p.raw, "SELECT count(*) FROM metricagg.change_log").await
    }

    /// The bins equal a from-scratch recompute (`ORACLE_DIFF`), and exist.
    pub async fn assert_equals_oracle(&self, context: &str) {
        let diff = self.p.oracle_mismatches().await;
        assert!(
            diff.is_empty(),
            "{context}: bins differ from the oracle:\n{}",
            diff.join("\n")
        );
        assert!(self.p.bin_count().await > 0, "{context}: no bins at all");
    }

    /// Stops a worker (`fast`: sessions are cut), or starts it again.
    pub fn stop_worker(&self, w: &Worker) {
        citus(&["node-stop", w.name]);
    }

    /// Also reconnects the coordinator's administrator session: its cached
    /// connection to the restarted worker is dead, and some Citus functions
    /// (recover_prepared_transactions) fail on it instead of reconnecting.
    pub async fn start_worker(&mut self, i: usize) {
        citus(&["node-start", self.workers[i].name]);
        let url = with_db(&env("RAW_DATABASE_URL"), &self.p.raw_db);
        self.workers[i].raw = connect(&with_port(&url, self.workers[i].port)).await;
        self.p.raw = connect(&url).await;
    }
}

impl Drop for Citus {
    fn drop(&mut self) {
        // Stopped workers come back first, or their copies would stay.
        let _ = Command::new("bash")
            .arg(citus_sh())
            .args(["start-workers"])
            .output();
        for db in [&self.p.analytics_db, &self.p.raw_db] {
            let _ = Command::new("bash")
                .arg(citus_sh())
                .args(["drop-db", db])
                .output();
        }
    }
}
