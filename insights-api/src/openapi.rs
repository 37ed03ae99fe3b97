//! The OpenAPI 3 document: every endpoint, parameter, response and error.
//!
//! Parameters are described as the handlers accept them (formats, patterns,
//! lengths), so that a client, or a fuzzer generating from this document,
//! sends what reaches the handlers. What a schema cannot say (`start` before
//! `end`, a range of at most MAX_RANGE_HOURS) is in the descriptions.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::llm::Fallback;

fn param(name: &str, required: bool, desc: &str, schema: Value, example: &str) -> Value {
    json!({"name": name, "in": "query", "required": required, "description": desc,
           "schema": schema, "example": example})
}

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

/// An identifier: what `params::check_ident` accepts.
pub const IDENT_PATTERN: &str = "^[A-Za-z0-9._-]+$";

/// Widths in minutes, hours, days or weeks that are always valid (at most
/// 99,999 minutes, 999 hours, 99 days or 9 weeks). `parse_width` also takes
/// seconds (`300`, `300s`: whole minutes) and larger counts up to a year.
pub const WIDTH_PATTERN: &str = "^([1-9][0-9]{0,4} ?(m|min|mins|minute|minutes)|[1-9][0-9]{0,2} ?(h|hr|hrs|hour|hours)|[1-9][0-9]? ?(d|day|days)|[1-9] ?(w|week|weeks))$";

fn time_schema() -> Value {
    json!({"type": "string", "format": "date-time", "minLength": 10, "maxLength": 40})
}

fn ident_schema() -> Value {
    json!({"type": "string", "pattern": IDENT_PATTERN, "minLength": 1, "maxLength": 128})
}

/// A time in a response: RFC 3339 in UTC.
fn ts() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// A bin time as PostgreSQL holds it (/servers, /periods).
fn pg_ts() -> Value {
    json!({"type": "string", "description": "RFC 3339 in UTC; a year past 9999 is written with a sign and six digits (+270000-01-01T00:00:00Z), an infinite time as infinity or -infinity."})
}

fn nullable(t: &str) -> Value {
    json!({"type": t, "nullable": true})
}

