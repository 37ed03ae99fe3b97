//! The OpenAI-compatible Chat Completions client and the narration pipeline:
//! structured output (json_schema → json_object → text), validation of every
//! answer, one retry with the errors, then the local narrator.
//!
//! Bounded three ways: every HTTP call holds one of LLM_MAX_CONCURRENT
//! slots; one request's calls, retries and waits share one deadline (the
//! LLM budget, within the request's own deadline), and a `Retry-After` longer
//! than what is left gives up at once; each call has LLM_TIMEOUT_SECS at most.
//! A fallback carries a fixed code ([`Fallback`]); the upstream details go
//! to the log only.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::analysis::{Analysis, Fact};
use crate::config::{Config, LlmMode, Secret};
use crate::narrative::{
    facts_prompt, local_narrative, narrative_schema, validate, Narrative, SYSTEM_PROMPT,
};

/// Structured-output capability, downgraded when a server refuses one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    JsonSchema = 0,
    JsonObject = 1,
    Text = 2,
}

impl Format {
    fn from_u8(x: u8) -> Format {
        match x {
            0 => Format::JsonSchema,
            1 => Format::JsonObject,
            _ => Format::Text,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Format::JsonSchema => "json_schema",
            Format::JsonObject => "json_object",
            Format::Text => "text",
        }
    }
}

/// Why the local narrator answered in openai mode: a fixed code, the same
/// for every occurrence (what happened in detail is in the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Nothing to narrate: the LLM was not called.
    NoData,
    /// No LLM slot became free within the budget.
    LlmBusy,
    /// A call exceeded LLM_TIMEOUT_SECS.
    LlmTimeout,
    /// The budget ran out, or a Retry-After asked for more than was left.
    LlmBudgetExhausted,
    /// 429 on every attempt.
    LlmRateLimited,
    /// 429 insufficient_quota (never retried).
    LlmQuotaExhausted,
    /// Another HTTP error status (after retries for 5xx).
    LlmHttpError,
    /// The server could not be reached.
    LlmUnreachable,
    /// The answer was not a Chat Completions response.
    LlmMalformedResponse,
    /// Two answers failed the narrative's validation.
    LlmValidationFailed,
}

impl Fallback {
    pub const ALL: [Fallback; 10] = [
        Fallback::NoData,
        Fallback::LlmBusy,
        Fallback::LlmTimeout,
        Fallback::LlmBudgetExhausted,
        Fallback::LlmRateLimited,
        Fallback::LlmQuotaExhausted,
        Fallback::LlmHttpError,
        Fallback::LlmUnreachable,
        Fallback::LlmMalformedResponse,
        Fallback::LlmValidationFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::NoData => "no_data",
            Fallback::LlmBusy => "llm_busy",
            Fallback::LlmTimeout => "llm_timeout",
            Fallback::LlmBudgetExhausted => "llm_budget_exhausted",
            Fallback::LlmRateLimited => "llm_rate_limited",
            Fallback::LlmQuotaExhausted => "llm_quota_exhausted",
            Fallback::LlmHttpError => "llm_http_error",
            Fallback::LlmUnreachable => "llm_unreachable",
            Fallback::LlmMalformedResponse => "llm_malformed_response",
            Fallback::LlmValidationFailed => "llm_validation_failed",
        }
    }
}

/// What went wrong with a call, in detail: for the log, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("no LLM slot free within the budget")]
    Busy,
    #[error("budget exhausted: {0}")]
    Budget(String),
    #[error("insufficient quota (HTTP 429 insufficient_quota); not retried")]
    InsufficientQuota,
    #[error("HTTP {status} after {attempts} attempt(s): {message}")]
    Http {
        status: u16,
        attempts: u32,
        message: String,
    },
    #[error("transport error: {0}")]
    Transport(String),
    #[error("malformed response: {0}")]
    Malformed(String),
}

impl LlmError {
    pub fn fallback(&self) -> Fallback {
        match self {
            LlmError::Timeout(_) => Fallback::LlmTimeout,
            LlmError::Busy => Fallback::LlmBusy,
            LlmError::Budget(_) => Fallback::LlmBudgetExhausted,
            LlmError::InsufficientQuota => Fallback::LlmQuotaExhausted,
            LlmError::Http { status: 429, .. } => Fallback::LlmRateLimited,
            LlmError::Http { .. } => Fallback::LlmHttpError,
            LlmError::Transport(_) => Fallback::LlmUnreachable,
            LlmError::Malformed(_) => Fallback::LlmMalformedResponse,
        }
    }
}

