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

impl Pipeline {
    pub async fn new() -> Pipeline {
        let raw_db = unique("t_raw");
        let analytics_db = unique("t_an");
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
        self.analytics
            .query_one(
                "SELECT coalesce((SELECT done_below::text FROM metricagg.job_watermarks WHERE node = 0), '0')",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Bins that differ from a from-scratch recompute with PostgreSQL's own
    /// aggregates (`recompute_all_bins`), both ways. Empty when equal.
    pub async fn oracle_mismatches(&self) -> Vec<String> {
        self.analytics
            .query(ORACLE_DIFF, &[])
            .await
            .expect("oracle comparison")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    }

    pub async fn bin_count(&self) -> i64 {
        count(&self.analytics, "SELECT count(*) FROM metricagg.bins").await
    }

    pub async fn raw_count(&self) -> i64 {
        count(&self.raw, "SELECT count(*) FROM metricagg.samples").await
    }
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
    let got: String = analytics
        .query_one("SELECT metricagg.bins_engine()", &[])
        .await
        .expect("metricagg.bins_engine()")
        .get(0);
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
    WHERE b.count IS DISTINCT FROM o.count
       OR float8send(b.min) IS DISTINCT FROM float8send(o.min)
       OR float8send(b.max) IS DISTINCT FROM float8send(o.max)
       OR float8send(b.p80) IS DISTINCT FROM float8send(o.p80)
       OR (b.avg = o.avg OR abs(b.avg - o.avg) <= 1e-12 * abs(o.avg)) IS NOT TRUE
    ORDER BY 1 LIMIT 20";

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