pub fn document() -> Value {
    const TIME: &str = "RFC 3339 (2025-11-15T10:00:00Z, any offset), or a naive time meaning UTC \
                        (2025-11-15T10:00:00, 2025-11-15 10:00, 2025-11-15); years 0001-9999.";
    let start = param(
        "start",
        true,
        &format!("Start of the range (inclusive): {TIME}"),
        time_schema(),
        "2025-11-15T10:00:00Z",
    );
    let end = param(
        "end",
        true,
        &format!("End of the range (exclusive), after `start` and at most MAX_RANGE_HOURS (default 744) later: {TIME}"),
        time_schema(),
        "2025-11-16T10:00:00Z",
    );
    let server =
        |required: bool, desc: &str| param("server", required, desc, ident_schema(), "srv-2");
    let metric =
        |required: bool, desc: &str| param("metric", required, desc, ident_schema(), "cpu");
    let width = |desc: &str| {
        param(
            "width",
            false,
            &format!("{desc} A whole number of minutes from 1 minute to a year: 5m, 15 minutes, 1h, 2 hours, 1d, 1w; also seconds (300, 300s)."),
            json!({"type": "string", "pattern": WIDTH_PATTERN, "maxLength": 16}),
            "5m",
        )
    };
    let e400 = err("Bad input: a missing, repeated, unknown or unparseable parameter, a time outside years 0001-9999, start ≥ end, a range over the maximum, too many points (`bad_request`); an answer over MAX_RESPONSE_BYTES (`response_too_large`).");
    let e401 = err("API_TOKEN is set and the request has no valid `Authorization: Bearer` header.");
    let e403 = err("The Host header names another host than this service (a loopback bind refuses names other than localhost, IP addresses and ALLOWED_HOSTS: DNS rebinding).");
    let e404 = err("Unknown server or metric.");
    let e503 = err("The database is unavailable (`database_unavailable`), the request passed its deadline REQUEST_TIMEOUT_SECS or a statement its statement_timeout (`timeout`), or no request slot freed in time (`overloaded`). Retry-After says when to try again.");
    let data =
        |summary: &str, id: &str, params: Vec<Value>, ok200: Value, extra: &[(&str, Value)]| {
            let mut responses = json!({"200": ok200, "400": e400.clone(), "401": e401.clone(),
                                   "403": e403.clone(), "503": e503.clone()});
            for (code, v) in extra {
                responses[*code] = v.clone();
            }
            json!({"get": {"summary": summary, "operationId": id, "parameters": params,
                       "security": [{"bearer": []}], "responses": responses}})
        };
    let open = |summary: &str,
                id: &str,
                params: Vec<Value>,
                ok200: Value,
                extra: &[(&str, Value)]| {
        let mut responses = json!({"200": ok200, "403": e403.clone()});
        for (code, v) in extra {
            responses[*code] = v.clone();
        }
        json!({"get": {"summary": summary, "operationId": id, "parameters": params, "security": [],
                       "responses": responses}})
    };
    let asset_names = ["app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"];
    json!({
        "openapi": "3.0.3",
        "info": {"title": "metricagg insights-api", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Deterministic anomaly, trend, comparison and forecast facts over metricagg bins, narrated by an OpenAI-compatible LLM or a local narrator. Every number in the narrative is checked against the facts it cites. Every parameter may appear once; unknown parameters are refused. When API_TOKEN is set, every endpoint but /health, /, /assets/{name} and /openapi.json needs `Authorization: Bearer <API_TOKEN>`."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "API_TOKEN; required when it is set (always when BIND is not a loopback address)."}},
            "schemas": schemas(),
        },
        "paths": {
            "/health": open("The service and its database answer (no token needed).", "health", vec![],
                ok("Healthy.", "Health"), &[("400", e400.clone()), ("503", e503.clone())]),
            "/servers": data("Servers with stored bins, their metrics and time span.", "servers", vec![],
                ok("Servers (empty list with a message when none).", "Servers"), &[]),
            "/periods": data("Contiguous periods with data; a gap longer than PERIOD_GAP_BINS bins splits a period.", "periods", vec![],
                ok("Periods.", "Periods"), &[]),
            "/series": data("One series for charts, aggregated to `width` (count-weighted avg, min of min, max of max, p80 only at stored widths).", "series",
                vec![server(true, "Server id."), metric(true, "Metric name (cpu, memory, disk_io, network)."), start.clone(), end.clone(),
                     width("Bin width, default 1 minute.")],
                ok("Points (empty with a message when no data).", "Series"), &[("404", e404.clone())]),
            "/insights": data("Facts (anomalies, trends, comparisons, forecasts, health) and a validated narrative.", "insights",
                vec![start.clone(), end.clone(),
                     server(false, "Limit anomalies, trends, forecasts and health to one server (comparisons still use the fleet); empty means none."),
                     metric(false, "Limit to one metric; empty means none.")],
                ok("Insights (empty=true with a message when no data).", "Insights"), &[("404", e404.clone())]),
            "/fleet": data("Every server's count-weighted average of one metric on one time grid (null where a server has no bin), for the dashboard's fleet view.", "fleet",
                vec![metric(true, "Metric name."), start.clone(), end.clone(),
                     width("Bin width; default: the finest of 1m, 5m, 15m, 30m, 1h, 2h, 6h, 12h, 1d, 1w giving at most 720 points; at most 20,000 points.")],
                ok("One column per server (empty with a message when no data).", "Fleet"), &[("404", e404.clone())]),
            "/": open("The dashboard: an HTML page drawing /periods, /servers, /insights, /series and /fleet with the embedded uPlot.", "dashboard",
                vec![param("period", false, "The page's state: the start of the period shown (read by the page's script, not by the service).", json!({"type": "string"}), "2025-11-15T10:00:00Z"),
                     param("server", false, "The page's state: the server shown.", json!({"type": "string"}), "srv-2")],
                json!({"description": "The page (Cache-Control: no-cache; a Content-Security-Policy allowing only this service).", "content": {"text/html": {"schema": {"type": "string"}}}}),
                &[("400", e400.clone())]),
            "/assets/{name}": open("The dashboard's embedded scripts and styles.", "asset",
                vec![json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "enum": asset_names}, "example": "app.js"}),
                     param("v", false, "The build's version, as the page links it: the answer is then cacheable for a year (immutable); otherwise no-cache. An ETag answers If-None-Match with 304.",
                           json!({"type": "string", "pattern": "^[0-9a-f]{16}$"}), "0123456789abcdef")],
                json!({"description": "The file, text/javascript or text/css.", "content": {"text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}}),
                &[("304", json!({"description": "Not modified (If-None-Match matched the ETag)."})), ("400", e400.clone()), ("404", err("No such asset."))]),
            "/openapi.json": open("This document.", "openapi", vec![],
                json!({"description": "OpenAPI 3 document.", "content": {"application/json": {"schema": {"type": "object"}}}}),
                &[("400", e400.clone())])
        },
    })
}

