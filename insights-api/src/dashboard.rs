//! The dashboard (issue 7): one page at `/`, its assets under `/assets/`, and
//! `/fleet`, the one series the page needs that the API lacked (every
//! server's average of one metric on one time grid).
//!
//! The page and uPlot are embedded in the binary, so the service works without
//! the network: `dashboard/src/` holds the page, `assets/vendor/uplot/` the
//! uPlot build copied from the npm package pinned in
//! `dashboard/package-lock.json` (`make dashboard-assets`; `make
//! test-dashboard` checks the copy).

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::db;
use crate::error::ApiError;
use crate::params::{check_ident, parse_time, parse_width, width_name};
use crate::routes::AppState;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! page_src {
    ($f:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../dashboard/src/",
            $f
        ))
    };
}

impl Asset {
    const fn js(name: &'static str, body: &'static [u8]) -> Asset {
        Asset {
            name,
            content_type: "text/javascript; charset=utf-8",
            body,
        }
    }
    const fn css(name: &'static str, body: &'static [u8]) -> Asset {
        Asset {
            name,
            content_type: "text/css; charset=utf-8",
            body,
        }
    }
}

const ASSETS: &[Asset] = &[
    Asset::js("app.js", page_src!("app.js")),
    Asset::css("app.css", page_src!("app.css")),
    Asset::js(
        "uPlot.iife.min.js",
        include_bytes!("../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    Asset::css(
        "uPlot.min.css",
        include_bytes!("../assets/vendor/uplot/uPlot.min.css"),
    ),
];

const INDEX: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../dashboard/src/index.html"
));

/// Only the service itself: no CDN, no web font, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A version of all the embedded files (FNV-1a over their bytes): asset URLs
/// carry it, so assets can be cached for good and a new build is fetched anew.
fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in ASSETS
            .iter()
            .flat_map(|a| a.body.iter())
            .chain(INDEX.as_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    })
}

fn index_html() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| INDEX.replace("{{version}}", version()))
}

/// `/`, `/assets/{name}` and `/fleet`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
        .route("/fleet", get(fleet))
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("a valid header value")
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        index_html(),
    )
        .into_response()
}

