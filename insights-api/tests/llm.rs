//! The OpenAI-compatible client against a local HTTP server speaking the
//! Chat Completions protocol, with scripted answers and recorded requests.

mod common;

use std::time::{Duration, Instant};

use common::fake_llm::{answer, error, fake, fake_with, max_in_flight, requests, Canned};
use insights_api::analysis::{analyse, Analysis, Dataset, Fact, Params, Series};
use insights_api::config::Secret;
use insights_api::llm::{narrate, Fallback, LlmClient};
use insights_api::narrative::{local_narrative, period_fact};
use serde_json::{json, Value};

const KEY: &str = "sk-test-key-0123456789";

/// A deadline no test reaches.
fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn client(base: &str, timeout: Duration) -> LlmClient {
    let mut c = LlmClient::new(base, "test-model", Secret::new(KEY), timeout, 3).unwrap();
    c.backoff_base = Duration::from_millis(20);
    c
}

/// Six servers, one spike on srv-2 cpu.
fn analysis() -> (Analysis, Vec<Fact>) {
    let t0 = 1_763_200_800i64;
    let mut series = Vec::new();
    for k in 1..=6u64 {
        let mut s = Series::new(&format!("srv-{k}"), "cpu", 60);
        for i in 0..360i64 {
            let noise = ((i as u64 * 7919 + k * 104_729) % 1000) as f64 / 1000.0 - 0.5;
            let mut v = 40.0 + k as f64 + 2.0 * noise;
            if k == 2 && (180..182).contains(&i) {
                v += 40.0;
            }
            s.ts.push(t0 + i * 60);
            s.count.push(12);
            s.avg.push(v);
            s.min.push(v - 1.0);
            s.max.push(v + 1.0);
        }
        series.push(s);
    }
    let an = analyse(
        &Dataset { width: 60, series },
        (t0, t0 + 6 * 3600),
        None,
        &Params::default(),
    );
    assert_eq!(an.anomalies.len(), 1, "{:#?}", an.anomalies);
    let mut facts = vec![period_fact(&an, 6.0, 6)];
    facts.extend(an.facts.iter().cloned());
    (an, facts)
}

fn good_narrative(an: &Analysis) -> String {
    let a = &an.anomalies[0];
    json!({
        "summary": "Over 6 hours one server had a critical spike.",
        "findings": [{"text": format!("{} {} spiked to {} against a typical {}.", a.server, a.metric, a.peak, a.typical), "evidence": [a.id]}]
    })
    .to_string()
}

fn wrong_narrative(an: &Analysis) -> String {
    let a = &an.anomalies[0];
    json!({
        "summary": "One spike.",
        "findings": [{"text": format!("{} spiked to {}.", a.server, a.peak + 12.5), "evidence": [a.id]}]
    })
    .to_string()
}

#[tokio::test]
async fn success_with_json_schema() {
    let (an, facts) = analysis();
    let (base, s) = fake(vec![answer(&good_narrative(&an))]).await;
    let c = client(&base, Duration::from_secs(5));
    let (n, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert!(info.validated, "{info:?}");
    assert_eq!(info.fallback_reason, None);
    assert_eq!(info.mode, "openai");
    assert_eq!(info.response_format, Some("json_schema"));
    assert_eq!(info.calls, 1);
    assert!(n.findings[0].text.contains("spiked to"));
    let reqs = requests(&s);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].1.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    let body = &reqs[0].2;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["required"],
        json!(["summary", "findings"])
    );
    let prompt = body["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains("A1 [anomaly]") && prompt.contains("P1 [period]"),
        "{prompt}"
    );
}

