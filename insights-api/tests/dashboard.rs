//! The dashboard (issue 7): its page and assets, `/fleet` against known bins,
//! and (ignored here, run by `make test-dashboard`) the page in headless
//! Chromium against the real app on a socket and a database with known
//! anomalies.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use common::*;
use insights_api::config::Config;
use insights_api::{app, AppState};
use serde_json::{json, Value};

async fn call(
    state: &AppState,
    uri: &str,
    etag: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    match etag {
        Some(e) => common::call(state, uri, &[(header::IF_NONE_MATCH.as_str(), e)]).await,
        None => common::call(state, uri, &[]).await,
    }
}

async fn get_json(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let (s, _, b) = call(state, uri, None).await;
    let v = serde_json::from_slice(&b)
        .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&b)));
    (s, v)
}

fn ts_str(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn hdr(h: &axum::http::HeaderMap, name: header::HeaderName) -> &str {
    h.get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn page_and_assets_are_served_from_the_binary() {
    // No database is needed to serve the page.
    let st = AppState::new(Config::for_database("postgres://nobody@127.0.0.1:1/none")).unwrap();
    let (s, h, body) = call(&st, "/", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hdr(&h, header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(hdr(&h, header::CACHE_CONTROL), "no-cache");
    let csp = hdr(&h, header::CONTENT_SECURITY_POLICY);
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = String::from_utf8(body).unwrap();
    let assets: Vec<&str> = html
        .split("/assets/")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect();
    assert_eq!(assets.len(), 4, "{assets:?}");
    for a in &assets {
        let (name, v) = a.split_once("?v=").expect("a versioned asset URL");
        let (s, h, body) = call(&st, &format!("/assets/{a}"), None).await;
        assert_eq!(s, StatusCode::OK, "{a}");
        let want = if name.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(hdr(&h, header::CONTENT_TYPE), want, "{a}");
        assert_eq!(
            hdr(&h, header::CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(hdr(&h, header::ETAG), format!("\"{v}\""));
        assert!(body.len() > 500, "{a} is {} bytes", body.len());
        // an old or missing version is revalidated, and the ETag answers 304
        let (_, h, _) = call(&st, &format!("/assets/{name}"), None).await;
        assert_eq!(hdr(&h, header::CACHE_CONTROL), "no-cache");
        let (s, _, body) = call(&st, &format!("/assets/{name}"), Some(&format!("\"{v}\""))).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
    }
    // uPlot is the vendored build, not something fetched at run time
    let (_, _, js) = call(&st, "/assets/uPlot.iife.min.js", None).await;
    assert!(String::from_utf8_lossy(&js).contains("uPlot"));
    let (s, v) = get_json(&st, "/assets/nothing.js").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"]["message"].as_str().unwrap().contains("app.js"));
}

#[tokio::test]
async fn fleet_is_every_servers_weighted_average_on_one_grid() {
    let db = TestDb::new("fleet").await;
    let mut bins = minute_bins(3, 2);
    // srv-3 has no cpu in the second hour: nulls on the grid, not missing slots
    bins.retain(|b| !(b.server == "srv-3" && b.metric == "cpu" && b.ts >= T0 + 3600));
    db.insert(&bins).await;
    let st = db.state();
    let (s, v) = get_json(
        &st,
        &format!(
            "/fleet?metric=cpu&start={}&end={}&width=15m",
            ts_str(T0),
            ts_str(T0 + 7200)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["width_seconds"], 900);
    assert_eq!(v["ts"].as_array().unwrap().len(), 8);
    assert_eq!(v["ts"][1], ts_str(T0 + 900));
    let servers: Vec<&str> = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["server"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["srv-1", "srv-2", "srv-3"]);
    for (k, s) in v["servers"].as_array().unwrap().iter().enumerate() {
        let name = format!("srv-{}", k + 1);
        for slot in 0..8 {
            let t0 = T0 + slot * 900;
            let grp: Vec<&Bin> = bins
                .iter()
                .filter(|b| b.server == name && b.metric == "cpu" && (t0..t0 + 900).contains(&b.ts))
                .collect();
            let got = &s["avg"][slot as usize];
            if grp.is_empty() {
                assert!(got.is_null(), "{name} slot {slot}: {got}");
                continue;
            }
            let n: i64 = grp.iter().map(|b| b.count).sum();
            let want = grp.iter().map(|b| b.avg * b.count as f64).sum::<f64>() / n as f64;
            assert!(
                (got.as_f64().unwrap() - want).abs() < 1e-9,
                "{name} slot {slot}"
            );
        }
    }
    // automatic width: a round width within ~720 points
    let (s, v) = get_json(
        &st,
        &format!(
            "/fleet?metric=memory&start={}&end={}",
            ts_str(T0),
            ts_str(T0 + 86400)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["width"], "5 minutes");
    assert_eq!(v["ts"].as_array().unwrap().len(), 288);
    // no data: 200, empty, says so
    let (s, v) = get_json(&st, "/fleet?metric=cpu&start=2020-01-01&end=2020-01-02").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["empty"], true);
    assert!(v["message"].as_str().unwrap().contains("no cpu data"));
    for (uri, status, needle) in [
        (
            "/fleet?start=2025-11-15&end=2025-11-16",
            StatusCode::BAD_REQUEST,
            "metric",
        ),
        (
            "/fleet?metric=gpu&start=2025-11-15&end=2025-11-16",
            StatusCode::NOT_FOUND,
            "gpu",
        ),
        (
            "/fleet?metric=cpu&start=2025-11-16&end=2025-11-15",
            StatusCode::BAD_REQUEST,
            "before",
        ),
        (
            "/fleet?metric=cpu&start=2025-11-15&end=2025-11-16&width=30s",
            StatusCode::BAD_REQUEST,
            "minute",
        ),
        (
            "/fleet?metric=cpu&start=2025-11-01&end=2025-11-30&width=1m",
            StatusCode::BAD_REQUEST,
            "coarser",
        ),
        (
            "/fleet?metric=cpu&start=2024-01-01&end=2025-11-16",
            StatusCode::BAD_REQUEST,
            "maximum",
        ),
        (
            "/fleet?metric=cpu&start=2025-11-15&end=2025-11-16&server=srv-1",
            StatusCode::BAD_REQUEST,
            "server",
        ),
        (
            "/fleet?metric=a%20b&start=2025-11-15&end=2025-11-16",
            StatusCode::BAD_REQUEST,
            "metric",
        ),
    ] {
        let (s, v) = get_json(&st, uri).await;
        assert_eq!(s, status, "{uri}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{uri}: {msg:?} should mention {needle:?}"
        );
    }
    // the OpenAPI document covers the page and /fleet
    let (_, doc) = get_json(&st, "/openapi.json").await;
    for path in ["/", "/fleet", "/assets/{name}"] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "openapi misses {path}"
        );
    }
    db.drop_db().await;
}

/// Six hours of one-minute bins for six servers and four metrics; srv-2 cpu
/// has a two-minute spike at T0+3h, srv-4 memory a 15-minute shift at T0+2h
/// (the windows tests/api.rs shows /insights finds exactly).
fn known_day() -> (Vec<Bin>, Value) {
    let mut bins = minute_bins(6, 6);
    let extra: Vec<Bin> = bins
        .iter()
        .map(|b| Bin {
            metric: if b.metric == "cpu" {
                "disk_io"
            } else {
                "network"
            }
            .into(),
            avg: b.avg - 25.0,
            min: b.min - 25.0,
            max: b.max - 25.0,
            p80: b.p80.map(|p| p - 25.0),
            ..b.clone()
        })
        .collect();
    bins.extend(extra);
    let spike = T0 + 3 * 3600;
    let shift = T0 + 2 * 3600;
    for b in bins.iter_mut() {
        if b.server == "srv-2" && b.metric == "cpu" && (spike..spike + 120).contains(&b.ts) {
            b.avg += 40.0;
            b.max += 40.0;
        }
        if b.server == "srv-4" && b.metric == "memory" && (shift..shift + 900).contains(&b.ts) {
            b.avg += 20.0;
            b.max += 20.0;
            b.min += 20.0;
        }
    }
    let expect = json!({
        "servers": (1..=6).map(|k| format!("srv-{k}")).collect::<Vec<_>>(),
        "metrics": ["cpu", "memory", "disk_io", "network"],
        "windows": [
            {"server": "srv-2", "metric": "cpu", "start": ts_str(spike), "end": ts_str(spike + 120)},
            {"server": "srv-4", "metric": "memory", "start": ts_str(shift), "end": ts_str(shift + 900)},
        ],
        "unhealthy": ["srv-2", "srv-4"],
    });
    (bins, expect)
}

/// A day of one-minute bins for 50 servers and 4 metrics (288,000 bins).
async fn fleet_day(db: &TestDb) -> Value {
    db.admin
        .batch_execute(
            "INSERT INTO metricagg.bins (server_id, metric_type, width, ts, count, avg, min, max, p80)
             SELECT 'srv-' || s, m, interval '1 minute', ts, 60, v, v - 2, v + 2, v + 1
               FROM generate_series(1, 50) s,
                    unnest(ARRAY['cpu', 'memory', 'disk_io', 'network']) m,
                    generate_series(timestamptz '2025-11-15 00:00+00', timestamptz '2025-11-15 23:59+00', interval '1 minute') ts,
                    LATERAL (SELECT 30 + (s % 7) * 5 + 10 * sin(2 * pi() * extract(epoch FROM ts) / 86400)
                                    + (abs(hashtext(s || m || ts::text)) % 1000) / 500.0
                                    + CASE WHEN s % 10 = 0 AND extract(hour FROM ts) = 13
                                                AND extract(minute FROM ts) < 2 THEN 40 ELSE 0 END AS v) x;
             ANALYZE metricagg.bins;",
        )
        .await
        .expect("insert the fleet day");
    json!({
        "servers": (1..=50).map(|k| format!("srv-{k}")).collect::<Vec<_>>(),
        "metrics": ["cpu", "memory", "disk_io", "network"],
        "unhealthy": ["srv-10", "srv-20", "srv-30", "srv-40", "srv-50"],
    })
}

/// Serves the real app on a local port, runs dashboard/test/e2e.mjs in the
/// given mode against it, prints its output, drops the database and fails if
/// the browser test failed. With `token`, the app requires it (API_TOKEN)
/// and the page gets it as the docs say (`/#token=…`).
async fn run_browser(
    db: TestDb,
    mode: &str,
    expect: &Value,
    screenshot: Option<&str>,
    token: Option<&str>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(db.state_with(|c| {
        c.api_token = token.map(insights_api::config::Secret::new);
    }));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let root = repo_root().canonicalize().expect("the repository root");
    let mut cmd = Command::new("node");
    cmd.arg("test/e2e.mjs")
        .current_dir(root.join("dashboard"))
        .env("DASHBOARD_URL", format!("http://{addr}"))
        .env("DASHBOARD_MODE", mode)
        .env("DASHBOARD_EXPECT", expect.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(s) = screenshot {
        cmd.env("DASHBOARD_SCREENSHOT", root.join(s));
    }
    if let Some(t) = token {
        cmd.env("DASHBOARD_TOKEN", t);
    }
    // node runs on a blocking thread; the app keeps serving on the runtime
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .spawn()
            .expect("cannot run node (make test-dashboard installs it)");
        let deadline = Instant::now() + Duration::from_secs(300);
        while child.try_wait().expect("wait for node").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().expect("node output")
    })
    .await
    .unwrap();
    server.abort();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    db.drop_db().await;
    assert!(out.status.success(), "the {mode} browser test failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node and Debian's chromium: make test-dashboard"]
async fn dashboard_in_headless_chromium() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: bash scripts/install-deps.sh"
    );
    assert!(
        repo_root()
            .join("dashboard/node_modules/playwright-core")
            .exists(),
        "dashboard/node_modules is missing: make test-dashboard runs npm ci"
    );
    let db = TestDb::new("dash").await;
    let (bins, expect) = known_day();
    db.insert(&bins).await;
    // with a token: the page asks for it, then works with it
    let token = "dashboard-test-token-0123456789";
    run_browser(
        db,
        "full",
        &expect,
        Some("target/dashboard.png"),
        Some(token),
    )
    .await;

    let empty = TestDb::new("dash_empty").await;
    run_browser(empty, "empty", &json!({}), None, None).await;

    let big = TestDb::new("dash_fleet").await;
    let expect = fleet_day(&big).await;
    run_browser(
        big,
        "perf",
        &expect,
        Some("target/dashboard-fleet.png"),
        None,
    )
    .await;
}
