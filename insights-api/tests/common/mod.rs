//! Test support: a fresh analytics database per test (scripts/db.sh
//! create-db), bins inserted as the admin, the app connected as the api role.
//! A missing database environment FAILS the test: it never skips.

#![allow(dead_code)]

pub mod fake_llm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use insights_api::config::Config;
use insights_api::{app, AppState};
use tokio_postgres::NoTls;
use tower::ServiceExt;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `scripts/db.sh env`, parsed. Panics (fails the test) when the cluster is
/// not set up.
pub fn db_env() -> HashMap<String, String> {
    let out = Command::new("bash")
        .arg("scripts/db.sh")
        .arg("env")
        .current_dir(repo_root())
        .output()
        .expect("cannot run bash scripts/db.sh env");
    assert!(
        out.status.success(),
        "the database environment is missing: run `make db-start` first ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.trim_matches('"').trim_matches('\'').to_string(),
            )
        })
        .collect()
}

/// One GET through the whole app (no socket), with `headers`: the status,
/// the headers and the body.
pub async fn call(
    state: &AppState,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .expect("router answers");
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    (parts.status, parts.headers, bytes.to_vec())
}

/// Replaces the database name at the end of a postgres URL.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("URL has a path");
    format!("{base}/{db}")
}

pub struct TestDb {
    pub name: String,
    pub admin_url: String,
    pub api_url: String,
    pub admin: tokio_postgres::Client,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// A fresh analytics database named after the test.
    pub async fn new(tag: &str) -> TestDb {
        let env = db_env();
        let api = env
            .get("API_DATABASE_URL")
            .expect("API_DATABASE_URL in db.sh env")
            .clone();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "ia_{}_{}_{}_{}",
            tag,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos % 100_000
        );
        let out = Command::new("bash")
            .args(["scripts/db.sh", "create-db", "analytics", &name])
            .current_dir(repo_root())
            .output()
            .expect("cannot run scripts/db.sh create-db");
        assert!(
            out.status.success(),
            "create-db {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admin_url = String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        assert!(
            admin_url.starts_with("postgres"),
            "create-db printed no URL"
        );
        let (admin, conn) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .expect("admin connects");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        TestDb {
            api_url: with_db(&api, &name),
            name,
            admin_url,
            admin,
        }
    }

    pub fn state(&self) -> AppState {
        self.state_with(|_| {})
    }

    /// The app's state over this database, mock mode, with `set` applied to
    /// the default configuration.
    pub fn state_with(&self, set: impl FnOnce(&mut Config)) -> AppState {
        let mut config = Config::for_database(&self.api_url);
        set(&mut config);
        AppState::new(config).expect("state")
    }

    /// Inserts bins as the administrator.
    pub async fn insert(&self, rows: &[Bin]) {
        for chunk in rows.chunks(20_000) {
            let s: Vec<&str> = chunk.iter().map(|b| b.server.as_str()).collect();
            let m: Vec<&str> = chunk.iter().map(|b| b.metric.as_str()).collect();
            let w: Vec<i64> = chunk.iter().map(|b| b.width).collect();
            let t: Vec<i64> = chunk.iter().map(|b| b.ts).collect();
            let c: Vec<i64> = chunk.iter().map(|b| b.count).collect();
            let a: Vec<f64> = chunk.iter().map(|b| b.avg).collect();
            let mi: Vec<f64> = chunk.iter().map(|b| b.min).collect();
            let ma: Vec<f64> = chunk.iter().map(|b| b.max).collect();
            let p: Vec<Option<f64>> = chunk.iter().map(|b| b.p80).collect();
            self.admin
                .execute(
                    "INSERT INTO metricagg.bins (server_id, metric_type, width, ts, count, avg, min, max, p80)
                     SELECT s, m, make_interval(secs => w), to_timestamp(t), c, a, mi, ma, p
                       FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[],
                                   $6::float8[], $7::float8[], $8::float8[], $9::float8[])
                            AS u(s, m, w, t, c, a, mi, ma, p)",
                    &[&s, &m, &w, &t, &c, &a, &mi, &ma, &p],
                )
                .await
                .expect("insert bins");
        }
    }

    pub async fn drop_db(self) {
        let env = db_env();
        let Some(adm) = env.get("ANALYTICS_DATABASE_URL") else {
            return;
        };
        drop(self.admin);
        if let Ok((c, conn)) = tokio_postgres::connect(adm, NoTls).await {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let _ = c
                .execute(
                    &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                    &[],
                )
                .await;
        }
    }
}

/// Every bin of a fetched dataset, a line per series (server, metric, then
/// ts, count, avg, min, max): equal when two fetches returned the same bins.
pub fn dataset_bins(ds: &insights_api::analysis::Dataset) -> Vec<String> {
    ds.series
        .iter()
        .map(|s| {
            let v = (&s.ts, &s.count, &s.avg, &s.min, &s.max);
            format!("{} {} {v:?}", s.server, s.metric)
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct Bin {
    pub server: String,
    pub metric: String,
    pub width: i64,
    pub ts: i64,
    pub count: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p80: Option<f64>,
}

/// Deterministic noise in [-1, 1).
pub fn noise(seed: u64, i: u64) -> f64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

pub const T0: i64 = 1_763_200_800; // 2025-11-15T10:00:00Z

/// `hours` of one-minute bins for `servers` × [cpu, memory], levels 40 and 55
/// plus noise; the sample count varies (10..=14) so that weighting matters.
pub fn minute_bins(servers: usize, hours: i64) -> Vec<Bin> {
    let mut out = Vec::new();
    for k in 1..=servers {
        for (mi, (metric, level)) in [("cpu", 40.0), ("memory", 55.0)].into_iter().enumerate() {
            for i in 0..hours * 60 {
                let seed = (k * 10 + mi) as u64;
                let avg = level + k as f64 * 0.5 + 1.5 * noise(seed, i as u64);
                let spread = 2.0 + noise(seed + 1000, i as u64).abs();
                out.push(Bin {
                    server: format!("srv-{k}"),
                    metric: metric.to_string(),
                    width: 60,
                    ts: T0 + i * 60,
                    count: 10 + (i % 5),
                    avg,
                    min: avg - spread,
                    max: avg + spread,
                    p80: Some(avg + spread / 2.0),
                });
            }
        }
    }
    out
}
