//! Real loads into a real PostgreSQL cluster (the embedded one of
//! `scripts/db.sh`). Each test creates its own database with the complete raw
//! schema (`scripts/db.sh create-db raw NAME`) and drops it at the end.
//!
//! These tests FAIL when the database environment is missing: run them with
//! `make test-seeder`, which starts the cluster and exports the URLs.

use seeder::anomaly::Label;
use seeder::gen::{GenConfig, Generator, VecSink};
use seeder::model::Metric;
use seeder::timefmt::{format_ts, parse_rfc3339};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_url(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the metricagg cluster. \
             Run `make test-seeder` (it runs `scripts/db.sh start` and exports the URLs), \
             or `make db-start && eval \"$(make -s db-env)\"` first."
        )
    })
}

/// Replaces the database name at the end of a URL.
fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("URL with a database");
    format!("{base}/{db}")
}

struct TestDb {
    name: String,
    admin: Client,
    ingest_url: String,
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl TestDb {
    async fn new(tag: &str) -> TestDb {
        let ingest = env_url("INGEST_DATABASE_URL");
        env_url("RAW_DATABASE_URL");
        let name = format!("seeder_t_{tag}_{}", std::process::id());
        let out = Command::new("bash")
            .arg(root().join("scripts/db.sh"))
            .args(["create-db", "raw", &name])
            .output()
            .expect("run scripts/db.sh");
        assert!(
            out.status.success(),
            "scripts/db.sh create-db raw {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admin_url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        TestDb {
            admin: connect(&admin_url).await,
            ingest_url: with_db(&ingest, &name),
            name,
        }
    }

    async fn drop_db(self) {
        drop(self.admin);
        let admin = connect(&env_url("RAW_DATABASE_URL")).await;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop the test database");
    }

    async fn count(&self, sql: &str) -> i64 {
        self.admin.query_one(sql, &[]).await.expect(sql).get(0)
    }

    fn seeder(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_seeder"));
        c.args(args).env("INGEST_DATABASE_URL", &self.ingest_url);
        c
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn summary(out: &Output) -> BTreeMap<String, String> {
    let s = text(&out.stdout);
    let line = s
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no summary: {s:?} / {}", text(&out.stderr)));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn config(seed: u64, servers: usize, start: &str, steps: u64, rate: f64) -> GenConfig {
    GenConfig {
        seed,
        servers: (1..=servers).map(|i| format!("srv-{i}")).collect(),
        metrics: Metric::ALL.to_vec(),
        start_us: parse_rfc3339(start).unwrap(),
        interval_us: 1_000_000,
        steps: Some(steps),
        anomaly_rate: rate,
    }
}

/// A full load: every row in the database is exactly the generator's, the
/// labels are exactly the generator's, and the change-log trigger saw it all.
#[tokio::test]
async fn load_writes_exactly_the_generated_rows_and_labels() {
    let db = TestDb::new("load").await;
    let start = "2025-11-15T22:00:00Z"; // crosses midnight: two day partitions
    let out = db
        .seeder(&[
            "--servers",
            "5",
            "--start",
            start,
            "--duration",
            "2h",
            "--seed",
            "7",
            "--anomaly-rate",
            "12",
            "--connections",
            "3",
            "--batch-rows",
            "20000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "seeder failed: {}", text(&out.stderr));
    let s = summary(&out);

    let cfg = config(7, 5, start, 7200, 12.0);
    let mut g = Generator::new(cfg.clone());
    let mut sink = VecSink::default();
    g.generate(u64::MAX, &mut sink);
    let labels = g.take_labels();
    let mut want: Vec<(String, String, i64, f64)> = sink
        .0
        .iter()
        .map(|&(srv, m, ts, v)| (cfg.servers[srv].clone(), m.name().to_string(), ts, v))
        .collect();
    want.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    assert!(want.len() < 5 * 4 * 7200, "anomalies include some dropout");

    assert_eq!(s["rows"], want.len().to_string());
    assert_eq!(s["labels"], labels.len().to_string());
    assert_eq!(s["seed"], "7");
    // The hash of the loaded rows is the generator's alone (--dry-run), whatever
    // the connections and batch size.
    let dry = Command::new(env!("CARGO_BIN_EXE_seeder"))
        .args([
            "--servers",
            "5",
            "--start",
            start,
            "--duration",
            "2h",
            "--seed",
            "7",
            "--anomaly-rate",
            "12",
            "--dry-run",
            "-q",
        ])
        .output()
        .unwrap();
    assert_eq!(summary(&dry)["hash"], s["hash"]);

    let rows = db
        .admin
        .query(
            "SELECT server_id, metric_type, ts, value FROM metricagg.samples ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, i64, f64)> = rows
        .iter()
        .map(|r| {
            let ts: chrono::DateTime<chrono::Utc> = r.get(2);
            (r.get(0), r.get(1), ts.timestamp_micros(), r.get(3))
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!(
            a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && a.3.to_bits() == b.3.to_bits(),
            "row differs: db {a:?} vs generated {b:?}"
        );
    }
    // Rows went to their day partitions, not the default one.
    assert_eq!(
        db.count("SELECT count(*) FROM metricagg.samples_default")
            .await,
        0
    );
    // The change-log trigger recorded every row.
    assert_eq!(
        db.count("SELECT sum(row_count)::bigint FROM metricagg.change_log")
            .await,
        want.len() as i64
    );

    // Labels: the same set, with timestamps matching the sample grid.
    let label_rows = db
        .admin
        .query(
            "SELECT server_id, metric_type, kind, start_ts, end_ts, magnitude, seed \
             FROM metricagg.anomaly_labels ORDER BY 1, 2, 4",
            &[],
        )
        .await
        .unwrap();
    let key = |l: &Label| {
        (
            cfg.servers[l.server].clone(),
            l.metric.name().to_string(),
            l.kind.name().to_string(),
            format_ts(cfg.ts(l.start)),
            format_ts(cfg.ts(l.end)),
            l.magnitude.map(f64::to_bits),
        )
    };
    let mut want_labels: Vec<_> = labels.iter().map(key).collect();
    want_labels.sort();
    let mut got_labels: Vec<_> = label_rows
        .iter()
        .map(|r| {
            let a: chrono::DateTime<chrono::Utc> = r.get(3);
            let b: chrono::DateTime<chrono::Utc> = r.get(4);
            let seed: i64 = r.get(6);
            assert_eq!(seed, 7);
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                format_ts(a.timestamp_micros()),
                format_ts(b.timestamp_micros()),
                r.get::<_, Option<f64>>(5).map(f64::to_bits),
            )
        })
        .collect();
    got_labels.sort();
    assert_eq!(got_labels, want_labels);
    // Dropout windows are empty in the database itself.
    let dropout_rows = db
        .count(
            "SELECT count(*) FROM metricagg.samples s JOIN metricagg.anomaly_labels l \
             ON l.kind = 'dropout' AND s.server_id = l.server_id AND s.metric_type = l.metric_type \
             AND s.ts >= l.start_ts AND s.ts < l.end_ts",
        )
        .await;
    assert_eq!(dropout_rows, 0);
    db.drop_db().await;
}

/// Re-running over an overlapping range is refused (exit 3) and changes
/// nothing; adjacent ranges and other servers load fine.
#[tokio::test]
async fn overlapping_range_is_refused() {
    let db = TestDb::new("overlap").await;
    let base = [
        "--servers",
        "3",
        "--duration",
        "1h",
        "--anomaly-rate",
        "0",
        "-q",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        db.seeder(&args).output().unwrap()
    };
    let first = run(&["--start", "2025-11-15T00:00:00Z"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(
        db.count("SELECT count(*) FROM metricagg.samples").await,
        3 * 4 * 3600
    );

    let again = run(&["--start", "2025-11-15T00:30:00Z"]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again.stderr));
    let err = text(&again.stderr);
    assert!(
        err.contains("already exist") && err.contains("refusing"),
        "{err}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM metricagg.samples").await,
        3 * 4 * 3600
    );

    // The next hour, and the same hour for other servers, are not overlaps.
    let next = run(&["--start", "2025-11-15T01:00:00Z"]);
    assert!(next.status.success(), "{}", text(&next.stderr));
    let other = db
        .seeder(&[
            "--servers",
            "srv-9,srv-10",
            "--start",
            "2025-11-15T00:00:00Z",
            "--duration",
            "1h",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(other.status.success(), "{}", text(&other.stderr));
    assert_eq!(
        db.count("SELECT count(*) FROM metricagg.samples").await,
        2 * 3 * 4 * 3600
            + db.count(
                "SELECT count(*) FROM metricagg.samples WHERE server_id IN ('srv-9', 'srv-10')"
            )
            .await
    );
    assert!(
        db.count("SELECT count(*) FROM metricagg.samples WHERE server_id = 'srv-9'")
            .await
            > 0
    );
    db.drop_db().await;
}

/// Ctrl-C in the middle of a backfill: exit 130, and the reported committed
/// ranges are exactly what the database holds.
#[tokio::test]
async fn interrupted_load_reports_exactly_the_committed_ranges() {
    let db = TestDb::new("interrupt").await;
    let child = db
        .seeder(&[
            "--servers",
            "20",
            "--start",
            "2025-11-16T00:00:00Z",
            "--duration",
            "1d",
            "--anomaly-rate",
            "0",
            "--batch-rows",
            "40000",
            "--connections",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt as soon as something has committed.
    let t0 = Instant::now();
    while db.count("SELECT count(*) FROM metricagg.change_log").await == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "nothing committed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");

    let total = check_reported_ranges(&db, &err, 20 * 4).await;
    assert!(
        total < 20 * 4 * 86_400,
        "the load was interrupted, not finished"
    );
    assert_eq!(summary(&out)["rows"], total.to_string());
    assert!(!err.contains("in doubt"), "{err}");
    db.drop_db().await;
}

/// Checks a failure report against the table: every `committed [a, b)` range
/// holds exactly `per_ts` rows per second of it, an `in doubt` range all or
/// nothing, and there are no rows anywhere else. Returns the table's rows.
async fn check_reported_ranges(db: &TestDb, report: &str, per_ts: i64) -> i64 {
    let mut reported = 0i64;
    let mut committed = 0;
    for line in report.lines() {
        let line = line.trim();
        let (doubt, rest) = if let Some(r) = line.strip_prefix("committed [") {
            (false, r)
        } else if let Some(r) = line.strip_prefix("in doubt [") {
            (true, r)
        } else {
            continue;
        };
        let (a, b) = rest.split(')').next().unwrap().split_once(", ").unwrap();
        let (a, b) = (parse_rfc3339(a).unwrap(), parse_rfc3339(b).unwrap());
        let expect = (b - a) / 1_000_000 * per_ts;
        let sql = format!(
            "SELECT count(*) FROM metricagg.samples WHERE ts >= '{}' AND ts < '{}'",
            format_ts(a),
            format_ts(b)
        );
        let n = db.count(&sql).await;
        let range = format!("[{}, {})", format_ts(a), format_ts(b));
        if doubt {
            assert!(
                n == 0 || n == expect,
                "in-doubt range {range} is partial: {n}"
            );
            reported += n;
        } else {
            assert_eq!(n, expect, "committed range {range}");
            reported += expect;
            committed += 1;
        }
    }
    assert!(committed > 0, "no committed ranges reported: {report}");
    let total = db.count("SELECT count(*) FROM metricagg.samples").await;
    assert_eq!(
        total, reported,
        "rows outside the reported ranges: {report}"
    );
    total
}

/// The database goes away in the middle of a load (its sessions are
/// terminated): exit 1, a clear message, and an exact account of what
/// committed.
#[tokio::test]
async fn connection_lost_mid_load_fails_with_an_exact_report() {
    let db = TestDb::new("lost").await;
    let child = db
        .seeder(&[
            "--servers",
            "20",
            "--start",
            "2025-11-17T00:00:00Z",
            "--duration",
            "1d",
            "--anomaly-rate",
            "0",
            "--batch-rows",
            "40000",
            "--connections",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while db.count("SELECT count(*) FROM metricagg.change_log").await == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "nothing committed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = db
        .count(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{}' AND application_name = 'seeder'",
            db.name
        ))
        .await;
    assert!(killed >= 2, "terminated {killed} seeder sessions");
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("failed"), "{err}");
    let total = check_reported_ranges(&db, &err, 20 * 4).await;
    assert!(total < 20 * 4 * 86_400, "the load was cut short");
    db.drop_db().await;
}

/// Live mode writes samples in real time and Ctrl-C flushes and exits 0.
#[tokio::test]
async fn live_mode_stops_cleanly_on_ctrl_c() {
    let db = TestDb::new("live").await;
    let child = db
        .seeder(&[
            "--mode",
            "live",
            "--servers",
            "3",
            "--interval",
            "200ms",
            "--seed",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while db.count("SELECT count(*) FROM metricagg.change_log").await < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "live mode committed nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = db.count("SELECT count(*) FROM metricagg.samples").await;
    assert!(rows >= 2 * 12, "{rows}");
    assert_eq!(rows % 12, 0, "whole timestamps only: {rows}");
    assert_eq!(summary(&out)["rows"], rows.to_string());
    // Samples are spaced by the interval, up to about now.
    let spread = db
        .count(
            "SELECT (extract(epoch FROM max(ts) - min(ts)) * 1000)::bigint FROM metricagg.samples",
        )
        .await;
    assert_eq!(spread, (rows / 12 - 1) * 200);
    db.drop_db().await;
}

/// A refused login and an unreachable server: clear messages, exit 1, and
/// the password never printed.
#[tokio::test]
async fn database_down_or_wrong_password_fails_clearly() {
    let ingest = env_url("INGEST_DATABASE_URL");
    let secret = "not-the-password-xyz";
    let (scheme_user, rest) = ingest.split_once("://").unwrap();
    let (userinfo, hostpart) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    let bad_pw = format!("{scheme_user}://{user}:{secret}@{hostpart}");
    let out = Command::new(env!("CARGO_BIN_EXE_seeder"))
        .args(["--duration", "1h", "--database-url", &bad_pw])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(secret) && !text(&out.stdout).contains(secret));

    // Port 9 (discard) on loopback: nothing listens there.
    let down = format!("postgres://{user}:{secret}@127.0.0.1:9/metrics_raw");
    let out = Command::new(env!("CARGO_BIN_EXE_seeder"))
        .args(["--duration", "1h", "--database-url", &down])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot connect") && err.contains("refused"),
        "{err}"
    );
    assert!(!err.contains(secret));
}

/// Two seeders of the same servers and range started at the same moment:
/// exactly one loads, the other is refused (exit 3) before writing anything,
/// so no sample is doubled — and the day's partition, created by whichever
/// comes first, never fails the other.
#[tokio::test]
async fn two_seeders_of_the_same_range_at_once_never_double() {
    let db = TestDb::new("concurrent").await;
    for round in 0..3 {
        let start = format!("2025-11-{:02}T00:00:00Z", 15 + round);
        let args = [
            "--servers",
            "4",
            "--start",
            start.as_str(),
            "--duration",
            "20m",
            "--anomaly-rate",
            "0",
            "-q",
        ];
        let a = db
            .seeder(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let b = db
            .seeder(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let mut codes = [a.status.code(), b.status.code()];
        codes.sort();
        assert_eq!(
            codes,
            [Some(0), Some(3)],
            "round {round}: one loads, one is refused:\n{}\n{}",
            text(&a.stderr),
            text(&b.stderr)
        );
        let refused = if a.status.code() == Some(3) { &a } else { &b };
        let err = text(&refused.stderr);
        assert!(
            err.contains("another load") || err.contains("already exist"),
            "round {round}: {err}"
        );
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM metricagg.samples WHERE ts >= '{start}' AND ts < '{start}'::timestamptz + interval '20 minutes'"
            ))
            .await,
            4 * 4 * 1200,
            "round {round}: rows doubled or missing"
        );
    }
    assert_eq!(
        db.count("SELECT count(DISTINCT (server_id, metric_type, ts)) FROM metricagg.samples")
            .await,
        db.count("SELECT count(*) FROM metricagg.samples").await
    );
    db.drop_db().await;
}
