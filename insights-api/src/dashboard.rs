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

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::db;
use crate::error::ApiError;
use crate::params::{utc, width_name, AssetQuery, FleetQuery, Query};
use crate::state::AppState;

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

/// The page. Its query (`?period=…&server=…`) is the page's own state, read
/// by the script, not by the service.
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
    name: Result<Path<String>, PathRejection>,
    Query(q): Query<AssetQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::BadRequest(format!("bad asset name: {e}")))?;
    let a = ASSETS.iter().find(|a| a.name == name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no asset {:?}; assets are {}",
            name.chars().take(64).collect::<String>(),
            ASSETS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let etag = format!("\"{}\"", version());
    // A URL with the current version never changes; any other is revalidated.
    let cache = if q.v.as_deref() == Some(version()) {
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
/// keeps the grid within `FLEET_TARGET_POINTS` and is a multiple of a stored
/// width.
pub fn fleet_width(widths: &db::StoredWidths, range_secs: i64) -> i64 {
    const NICE: [i64; 10] = [60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 604800];
    NICE.into_iter()
        .filter(|&w| widths.source_for(w).is_some())
        .find(|w| range_secs / w <= FLEET_TARGET_POINTS)
        .unwrap_or(NICE[NICE.len() - 1])
}

/// `GET /fleet?metric&start&end[&width]`: every server's count-weighted
/// average of one metric on one grid of bins (null where a server has none),
/// for comparing the fleet in one chart.
#[tracing::instrument(skip_all, fields(metric = %q.metric))]
async fn fleet(
    State(st): State<AppState>,
    Query(q): Query<FleetQuery>,
) -> Result<Json<Value>, ApiError> {
    let c = db::connect(&st.0.pool).await?;
    let widths = db::meta(&c).await?.widths;
    let width = match q.width {
        Some(w) => w,
        None => fleet_width(&widths, q.range.secs()),
    };
    let source = widths.source(width)?;
    let (s_al, e_al) = q.range.aligned(width)?;
    let slots = (e_al - s_al) / width;
    if slots > FLEET_MAX_POINTS {
        return Err(ApiError::BadRequest(format!(
            "{} would give {slots} points per server, more than {FLEET_MAX_POINTS}; use a coarser `width`",
            width_name(width)
        )));
    }
    let metric = q.metric;
    db::check_server_metric(&c, None, Some(&metric)).await?;
    let rows = db::fleet(&c, &metric, (utc(s_al), utc(e_al)), width, source).await?;
    drop(c);
    // Each server is a column of `slots` values, each at least `null,`:
    // refuse before building what MAX_RESPONSE_BYTES would refuse after.
    let n_servers = rows
        .iter()
        .map(|r| r.0.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let least_bytes = (n_servers as u64).saturating_mul(slots as u64 * 5);
    if least_bytes > st.0.config.max_response_bytes as u64 {
        return Err(ApiError::TooLarge(format!(
            "{n_servers} servers × {slots} bins is more than MAX_RESPONSE_BYTES={} can hold; \
             use a coarser `width` or a shorter range",
            st.0.config.max_response_bytes
        )));
    }
    let mut by_server: HashMap<String, Vec<Option<f64>>> = HashMap::new();
    for (server, t, avg) in rows {
        let slot = ((t.timestamp() - s_al) / width) as usize;
        let col = by_server
            .entry(server)
            .or_insert_with(|| vec![None; slots as usize]);
        if let Some(v) = col.get_mut(slot) {
            *v = avg;
        }
    }
    let mut names: Vec<String> = by_server.keys().cloned().collect();
    names.sort_by(|a, b| db::natural_cmp(a, b));
    let servers: Vec<Value> = names
        .iter()
        .map(|n| json!({"server": n, "avg": by_server[n]}))
        .collect();
    let grid: Vec<DateTime<Utc>> = (0..slots).map(|i| utc(s_al + i * width)).collect();
    let message = servers
        .is_empty()
        .then(|| format!("no {metric} data in [{}, {})", utc(s_al), utc(e_al)));
    Ok(Json(json!({
        "metric": metric,
        "start": utc(s_al),
        "end": utc(e_al),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_fleet_width() {
        let w = |s: &[i64]| {
            let widths = s
                .iter()
                .map(|&x| metricagg_core::bin::Width::from_secs(x).unwrap());
            db::StoredWidths::new(widths).unwrap()
        };
        let default = w(&[60, 3600]);
        assert_eq!(fleet_width(&default, 3600), 60);
        assert_eq!(fleet_width(&default, 12 * 3600), 60);
        assert_eq!(fleet_width(&default, 24 * 3600), 300);
        assert_eq!(fleet_width(&default, 7 * 86400), 900);
        assert_eq!(fleet_width(&default, 31 * 86400), 3600 * 2);
        // only multiples of what is stored
        let coarse = w(&[900, 86400]);
        assert_eq!(fleet_width(&coarse, 3600), 900);
        assert_eq!(fleet_width(&coarse, 24 * 3600), 900);
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