fn schemas() -> Value {
    let severity = json!({"type": "string", "enum": ["info", "minor", "warning", "critical"]});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["status", "code", "message"], "properties": {
            "status": {"type": "integer", "minimum": 400, "maximum": 599}, "code": {"type": "string", "enum": ApiError::CODES}, "message": {"type": "string"}}}}},
        "Health": {"type": "object", "required": ["status", "database", "llm_mode"], "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"], "description": "degraded: change-log entries wait in quarantine (see job.quarantined and message)."},
            "database": {"type": "string", "enum": ["ok"]}, "llm_mode": {"type": "string", "enum": ["openai", "mock"]}, "message": nullable("string"),
            "job": {"type": "object", "nullable": true, "description": "metricagg.job_health; null on a schema without it.", "properties": {
                "last_run_at": {"type": "string", "nullable": true}, "last_work_at": {"type": "string", "nullable": true}, "quarantined": {"type": "integer", "minimum": 0},
                "last_quarantined_at": {"type": "string", "nullable": true}, "bins_engine": {"type": "string", "nullable": true}}}}},
        "Servers": {"type": "object", "required": ["count", "servers"], "properties": {"count": {"type": "integer", "minimum": 0}, "message": nullable("string"), "servers": {"type": "array", "items": {"type": "object", "required": ["server_id", "metrics", "first_bin", "last_bin", "bins"], "properties": {
            "server_id": {"type": "string"}, "metrics": {"type": "array", "items": {"type": "string"}}, "first_bin": pg_ts(), "last_bin": pg_ts(), "bins": {"type": "integer", "minimum": 1}}}}}},
        "Periods": {"type": "object", "required": ["width", "gap_bins", "count", "periods"], "properties": {"width": {"type": "string"}, "gap_bins": {"type": "integer"}, "count": {"type": "integer", "minimum": 0}, "message": nullable("string"), "periods": {"type": "array", "items": {"type": "object", "properties": {
            "start": pg_ts(), "end": pg_ts(), "servers": {"type": "array", "items": {"type": "string"}}, "timestamps": {"type": "integer"}, "bins": {"type": "integer"}}}}}},
        "Series": {"type": "object", "required": ["server", "metric", "start", "end", "width", "width_seconds", "empty", "count", "points"], "properties": {"server": {"type": "string"}, "metric": {"type": "string"}, "start": ts(), "end": ts(),
            "width": {"type": "string"}, "width_seconds": {"type": "integer", "minimum": 60}, "source_width": {"type": "string"}, "avg": {"type": "string"}, "p80": {"type": "string"}, "empty": {"type": "boolean"}, "message": nullable("string"), "count": {"type": "integer", "minimum": 0},
            "points": {"type": "array", "items": {"type": "object", "required": ["ts", "count"], "properties": {"ts": ts(), "count": {"type": "integer"}, "avg": nullable("number"), "min": nullable("number"), "max": nullable("number"), "p80": nullable("number")}}}}},
        "Fleet": {"type": "object", "required": ["metric", "start", "end", "width_seconds", "empty", "ts", "servers"], "properties": {"metric": {"type": "string"}, "start": ts(), "end": ts(),
            "width": {"type": "string"}, "width_seconds": {"type": "integer", "minimum": 60}, "source_width": {"type": "string"}, "avg": {"type": "string"}, "empty": {"type": "boolean"}, "message": nullable("string"),
            "ts": {"type": "array", "items": ts(), "description": "Bin starts of the grid."},
            "servers": {"type": "array", "items": {"type": "object", "properties": {"server": {"type": "string"}, "avg": {"type": "array", "items": nullable("number"), "description": "One value per grid bin."}}}}}},
        "Fact": {"type": "object", "required": ["id", "kind", "statement", "values"], "properties": {"id": {"type": "string"}, "kind": {"type": "string"},
            "server": {"type": "string"}, "metric": {"type": "string"}, "start": ts(), "end": ts(), "severity": severity, "weight": {"type": "number"}, "statement": {"type": "string"}, "values": {"type": "object", "additionalProperties": {"type": "number"}}}},
        "Anomaly": {"type": "object", "properties": {"id": {"type": "string"}, "server": {"type": "string"}, "metric": {"type": "string"}, "kind": {"type": "string"},
            "start": ts(), "end": ts(), "duration_minutes": {"type": "number"}, "peak": {"type": "number"}, "typical": {"type": "number"}, "band": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}, "score": {"type": "number", "minimum": 0, "maximum": 100}, "severity": severity, "z": {"type": "number"}}},
        "Trend": {"type": "object", "properties": {"id": {"type": "string"}, "server": {"type": "string"}, "metric": {"type": "string"}, "slope_per_hour": {"type": "number"}, "ci_low": {"type": "number", "nullable": true, "description": "null when too few points give no interval"}, "ci_high": {"type": "number", "nullable": true, "description": "null when too few points give no interval"}, "confidence": {"type": "number"}, "significant": {"type": "boolean"}, "material": {"type": "boolean"}, "change_over_window": {"type": "number"}, "points": {"type": "integer"}, "method": {"type": "string"}}},
        "Comparison": {"type": "object", "properties": {"metric": {"type": "string"}, "fleet_median": {"type": "number"}, "servers": {"type": "integer"}, "ranking": {"type": "array", "items": {"type": "object"}}, "standouts": {"type": "array", "items": {"type": "object"}}}},
        "Forecast": {"type": "object", "properties": {"id": {"type": "string"}, "server": {"type": "string"}, "metric": {"type": "string"}, "confidence": {"type": "number"}, "points": {"type": "array", "items": {"type": "object", "properties": {"ts": ts(), "value": {"type": "number"}, "lo": {"type": "number"}, "hi": {"type": "number"}}}},
            "threshold": nullable("number"), "hours_to_threshold": nullable("number"), "threshold_eta": {"type": "string", "format": "date-time", "nullable": true}}},
        "ServerHealth": {"type": "object", "properties": {"id": {"type": "string"}, "server": {"type": "string"}, "status": {"type": "string", "enum": ["ok", "warning", "critical"]}, "score": {"type": "number"}}},
        "Narrative": {"type": "object", "required": ["summary", "findings"], "properties": {"summary": {"type": "string"}, "findings": {"type": "array", "items": {"type": "object", "required": ["text", "evidence"], "properties": {"text": {"type": "string"}, "evidence": {"type": "array", "items": {"type": "string"}}}}}}},
        "Llm": {"type": "object", "required": ["mode", "model", "validated", "fallback_reason", "calls", "cached"], "properties": {"mode": {"type": "string", "enum": ["openai", "mock"]}, "model": {"type": "string"}, "validated": {"type": "boolean"},
            "fallback_reason": {"type": "string", "nullable": true, "enum": Fallback::ALL.map(Fallback::as_str), "description": "Why the local narrator answered in openai mode: a fixed code (details in the service's log)."},
            "latency_ms": {"type": "integer"}, "calls": {"type": "integer", "minimum": 0}, "response_format": {"type": "string", "nullable": true}, "cached": {"type": "boolean", "description": "Written for an earlier identical request (same range, filter and bins version): no LLM call for this one."}}},
        "Insights": {"type": "object", "required": ["period", "filter", "servers", "empty", "facts", "narrative", "llm"], "properties": {
            "period": {"type": "object"}, "filter": {"type": "object"}, "servers": {"type": "array", "items": {"type": "string"}}, "empty": {"type": "boolean"}, "message": nullable("string"),
            "facts": {"type": "array", "items": {"$ref": "#/components/schemas/Fact"}}, "anomalies": {"type": "array", "items": {"$ref": "#/components/schemas/Anomaly"}},
            "trends": {"type": "array", "items": {"$ref": "#/components/schemas/Trend"}}, "comparisons": {"type": "array", "items": {"$ref": "#/components/schemas/Comparison"}},
            "forecasts": {"type": "array", "items": {"$ref": "#/components/schemas/Forecast"}}, "health": {"type": "array", "items": {"$ref": "#/components/schemas/ServerHealth"}},
            "narrative": {"$ref": "#/components/schemas/Narrative"}, "llm": {"$ref": "#/components/schemas/Llm"}, "timing_ms": {"type": "object"}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{check_ident, parse_width};

    /// Examples of the document are valid input, and what the patterns
    /// describe is what the parsers accept.
    #[test]
    fn patterns_match_the_parsers() {
        let width_ok = [
            "1m",
            "5m",
            "99999 minutes",
            "999h",
            "2 hours",
            "1d",
            "99 days",
            "9w",
            "1 week",
        ];
        for w in width_ok {
            assert!(parse_width(w).is_ok(), "{w}");
        }
        // what the pattern leaves out is still accepted or is invalid
        assert!(parse_width("300").is_ok());
        assert!(parse_width("0m").is_err());
        for id in ["srv-2", "a", "x.y_z-1"] {
            assert!(check_ident("server", id).is_ok());
        }
        for bad in ["", "a b", "a\nb", "é"] {
            assert!(check_ident("server", bad).is_err(), "{bad:?}");
        }
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for p in item["get"]["parameters"].as_array().unwrap() {
                assert!(p["schema"].is_object(), "{path} {}", p["name"]);
            }
        }
    }
}
