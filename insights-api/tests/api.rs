//! The HTTP API against a real analytics database with known bins.

mod common;

use axum::http::StatusCode;
use common::*;
use insights_api::config::Config;
use insights_api::{app, AppState};
use serde_json::Value;
use std::time::Duration;

async fn get(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let (status, _, bytes) = call(state, uri, &[]).await;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{uri}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, v)
}

/// `call` with the body as text.
async fn call_text(
    state: &AppState,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let (s, h, b) = call(state, uri, headers).await;
    (s, h, String::from_utf8_lossy(&b).to_string())
}

fn ts_str(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[tokio::test]
async fn health_servers_periods() {
    let db = TestDb::new("hsp").await;
    let mut bins = minute_bins(3, 2);
    // a gap of 10 minutes splits the second period off: bins from T0+3h for 30 minutes
    for k in 1..=2 {
        for i in 0..30 {
            bins.push(Bin {
                server: format!("srv-{k}"),
                metric: "cpu".into(),
                width: 60,
                ts: T0 + 3 * 3600 + i * 60,
                count: 12,
                avg: 1.0,
                min: 0.5,
                max: 1.5,
                p80: Some(1.2),
            });
        }
    }
    db.insert(&bins).await;
    let st = db.state();

    let (s, v) = get(&st, "/health").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["database"], "ok");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["job"]["quarantined"], 0, "{v}");
    assert!(v["job"]["bins_engine"].is_string(), "{v}");
    // entries in quarantine: degraded, still 200, with the count
    db.admin
        .batch_execute(
            "INSERT INTO metricagg.quarantine (node, xid, server_id, min_ts, max_ts, row_count, reason)
             VALUES (1, '100', 'srv-x', 'infinity', 'infinity', 1, 'test'),
                    (1, '101', 'srv-y', '2001-01-01', '2001-01-01', 3, 'test')",
        )
        .await
        .unwrap();
    let (s, v) = get(&st, "/health").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["job"]["quarantined"], 2);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("2 change-log entries"),
        "{v}"
    );
    assert!(v["job"]["last_quarantined_at"].is_string(), "{v}");

    let (s, v) = get(&st, "/servers").await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["server_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["srv-1", "srv-2", "srv-3"]);
    assert_eq!(
        v["servers"][0]["metrics"],
        serde_json::json!(["cpu", "memory"])
    );
    assert_eq!(v["servers"][0]["bins"], 2 * 120 + 30);

    let (s, v) = get(&st, "/periods").await;
    assert_eq!(s, StatusCode::OK);
    let p = v["periods"].as_array().unwrap();
    assert_eq!(p.len(), 2, "{v}");
    assert_eq!(p[0]["start"], ts_str(T0));
    assert_eq!(p[0]["end"], ts_str(T0 + 7200));
    assert_eq!(p[0]["timestamps"], 120);
    assert_eq!(p[0]["bins"], 3 * 2 * 120);
    assert_eq!(p[1]["start"], ts_str(T0 + 3 * 3600));
    assert_eq!(p[1]["end"], ts_str(T0 + 3 * 3600 + 1800));
    assert_eq!(p[1]["servers"], serde_json::json!(["srv-1", "srv-2"]));
    db.drop_db().await;
}

