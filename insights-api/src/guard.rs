//! What every request passes before and after its handler, in order:
//!
//! 1. **Host** (DNS rebinding): when the service listens on a loopback
//!    address, a `Host` header must name `localhost`, an IP address or one of
//!    ALLOWED_HOSTS; a web page on another name that resolves to 127.0.0.1
//!    is refused (403). A request without `Host` (not a browser) passes.
//! 2. **Token**: when API_TOKEN is set, every path but the static ones
//!    ([`is_open`]: /health, the dashboard page and assets, /openapi.json)
//!    needs `Authorization: Bearer <API_TOKEN>` (401 otherwise), compared in
//!    constant time.
//! 3. **Deadline and slots**: a request gets REQUEST_TIMEOUT_SECS from
//!    here ([`Deadline`], which handlers read to bound their own work, the
//!    LLM's in particular); waiting for one of MAX_CONCURRENT_REQUESTS slots
//!    counts against it (/health takes no slot). Past the deadline the
//!    answer is 503 `timeout` (or `overloaded` when it never got a slot).
//! 4. **Size**: a body over MAX_RESPONSE_BYTES becomes a 400
//!    `response_too_large` asking for a narrower request.
//!
//! A handler that panics answers a 500 JSON error (the panic is logged)
//! instead of closing the connection.

use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;

/// When the request's answer is due (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);

/// The request's slot (a request extension). Work that may outlive the
/// request (a blocking analysis) keeps a clone, so the slot stays taken
/// until that work is done.
#[derive(Clone, Debug)]
pub struct Slot(pub Arc<OwnedSemaphorePermit>);

/// Paths served without a token: they hold no data and cost nothing.
pub fn is_open(path: &str) -> bool {
    matches!(path, "/health" | "/" | "/openapi.json") || path.starts_with("/assets/")
}

pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let config = &st.0.config;
    if let Err(e) = check_host(config, &req) {
        return e.into_response();
    }
    let path = req.uri().path();
    let health = path == "/health";
    if !is_open(path) {
        if let Err(e) = check_token(config, req.headers()) {
            return e.into_response();
        }
    }
    let deadline = Instant::now() + config.request_timeout();
    req.extensions_mut().insert(Deadline(deadline));
    let until = tokio::time::Instant::from_std(deadline);
    let run = async {
        // Held here until the answer is ready; a handler's work that may
        // outlive the request holds a clone.
        let mut slot = None;
        if !health {
            // Give up on a slot just before the deadline, so that a request
            // that never got one says so.
            let slots = Arc::clone(&st.0.slots);
            let by = until - (config.request_timeout() / 20).min(Duration::from_millis(100));
            match tokio::time::timeout_at(by, slots.acquire_owned()).await {
                Ok(Ok(p)) => {
                    let p = Arc::new(p);
                    req.extensions_mut().insert(Slot(Arc::clone(&p)));
                    slot = Some(p);
                }
                _ => {
                    return ApiError::Overloaded(format!(
                        "no request slot free within {:?}",
                        config.request_timeout()
                    ))
                    .into_response()
                }
            };
        }
        let resp = match AssertUnwindSafe(next.run(req)).catch_unwind().await {
            Ok(resp) => resp,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                ApiError::Internal(format!("the handler panicked: {what}")).into_response()
            }
        };
        let resp = cap(resp, config.max_response_bytes).await;
        drop(slot);
        resp
    };
    match tokio::time::timeout_at(until, run).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout(format!(
            "no answer within REQUEST_TIMEOUT_SECS={}",
            config.request_timeout_secs
        ))
        .into_response(),
    }
}

/// The response, or a 400 when its body is over `max` bytes.
async fn cap(resp: Response, max: usize) -> Response {
    let (parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, max).await {
        Ok(bytes) => Response::from_parts(parts, Body::from(bytes)),
        Err(_) => ApiError::TooLarge(format!(
            "the answer is larger than {max} bytes (MAX_RESPONSE_BYTES); ask for a shorter range, \
             a coarser width, or one server or metric"
        ))
        .into_response(),
    }
}

/// The host part of a Host header value (`name`, `name:port`, `[v6]:port`),
/// lower case, without a trailing dot.
fn host_name(value: &str) -> &str {
    let v = value.trim();
    let name = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match v.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => v,
        }
    };
    name.strip_suffix('.').unwrap_or(name)
}

fn check_host(config: &Config, req: &Request) -> Result<(), ApiError> {
    if !config.bind.ip().is_loopback() {
        return Ok(());
    }
    let Some(value) = req.headers().get(header::HOST) else {
        return Ok(());
    };
    let value = value.to_str().unwrap_or("");
    let name = host_name(value).to_ascii_lowercase();
    let allowed = name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok()
        || config
            .allowed_hosts
            .iter()
            .any(|h| h.trim().trim_end_matches('.').eq_ignore_ascii_case(&name));
    if allowed {
        Ok(())
    } else {
        Err(ApiError::ForbiddenHost(format!(
            "Host {:?} is not this service's name: it listens on {} and answers to localhost and IP \
             addresses (a page on another name that resolves here is refused); add the name to \
             ALLOWED_HOSTS when a proxy forwards it",
            value.chars().take(64).collect::<String>(),
            config.bind
        )))
    }
}

fn check_token(config: &Config, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = config.token() else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        None => Err(ApiError::Unauthorized(
            "this endpoint needs the header `Authorization: Bearer <API_TOKEN>`".into(),
        )),
        Some(t) if constant_time_eq(t.as_bytes(), token.expose().trim().as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized(
            "the bearer token is not valid".into(),
        )),
    }
}

/// Equal contents, in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_name("localhost:3000"), "localhost");
        assert_eq!(host_name("[::1]:3000"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("evil.example:80"), "evil.example");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    /// A panicking handler answers a 500 JSON error; the service goes on.
    #[tokio::test]
    async fn a_panic_is_a_500_json() {
        use axum::routing::get;
        use tower::ServiceExt;
        let config = Config::for_database("postgres://nobody@127.0.0.1:1/none");
        let st = AppState::new(config).unwrap();
        let app = axum::Router::new()
            .route(
                "/boom",
                get(|| async {
                    panic!("kaboom");
                    #[allow(unreachable_code)]
                    "never"
                }),
            )
            .route("/fine", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn_with_state(st.clone(), guard))
            .with_state(st);
        let call = |uri: &'static str| {
            let app = app.clone();
            async move {
                let r = app
                    .oneshot(axum::http::Request::get(uri).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = r.status();
                let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
                (status, String::from_utf8_lossy(&b).to_string())
            }
        };
        let (s, body) = call("/boom").await;
        assert_eq!(s, 500);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal");
        assert!(!body.contains("kaboom"), "details stay in the log: {body}");
        assert_eq!(
            call("/fine").await,
            (axum::http::StatusCode::OK, "fine".into())
        );
    }

    #[test]
    fn open_paths() {
        for p in ["/health", "/", "/assets/app.js", "/openapi.json"] {
            assert!(is_open(p), "{p}");
        }
        for p in [
            "/insights",
            "/series",
            "/servers",
            "/periods",
            "/fleet",
            "/nowhere",
        ] {
            assert!(!is_open(p), "{p}");
        }
    }
}
