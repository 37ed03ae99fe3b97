//! The OpenAI-compatible client against a local HTTP server speaking the
//! Chat Completions protocol, with scripted answers and recorded requests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use insights_api::analysis::{analyse, Analysis, Dataset, Fact, Params, Series};
use insights_api::config::Secret;
use insights_api::llm::{narrate, LlmClient};
use insights_api::narrative::{local_narrative, period_fact};
use serde_json::{json, Value};

const KEY: &str = "sk-test-key-0123456789";

#[derive(Clone)]
struct Canned {
    status: u16,
    retry_after: Option<&'static str>,
    body: String,
    delay: Duration,
}

fn answer(content: &str) -> Canned {
    Canned {
        status: 200,
        retry_after: None,
        body: json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
        })
        .to_string(),
        delay: Duration::ZERO,
    }
}

fn error(status: u16, code: &str, message: &str) -> Canned {
    Canned {
        status,
        retry_after: None,
        body: json!({"error": {"message": message, "type": code, "code": code}}).to_string(),
        delay: Duration::ZERO,
    }
}

#[derive(Default)]
struct Script {
    answers: VecDeque<Canned>,
    requests: Vec<(Instant, Option<String>, Value)>,
}

type Shared = Arc<Mutex<Script>>;

async fn completions(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let next = {
        let mut g = s.lock().unwrap();
        g.requests.push((Instant::now(), auth, body));
        g.answers.pop_front()
    };
    let Some(c) = next else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response();
    };
    if !c.delay.is_zero() {
        tokio::time::sleep(c.delay).await;
    }
    let mut r = (StatusCode::from_u16(c.status).unwrap(), c.body).into_response();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(ra) = c.retry_after {
        r.headers_mut().insert("retry-after", ra.parse().unwrap());
    }
    r
}

/// Starts the fake server; returns its base URL (`…/v1`) and the script.
async fn fake(answers: Vec<Canned>) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Script {
        answers: answers.into(),
        requests: Vec::new(),
    }));
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1"), shared)
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

fn requests(s: &Shared) -> Vec<(Instant, Option<String>, Value)> {
    s.lock().unwrap().requests.clone()
}

#[tokio::test]
async fn success_with_json_schema() {
    let (an, facts) = analysis();
    let (base, s) = fake(vec![answer(&good_narrative(&an))]).await;
    let c = client(&base, Duration::from_secs(5));
    let (n, info) = narrate(Some(&c), &an, &facts, 8000).await;
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
    let (_, info) = narrate(Some(&c), &an, &facts, 8000).await;
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
    let (_, info) = narrate(Some(&c), &an, &facts, 8000).await;
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
    let (_, info) = narrate(Some(&c), &an, &facts, 8000).await;
    assert!(info.validated, "{info:?}");
    assert_eq!(requests(&s).len(), 3);

    // three 500s: attempts exhausted, local narrator with the reason
    let (base, s) = fake(vec![error(500, "server_error", "boom"); 3]).await;
    let c = client(&base, Duration::from_secs(5));
    let (n, info) = narrate(Some(&c), &an, &facts, 8000).await;
    assert_eq!(requests(&s).len(), 3);
    let reason = info.fallback_reason.clone().unwrap();
    assert!(
        reason.contains("HTTP 500") && reason.contains("3 attempt"),
        "{reason}"
    );
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
    let (n, info) = narrate(Some(&c), &an, &facts, 8000).await;
    assert_eq!(requests(&s).len(), 1);
    assert!(
        info.fallback_reason
            .as_deref()
            .unwrap()
            .contains("insufficient quota"),
        "{info:?}"
    );
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
    let (n, info) = narrate(Some(&c), &an, &facts, 8000).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        info.fallback_reason
            .as_deref()
            .unwrap()
            .contains("timed out"),
        "{info:?}"
    );
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
    let (_, info) = narrate(Some(&c), &an, &facts, 8000).await;
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
    let (_, info) = narrate(Some(&c), &an, &facts, 8000).await;
    assert!(
        info.fallback_reason
            .as_deref()
            .unwrap()
            .contains("malformed"),
        "{info:?}"
    );
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
    let (n, info) = narrate(Some(&c), &an, &facts, 8000).await;
    assert_eq!(requests(&s).len(), 2);
    assert!(!info.validated || n == local_narrative(&an, &facts));
    let reason = info.fallback_reason.clone().unwrap();
    assert!(
        reason.contains("validation failed twice") && reason.contains("does not match"),
        "{reason}"
    );
    assert_eq!(n, local_narrative(&an, &facts));
    // a wrong number followed by a corrected answer is accepted
    let (base, _s) = fake(vec![
        answer(&wrong_narrative(&an)),
        answer(&good_narrative(&an)),
    ])
    .await;
    let c = client(&base, Duration::from_secs(5));
    let (_, info) = narrate(Some(&c), &an, &facts, 8000).await;
    assert!(info.validated && info.fallback_reason.is_none(), "{info:?}");
    // the key never shows in what is reported
    assert!(!serde_json::to_string(&info).unwrap().contains(KEY));
    assert!(!format!("{c:?}", c = Secret::new(KEY)).contains(KEY));
}

mod common;

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
    let mut config = insights_api::config::Config::for_database(&db.api_url);
    config.llm_mode = Some(insights_api::config::LlmMode::Openai);
    config.openai_api_key = Some(Secret::new(KEY));
    config.openai_base_url = base;
    config.openai_model = "test-model".into();
    let state = insights_api::AppState::new(config).unwrap();
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