#[tokio::test]
async fn series_coarsening_is_exact() {
    let db = TestDb::new("series").await;
    let mut bins = minute_bins(2, 3);
    // stored hourly bins with their own p80 (as the pipeline computes from raw)
    for h in 0..3 {
        bins.push(Bin {
            server: "srv-1".into(),
            metric: "cpu".into(),
            width: 3600,
            ts: T0 + h * 3600,
            count: 720,
            avg: 40.0,
            min: 30.0,
            max: 50.0,
            p80: Some(77.7 + h as f64),
        });
    }
    db.insert(&bins).await;
    let st = db.state();
    let mine: Vec<&Bin> = bins
        .iter()
        .filter(|b| b.server == "srv-1" && b.metric == "cpu" && b.width == 60)
        .collect();

    // 1 minute: exactly the stored bins
    let (s, v) = get(
        &st,
        &format!(
            "/series?server=srv-1&metric=cpu&start={}&end={}",
            ts_str(T0),
            ts_str(T0 + 600)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 10);
    assert!((v["points"][3]["avg"].as_f64().unwrap() - mine[3].avg).abs() < 1e-9);
    assert!((v["points"][3]["p80"].as_f64().unwrap() - mine[3].p80.unwrap()).abs() < 1e-9);

    // 5 minutes: count-weighted avg, min of min, max of max, p80 null
    let (s, v) = get(
        &st,
        &format!(
            "/series?server=srv-1&metric=cpu&start={}&end={}&width=5m",
            ts_str(T0),
            ts_str(T0 + 3600)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let pts = v["points"].as_array().unwrap();
    assert_eq!(pts.len(), 12);
    for (j, p) in pts.iter().enumerate() {
        let grp = &mine[j * 5..j * 5 + 5];
        let n: i64 = grp.iter().map(|b| b.count).sum();
        let avg = grp.iter().map(|b| b.avg * b.count as f64).sum::<f64>() / n as f64;
        let mn = grp.iter().map(|b| b.min).fold(f64::MAX, f64::min);
        let mx = grp.iter().map(|b| b.max).fold(f64::MIN, f64::max);
        let unweighted = grp.iter().map(|b| b.avg).sum::<f64>() / 5.0;
        assert_eq!(p["ts"], ts_str(T0 + j as i64 * 300));
        assert_eq!(p["count"], n);
        assert!(
            (p["avg"].as_f64().unwrap() - avg).abs() < 1e-9,
            "{p} vs {avg}"
        );
        assert!(
            (avg - unweighted).abs() > 1e-6,
            "the weighting must matter in this test"
        );
        assert!((p["min"].as_f64().unwrap() - mn).abs() < 1e-9);
        assert!((p["max"].as_f64().unwrap() - mx).abs() < 1e-9);
        assert!(p["p80"].is_null(), "p80 must never be averaged: {p}");
    }
    assert!(v["p80"].as_str().unwrap().starts_with("null"));

    // 1 hour: the stored hourly p80
    let (s, v) = get(
        &st,
        &format!(
            "/series?server=srv-1&metric=cpu&start={}&end={}&width=1h",
            ts_str(T0),
            ts_str(T0 + 3 * 3600)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["source_width"], "1 hour");
    let p80s: Vec<f64> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["p80"].as_f64().unwrap())
        .collect();
    assert_eq!(p80s, [77.7, 78.7, 79.7]);

    // a range not aligned to the width is widened to whole bins
    let (s, v) = get(
        &st,
        &format!(
            "/series?server=srv-1&metric=cpu&start={}&end={}&width=5m",
            ts_str(T0 + 120),
            ts_str(T0 + 540)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["start"], ts_str(T0));
    assert_eq!(v["end"], ts_str(T0 + 600));
    assert_eq!(
        v["points"][0]["count"],
        mine[..5].iter().map(|b| b.count).sum::<i64>()
    );

    // no data in range: 200, empty, says so
    let (s, v) = get(
        &st,
        "/series?server=srv-1&metric=cpu&start=2020-01-01T00:00:00&end=2020-01-02T00:00:00",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["empty"], true);
    assert!(v["message"].as_str().unwrap().contains("no data"));
    db.drop_db().await;
}

#[tokio::test]
async fn bad_input_is_400_or_404_with_a_reason() {
    let db = TestDb::new("bad").await;
    db.insert(&minute_bins(1, 1)).await;
    let st = db.state();
    let cases: &[(&str, StatusCode, &str)] = &[
        ("/insights", StatusCode::BAD_REQUEST, "start"),
        ("/insights?start=2025-11-15T10:00:00", StatusCode::BAD_REQUEST, "end"),
        ("/insights?start=yesterday&end=2025-11-15T10:00:00", StatusCode::BAD_REQUEST, "start"),
        ("/insights?start=2025-11-15T11:00:00&end=2025-11-15T10:00:00", StatusCode::BAD_REQUEST, "before"),
        ("/insights?start=2025-11-15T10:00:00&end=2025-11-15T10:00:00", StatusCode::BAD_REQUEST, "before"),
        ("/insights?start=2024-01-01T00:00:00&end=2025-11-15T10:00:00", StatusCode::BAD_REQUEST, "maximum"),
        ("/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00&server=srv-99", StatusCode::NOT_FOUND, "srv-99"),
        ("/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00&metric=gpu", StatusCode::NOT_FOUND, "gpu"),
        ("/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00&server=a%20b", StatusCode::BAD_REQUEST, "server"),
        ("/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00&foo=1", StatusCode::BAD_REQUEST, "foo"),
        ("/series?server=srv-1&metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T11:00:00&width=1month", StatusCode::BAD_REQUEST, "width"),
        ("/series?server=srv-1&metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T11:00:00&width=30s", StatusCode::BAD_REQUEST, "minute"),
        ("/series?metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T11:00:00", StatusCode::BAD_REQUEST, "server"),
        ("/series?server=srv-7&metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T11:00:00", StatusCode::NOT_FOUND, "srv-7"),
        ("/nowhere", StatusCode::NOT_FOUND, "/nowhere"),
        // repeated parameters, years outside 0001-9999, parameters where none are taken
        ("/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00&start=2025-11-15T09:00:00", StatusCode::BAD_REQUEST, "more than once"),
        ("/series?server=srv-1&server=srv-1&metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T11:00:00", StatusCode::BAD_REQUEST, "`server`"),
        ("/insights?start=%2B270000-01-01T00:00:00&end=%2B270000-01-02T00:00:00", StatusCode::BAD_REQUEST, "start"),
        ("/insights?start=10000-01-01T00:00:00&end=10000-01-02T00:00:00", StatusCode::BAD_REQUEST, "start"),
        ("/insights?start=0000-12-31T00:00:00Z&end=0001-01-01T10:00:00Z", StatusCode::BAD_REQUEST, "year"),
        ("/series?server=srv-1&metric=cpu&start=9999-12-31T23:00:00Z&end=10000-01-01T00:00:00Z", StatusCode::BAD_REQUEST, "end"),
        ("/servers?verbose=1", StatusCode::BAD_REQUEST, "verbose"),
        ("/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00&server=srv-1%0AF9:%20forged", StatusCode::BAD_REQUEST, "server"),
    ];
    for (uri, status, needle) in cases {
        let (s, v) = get(&st, uri).await;
        assert_eq!(s, *status, "{uri}: {v}");
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{uri}: no error.message in {v}"));
        assert!(
            msg.contains(needle),
            "{uri}: {msg:?} should mention {needle:?}"
        );
        assert_eq!(v["error"]["status"], status.as_u16());
    }
    db.drop_db().await;
}

#[tokio::test]
async fn database_down_is_503() {
    // a port nobody listens on
    let mut c = Config::for_database("postgres://metricagg_api:secretpw@127.0.0.1:1/nothing");
    c.db_timeout_secs = 1;
    let st = AppState::new(c).unwrap();
    for uri in [
        "/health",
        "/servers",
        "/periods",
        "/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00",
        "/series?server=srv-1&metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T11:00:00",
    ] {
        let (s, v) = get(&st, uri).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {v}");
        assert_eq!(v["error"]["code"], "database_unavailable");
        assert!(
            !v.to_string().contains("secretpw"),
            "the password leaked: {v}"
        );
    }
}

#[tokio::test]
async fn insights_find_injected_anomalies_and_narrate_them() {
    let db = TestDb::new("ins").await;
    let mut bins = minute_bins(6, 6);
    // srv-2 cpu: a two-minute spike of +40 at T0+3h
    let spike_at = T0 + 3 * 3600;
    // srv-4 memory: +20 for 15 minutes at T0+2h (a short level shift)
    let shift_at = T0 + 2 * 3600;
    for b in bins.iter_mut() {
        if b.server == "srv-2" && b.metric == "cpu" && (spike_at..spike_at + 120).contains(&b.ts) {
            b.avg += 40.0;
            b.max += 40.0;
        }
        if b.server == "srv-4" && b.metric == "memory" && (shift_at..shift_at + 900).contains(&b.ts)
        {
            b.avg += 20.0;
            b.max += 20.0;
            b.min += 20.0;
        }
    }
    db.insert(&bins).await;
    let st = db.state();
    let (s, v) = get(
        &st,
        &format!(
            "/insights?start={}&end={}",
            ts_str(T0),
            ts_str(T0 + 6 * 3600)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["empty"], false);
    assert_eq!(v["servers"].as_array().unwrap().len(), 6);
    let an = v["anomalies"].as_array().unwrap();
    let found: Vec<(String, String, String, String, String)> = an
        .iter()
        .map(|a| {
            (
                a["server"].as_str().unwrap().into(),
                a["metric"].as_str().unwrap().into(),
                a["kind"].as_str().unwrap().into(),
                a["start"].as_str().unwrap().into(),
                a["end"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "srv-2".into(),
                "cpu".into(),
                "spike".into(),
                ts_str(spike_at),
                ts_str(spike_at + 120)
            ),
            (
                "srv-4".into(),
                "memory".into(),
                "level_shift".into(),
                ts_str(shift_at),
                ts_str(shift_at + 900)
            ),
        ],
        "{an:#?}"
    );
    // the spike's peak is the maximum bin average in its window, recomputed here
    let peak = bins
        .iter()
        .filter(|b| {
            b.server == "srv-2" && b.metric == "cpu" && (spike_at..spike_at + 120).contains(&b.ts)
        })
        .map(|b| b.avg)
        .fold(f64::MIN, f64::max);
    assert!((an[0]["peak"].as_f64().unwrap() - peak).abs() < 0.006);
    assert!(an[0]["score"].as_f64().unwrap() > 50.0);
    // facts with ids; the narrative cites existing facts and was validated
    let ids: Vec<&str> = v["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"P1") && ids.contains(&"A1") && ids.contains(&"A2"),
        "{ids:?}"
    );
    assert_eq!(v["llm"]["mode"], "mock");
    assert_eq!(v["llm"]["validated"], true);
    let findings = v["narrative"]["findings"].as_array().unwrap();
    assert!(!findings.is_empty());
    for f in findings {
        for e in f["evidence"].as_array().unwrap() {
            assert!(ids.contains(&e.as_str().unwrap()), "{f}");
        }
    }
    assert!(
        findings[0]["text"].as_str().unwrap().contains("srv-2"),
        "{findings:?}"
    );
    // health, comparisons, trends, forecasts are present for every series
    assert_eq!(v["health"].as_array().unwrap().len(), 6);
    assert_eq!(v["trends"].as_array().unwrap().len(), 12);
    assert_eq!(v["forecasts"].as_array().unwrap().len(), 12);
    assert_eq!(v["comparisons"].as_array().unwrap().len(), 2);
    let h2 = v["health"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["server"] == "srv-2")
        .unwrap();
    // one spike, over hours before the end: listed, not alarmed on (docs/api.md, health)
    assert_eq!(
        (h2["critical"].as_u64(), h2["status"].as_str()),
        (Some(1), Some("ok")),
        "{h2}"
    );

    // server filter: only srv-4's anomaly, fleet comparison still computed
    let (s, v) = get(
        &st,
        &format!(
            "/insights?start={}&end={}&server=srv-4",
            ts_str(T0),
            ts_str(T0 + 6 * 3600)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["servers"], serde_json::json!(["srv-4"]));
    assert_eq!(v["anomalies"].as_array().unwrap().len(), 1);
    assert_eq!(v["comparisons"][0]["servers"], 6);

    // no data in range: 200 with an empty result that says so
    let (s, v) = get(
        &st,
        "/insights?start=2020-01-01T00:00:00&end=2020-01-02T00:00:00",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["empty"], true);
    assert!(v["message"].as_str().unwrap().contains("no data"));
    assert_eq!(v["anomalies"].as_array().unwrap().len(), 0);
    assert!(v["narrative"]["summary"]
        .as_str()
        .unwrap()
        .contains("No data"));
    db.drop_db().await;
}

#[tokio::test]
async fn real_socket_and_openapi() {
    let db = TestDb::new("sock").await;
    db.insert(&minute_bins(2, 1)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = db.state();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(st)).await.unwrap();
    });
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!(
            "http://{addr}/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["servers"], serde_json::json!(["srv-1", "srv-2"]));
    let doc: Value = http
        .get(format!("http://{addr}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/health",
        "/servers",
        "/periods",
        "/series",
        "/insights",
        "/openapi.json",
    ] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "openapi misses {path}"
        );
    }
    for (path, codes) in [
        ("/series", ["200", "400", "404", "503"]),
        ("/insights", ["200", "400", "404", "503"]),
    ] {
        for c in codes {
            assert!(
                doc["paths"][path]["get"]["responses"][c].is_object(),
                "{path} {c}"
            );
        }
    }
    let params: Vec<&str> = doc["paths"]["/series"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["server", "metric", "start", "end", "width"]);
    server.abort();
    db.drop_db().await;
}

/// /insights reuses the bins it fetched while `metricagg.bins_version` is
/// unchanged, and fetches again (seeing the new bins) once a statement
/// changes them; with the cache off it always fetches.
#[tokio::test]
async fn insights_reuse_fetched_bins_until_they_change() {
    let db = TestDb::new("cache").await;
    let all = minute_bins(4, 2);
    let (first, late): (Vec<Bin>, Vec<Bin>) = all.into_iter().partition(|b| b.server != "srv-4");
    db.insert(&first).await;
    let st = db.state();
    let uri = format!(
        "/insights?start={}&end={}",
        ts_str(T0),
        ts_str(T0 + 2 * 3600)
    );
    let (s1, v1) = get(&st, &uri).await;
    assert_eq!(s1, StatusCode::OK, "{v1}");
    assert_eq!(v1["timing_ms"]["db_cache"], "miss");
    let (_, v2) = get(&st, &uri).await;
    assert_eq!(v2["timing_ms"]["db_cache"], "hit");
    for field in [
        "period",
        "servers",
        "anomalies",
        "trends",
        "facts",
        "narrative",
    ] {
        assert_eq!(v1[field], v2[field], "{field} differs on a cache hit");
    }
    // Another metric filter is another entry.
    let (_, v) = get(&st, &format!("{uri}&metric=cpu")).await;
    assert_eq!(v["timing_ms"]["db_cache"], "miss");

    // New bins: the version moves, the next request fetches and sees them.
    db.insert(&late).await;
    let (_, v3) = get(&st, &uri).await;
    assert_eq!(v3["timing_ms"]["db_cache"], "miss");
    assert_eq!(
        v3["servers"].as_array().unwrap().len(),
        4,
        "{}",
        v3["servers"]
    );
    assert_eq!(
        v3["period"]["bins"].as_i64().unwrap(),
        v1["period"]["bins"].as_i64().unwrap() * 4 / 3
    );
    // A DELETE moves it too.
    db.admin
        .execute("DELETE FROM metricagg.bins WHERE server_id = 'srv-4'", &[])
        .await
        .unwrap();
    let (_, v4) = get(&st, &uri).await;
    assert_eq!(v4["timing_ms"]["db_cache"], "miss");
    assert_eq!(v4["servers"], v1["servers"]);

    let off = db.state_with(|c| {
        c.cache_max_bins = 0;
    });
    for _ in 0..2 {
        let (_, v) = get(&off, &uri).await;
        assert_eq!(v["timing_ms"]["db_cache"], "off");
    }
    db.drop_db().await;
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code: {body}"))
        .to_string()
}

/// Years the driver cannot decode (past ~262,000 AD) and infinite bins do not
/// break /servers and /periods: the bins are listed with their times as
/// PostgreSQL has them.
#[tokio::test]
async fn far_future_and_infinite_bins_do_not_break_servers_or_periods() {
    let db = TestDb::new("farfuture").await;
    db.insert(&minute_bins(1, 1)).await;
    db.admin
        .batch_execute(
            "INSERT INTO metricagg.bins (server_id, metric_type, width, ts, count, avg, min, max, p80) VALUES
               ('srv-far', 'cpu', '1 minute', '270000-01-01 00:00+00', 1, 1, 1, 1, 1),
               ('srv-far', 'cpu', '1 minute', '294000-12-31 23:59+00', 1, 1, 1, 1, 1)",
        )
        .await
        .expect("PostgreSQL stores years up to 294276, TimescaleDB up to 294246");
    let st = db.state();
    let (s, v) = get(&st, "/servers").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let far = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["server_id"] == "srv-far")
        .unwrap_or_else(|| panic!("srv-far missing: {v}"));
    assert_eq!(far["first_bin"], "+270000-01-01T00:00:00Z");
    assert_eq!(far["last_bin"], "+294000-12-31T23:59:00Z");
    let (s, v) = get(&st, "/periods").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let p = v["periods"].as_array().unwrap();
    assert_eq!(p.len(), 3, "{v}");
    assert_eq!(p[0]["start"], ts_str(T0));
    assert_eq!(p[2]["start"], "+294000-12-31T23:59:00Z");
    assert_eq!(p[2]["end"], "+294001-01-01T00:00:00Z");
    // an infinite bin (no job writes one) is no period, and /servers shows it
    db.admin
        .batch_execute(
            "INSERT INTO metricagg.bins (server_id, metric_type, width, ts, count, avg, min, max, p80)
             VALUES ('srv-inf', 'cpu', '1 minute', 'infinity', 1, 1, 1, 1, 1)",
        )
        .await
        .ok(); // a hypertable refuses an infinite time: then there is nothing to show
    let (s, v) = get(&st, "/periods").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["periods"].as_array().unwrap().len(), 3);
    let (s, v) = get(&st, "/servers").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    if let Some(inf) = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["server_id"] == "srv-inf")
    {
        assert_eq!(inf["last_bin"], "infinity");
    }
    db.drop_db().await;
}

/// With API_TOKEN set every data endpoint needs `Authorization: Bearer`;
/// /health and the static page, assets and OpenAPI document stay open. The
/// token is never echoed.
#[tokio::test]
async fn a_bearer_token_guards_the_data_endpoints() {
    let db = TestDb::new("token").await;
    db.insert(&minute_bins(2, 1)).await;
    let token = "tok-0123456789abcdef-secret";
    let st = db.state_with(|c| {
        c.api_token = Some(insights_api::config::Secret::new(token));
        c.bind = "0.0.0.0:3000".parse().unwrap();
        c.check().expect("a token makes a public bind acceptable");
    });
    let bearer = format!("Bearer {token}");
    let data = [
        "/servers",
        "/periods",
        "/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00",
        "/series?server=srv-1&metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T11:00:00",
        "/fleet?metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T11:00:00",
    ];
    for uri in data {
        let (s, h, body) = call_text(&st, uri, &[]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}: {body}");
        assert_eq!(error_code(&body), "unauthorized");
        assert!(h.get("www-authenticate").is_some(), "{uri}");
        for wrong in [
            "Bearer tok-0123456789abcdef-secreT",
            "Bearer ",
            "Basic dXNlcjpwdw==",
            "tok-0123456789abcdef-secret",
        ] {
            let (s, _, body) = call_text(&st, uri, &[("authorization", wrong)]).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri} with {wrong:?}: {body}");
            assert!(
                !body.contains("0123456789abcdef"),
                "the token leaked: {body}"
            );
        }
        let (s, _, body) = call_text(&st, uri, &[("authorization", &bearer)]).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {body}");
        let (s, _, _) =
            call_text(&st, uri, &[("authorization", &format!("bearer  {token} "))]).await;
        assert_eq!(s, StatusCode::OK, "{uri}: the scheme is case-insensitive");
    }
    for open in [
        "/health",
        "/",
        "/?period=2025-11-15T10:00:00Z&server=srv-2",
        "/openapi.json",
    ] {
        let (s, _, body) = call_text(&st, open, &[]).await;
        assert_eq!(s, StatusCode::OK, "{open}: {body}");
    }
    db.drop_db().await;
}

/// On a loopback bind the Host header must be localhost or an address: a page
/// on another name that resolves to 127.0.0.1 (DNS rebinding) is refused.
#[tokio::test]
async fn a_loopback_bind_refuses_foreign_host_names() {
    let db = TestDb::new("host").await;
    db.insert(&minute_bins(1, 1)).await;
    let st = db.state_with(|c| {
        c.allowed_hosts = vec!["metrics.internal".into()];
    });
    for host in [
        "evil.example",
        "evil.example:3000",
        "127.0.0.1.evil.example",
        "localhost.evil.example:3000",
    ] {
        for uri in ["/servers", "/health", "/"] {
            let (s, _, body) = call_text(&st, uri, &[("host", host)]).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{host} {uri}: {body}");
            assert_eq!(error_code(&body), "forbidden_host");
        }
    }
    for host in [
        "localhost:3000",
        "LOCALHOST",
        "127.0.0.1:3000",
        "[::1]:3000",
        "metrics.internal",
        "metrics.internal.:8080",
    ] {
        let (s, _, body) = call_text(&st, "/servers", &[("host", host)]).await;
        assert_eq!(s, StatusCode::OK, "{host}: {body}");
    }
    // a public bind (with its token) does not check names
    let public = db.state_with(|c| {
        c.bind = "0.0.0.0:3000".parse().unwrap();
        c.api_token = Some(insights_api::config::Secret::new("0123456789abcdef"));
    });
    let (s, _, body) = call_text(&public, "/health", &[("host", "metrics.example.com")]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    db.drop_db().await;
}

/// The service's connections run with statement_timeout and read-only
/// transactions; a statement past the timeout is a 503 `timeout`; a query
/// abandoned at a request's deadline is canceled on the server.
#[tokio::test]
async fn statements_are_bounded_and_abandoned_queries_canceled() {
    let db = TestDb::new("stmt").await;
    let st = db.state_with(|c| {
        c.db_statement_timeout_secs = 1;
    });
    let c = insights_api::db::connect(&st.0.pool).await.unwrap();
    let show = |name: &'static str| {
        let c = &c;
        async move {
            let rows = c
                .run(c.simple_query(&format!("SHOW {name}")))
                .await
                .unwrap();
            rows.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap().to_string())
                    }
                    _ => None,
                })
                .expect("a row")
        }
    };
    assert_eq!(show("statement_timeout").await, "1s");
    assert_eq!(show("default_transaction_read_only").await, "on");
    assert_eq!(show("TimeZone").await, "UTC");
    let e = c
        .run(c.simple_query("SELECT pg_sleep(3)"))
        .await
        .unwrap_err();
    let e = insights_api::error::ApiError::from(e);
    assert_eq!(e.code(), "timeout", "{e}");
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(c);

    // a query abandoned mid-way (the request's deadline) is canceled
    let st = db.state_with(|c| {
        c.db_statement_timeout_secs = 60;
    });
    let c = insights_api::db::connect(&st.0.pool).await.unwrap();
    let marker = format!("abandoned_{}", std::process::id());
    let q = format!("SELECT pg_sleep(30), '{marker}'");
    let r = tokio::time::timeout(Duration::from_millis(300), c.run(c.simple_query(&q))).await;
    assert!(r.is_err(), "the sleep cannot be done yet");
    drop(c);
    let mut gone = false;
    for _ in 0..50 {
        let n: i64 = db
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
                &[&marker],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the abandoned query still runs on the server");
    // and the pool hands out a working connection
    let (s, v) = get(&st, "/health").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    db.drop_db().await;
}

