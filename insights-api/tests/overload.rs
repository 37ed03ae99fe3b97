//! 50 concurrent cold /insights requests (each a range no earlier request
//! asked for) against a slow LLM stand-in, through the real app on a socket:
//! every one answers, 200 or 503 with a JSON body, within the deadline; none
//! hangs; the LLM never sees more calls at once than LLM_MAX_CONCURRENT; the
//! service answers normally afterwards.

mod common;

use std::time::{Duration, Instant};

use common::fake_llm::{answer, fake_with, max_in_flight, requests};
use common::*;
use insights_api::app;
use insights_api::config::{LlmMode, Secret};
use serde_json::{json, Value};

const REQUESTS: i64 = 50;
const DEADLINE_SECS: u64 = 6;
const LLM_SLOTS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_cold_requests_against_a_slow_llm_all_answer_within_the_deadline() {
    let db = TestDb::new("overload").await;
    db.insert(&minute_bins(6, 6)).await;
    // valid for any range: cites only the period fact, states no number
    let narrative = json!({
        "summary": "The fleet looks steady over the period.",
        "findings": [{"text": "The period is covered by the analysis.", "evidence": ["P1"]}]
    })
    .to_string();
    let mut slow = answer(&narrative);
    slow.delay = Duration::from_millis(1500);
    let (base, llm) = fake_with(vec![], Some(slow)).await;

    let state = db.state_with(|c| {
        c.llm_mode = Some(LlmMode::Openai);
        c.openai_api_key = Some(Secret::new("sk-overload-test"));
        c.openai_base_url = base;
        c.request_timeout_secs = DEADLINE_SECS;
        c.max_concurrent_requests = 4;
        c.db_pool_size = 4;
        c.llm_max_concurrent = LLM_SLOTS;
        c.llm_budget_secs = 4;
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });

    let deadline = Duration::from_secs(DEADLINE_SECS);
    // A hang shows as this client timeout, far past the deadline.
    let http = reqwest::Client::builder()
        .timeout(deadline + Duration::from_secs(20))
        .build()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let http = http.clone();
        let (start, end) = (T0 + i * 60, T0 + i * 60 + 3 * 3600);
        let url = format!("http://{addr}/insights?start={}&end={}", ts(start), ts(end));
        tasks.spawn(async move {
            let t = Instant::now();
            let r = http.get(&url).send().await;
            let r = r.unwrap_or_else(|e| panic!("{url}: no answer: {e}"));
            let status = r.status().as_u16();
            let body: Value = r
                .json()
                .await
                .unwrap_or_else(|e| panic!("{url}: body is not JSON: {e}"));
            (status, body, t.elapsed())
        });
    }
    let (mut ok, mut unavailable, mut narrated, mut slowest) = (0, 0, 0, Duration::ZERO);
    while let Some(res) = tasks.join_next().await {
        let (status, body, took) = res.expect("request task");
        slowest = slowest.max(took);
        match status {
            200 => {
                ok += 1;
                assert_eq!(body["empty"], false);
                assert_eq!(body["llm"]["mode"], "openai");
                if body["llm"]["fallback_reason"].is_null() {
                    narrated += 1;
                } else {
                    let code = body["llm"]["fallback_reason"].as_str().unwrap();
                    assert!(
                        ["llm_busy", "llm_budget_exhausted"].contains(&code),
                        "{}",
                        body["llm"]
                    );
                }
            }
            503 => {
                unavailable += 1;
                let code = body["error"]["code"].as_str().unwrap_or_default();
                assert!(["timeout", "overloaded"].contains(&code), "{body}");
            }
            other => panic!("status {other}: {body}"),
        }
        // The deadline, plus slack for a loaded two-core machine.
        assert!(
            took <= deadline + Duration::from_secs(3),
            "an answer took {took:?}"
        );
    }
    assert_eq!(ok + unavailable, REQUESTS);
    let calls = requests(&llm).len();
    let peak = max_in_flight(&llm);
    eprintln!(
        "overload: {ok} answered 200 ({narrated} narrated by the LLM), {unavailable} 503; \
         LLM calls {calls}, at most {peak} at once (limit {LLM_SLOTS}); slowest answer {slowest:?}"
    );
    assert!(ok > 0 && narrated > 0, "the service did serve under load");
    assert!(
        peak >= 1 && peak as u64 <= LLM_SLOTS,
        "LLM saw {peak} calls at once"
    );

    // and afterwards it answers as usual
    let r = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!(
            "http://{addr}/insights?start={}&end={}",
            ts(T0),
            ts(T0 + 3600)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.abort();
    db.drop_db().await;
}

fn ts(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