/// One `reqwest::Client`, timeouts, typed request bodies, a bounded number
/// of calls in flight.
pub struct LlmClient {
    http: reqwest::Client,
    base_url: String,
    pub model: String,
    key: Secret,
    max_attempts: u32,
    timeout: Duration,
    format: AtomicU8,
    /// One permit per HTTP exchange in flight.
    slots: Arc<Semaphore>,
    /// Backoff without Retry-After: base × 2^attempt.
    pub backoff_base: Duration,
    /// Total time of one narration (calls, retries, waits).
    pub budget: Duration,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Value],
    temperature: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
}

impl LlmClient {
    pub fn new(
        base_url: &str,
        model: &str,
        key: Secret,
        timeout: Duration,
        max_attempts: u32,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(LlmClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            key,
            max_attempts: max_attempts.max(1),
            timeout,
            format: AtomicU8::new(Format::JsonSchema as u8),
            slots: Arc::new(Semaphore::new(4)),
            backoff_base: Duration::from_millis(500),
            budget: Duration::from_secs(15),
        })
    }

    /// At most `n` calls in flight at once (at least one).
    pub fn with_max_concurrent(mut self, n: usize) -> Self {
        self.slots = Arc::new(Semaphore::new(n.max(1)));
        self
    }

    pub fn from_config(c: &Config) -> Result<Option<Self>, String> {
        if c.effective_llm_mode() != LlmMode::Openai {
            return Ok(None);
        }
        let key = c.openai_api_key.clone().unwrap_or_default();
        let mut client = Self::new(
            &c.openai_base_url,
            &c.openai_model,
            key,
            c.llm_timeout(),
            c.llm_max_attempts,
        )?
        .with_max_concurrent(c.llm_max_concurrent as usize);
        client.budget = Duration::from_secs(c.llm_budget_secs);
        Ok(Some(client))
    }

    pub fn format(&self) -> Format {
        Format::from_u8(self.format.load(Ordering::Relaxed))
    }

    fn response_format(f: Format) -> Option<Value> {
        match f {
            Format::JsonSchema => Some(json!({
                "type": "json_schema",
                "json_schema": {"name": "narrative", "strict": true, "schema": narrative_schema()}
            })),
            Format::JsonObject => Some(json!({"type": "json_object"})),
            Format::Text => None,
        }
    }

    /// One chat completion by `deadline`; downgrades the structured-output
    /// format when the server says it does not support it. Returns the
    /// content and the format.
    #[tracing::instrument(skip_all, fields(model = %self.model, format))]
    pub async fn complete(
        &self,
        messages: &[Value],
        deadline: Instant,
    ) -> Result<(String, Format), LlmError> {
        loop {
            let f = self.format();
            tracing::Span::current().record("format", f.as_str());
            let body = ChatRequest {
                model: &self.model,
                messages,
                temperature: 0.0,
                response_format: Self::response_format(f),
            };
            match self.send(&body, deadline).await {
                Err(LlmError::Http {
                    status, message, ..
                }) if (status == 400 || status == 422)
                    && f != Format::Text
                    && mentions_format(&message) =>
                {
                    tracing::info!(
                        status,
                        from = f.as_str(),
                        "structured output unsupported; downgrading"
                    );
                    // Another request may have downgraded it already.
                    let _ = self.format.compare_exchange(
                        f as u8,
                        f as u8 + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                Err(e) => return Err(e),
                Ok(v) => {
                    let content = v
                        .pointer("/choices/0/message/content")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            LlmError::Malformed("no choices[0].message.content".into())
                        })?;
                    return Ok((content.to_string(), f));
                }
            }
        }
    }

    /// What is left until `deadline`, or the budget error.
    fn left(deadline: Instant, what: &str) -> Result<Duration, LlmError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(10) {
            return Err(LlmError::Budget(format!("nothing left for {what}")));
        }
        Ok(left)
    }

    /// One call with its retries, by `deadline`. Each HTTP exchange holds an
    /// LLM slot from before it is sent until its answer is read or it times
    /// out (LLM_TIMEOUT_SECS), even when the budget ends first: the request
    /// then goes on without it, and the exchange finishes in the background,
    /// so the server never has more calls of ours than there are slots.
    async fn send(&self, body: &ChatRequest<'_>, deadline: Instant) -> Result<Value, LlmError> {
        let url = format!("{}/chat/completions", self.base_url);
        let payload = bytes::Bytes::from(
            serde_json::to_vec(body).map_err(|e| LlmError::Malformed(e.to_string()))?,
        );
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = Self::left(deadline, "a call")?;
            let slot = tokio::time::timeout(left, Arc::clone(&self.slots).acquire_owned())
                .await
                .map_err(|_| LlmError::Busy)?
                .map_err(|_| LlmError::Busy)?;
            let left = Self::left(deadline, "a call")?;
            let call = self
                .http
                .post(&url)
                .bearer_auth(self.key.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(payload.clone());
            let exchange = tokio::spawn(exchange(call, self.timeout, self.key.clone(), slot));
            let (status, retry_after, text) = match tokio::time::timeout(left, exchange).await {
                Err(_) => {
                    return Err(LlmError::Budget(format!(
                    "attempt {attempt} still running after {left:?}; it finishes in the background"
                )))
                }
                Ok(Err(e)) => {
                    return Err(LlmError::Transport(format!("the call's task failed: {e}")))
                }
                Ok(Ok(r)) => r?,
            };
            if status.is_success() {
                return serde_json::from_str(&text)
                    .map_err(|e| LlmError::Malformed(format!("body is not JSON: {e}")));
            }
            let message = error_message(&text);
            if status.as_u16() == 429 && is_insufficient_quota(&text) {
                return Err(LlmError::InsufficientQuota);
            }
            let retryable = status.as_u16() == 429 || status.is_server_error();
            let failed = || LlmError::Http {
                status: status.as_u16(),
                attempts: attempt,
                message: redact(&message, &self.key),
            };
            if !retryable || attempt >= self.max_attempts {
                return Err(failed());
            }
            let wait = retry_after.unwrap_or_else(|| {
                self.backoff_base
                    .saturating_mul(2u32.saturating_pow(attempt - 1))
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if wait >= left {
                tracing::warn!(
                    status = status.as_u16(),
                    attempt,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    left_ms = left.as_millis() as u64,
                    "LLM asks to wait longer than the budget leaves; giving up"
                );
                return Err(LlmError::Budget(format!(
                    "{}; retry in {wait:?} but {left:?} left",
                    failed()
                )));
            }
            tracing::warn!(
                status = status.as_u16(),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "LLM request failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// One HTTP exchange, holding `slot` until the answer is read or `timeout`
/// passes: the status, the Retry-After and the body.
async fn exchange(
    call: reqwest::RequestBuilder,
    timeout: Duration,
    key: Secret,
    slot: OwnedSemaphorePermit,
) -> Result<(reqwest::StatusCode, Option<Duration>, String), LlmError> {
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            LlmError::Timeout(timeout)
        } else {
            LlmError::Transport(redact(&e.to_string(), &key))
        }
    };
    let resp = call.timeout(timeout).send().await.map_err(failed)?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|h| h.to_str().ok())
        .and_then(parse_retry_after);
    let text = resp.text().await.map_err(failed)?;
    drop(slot);
    Ok((status, retry_after, text))
}

fn mentions_format(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("response_format")
        || m.contains("json_schema")
        || m.contains("json_object")
        || m.contains("structured")
}

fn is_insufficient_quota(body: &str) -> bool {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = v
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    code == "insufficient_quota" || kind == "insufficient_quota"
}

fn error_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let m = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    m.chars().take(300).collect()
}

/// Never let the key leak through an error message.
fn redact(s: &str, key: &Secret) -> String {
    if key.is_empty() {
        s.to_string()
    } else {
        s.replace(key.expose(), "[redacted]")
    }
}

/// `Retry-After`: delta-seconds or an HTTP date; `Duration::MAX` for a
/// number of seconds too large to represent (`1e20`, `inf`); `None` when it
/// is no time at all (then the backoff applies).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<f64>() {
        if s.is_nan() || s < 0.0 {
            return None;
        }
        return Some(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX));
    }
    let t = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let d = t.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(d.to_std().unwrap_or(Duration::ZERO))
}