/// A request holds one pooled connection: with a pool of one, /insights over
/// hours (once fetched as two halves over two connections) and the other
/// endpoints answer.
#[tokio::test]
async fn one_pooled_connection_per_request() {
    let db = TestDb::new("onecon").await;
    db.insert(&minute_bins(3, 4)).await;
    let st = db.state_with(|c| {
        c.db_pool_size = 1;
        c.db_timeout_secs = 2;
    });
    for uri in [
        "/insights?start=2025-11-15T10:00:00&end=2025-11-15T14:00:00&server=srv-2&metric=cpu",
        "/insights?start=2025-11-15T10:00:00&end=2025-11-15T14:00:00",
        "/series?server=srv-1&metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T14:00:00&width=5m",
        "/fleet?metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T14:00:00",
        "/servers",
        "/periods",
    ] {
        let (s, v) = get(&st, uri).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {v}");
    }
    assert_eq!(st.0.pool.status().size, 1);
    db.drop_db().await;
}

/// An answer over MAX_RESPONSE_BYTES is a 400 asking for less.
#[tokio::test]
async fn responses_are_capped() {
    let db = TestDb::new("cap").await;
    db.insert(&minute_bins(3, 2)).await;
    let st = db.state_with(|c| {
        c.max_response_bytes = 4000;
    });
    for uri in [
        "/insights?start=2025-11-15T10:00:00&end=2025-11-15T12:00:00",
        "/series?server=srv-1&metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T12:00:00",
        "/fleet?metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T12:00:00&width=1m",
    ] {
        let (s, _, body) = call_text(&st, uri, &[]).await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            &body[..body.len().min(200)]
        );
        assert_eq!(error_code(&body), "response_too_large", "{uri}");
        assert!(body.len() < 1000);
    }
    let (s, v) = get(
        &st,
        "/series?server=srv-1&metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T10:05:00",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "a small answer passes: {v}");
    db.drop_db().await;
}

