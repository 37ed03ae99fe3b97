//! The OpenAPI 3 document: every endpoint, parameter, response and error.

use serde_json::{json, Value};

fn p(name: &str, required: bool, desc: &str, example: &str) -> Value {
    json!({"name": name, "in": "query", "required": required, "description": desc,
           "schema": {"type": "string"}, "example": example})
}

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

pub fn document() -> Value {
    let start = p(
        "start",
        true,
        "Start of the range: RFC 3339, or a naive time meaning UTC.",
        "2025-11-15T10:00:00",
    );
    let end = p(
        "end",
        true,
        "End of the range (exclusive), same forms as start; must be after start.",
        "2025-11-16T10:00:00",
    );
    let e400 = err("Bad input: a missing or unparseable parameter, start ≥ end, a range over the maximum, an unknown parameter.");
    let e404 = err("Unknown server or metric.");
    let e503 = err("The database is unavailable.");
    json!({
        "openapi": "3.0.3",
        "info": {"title": "metricagg insights-api", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Deterministic anomaly, trend, comparison and forecast facts over metricagg bins, narrated by an OpenAI-compatible LLM or a local narrator. Every number in the narrative is checked against the facts it cites."},
        "paths": {
            "/health": {"get": {"summary": "The service and its database answer.", "operationId": "health",
                "responses": {"200": ok("Healthy.", "Health"), "503": e503}}},
            "/servers": {"get": {"summary": "Servers with stored bins, their metrics and time span.", "operationId": "servers",
                "responses": {"200": ok("Servers (empty list with a message when none).", "Servers"), "503": e503}}},
            "/periods": {"get": {"summary": "Contiguous periods with data; a gap longer than PERIOD_GAP_BINS bins splits a period.", "operationId": "periods",
                "responses": {"200": ok("Periods.", "Periods"), "503": e503}}},
            "/series": {"get": {"summary": "One series for charts, aggregated to `width` (count-weighted avg, min of min, max of max, p80 only at stored widths).", "operationId": "series",
                "parameters": [p("server", true, "Server id.", "srv-2"), p("metric", true, "cpu, memory, disk_io or network.", "cpu"), start.clone(), end.clone(),
                               p("width", false, "Bin width: 1m (default), 5m, 1h, 1d, '5 minutes'… A whole number of minutes.", "5m")],
                "responses": {"200": ok("Points (empty with a message when no data).", "Series"), "400": e400.clone(), "404": e404.clone(), "503": e503.clone()}}},
            "/insights": {"get": {"summary": "Facts (anomalies, trends, comparisons, forecasts, health) and a validated narrative.", "operationId": "insights",
                "parameters": [start, end, p("server", false, "Limit anomalies, trends, forecasts and health to one server (comparisons still use the fleet).", "srv-2"),
                               p("metric", false, "Limit to one metric.", "memory")],
                "responses": {"200": ok("Insights (empty=true with a message when no data).", "Insights"), "400": e400, "404": e404, "503": e503}}},
            "/fleet": {"get": {"summary": "Every server's count-weighted average of one metric on one time grid (null where a server has no bin), for the dashboard's fleet view.", "operationId": "fleet",
                "parameters": [p("metric", true, "cpu, memory, disk_io or network.", "cpu"), start.clone(), end.clone(),
                               p("width", false, "Bin width as in /series; default: the finest of 1m, 5m, 15m, 30m, 1h, 2h, 6h, 12h, 1d, 1w giving at most 720 points.", "5m")],
                "responses": {"200": ok("One column per server (empty with a message when no data).", "Fleet"), "400": e400.clone(), "404": e404.clone(), "503": e503.clone()}}},
            "/": {"get": {"summary": "The dashboard: an HTML page drawing /periods, /servers, /insights, /series and /fleet with the embedded uPlot.", "operationId": "dashboard",
                "responses": {"200": {"description": "The page (Cache-Control: no-cache; a Content-Security-Policy allowing only this service).", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/assets/{name}": {"get": {"summary": "The dashboard's embedded scripts and styles (app.js, app.css, uPlot.iife.min.js, uPlot.min.css).", "operationId": "asset",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "example": "app.js"},
                               p("v", false, "The build's version, as the page links it: the answer is then cacheable for a year (immutable); otherwise no-cache. An ETag answers If-None-Match with 304.", "0123456789abcdef")],
                "responses": {"200": {"description": "The file, text/javascript or text/css.", "content": {"text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}},
                              "304": {"description": "Not modified (If-None-Match matched the ETag)."}, "404": err("No such asset.")}}},
            "/openapi.json": {"get": {"summary": "This document.", "operationId": "openapi", "responses": {"200": {"description": "OpenAPI 3 document."}}}}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["status", "code", "message"], "properties": {
                "status": {"type": "integer"}, "code": {"type": "string", "enum": ["bad_request", "not_found", "database_unavailable", "internal"]}, "message": {"type": "string"}}}}},
            "Health": {"type": "object", "properties": {"status": {"type": "string"}, "database": {"type": "string"}, "llm_mode": {"type": "string", "enum": ["openai", "mock"]}}},
            "Servers": {"type": "object", "properties": {"count": {"type": "integer"}, "message": {"type": "string", "nullable": true}, "servers": {"type": "array", "items": {"type": "object", "properties": {
                "server_id": {"type": "string"}, "metrics": {"type": "array", "items": {"type": "string"}}, "first_bin": {"type": "string", "format": "date-time"}, "last_bin": {"type": "string", "format": "date-time"}, "bins": {"type": "integer"}}}}}},
            "Periods": {"type": "object", "properties": {"width": {"type": "string"}, "gap_bins": {"type": "integer"}, "count": {"type": "integer"}, "message": {"type": "string", "nullable": true}, "periods": {"type": "array", "items": {"type": "object", "properties": {
                "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"}, "servers": {"type": "array", "items": {"type": "string"}}, "timestamps": {"type": "integer"}, "bins": {"type": "integer"}}}}}},
            "Series": {"type": "object", "properties": {"server": {"type": "string"}, "metric": {"type": "string"}, "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"},
                "width": {"type": "string"}, "width_seconds": {"type": "integer"}, "source_width": {"type": "string"}, "p80": {"type": "string"}, "empty": {"type": "boolean"}, "message": {"type": "string", "nullable": true}, "count": {"type": "integer"},
                "points": {"type": "array", "items": {"type": "object", "properties": {"ts": {"type": "string", "format": "date-time"}, "count": {"type": "integer"}, "avg": {"type": "number", "nullable": true}, "min": {"type": "number", "nullable": true}, "max": {"type": "number", "nullable": true}, "p80": {"type": "number", "nullable": true}}}}}},
            "Fleet": {"type": "object", "properties": {"metric": {"type": "string"}, "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"},
                "width": {"type": "string"}, "width_seconds": {"type": "integer"}, "source_width": {"type": "string"}, "avg": {"type": "string"}, "empty": {"type": "boolean"}, "message": {"type": "string", "nullable": true},
                "ts": {"type": "array", "items": {"type": "string", "format": "date-time"}, "description": "Bin starts of the grid."},
                "servers": {"type": "array", "items": {"type": "object", "properties": {"server": {"type": "string"}, "avg": {"type": "array", "items": {"type": "number", "nullable": true}, "description": "One value per grid bin."}}}}}},
            "Fact": {"type": "object", "required": ["id", "kind", "statement", "values"], "properties": {"id": {"type": "string"}, "kind": {"type": "string", "enum": ["period", "anomaly", "trend", "comparison", "forecast", "health"]},
                "server": {"type": "string"}, "metric": {"type": "string"}, "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"}, "severity": {"type": "string"}, "weight": {"type": "number"}, "statement": {"type": "string"}, "values": {"type": "object", "additionalProperties": {"type": "number"}}}},
            "Anomaly": {"type": "object", "properties": {"id": {"type": "string"}, "server": {"type": "string"}, "metric": {"type": "string"}, "kind": {"type": "string", "enum": ["spike", "dip", "level_shift", "leak", "stuck", "dropout", "noisy_neighbour"]},
                "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"}, "duration_minutes": {"type": "number"}, "peak": {"type": "number"}, "typical": {"type": "number"}, "band": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}, "score": {"type": "number", "minimum": 0, "maximum": 100}, "severity": {"type": "string", "enum": ["minor", "warning", "critical"]}, "z": {"type": "number"}}},
            "Trend": {"type": "object", "properties": {"id": {"type": "string"}, "server": {"type": "string"}, "metric": {"type": "string"}, "slope_per_hour": {"type": "number"}, "ci_low": {"type": "number"}, "ci_high": {"type": "number"}, "confidence": {"type": "number"}, "significant": {"type": "boolean"}, "material": {"type": "boolean"}, "change_over_window": {"type": "number"}, "points": {"type": "integer"}, "method": {"type": "string"}}},
            "Comparison": {"type": "object", "properties": {"metric": {"type": "string"}, "fleet_median": {"type": "number"}, "servers": {"type": "integer"}, "ranking": {"type": "array", "items": {"type": "object"}}, "standouts": {"type": "array", "items": {"type": "object"}}}},
            "Forecast": {"type": "object", "properties": {"id": {"type": "string"}, "server": {"type": "string"}, "metric": {"type": "string"}, "confidence": {"type": "number"}, "points": {"type": "array", "items": {"type": "object", "properties": {"ts": {"type": "string", "format": "date-time"}, "value": {"type": "number"}, "lo": {"type": "number"}, "hi": {"type": "number"}}}},
                "threshold": {"type": "number", "nullable": true}, "hours_to_threshold": {"type": "number", "nullable": true}, "threshold_eta": {"type": "string", "format": "date-time", "nullable": true}}},
            "Health": {"type": "object"},
            "Narrative": {"type": "object", "required": ["summary", "findings"], "properties": {"summary": {"type": "string"}, "findings": {"type": "array", "items": {"type": "object", "required": ["text", "evidence"], "properties": {"text": {"type": "string"}, "evidence": {"type": "array", "items": {"type": "string"}}}}}}},
            "Llm": {"type": "object", "properties": {"mode": {"type": "string", "enum": ["openai", "mock"]}, "model": {"type": "string"}, "validated": {"type": "boolean"}, "fallback_reason": {"type": "string", "nullable": true}, "latency_ms": {"type": "integer"}, "calls": {"type": "integer"}, "response_format": {"type": "string", "nullable": true}}},
            "Insights": {"type": "object", "properties": {
                "period": {"type": "object"}, "filter": {"type": "object"}, "servers": {"type": "array", "items": {"type": "string"}}, "empty": {"type": "boolean"}, "message": {"type": "string", "nullable": true},
                "facts": {"type": "array", "items": {"$ref": "#/components/schemas/Fact"}}, "anomalies": {"type": "array", "items": {"$ref": "#/components/schemas/Anomaly"}},
                "trends": {"type": "array", "items": {"$ref": "#/components/schemas/Trend"}}, "comparisons": {"type": "array", "items": {"$ref": "#/components/schemas/Comparison"}},
                "forecasts": {"type": "array", "items": {"$ref": "#/components/schemas/Forecast"}}, "health": {"type": "array", "items": {"type": "object"}},
                "narrative": {"$ref": "#/components/schemas/Narrative"}, "llm": {"$ref": "#/components/schemas/Llm"}, "timing_ms": {"type": "object"}}}
        }}
    })
}