/// Extracts the narrative JSON from an answer (code fences or prose around it
/// are tolerated in text mode).
pub fn parse_narrative(content: &str) -> Result<Narrative, String> {
    let t = content.trim();
    if let Ok(n) = serde_json::from_str::<Narrative>(t) {
        return Ok(n);
    }
    let (Some(a), Some(b)) = (t.find('{'), t.rfind('}')) else {
        return Err("the answer contains no JSON object".into());
    };
    if b <= a {
        return Err("the answer contains no JSON object".into());
    }
    serde_json::from_str::<Narrative>(&t[a..=b]).map_err(|e| {
        format!(
            "the answer is not a narrative object {{summary, findings:[{{text, evidence}}]}}: {e}"
        )
    })
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LlmInfo {
    pub mode: &'static str,
    pub model: String,
    /// The narrative returned passed validation.
    pub validated: bool,
    /// Why the local narrator was used instead of the LLM (openai mode): a
    /// fixed code, see [`Fallback`].
    pub fallback_reason: Option<Fallback>,
    pub latency_ms: u64,
    pub calls: u32,
    pub response_format: Option<&'static str>,
    /// The narrative was written for an earlier, identical request (same
    /// range, filter and bins version): no LLM call was made for this one.
    pub cached: bool,
}

impl LlmInfo {
    /// Worth keeping for identical requests: an LLM answer that passed, or
    /// two that failed validation (the same facts would get the same answers
    /// at temperature 0). Not a transient failure, not mock mode.
    pub fn cacheable(&self) -> bool {
        self.mode == "openai"
            && match self.fallback_reason {
                None => self.validated,
                Some(f) => f == Fallback::LlmValidationFailed,
            }
    }
}

/// Narrates the facts by `deadline`: with the LLM when configured,
/// validated, retried once with the errors, else the local narrator with the
/// reason.
#[tracing::instrument(skip_all, fields(mode, facts = facts.len()))]
pub async fn narrate(
    client: Option<&LlmClient>,
    an: &Analysis,
    facts: &[Fact],
    budget_chars: usize,
    deadline: Instant,
) -> (Narrative, LlmInfo) {
    let t0 = Instant::now();
    let local = || local_narrative(an, facts);
    let Some(client) = client else {
        tracing::Span::current().record("mode", "mock");
        let n = local();
        let ok = validate(&n, facts).is_ok();
        return (
            n,
            LlmInfo {
                mode: "mock",
                model: "local-narrator".into(),
                validated: ok,
                fallback_reason: None,
                latency_ms: t0.elapsed().as_millis() as u64,
                calls: 0,
                response_format: None,
                cached: false,
            },
        );
    };
    tracing::Span::current().record("mode", "openai");
    let deadline = deadline.min(t0 + client.budget);
    let mut info = LlmInfo {
        mode: "openai",
        model: client.model.clone(),
        validated: false,
        fallback_reason: None,
        latency_ms: 0,
        calls: 0,
        response_format: None,
        cached: false,
    };
    let finish = |mut info: LlmInfo, reason: Fallback| {
        let n = local();
        info.fallback_reason = Some(reason);
        info.validated = validate(&n, facts).is_ok();
        info.latency_ms = t0.elapsed().as_millis() as u64;
        (n, info)
    };
    if an.health.is_empty() {
        return finish(info, Fallback::NoData);
    }
    let mut messages = vec![
        json!({"role": "system", "content": SYSTEM_PROMPT}),
        json!({"role": "user", "content": format!("Facts:\n{}", facts_prompt(facts, budget_chars))}),
    ];
    for round in 0..2 {
        info.calls += 1;
        let content = match client.complete(&messages, deadline).await {
            Err(e) => {
                tracing::warn!(round, error = %e, reason = e.fallback().as_str(), "LLM narrative unavailable; local narrator");
                return finish(info, e.fallback());
            }
            Ok((content, f)) => {
                info.response_format = Some(f.as_str());
                content
            }
        };
        let checked = parse_narrative(&content)
            .and_then(|n| validate(&n, facts).map(|_| n).map_err(|e| e.join("; ")));
        match checked {
            Ok(n) => {
                info.validated = true;
                info.latency_ms = t0.elapsed().as_millis() as u64;
                return (n, info);
            }
            Err(errs) => {
                tracing::warn!(round, errors = %errs, "LLM narrative rejected");
                messages.push(json!({"role": "assistant", "content": content}));
                messages.push(json!({"role": "user", "content": format!(
                    "Your answer was rejected: {errs}. Answer again with the corrected JSON object only; copy numbers exactly from the facts you cite."
                )}));
            }
        }
    }
    finish(info, Fallback::LlmValidationFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        // too long for a Duration: the longest wait, never a panic
        for v in ["1e20", "1e308", "inf", "18446744073709551616"] {
            assert_eq!(parse_retry_after(v), Some(Duration::MAX), "{v}");
        }
        for v in ["NaN", "-1", "-inf"] {
            assert_eq!(parse_retry_after(v), None, "{v}");
        }
    }

    #[test]
    fn fallback_codes_are_fixed_snake_case() {
        for f in Fallback::ALL {
            let s = serde_json::to_value(f).unwrap();
            assert_eq!(s, f.as_str());
            assert!(f
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        let e = LlmError::Http {
            status: 500,
            attempts: 3,
            message: "upstream says: secret internals".into(),
        };
        assert_eq!(e.fallback().as_str(), "llm_http_error");
    }

    #[test]
    fn narrative_parsing() {
        let n = parse_narrative("```json\n{\"summary\":\"s\",\"findings\":[{\"text\":\"t\",\"evidence\":[\"A1\"]}]}\n```").unwrap();
        assert_eq!(n.findings[0].evidence, ["A1"]);
        assert!(parse_narrative("no json here").is_err());
        assert!(parse_narrative("{\"summary\": 3}").is_err());
    }

    #[test]
    fn quota_and_redaction() {
        assert!(is_insufficient_quota(
            r#"{"error":{"code":"insufficient_quota","message":"x"}}"#
        ));
        assert!(!is_insufficient_quota(
            r#"{"error":{"code":"rate_limit_exceeded"}}"#
        ));
        let k = Secret::new("sk-abc");
        assert_eq!(redact("bad key sk-abc", &k), "bad key [redacted]");
    }
}