async fn asset(
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let a = ASSETS.iter().find(|a| a.name == name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no asset {name}; assets are {}",
            ASSETS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let etag = format!("\"{}\"", version());
    // A URL with the current version never changes; any other is revalidated.
    let cache = if q.get("v").map(String::as_str) == Some(version()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ETAG, header_value(&etag));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    Ok((h, a.body).into_response())
}

/// Points per server `/fleet` aims at when no width is given.
const FLEET_TARGET_POINTS: i64 = 720;
/// Most grid points `/fleet` returns (per server).
const FLEET_MAX_POINTS: i64 = 20_000;

/// The automatic width of `/fleet`: the finest of a few round widths that
/// keeps the grid within `FLEET_TARGET_POINTS`.
pub fn fleet_width(range_secs: i64) -> i64 {
    const NICE: [i64; 10] = [60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 604800];
    NICE.into_iter()
        .find(|w| range_secs / w <= FLEET_TARGET_POINTS)
        .unwrap_or(NICE[NICE.len() - 1])
}

fn bad(msg: String) -> ApiError {
    ApiError::BadRequest(msg)
}

/// `GET /fleet?metric&start&end[&width]`: every server's count-weighted
/// average of one metric on one grid of bins (null where a server has none),
/// for comparing the fleet in one chart.
#[tracing::instrument(skip_all, fields(metric))]
async fn fleet(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    const ALLOWED: [&str; 4] = ["metric", "start", "end", "width"];
    if let Some(k) = q.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown parameter `{k}`; allowed: {}",
            ALLOWED.join(", ")
        )));
    }
    let get = |name: &str| {
        q.get(name)
            .map(String::as_str)
            .ok_or_else(|| bad(format!("missing required parameter `{name}`")))
    };
    let metric = get("metric")?;
    tracing::Span::current().record("metric", metric);
    check_ident("metric", metric).map_err(bad)?;
    let start = parse_time("start", get("start")?).map_err(bad)?;
    let end = parse_time("end", get("end")?).map_err(bad)?;
    if start >= end {
        return Err(bad(format!(
            "`start` ({start}) must be before `end` ({end})"
        )));
    }
    let max_hours = st.0.config.max_range_hours;
    if (end - start).num_seconds() > max_hours * 3600 {
        return Err(bad(format!(
            "the range is {} hours; the maximum is {max_hours} hours",
            (end - start).num_seconds() / 3600
        )));
    }
    let width = match q.get("width") {
        Some(w) => parse_width(w).map_err(bad)?,
        None => fleet_width((end - start).num_seconds()),
    };
    let s_al = db::floor_to_bin(start.timestamp(), width);
    let e_al = {
        let f = db::floor_to_bin(end.timestamp(), width);
        if f < end.timestamp() {
            f + width
        } else {
            f
        }
    };
    let slots = (e_al - s_al) / width;
    if slots > FLEET_MAX_POINTS {
        return Err(bad(format!(
            "{} would give {slots} points per server, more than {FLEET_MAX_POINTS}; use a coarser `width`",
            width_name(width)
        )));
    }
    if !db::metric_exists(&st.0.pool, metric).await? {
        return Err(ApiError::NotFound(format!(
            "unknown metric `{metric}`; metrics are cpu, memory, disk_io, network"
        )));
    }
    let source = db::source_width(width);
    let c = st.0.pool.get().await?;
    let rows = c
        .query(
            "SELECT server_id,
                    date_bin($4::bigint * interval '1 second', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
                    sum(avg * count) FILTER (WHERE avg IS NOT NULL)
                      / nullif(sum(count) FILTER (WHERE avg IS NOT NULL), 0)::float8
               FROM metricagg.bins
              WHERE metric_type = $1 AND width = $5::bigint * interval '1 second'
                AND ts >= $2 AND ts < $3
              GROUP BY 1, 2",
            &[&metric, &ts(s_al), &ts(e_al), &width, &source],
        )
        .await?;
    let mut by_server: HashMap<String, Vec<Option<f64>>> = HashMap::new();
    for r in &rows {
        let t: DateTime<Utc> = r.get(1);
        let slot = ((t.timestamp() - s_al) / width) as usize;
        let col = by_server
            .entry(r.get(0))
            .or_insert_with(|| vec![None; slots as usize]);
        if let Some(v) = col.get_mut(slot) {
            *v = r.get(2);
        }
    }
    let mut names: Vec<String> = by_server.keys().cloned().collect();
    names.sort_by(|a, b| db::natural_cmp(a, b));
    let servers: Vec<Value> = names
        .iter()
        .map(|n| json!({"server": n, "avg": by_server[n]}))
        .collect();
    let grid: Vec<DateTime<Utc>> = (0..slots).map(|i| ts(s_al + i * width)).collect();
    let message = servers
        .is_empty()
        .then(|| format!("no {metric} data in [{}, {})", ts(s_al), ts(e_al)));
    Ok(Json(json!({
        "metric": metric,
        "start": ts(s_al),
        "end": ts(e_al),
        "width": width_name(width),
        "width_seconds": width,
        "source_width": width_name(source),
        "avg": "count-weighted mean of stored averages",
        "empty": servers.is_empty(),
        "message": message,
        "ts": grid,
        "servers": servers,
    })))
}

fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_fleet_width() {
        assert_eq!(fleet_width(3600), 60);
        assert_eq!(fleet_width(12 * 3600), 60);
        assert_eq!(fleet_width(24 * 3600), 300);
        assert_eq!(fleet_width(7 * 86400), 900);
        assert_eq!(fleet_width(31 * 86400), 3600 * 2);
    }

    #[test]
    fn index_names_versioned_assets_only() {
        let html = index_html();
        assert!(!html.contains("{{version}}"));
        for a in ASSETS {
            assert!(
                html.contains(&format!("/assets/{}?v={}", a.name, version())),
                "index.html does not load {}",
                a.name
            );
        }
        // nothing from elsewhere: every src/href is local
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                assert!(
                    part.starts_with('/') || part.starts_with('#') || part.starts_with("data:"),
                    "{attr}{}",
                    &part[..part.len().min(40)]
                );
            }
        }
    }
}