/// A request past its deadline is a 503 `timeout` (its query canceled on the
/// server), requests that never got a slot are 503 `overloaded`, and the
/// service answers again once the database does. The database is made slow
/// by a lock the administrator holds on the bins.
#[tokio::test]
async fn past_the_deadline_is_503_and_the_service_recovers() {
    let db = TestDb::new("deadline").await;
    db.insert(&minute_bins(2, 1)).await;
    let st = db.state_with(|c| {
        c.request_timeout_secs = 1;
        c.max_concurrent_requests = 1;
    });
    db.admin
        .batch_execute("BEGIN; LOCK TABLE metricagg.bins IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for uri in [
        "/servers",
        "/periods",
        "/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00",
        "/series?server=srv-1&metric=cpu&start=2025-11-15T10:00:00&end=2025-11-15T11:00:00",
    ] {
        let st = st.clone();
        tasks.spawn(async move {
            let t = std::time::Instant::now();
            let r = call_text(&st, uri, &[]).await;
            (uri, r, t.elapsed())
        });
    }
    let mut codes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (uri, (s, h, body), took) = r.unwrap();
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        assert!(h.get("retry-after").is_some(), "{uri}");
        assert!(took < Duration::from_secs(4), "{uri} took {took:?}");
        codes.push(error_code(&body));
    }
    codes.sort();
    assert!(codes.contains(&"timeout".to_string()), "{codes:?}");
    assert!(codes.contains(&"overloaded".to_string()), "{codes:?}");
    assert!(
        codes.iter().all(|c| c == "timeout" || c == "overloaded"),
        "{codes:?}"
    );
    // the abandoned queries were canceled: nothing of the api role waits on
    // the lock (seen from another session: the locking one has a snapshot)
    let (watch, conn) = tokio_postgres::connect(&db.admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut waiting = Vec::new();
    for _ in 0..50 {
        waiting = watch
            .query(
                "SELECT query FROM pg_stat_activity WHERE usename = 'metricagg_api' \
                 AND datname = current_database() AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        if waiting.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        waiting.is_empty(),
        "queries of timed-out requests still run: {waiting:#?}"
    );
    db.admin.batch_execute("ROLLBACK").await.unwrap();
    let (s, v) = get(&st, "/servers").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    db.drop_db().await;
}

/// The widths come from `metricagg.job_config.widths`, not from a copy in the
/// service: with five-minute and daily bins configured, five minutes is the
/// finest width everywhere, one minute is refused, and /insights analyses
/// five-minute bins.
#[tokio::test]
async fn stored_widths_come_from_the_job_config() {
    let db = TestDb::new("widths").await;
    db.admin
        .batch_execute("UPDATE metricagg.job_config SET widths = '{1 day, 5 minutes}'")
        .await
        .unwrap();
    let bins: Vec<Bin> = minute_bins(3, 6)
        .into_iter()
        .filter(|b| (b.ts - T0) % 300 == 0)
        .map(|b| Bin { width: 300, ..b })
        .collect();
    db.insert(&bins).await;
    let st = db.state();
    let (s, v) = get(&st, "/servers").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["servers"][0]["bins"], 2 * 72, "five-minute bins: {v}");
    let (_, v) = get(&st, "/periods").await;
    assert_eq!(v["width"], "5 minutes");
    assert_eq!(v["periods"][0]["end"], ts_str(T0 + 6 * 3600), "{v}");
    let range = format!("start={}&end={}", ts_str(T0), ts_str(T0 + 3600));
    let (s, v) = get(&st, &format!("/series?server=srv-1&metric=cpu&{range}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["width"], "5 minutes");
    assert_eq!(v["count"], 12);
    assert_eq!(v["p80"], "exact (stored)");
    let (s, v) = get(
        &st,
        &format!("/series?server=srv-1&metric=cpu&{range}&width=15m"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["source_width"], "5 minutes");
    assert_eq!(v["count"], 4);
    for uri in [
        format!("/series?server=srv-1&metric=cpu&{range}&width=1m"),
        format!("/fleet?metric=cpu&{range}&width=7m"),
    ] {
        let (s, v) = get(&st, &uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("5 minutes, 1 day"), "{m}");
    }
    let (s, v) = get(&st, &format!("/fleet?metric=cpu&{range}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["width"], "5 minutes",
        "the automatic width is a stored multiple"
    );
    let (s, v) = get(
        &st,
        &format!(
            "/insights?start={}&end={}",
            ts_str(T0),
            ts_str(T0 + 6 * 3600)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["period"]["width_seconds"], 300);
    assert_eq!(v["period"]["bins"], 3 * 2 * 72);
    db.drop_db().await;
}

/// The binary refuses to listen on a non-loopback address without a token,
/// and says why; with one (or on loopback) it starts.
#[test]
fn the_service_refuses_a_public_bind_without_a_token() {
    let dir = std::env::temp_dir(); // no stray .env
    let run = |bind: &str, token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_insights-api"));
        cmd.current_dir(&dir)
            .env_clear()
            .env("BIND", bind)
            .env(
                "API_DATABASE_URL",
                "postgres://metricagg_api:pw@127.0.0.1:1/none",
            )
            .env("LLM_MODE", "mock")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(t) = token {
            cmd.env("API_TOKEN", t);
        }
        cmd.spawn().expect("the binary runs")
    };
    let out = run("0.0.0.0:0", None).wait_with_output().unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("API_TOKEN"), "{text}");
    let out = run("0.0.0.0:0", Some("short")).wait_with_output().unwrap();
    assert!(!out.status.success(), "a short token is refused too");
    // with a token it starts (and is stopped here)
    for (bind, token) in [
        ("0.0.0.0:0", Some("0123456789abcdef0123")),
        ("127.0.0.1:0", None),
    ] {
        let mut child = run(bind, token);
        std::thread::sleep(Duration::from_millis(500));
        assert!(child.try_wait().unwrap().is_none(), "{bind}: it exited");
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("0123456789abcdef0123"),
            "the token leaked: {text}"
        );
    }
}

/// The fetch is split in two only where that pays: over a hypertable's
/// compressed chunks (each half decompresses its servers' segments alone).
/// Plain rows — native partitions, or chunks the policy has not compressed
/// yet — are read by one parallel query. Both plans return the same bins.
#[tokio::test]
async fn the_fetch_splits_only_over_compressed_chunks() {
    use insights_api::db;
    let db = TestDb::new("fetchplan").await;
    // 30 hours from 10:00: 14 hours in one daily chunk, 16 in the next
    db.insert(&minute_bins(3, 30)).await;
    let secs = Duration::from_secs(5);
    let pool = db::make_pool(&db.api_url, 4, secs, secs).expect("pool");
    let c = db::connect(&pool).await.expect("connection");
    let meta = db::meta(&c).await.expect("meta");
    let at = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap();
    let range = (at(T0), at(T0 + 30 * 3600));
    let plan = db::fetch_plan(&c, meta.hypertable, range).await;
    assert_eq!(plan, db::Fetch::One, "nothing is compressed");
    let one = db::fetch_bins(&pool, &c, db::Fetch::One, 60, range, None)
        .await
        .expect("one query");
    assert_eq!(one.series.len(), 3 * 2);
    assert!(one.series.iter().all(|s| s.len() == 30 * 60));
    // the plan fetched with last: it must return what one query did
    let last = if !meta.hypertable {
        // Native partitions: TimescaleDB is not asked. Asked anyway (its
        // views missing here), the plan falls back to one query, and the
        // connection still serves.
        assert!(db::compressed_share(&c, range).await.is_err());
        let plan = db::fetch_plan(&c, true, range).await;
        assert_eq!(plan, db::Fetch::One);
        plan
    } else {
        compress_day_by_day(&db, &c, range).await
    };
    let again = db::fetch_bins(&pool, &c, last, 60, range, None)
        .await
        .expect("the last plan");
    assert_eq!(dataset_bins(&again), dataset_bins(&one), "{last:?}");
    drop(c);
    db.drop_db().await;
}

/// [`the_fetch_splits_only_over_compressed_chunks`] on a hypertable: the
/// share and the plan as the range's first day, then both, are compressed.
/// Returns the last plan (a split).
async fn compress_day_by_day(
    db: &TestDb,
    c: &insights_api::db::Conn,
    range: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
) -> insights_api::db::Fetch {
    use insights_api::db;
    assert_eq!(db::compressed_share(c, range).await.expect("share"), 0.0);
    let compress = |older_than: &str| {
        format!(
            "SELECT count(compress_chunk(c, if_not_compressed => true))
               FROM show_chunks('metricagg.bins', older_than => timestamptz '{older_than}') c"
        )
    };
    db.admin
        .batch_execute(&compress("2025-11-16 00:00+00"))
        .await
        .expect("compress the first day");
    // 14 of the range's 30 hours are in the compressed chunk
    let share = db::compressed_share(c, range).await.expect("share");
    assert!((share - 14.0 / 30.0).abs() < 1e-9, "{share}");
    let plan = db::fetch_plan(c, true, range).await;
    assert_eq!(plan, db::Fetch::One, "less than half compressed");
    db.admin
        .batch_execute(&compress("2025-11-17 00:00+00"))
        .await
        .expect("compress the second day");
    assert_eq!(db::compressed_share(c, range).await.expect("share"), 1.0);
    let plan = db::fetch_plan(c, true, range).await;
    assert_eq!(plan, db::Fetch::Split);
    plan
}
