//! One error type for the HTTP layer: 4xx says what is wrong, 5xx is logged
//! and its details hidden. Every error is a JSON body
//! `{"error": {"status", "code", "message"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// The answer would exceed MAX_RESPONSE_BYTES (or a per-endpoint bound).
    #[error("{0}")]
    TooLarge(String),
    /// No or a wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// A Host header that names no allowed host (DNS rebinding).
    #[error("{0}")]
    ForbiddenHost(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The database does not answer (connection refused, pool timeout).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The request's deadline passed, or a statement hit statement_timeout.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Every request slot stayed taken until the deadline.
    #[error("overloaded: {0}")]
    Overloaded(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::TooLarge(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::ForbiddenHost(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) | ApiError::Timeout(_) | ApiError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge(_) => "response_too_large",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::ForbiddenHost(_) => "forbidden_host",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Unavailable(_) => "database_unavailable",
            ApiError::Timeout(_) => "timeout",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Every code a body can carry (the OpenAPI document lists them).
    pub const CODES: [&'static str; 10] = [
        "bad_request",
        "response_too_large",
        "unauthorized",
        "forbidden_host",
        "not_found",
        "method_not_allowed",
        "database_unavailable",
        "timeout",
        "overloaded",
        "internal",
    ];
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::BadRequest(m)
            | ApiError::TooLarge(m)
            | ApiError::Unauthorized(m)
            | ApiError::ForbiddenHost(m)
            | ApiError::NotFound(m)
            | ApiError::MethodNotAllowed(m) => m.clone(),
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                "the database is unavailable; try again shortly".to_string()
            }
            ApiError::Timeout(detail) => {
                tracing::warn!(%detail, "request timed out");
                "the request took longer than its deadline; try a shorter range or again shortly"
                    .to_string()
            }
            ApiError::Overloaded(detail) => {
                tracing::warn!(%detail, "overloaded");
                "too many requests are in progress; try again shortly".to_string()
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error".to_string()
            }
        };
        let status = self.status();
        let body = json!({ "error": { "status": status.as_u16(), "code": self.code(), "message": message } });
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"insights-api\""),
                );
            }
            ApiError::Timeout(_) | ApiError::Overloaded(_) | ApiError::Unavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code().map(|c| c.code()) {
            // query_canceled: statement_timeout (or a cancel request).
            Some("57014") => ApiError::Timeout(e.to_string()),
            // connection exceptions, operator intervention, too many connections
            Some(c) if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
                ApiError::Unavailable(e.to_string())
            }
            Some(_) => ApiError::Internal(e.to_string()),
            // No SQLSTATE: the connection is gone (closed, I/O), or a value
            // could not be converted (a bug or data this build cannot read).
            None if e.is_closed() || io_error(&e) => ApiError::Unavailable(e.to_string()),
            None => ApiError::Internal(e.to_string()),
        }
    }
}

fn io_error(e: &tokio_postgres::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.is::<std::io::Error>() {
            return true;
        }
        src = s.source();
    }
    false
}