#[tokio::test]
async fn json_schema_unsupported_falls_back_to_json_object_then_text() {
    let (an, facts) = analysis();
    let (base, s) = fake(vec![
        error(
            400,
            "invalid_request_error",
            "response_format json_schema is not supported by this model",
        ),
        error(
            400,
            "invalid_request_error",
            "Unknown response_format type json_object",
        ),
        answer(&format!(
            "Here you go:\n```json\n{}\n```",
            good_narrative(&an)
        )),
    ])
    .await;
    let c = client(&base, Duration::from_secs(5));
    let (_, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert!(info.validated, "{info:?}");
    assert_eq!(info.response_format, Some("text"));
    let reqs = requests(&s);
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].2["response_format"]["type"], "json_schema");
    assert_eq!(reqs[1].2["response_format"]["type"], "json_object");
    assert!(reqs[2].2.get("response_format").is_none());
    // the downgrade is remembered
    assert_eq!(c.format().as_str(), "text");
}

#[tokio::test]
async fn rate_limit_429_honours_retry_after() {
    let (an, facts) = analysis();
    let mut limited = error(429, "rate_limit_exceeded", "Rate limit reached");
    limited.retry_after = Some("1");
    let (base, s) = fake(vec![limited, answer(&good_narrative(&an))]).await;
    let c = client(&base, Duration::from_secs(5));
    let (_, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert!(info.validated, "{info:?}");
    let reqs = requests(&s);
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].0 - reqs[0].0;
    assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
    assert!(gap < Duration::from_secs(3), "waited {gap:?}");
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_give_up() {
    let (an, facts) = analysis();
    // two 500s then success: retried
    let (base, s) = fake(vec![
        error(500, "server_error", "boom"),
        error(503, "server_error", "busy"),
        answer(&good_narrative(&an)),
    ])
    .await;
    let c = client(&base, Duration::from_secs(5));
    let (_, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert!(info.validated, "{info:?}");
    assert_eq!(requests(&s).len(), 3);

    // three 500s: attempts exhausted, local narrator with the reason
    let (base, s) = fake(vec![error(500, "server_error", "boom"); 3]).await;
    let c = client(&base, Duration::from_secs(5));
    let (n, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert_eq!(requests(&s).len(), 3);
    assert_eq!(info.fallback_reason, Some(Fallback::LlmHttpError));
    assert_eq!(n, local_narrative(&an, &facts));
    assert!(info.validated, "the local narrative validates");
}

#[tokio::test]
async fn insufficient_quota_is_not_retried() {
    let (an, facts) = analysis();
    let mut q = error(429, "insufficient_quota", "You exceeded your current quota");
    q.retry_after = Some("1");
    let (base, s) = fake(vec![q, answer(&good_narrative(&an))]).await;
    let c = client(&base, Duration::from_secs(5));
    let (n, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert_eq!(requests(&s).len(), 1);
    assert_eq!(info.fallback_reason, Some(Fallback::LlmQuotaExhausted));
    assert_eq!(n, local_narrative(&an, &facts));
}

#[tokio::test]
async fn timeout_falls_back() {
    let (an, facts) = analysis();
    let mut slow = answer(&good_narrative(&an));
    slow.delay = Duration::from_secs(3);
    let (base, _s) = fake(vec![slow]).await;
    let c = client(&base, Duration::from_millis(500));
    let t = Instant::now();
    let (n, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(info.fallback_reason, Some(Fallback::LlmTimeout));
    assert_eq!(n, local_narrative(&an, &facts));
}

#[tokio::test]
async fn malformed_answer_is_retried_once_with_the_errors() {
    let (an, facts) = analysis();
    let (base, s) = fake(vec![
        answer("I think srv-2 looks bad."),
        answer(&good_narrative(&an)),
    ])
    .await;
    let c = client(&base, Duration::from_secs(5));
    let (_, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert!(info.validated, "{info:?}");
    assert_eq!(info.calls, 2);
    let reqs = requests(&s);
    assert_eq!(reqs.len(), 2);
    let msgs = reqs[1].2["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[2]["role"], "assistant");
    assert!(
        msgs[3]["content"].as_str().unwrap().contains("rejected"),
        "{}",
        msgs[3]
    );

    // a body that is not JSON at all at the HTTP level
    let bad = Canned {
        status: 200,
        retry_after: None,
        body: "<html>oops</html>".into(),
        delay: Duration::ZERO,
    };
    let (base, _s) = fake(vec![bad]).await;
    let c = client(&base, Duration::from_secs(5));
    let (_, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert_eq!(info.fallback_reason, Some(Fallback::LlmMalformedResponse));
}

#[tokio::test]
async fn wrong_number_is_rejected_then_falls_back() {
    let (an, facts) = analysis();
    let (base, s) = fake(vec![
        answer(&wrong_narrative(&an)),
        answer(&wrong_narrative(&an)),
    ])
    .await;
    let c = client(&base, Duration::from_secs(5));
    let (n, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert_eq!(requests(&s).len(), 2);
    assert!(!info.validated || n == local_narrative(&an, &facts));
    assert_eq!(info.fallback_reason, Some(Fallback::LlmValidationFailed));
    assert!(info.cacheable(), "the same facts would be rejected again");
    assert_eq!(n, local_narrative(&an, &facts));
    // a wrong number followed by a corrected answer is accepted
    let (base, _s) = fake(vec![
        answer(&wrong_narrative(&an)),
        answer(&good_narrative(&an)),
    ])
    .await;
    let c = client(&base, Duration::from_secs(5));
    let (_, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert!(info.validated && info.fallback_reason.is_none(), "{info:?}");
    // the key never shows in what is reported
    assert!(!serde_json::to_string(&info).unwrap().contains(KEY));
    assert!(!format!("{c:?}", c = Secret::new(KEY)).contains(KEY));
}

/// The whole route in openai mode: config → client → /insights, against a
/// real database and the fake Chat Completions server.
#[tokio::test]
async fn insights_route_in_openai_mode() {
    use tower::ServiceExt;
    let db = common::TestDb::new("llmroute").await;
    let mut bins = common::minute_bins(4, 2);
    for b in bins.iter_mut() {
        if b.server == "srv-3" && b.metric == "cpu" && b.ts == common::T0 + 3600 {
            b.avg += 40.0;
            b.max += 40.0;
        }
    }
    db.insert(&bins).await;
    let narrative = json!({
        "summary": "The fleet is quiet apart from one server.",
        "findings": [{"text": "srv-3 cpu had a short spike.", "evidence": ["A1"]}]
    })
    .to_string();
    let (base, s) = fake(vec![answer(&narrative)]).await;
    let state = openai_state(&db, base);
    let resp = insights_api::app(state)
        .oneshot(
            axum::http::Request::get("/insights?start=2025-11-15T10:00:00&end=2025-11-15T12:00:00")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).to_string();
    assert!(!text.contains(KEY), "the key leaked into the response");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["llm"]["mode"], "openai");
    assert_eq!(v["llm"]["model"], "test-model");
    assert_eq!(v["llm"]["validated"], true, "{}", v["llm"]);
    assert_eq!(v["narrative"]["findings"][0]["evidence"], json!(["A1"]));
    assert_eq!(v["anomalies"][0]["server"], "srv-3");
    let reqs = requests(&s);
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].2["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("srv-3 cpu spike"));
    db.drop_db().await;
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_gives_up_at_once() {
    let (an, facts) = analysis();
    for wait in ["1e20", "inf", "18446744073709551616", "5"] {
        let mut limited = error(429, "rate_limit_exceeded", "Rate limit reached");
        limited.retry_after = Some(wait);
        let (base, s) = fake(vec![limited, answer(&good_narrative(&an))]).await;
        let mut c = client(&base, Duration::from_secs(5));
        c.budget = Duration::from_secs(1);
        let t = Instant::now();
        let (n, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
        assert_eq!(
            info.fallback_reason,
            Some(Fallback::LlmBudgetExhausted),
            "{wait}"
        );
        assert_eq!(requests(&s).len(), 1, "{wait}: no retry");
        // it did not sleep for the Retry-After (5 s or forever)
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "{wait}: {:?}",
            t.elapsed()
        );
        assert_eq!(n, local_narrative(&an, &facts));
        assert!(!info.cacheable(), "a transient failure is not kept");
    }
}

#[tokio::test]
async fn the_budget_bounds_every_call_and_retry() {
    let (an, facts) = analysis();
    let mut slow = answer(&good_narrative(&an));
    slow.delay = Duration::from_secs(4);
    // a rejected answer, then a corrected one that comes too late
    let (base, s) = fake(vec![answer(&wrong_narrative(&an)), slow]).await;
    let mut c = client(&base, Duration::from_secs(10));
    c.budget = Duration::from_millis(800);
    let t = Instant::now();
    let (n, info) = narrate(Some(&c), &an, &facts, 8000, later()).await;
    assert_eq!(
        info.fallback_reason,
        Some(Fallback::LlmBudgetExhausted),
        "{info:?}"
    );
    assert_eq!(requests(&s).len(), 2);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(n, local_narrative(&an, &facts));

    // the request's own deadline bounds it the same way
    let mut slow = answer(&good_narrative(&an));
    slow.delay = Duration::from_secs(4);
    let (base, _s) = fake(vec![slow]).await;
    let c = client(&base, Duration::from_secs(10));
    let t = Instant::now();
    let (_, info) = narrate(
        Some(&c),
        &an,
        &facts,
        8000,
        Instant::now() + Duration::from_millis(500),
    )
    .await;
    assert_eq!(info.fallback_reason, Some(Fallback::LlmBudgetExhausted));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn llm_slots_bound_the_calls_in_flight() {
    let (an, facts) = analysis();
    let mut ok = answer(&good_narrative(&an));
    ok.delay = Duration::from_millis(300);
    let (base, s) = fake_with(vec![], Some(ok)).await;
    let c = std::sync::Arc::new(client(&base, Duration::from_secs(5)).with_max_concurrent(2));
    let shared = std::sync::Arc::new((an, facts));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (c, shared) = (c.clone(), shared.clone());
        tasks.spawn(async move {
            let (an, facts) = &*shared;
            narrate(Some(&c), an, facts, 8000, later()).await.1
        });
    }
    while let Some(info) = tasks.join_next().await {
        let info = info.unwrap();
        assert!(info.validated && info.fallback_reason.is_none(), "{info:?}");
    }
    assert_eq!(requests(&s).len(), 6);
    assert_eq!(max_in_flight(&s), 2, "at most, and here exactly, the limit");

    // no slot free within the budget: the local narrator, code llm_busy
    let mut stuck = answer(&good_narrative(&shared.0));
    stuck.delay = Duration::from_secs(3);
    let (base, s) = fake_with(vec![], Some(stuck)).await;
    let one = client(&base, Duration::from_secs(10)).with_max_concurrent(1);
    let (an, facts) = &*shared;
    let first = Instant::now() + Duration::from_millis(1500);
    let (a, b) = tokio::join!(narrate(Some(&one), an, facts, 8000, first), async {
        // starts once the first holds the slot; gives up long before it frees
        tokio::time::sleep(Duration::from_millis(100)).await;
        let by = Instant::now() + Duration::from_millis(400);
        narrate(Some(&one), an, facts, 8000, by).await
    });
    assert_eq!(a.1.fallback_reason, Some(Fallback::LlmBudgetExhausted));
    assert_eq!(b.1.fallback_reason, Some(Fallback::LlmBusy));
    assert_eq!(requests(&s).len(), 1, "the second never reached the server");
}

/// The app in openai mode against the fake server at `base`.
fn openai_state(db: &common::TestDb, base: String) -> insights_api::AppState {
    db.state_with(|c| {
        c.llm_mode = Some(insights_api::config::LlmMode::Openai);
        c.openai_api_key = Some(Secret::new(KEY));
        c.openai_base_url = base;
        c.openai_model = "test-model".into();
    })
}

async fn get_text(state: &insights_api::AppState, uri: &str) -> (u16, String) {
    use tower::ServiceExt;
    let resp = insights_api::app(state.clone())
        .oneshot(
            axum::http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).to_string())
}

/// A repeated request makes no new LLM call while the bins are unchanged;
/// new bins (a new bins version) get a new narrative.
#[tokio::test]
async fn narratives_are_kept_per_range_filter_and_bins_version() {
    let db = common::TestDb::new("llmcache").await;
    let mut bins = common::minute_bins(4, 2);
    for b in bins.iter_mut() {
        if b.server == "srv-3" && b.metric == "cpu" && b.ts == common::T0 + 3600 {
            b.avg += 40.0;
            b.max += 40.0;
        }
    }
    let (late, first): (Vec<_>, Vec<_>) = bins.into_iter().partition(|b| b.server == "srv-4");
    db.insert(&first).await;
    let narrative = json!({
        "summary": "The fleet is quiet apart from one server.",
        "findings": [{"text": "srv-3 cpu had a short spike.", "evidence": ["A1"]}]
    })
    .to_string();
    let (base, s) = fake_with(vec![], Some(answer(&narrative))).await;
    let state = openai_state(&db, base);
    let uri = "/insights?start=2025-11-15T10:00:00&end=2025-11-15T12:00:00";
    let (st1, t1) = get_text(&state, uri).await;
    assert_eq!(st1, 200, "{t1}");
    let v1: Value = serde_json::from_str(&t1).unwrap();
    assert_eq!(v1["llm"]["validated"], true, "{}", v1["llm"]);
    assert_eq!(v1["llm"]["cached"], false);
    assert_eq!(requests(&s).len(), 1);
    for _ in 0..3 {
        let (_, t) = get_text(&state, uri).await;
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["llm"]["cached"], true, "{}", v["llm"]);
        assert_eq!(v["llm"]["calls"], 0);
        assert_eq!(v["narrative"], v1["narrative"]);
    }
    assert_eq!(
        requests(&s).len(),
        1,
        "no new LLM call for a repeated request"
    );
    // another filter is another narrative
    let (_, t) = get_text(&state, &format!("{uri}&server=srv-3")).await;
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["llm"]["cached"], false);
    assert_eq!(requests(&s).len(), 2);
    // new bins: a new narrative
    db.insert(&late).await;
    let (_, t) = get_text(&state, uri).await;
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["llm"]["cached"], false);
    assert_eq!(v["servers"].as_array().unwrap().len(), 4);
    assert_eq!(requests(&s).len(), 3);
    db.drop_db().await;
}

/// A failing LLM: the answer carries a fixed code, never the upstream text,
/// and the failure is not kept (the next request tries again).
#[tokio::test]
async fn upstream_errors_reach_clients_as_a_fixed_code_only() {
    let db = common::TestDb::new("llmerr").await;
    db.insert(&common::minute_bins(3, 1)).await;
    let upstream = "backend shard 7 at 10.1.2.3 overloaded; trace id 0xdeadbeef";
    let (base, s) = fake_with(vec![], Some(error(503, "server_error", upstream))).await;
    let state = openai_state(&db, base);
    let uri = "/insights?start=2025-11-15T10:00:00&end=2025-11-15T11:00:00";
    for round in 1..=2 {
        let (status, text) = get_text(&state, uri).await;
        assert_eq!(status, 200, "{text}");
        assert!(
            !text.contains("shard") && !text.contains("0xdeadbeef"),
            "{text}"
        );
        assert!(!text.contains(KEY));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["llm"]["fallback_reason"], "llm_http_error");
        assert_eq!(v["llm"]["cached"], false);
        assert_eq!(v["llm"]["validated"], true, "the local narrative validates");
        assert_eq!(requests(&s).len(), 3 * round, "3 attempts per request");
    }
    db.drop_db().await;
}
