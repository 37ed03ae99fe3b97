//! The HTTP API against a real analytics database with known bins.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use insights_api::config::Config;
use insights_api::{app, AppState};
use serde_json::Value;
use tower::ServiceExt;

async fn get(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let resp = app(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .expect("router answers");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{uri}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, v)
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

    let mut config = Config::for_database(&db.api_url);
    config.cache_max_bins = 0;
    let off = AppState::new(config).unwrap();
    for _ in 0..2 {
        let (_, v) = get(&off, &uri).await;
        assert_eq!(v["timing_ms"]["db_cache"], "off");
    }
    db.drop_db().await;
}
