//! The OpenAI-compatible Chat Completions client and the narration pipeline:
//! structured output (json_schema → json_object → text), validation of every
//! answer, one retry with the errors, then the local narrator.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

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

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
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

/// One `reqwest::Client`, timeouts, typed request bodies.
pub struct LlmClient {
    http: reqwest::Client,
    base_url: String,
    pub model: String,
    key: Secret,
    max_attempts: u32,
    timeout: Duration,
    format: AtomicU8,
    /// Backoff without Retry-After: base × 2^attempt.
    pub backoff_base: Duration,
    /// Upper bound on any single wait (Retry-After included).
    pub max_wait: Duration,
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
            backoff_base: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
        })
    }

    pub fn from_config(c: &Config) -> Result<Option<Self>, String> {
        if c.effective_llm_mode() != LlmMode::Openai {
            return Ok(None);
        }
        let key = c.openai_api_key.clone().unwrap_or_default();
        Self::new(
            &c.openai_base_url,
            &c.openai_model,
            key,
            c.llm_timeout(),
            c.llm_max_attempts,
        )
        .map(Some)
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

    /// One chat completion; downgrades the structured-output format when the
    /// server says it does not support it. Returns the content and the format.
    #[tracing::instrument(skip_all, fields(model = %self.model, format))]
    pub async fn complete(&self, messages: &[Value]) -> Result<(String, Format), LlmError> {
        loop {
            let f = self.format();
            tracing::Span::current().record("format", f.as_str());
            let body = ChatRequest {
                model: &self.model,
                messages,
                temperature: 0.0,
                response_format: Self::response_format(f),
            };
            match self.send(&body).await {
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
                    self.format.store(f as u8 + 1, Ordering::Relaxed);
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

    async fn send(&self, body: &ChatRequest<'_>) -> Result<Value, LlmError> {
        let url = format!("{}/chat/completions", self.base_url);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let res = self
                .http
                .post(&url)
                .bearer_auth(self.key.expose())
                .json(body)
                .send()
                .await;
            let resp = match res {
                Ok(r) => r,
                Err(e) if e.is_timeout() => return Err(LlmError::Timeout(self.timeout)),
                Err(e) => return Err(LlmError::Transport(redact(&e.to_string(), &self.key))),
            };
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|h| h.to_str().ok())
                .and_then(parse_retry_after);
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) if e.is_timeout() => return Err(LlmError::Timeout(self.timeout)),
                Err(e) => return Err(LlmError::Transport(redact(&e.to_string(), &self.key))),
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
            if !retryable || attempt >= self.max_attempts {
                return Err(LlmError::Http {
                    status: status.as_u16(),
                    attempts: attempt,
                    message: redact(&message, &self.key),
                });
            }
            let wait = retry_after
                .unwrap_or_else(|| self.backoff_base * 2u32.saturating_pow(attempt - 1))
                .min(self.max_wait);
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

/// `Retry-After`: delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s));
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
    /// Why the local narrator was used instead of the LLM (openai mode).
    pub fallback_reason: Option<String>,
    pub latency_ms: u64,
    pub calls: u32,
    pub response_format: Option<&'static str>,
}

/// Narrates the facts: with the LLM when configured, validated, retried once
/// with the errors, else the local narrator with the reason.
#[tracing::instrument(skip_all, fields(mode, facts = facts.len()))]
pub async fn narrate(
    client: Option<&LlmClient>,
    an: &Analysis,
    facts: &[Fact],
    budget: usize,
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
            },
        );
    };
    tracing::Span::current().record("mode", "openai");
    let mut info = LlmInfo {
        mode: "openai",
        model: client.model.clone(),
        validated: false,
        fallback_reason: None,
        latency_ms: 0,
        calls: 0,
        response_format: None,
    };
    if an.health.is_empty() {
        info.fallback_reason = Some("no data in range; the LLM was not called".into());
        let n = local();
        info.validated = validate(&n, facts).is_ok();
        return (n, info);
    }
    let mut messages = vec![
        json!({"role": "system", "content": SYSTEM_PROMPT}),
        json!({"role": "user", "content": format!("Facts:\n{}", facts_prompt(facts, budget))}),
    ];
    let mut last_errors: Vec<String> = Vec::new();
    for round in 0..2 {
        info.calls += 1;
        match client.complete(&messages).await {
            Err(e) => {
                info.fallback_reason = Some(format!("LLM request failed: {e}"));
                break;
            }
            Ok((content, f)) => {
                info.response_format = Some(f.as_str());
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
                        last_errors = vec![errs.clone()];
                        messages.push(json!({"role": "assistant", "content": content}));
                        messages.push(json!({"role": "user", "content": format!(
                            "Your answer was rejected: {errs}. Answer again with the corrected JSON object only; copy numbers exactly from the facts you cite."
                        )}));
                    }
                }
            }
        }
    }
    if info.fallback_reason.is_none() {
        info.fallback_reason = Some(format!(
            "validation failed twice: {}",
            last_errors.join("; ")
        ));
    }
    let n = local();
    info.validated = validate(&n, facts).is_ok();
    info.latency_ms = t0.elapsed().as_millis() as u64;
    (n, info)
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
