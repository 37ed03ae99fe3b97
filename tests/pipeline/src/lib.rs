//! Harness for the pipeline tests: fresh databases in the embedded cluster
//! (`scripts/db.sh create-db`), connections as each role, data loading, and
//! the from-scratch oracle comparison.
//!
//! The tests need the cluster: `make test-pipeline` starts it and exports the
//! URLs. Without them the tests fail with a message; they never skip.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::{Client, GenericClient, NoTls};

/// The value of an environment variable the harness needs.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run these tests with `make test-pipeline` (it starts the cluster and exports the URLs)")
    })
}

/// `url` with its database name replaced.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("URL has a database");
    format!("{base}/{db}")
}

/// A database name unique to this process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `scripts/db.sh create-db KIND NAME [RAW]`; returns the admin URL.
pub fn create_db(kind: &str, name: &str, raw: Option<&str>) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/db.sh"))
        .args(["create-db", kind, name]);
    if let Some(raw) = raw {
        cmd.arg(raw);
    }
    let out = cmd.output().expect("run scripts/db.sh");
    assert!(
        out.status.success(),
        "create-db {kind} {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Connects and drives the connection in the background.
pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", redact(url)));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A raw database and an analytics database whose FDW server points at it,
/// with connections as the administrator, the ingest role and the job role.
pub struct Pipeline {
    pub raw_db: String,
    pub analytics_db: String,
    pub raw: Client,
    pub analytics: Client,
    pub ingest: Client,
    pub job: Client,
}

/// Databases this process created for earlier tests. Tests run one at a
/// time; each new pipeline drops those of the tests before it (the last
/// test's stay for inspection). An analytics database on TimescaleDB keeps a
/// background scheduler running, and the server has only so many workers.
static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Drops the databases earlier tests of this process created.
pub async fn drop_earlier_test_databases() {
    let names: Vec<String> = std::mem::take(&mut *CREATED.lock().unwrap());
    if names.is_empty() {
        return;
    }
    let admin = connect(&with_db(&env("RAW_DATABASE_URL"), "postgres")).await;
    for name in names {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .unwrap_or_else(|e| panic!("dropping {name}: {e}"));
    }
}

/// Records a database to drop before the next test's pipeline.
pub fn created(name: &str) {
    CREATED.lock().unwrap().push(name.to_string());
}

impl Pipeline {
    pub async fn new() -> Pipeline {
        drop_earlier_test_databases().await;
        let raw_db = unique("t_raw");
        let analytics_db = unique("t_an");
        created(&analytics_db);
        created(&raw_db);
        let raw_url = create_db("raw", &raw_db, None);
        let analytics_url = create_db("analytics", &analytics_db, Some(&raw_db));
        let analytics = connect(&analytics_url).await;
        assert_bins_engine(&analytics).await;
        Pipeline {
            raw: connect(&raw_url).await,
            analytics,
            ingest: connect(&with_db(&env("INGEST_DATABASE_URL"), &raw_db)).await,
            job: connect(&with_db(&env("JOB_DATABASE_URL"), &analytics_db)).await,
            raw_db,
            analytics_db,
        }
    }

    /// A second connection as the job role.
    pub async fn job_client(&self) -> Client {
        connect(&with_db(&env("JOB_DATABASE_URL"), &self.analytics_db)).await
    }

    /// A second connection as the ingest role.
    pub async fn ingest_client(&self) -> Client {
        connect(&with_db(&env("INGEST_DATABASE_URL"), &self.raw_db)).await
    }

    /// `metricagg_run_once()` as the job role, once every transaction that
    /// began before this call has finished (see [`wait_for_horizon`]).
    pub async fn run_once(&self) -> String {
        wait_for_horizon(&self.raw).await;
        self.run_once_now().await
    }

    /// `metricagg_run_once()` right away, whatever else is running.
    pub async fn run_once_now(&self) -> String {
        self.job
            .query_one("SELECT metricagg_run_once()", &[])
            .await
            .expect("metricagg_run_once")
            .get(0)
    }

    /// The job's watermark for the (single) raw node, "0" before any run.
    pub async fn done_below(&self) -> String {
        done_below(&self.analytics).await
    }

    /// Bins that differ from a from-scratch recompute with PostgreSQL's own
    /// aggregates (`recompute_all_bins`), both ways. Empty when equal.
    pub async fn oracle_mismatches(&self) -> Vec<String> {
        texts(&self.analytics, ORACLE_DIFF).await
    }

    pub async fn bin_count(&self) -> i64 {
        count(&self.analytics, "SELECT count(*) FROM metricagg.bins").await
    }

    pub async fn raw_count(&self) -> i64 {
        count(&self.raw, "SELECT count(*) FROM metricagg.samples").await
    }
}

/// Starts `metricagg_run_once()` on `job` (a job-role connection of its
/// own) in the background: the backend's pid, to kill, and the run.
pub async fn start_run(
    job: Client,
) -> (
    i32,
    tokio::task::JoinHandle<Result<String, tokio_postgres::Error>>,
) {
    let pid: i32 = job
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid()")
        .get(0);
    let run = tokio::spawn(async move {
        job.query_one("SELECT metricagg_run_once()", &[])
            .await
            .map(|r| r.get(0))
    });
    (pid, run)
}

/// The bins equal the from-scratch recompute, and there are some.
pub async fn assert_equals_oracle(p: &Pipeline, context: &str) {
    assert_bins_equal_oracle(&p.analytics, context).await;
}

/// The bins of the analytics database `analytics` (the administrator's
/// connection) equal the from-scratch recompute, and there are some.
pub async fn assert_bins_equal_oracle(analytics: &Client, context: &str) {
    let diff = texts(analytics, ORACLE_DIFF).await;
    assert!(
        diff.is_empty(),
        "{context}: bins differ from the oracle:\n{}",
        diff.join("\n")
    );
    assert!(
        count(analytics, "SELECT count(*) FROM metricagg.bins").await > 0,
        "{context}: no bins at all"
    );
}

/// The job's watermark for the (single) raw node of an analytics database,
/// "0" before any run.
pub async fn done_below(analytics: &Client) -> String {
    text(
        analytics,
        "SELECT coalesce((SELECT done_below::text FROM metricagg.job_watermarks WHERE node = 0), '0')",
    )
    .await
}

/// How the analytics database stores bins: timescaledb or native.
pub async fn bins_engine(analytics: &Client) -> String {
    text(analytics, "SELECT metricagg.bins_engine()").await
}

/// The first column of every row of a query without parameters, as text.
pub async fn texts(client: &impl GenericClient, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The single text a query without parameters returns.
pub async fn text(client: &impl GenericClient, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// With `METRICAGG_BINS_ENGINE` set (the Makefile sets it for each pass),
/// the analytics database really stores bins that way: a pass meant for
/// TimescaleDB must not silently run on native partitions.
pub async fn assert_bins_engine(analytics: &Client) {
    let Ok(want) = std::env::var("METRICAGG_BINS_ENGINE") else {
        return;
    };
    if want == "auto" {
        return;
    }
    let got = bins_engine(analytics).await;
    assert_eq!(
        got, want,
        "METRICAGG_BINS_ENGINE={want}, but bins are stored as {got}"
    );
}

/// The single bigint a query without parameters returns (a count).
pub async fn count(client: &impl GenericClient, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Waits until every transaction of the cluster that was running (or had
/// already taken an xid) when this is called has finished, so that a run
/// started afterwards has a horizon above all of this test's writes. The job
/// only consumes changes below the cluster-wide snapshot xmin: under other
/// load (another test, a seeder) the newest changes wait for the next run.
pub async fn wait_for_horizon(raw: &Client) {
    let target: String = raw
        .query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let done: bool = raw
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8",
                &[&target],
            )
            .await
            .unwrap()
            .get(0);
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a transaction older than xid {target} is still running after 120 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Rows of bins vs oracle that disagree: counts, min, max and p80 exactly
/// (bit for bit), avg within 1e-12 relative.
pub const ORACLE_DIFF: &str = "
    SELECT format('%s %s %s %s: bins=%s oracle=%s', server_id, metric_type, width, ts,
                  ROW(b.count, b.avg, b.min, b.max, b.p80), ROW(o.count, o.avg, o.min, o.max, o.p80))
    FROM metricagg.bins b
    FULL JOIN metricagg.recompute_all_bins() o USING (server_id, metric_type, width, ts)
    WHERE (b.count IS DISTINCT FROM o.count
       OR float8send(b.min) IS DISTINCT FROM float8send(o.min)
       OR float8send(b.max) IS DISTINCT FROM float8send(o.max)
       OR float8send(b.p80) IS DISTINCT FROM float8send(o.p80)
       OR (b.avg = o.avg OR abs(b.avg - o.avg) <= 1e-12 * abs(o.avg)) IS NOT TRUE)
    ORDER BY 1 LIMIT 20";

/// [`ORACLE_DIFF`] leaving out the bins `excluded` (a predicate on
/// server_id, metric_type, width and ts) selects: bins the oracle cannot
/// speak for, such as those of days whose raw rows retention dropped.
pub fn oracle_diff_excluding(excluded: &str) -> String {
    ORACLE_DIFF.replace(
        "    WHERE (b.count",
        &format!("    WHERE NOT ({excluded}) AND (b.count"),
    )
}

/// Inserts, as the given client (normally the ingest role), one statement of
/// samples for `servers` x 4 metrics, one per second over
/// [start_epoch, start_epoch + seconds). Values are deterministic in
/// (server, metric, second, salt).
pub async fn insert_samples(
    client: &impl GenericClient,
    servers: &[u32],
    start_epoch: i64,
    seconds: i64,
    salt: i64,
) {
    let ids: Vec<String> = servers.iter().map(|s| format!("srv-{s}")).collect();
    client
        .execute(
            "INSERT INTO metricagg.samples (server_id, metric_type, ts, value)
             SELECT s, m, to_timestamp($2::float8 + t),
                    (hashtextextended(s || m || t::text, $4) & 1048575) / 1000.0
             FROM unnest($1::text[]) s,
                  unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m,
                  generate_series(0, $3::bigint - 1) t",
            &[&ids, &(start_epoch as f64), &seconds, &salt],
        )
        .await
        .expect("insert samples");
}

/// 2025-11-15 00:00:00 UTC, the tests' time origin.
pub const T0: i64 = 1_763_164_800;

/// Small deterministic PRNG for interleavings.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// A PostgreSQL cluster of a test's own (`scripts/db.sh` with its own
/// METRICAGG_HOME and port, the main cluster's passwords), for tests that
/// stop and kill servers without disturbing anything else.
pub struct OwnCluster {
    pub name: String,
    pub home: std::path::PathBuf,
    pub port: u16,
}

impl OwnCluster {
    /// Starts (initialising the first time) the cluster `name` on `port`.
    pub fn start(name: &str, port: u16) -> OwnCluster {
        let c = OwnCluster {
            name: name.to_string(),
            home: repo_root().join(".metricagg").join(name),
            port,
        };
        c.db_sh(&["start"]);
        c
    }

    fn secrets() -> std::path::PathBuf {
        match std::env::var("METRICAGG_SECRETS") {
            Ok(s) => s.into(),
            Err(_) => std::env::var("METRICAGG_HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|_| repo_root().join(".metricagg"))
                .join("secrets.env"),
        }
    }

    fn run_db_sh(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(repo_root().join("scripts/db.sh"))
            .args(args)
            .env("METRICAGG_HOME", &self.home)
            .env("METRICAGG_PORT", self.port.to_string())
            .env("METRICAGG_SECRETS", Self::secrets())
            .env("METRICAGG_NO_INSTALL", "1")
            .output()
            .expect("run scripts/db.sh")
    }

    /// Runs `scripts/db.sh ARGS` against this cluster; its stdout.
    pub fn db_sh(&self, args: &[&str]) -> String {
        let out = self.run_db_sh(args);
        assert!(
            out.status.success(),
            "db.sh {args:?} on {} failed:\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// The postmaster's pid.
    pub fn postmaster_pid(&self) -> i32 {
        let pidfile = self.home.join("data/postmaster.pid");
        std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()))
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid in postmaster.pid")
    }

    /// `kill -9` of the postmaster: a crash, not a shutdown.
    pub fn kill_postmaster(&self) {
        kill9(self.postmaster_pid());
    }

    /// Starts it again (after a crash: recovery), retrying while the killed
    /// server's backends are still on their way out.
    pub fn restart(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = self.run_db_sh(&["start"]);
            if out.status.success() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not come back: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// `url` (one of the main cluster's role URLs) for this cluster and `db`.
    pub fn url(&self, url: &str, db: &str) -> String {
        let (head, tail) = url.rsplit_once('@').expect("user@host");
        let host = tail.split(':').next().expect("host");
        format!("{head}@{host}:{}/{db}", self.port)
    }
}

/// SIGKILL to a process (a postmaster or a backend of ours).
pub fn kill9(pid: i32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid} failed");
}
