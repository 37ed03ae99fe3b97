//! A local HTTP server speaking the OpenAI Chat Completions protocol, with
//! scripted answers, recorded requests and a count of requests in flight.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub retry_after: Option<&'static str>,
    pub body: String,
    pub delay: Duration,
}

/// A 200 whose message content is `content`.
pub fn answer(content: &str) -> Canned {
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

/// An OpenAI-style error body.
pub fn error(status: u16, code: &str, message: &str) -> Canned {
    Canned {
        status,
        retry_after: None,
        body: json!({"error": {"message": message, "type": code, "code": code}}).to_string(),
        delay: Duration::ZERO,
    }
}

#[derive(Default)]
pub struct Script {
    pub answers: VecDeque<Canned>,
    /// Answered when `answers` is used up (else a 500 "script exhausted").
    pub otherwise: Option<Canned>,
    pub requests: Vec<(Instant, Option<String>, Value)>,
    pub in_flight: usize,
    pub max_in_flight: usize,
}

pub type Shared = Arc<Mutex<Script>>;

struct Leave(Shared);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

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
        g.in_flight += 1;
        g.max_in_flight = g.max_in_flight.max(g.in_flight);
        g.answers.pop_front().or_else(|| g.otherwise.clone())
    };
    // counted out when the answer is sent, or the client gave up
    let _leave = Leave(s.clone());
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
pub async fn fake(answers: Vec<Canned>) -> (String, Shared) {
    fake_with(answers, None).await
}

/// As [`fake`], answering `otherwise` once `answers` are used up.
pub async fn fake_with(answers: Vec<Canned>, otherwise: Option<Canned>) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Script {
        answers: answers.into(),
        otherwise,
        ..Script::default()
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

pub fn requests(s: &Shared) -> Vec<(Instant, Option<String>, Value)> {
    s.lock().unwrap().requests.clone()
}

pub fn max_in_flight(s: &Shared) -> usize {
    s.lock().unwrap().max_in_flight
}
