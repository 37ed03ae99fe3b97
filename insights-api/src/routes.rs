//! HTTP handlers and the router.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::{json, Value};

use crate::analysis::{analyse, Analysis, Fact, Params};
use crate::cache::{DatasetCache, Key};
use crate::config::Config;
use crate::db;
use crate::error::ApiError;
use crate::llm::{narrate, LlmClient, LlmInfo};
use crate::narrative::{period_fact, Narrative};
use crate::params::{check_ident, parse_time, parse_width, width_name};

pub struct Inner {
    pub pool: Pool,
    pub config: Config,
    pub llm: Option<LlmClient>,
    pub params: Params,
    pub cache: DatasetCache,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl AppState {
    pub fn new(config: Config) -> Result<AppState, String> {
        let pool = db::make_pool(
            config.database_url.expose(),
            config.db_pool_size,
            std::time::Duration::from_secs(config.db_timeout_secs.max(1)),
        )?;
        let llm = LlmClient::from_config(&config)?;
        let params = Params {
            forecast_hours: config.forecast_hours.clamp(0, 168),
            ..Params::default()
        };
        let cache = DatasetCache::new(config.cache_max_bins);
        Ok(AppState(Arc::new(Inner {
            pool,
            config,
            llm,
            params,
            cache,
        })))
    }
}

/// The application: every route, with no socket, so tests can call it directly.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/servers", get(servers))
        .route("/periods", get(periods))
        .route("/series", get(series))
        .route("/insights", get(insights))
        .route("/openapi.json", get(openapi))
        .merge(crate::dashboard::router())
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route {}; see /openapi.json for /health, /servers, /periods, /series, /insights, /fleet, / (the dashboard)",
        uri.path()
    ))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

#[tracing::instrument(skip_all)]
async fn health(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    db::ping(&st.0.pool).await?;
    Ok(Json(
        json!({"status": "ok", "database": "ok", "llm_mode": st.0.config.effective_llm_mode().as_str()}),
    ))
}

#[tracing::instrument(skip_all)]
async fn servers(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = db::servers(&st.0.pool).await?;
    let message = s
        .is_empty()
        .then_some("no bins stored yet: run the seeder and metricagg_run_once()");
    Ok(Json(
        json!({"count": s.len(), "servers": s, "message": message}),
    ))
}

#[tracing::instrument(skip_all)]
async fn periods(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let gap = st.0.config.period_gap_bins;
    let p = db::periods(&st.0.pool, gap).await?;
    let message = p.is_empty().then_some("no bins stored yet: no periods");
    Ok(Json(json!({
        "width": width_name(db::STORED_WIDTHS[0]),
        "gap_bins": gap,
        "count": p.len(),
        "periods": p,
        "message": message,
    })))
}

type Q = Query<HashMap<String, String>>;

fn allowed(q: &HashMap<String, String>, names: &[&str]) -> Result<(), ApiError> {
    for k in q.keys() {
        if !names.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter `{k}`; allowed: {}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

fn required<'a>(q: &'a HashMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    q.get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::BadRequest(format!("missing required parameter `{name}`")))
}

fn range(
    q: &HashMap<String, String>,
    max_hours: i64,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let start = parse_time("start", required(q, "start")?).map_err(ApiError::BadRequest)?;
    let end = parse_time("end", required(q, "end")?).map_err(ApiError::BadRequest)?;
    if start >= end {
        return Err(ApiError::BadRequest(format!(
            "`start` ({start}) must be before `end` ({end})"
        )));
    }
    if (end - start).num_seconds() > max_hours * 3600 {
        return Err(ApiError::BadRequest(format!(
            "the range is {} hours; the maximum is {max_hours} hours",
            (end - start).num_seconds() / 3600
        )));
    }
    Ok((start, end))
}

async fn check_server_metric(
    pool: &Pool,
    server: Option<&str>,
    metric: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(s) = server {
        check_ident("server", s).map_err(ApiError::BadRequest)?;
        if !db::server_exists(pool, s).await? {
            return Err(ApiError::NotFound(format!(
                "unknown server `{s}`; see /servers"
            )));
        }
    }
    if let Some(m) = metric {
        check_ident("metric", m).map_err(ApiError::BadRequest)?;
        if !db::metric_exists(pool, m).await? {
            return Err(ApiError::NotFound(format!(
                "unknown metric `{m}`; metrics are cpu, memory, disk_io, network"
            )));
        }
    }
    Ok(())
}

#[tracing::instrument(skip_all, fields(server, metric))]
async fn series(State(st): State<AppState>, Query(q): Q) -> Result<Json<Value>, ApiError> {
    allowed(&q, &["server", "metric", "start", "end", "width"])?;
    let server = required(&q, "server")?;
    let metric = required(&q, "metric")?;
    tracing::Span::current()
        .record("server", server)
        .record("metric", metric);
    let (start, end) = range(&q, st.0.config.max_range_hours)?;
    let width = match q.get("width") {
        Some(w) => parse_width(w).map_err(ApiError::BadRequest)?,
        None => db::STORED_WIDTHS[0],
    };
    let points_max = 100_000;
    if (end - start).num_seconds() / width > points_max {
        return Err(ApiError::BadRequest(format!(
            "{} would return more than {points_max} points; use a coarser `width`",
            width_name(width)
        )));
    }
    check_server_metric(&st.0.pool, Some(server), Some(metric)).await?;
    // Whole bins: align the range outward to the requested width.
    let s_al = db::floor_to_bin(start.timestamp(), width);
    let e_al = {
        let f = db::floor_to_bin(end.timestamp(), width);
        if f == end.timestamp() {
            f
        } else {
            f + width
        }
    };
    let (s_al, e_al) = (ts(s_al), ts(e_al));
    let source = db::source_width(width);
    let points = db::series(&st.0.pool, server, metric, s_al, e_al, width, source).await?;
    let p80 = if width == source {
        "exact (stored)".to_string()
    } else {
        format!(
            "null: no stored {} bins; p80 is only exact at stored widths ({}) and p80s are never averaged",
            width_name(width),
            db::STORED_WIDTHS.map(width_name).join(", ")
        )
    };
    let message = points
        .is_empty()
        .then(|| format!("no data for {server} {metric} in [{s_al}, {e_al})"));
    Ok(Json(json!({
        "server": server,
        "metric": metric,
        "start": s_al,
        "end": e_al,
        "width": width_name(width),
        "width_seconds": width,
        "source_width": width_name(source),
        "avg": "count-weighted mean of stored averages",
        "p80": p80,
        "empty": points.is_empty(),
        "message": message,
        "count": points.len(),
        "points": points,
    })))
}

fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

#[derive(Serialize)]
pub struct InsightsResponse {
    pub period: Value,
    pub filter: Value,
    pub servers: Vec<String>,
    pub empty: bool,
    pub message: Option<String>,
    pub facts: Vec<Fact>,
    #[serde(flatten)]
    pub analysis: Analysis,
    pub narrative: Narrative,
    pub llm: LlmInfo,
    pub timing_ms: Value,
}

#[tracing::instrument(skip_all, fields(server, metric))]
async fn insights(State(st): State<AppState>, Query(q): Q) -> Result<impl IntoResponse, ApiError> {
    allowed(&q, &["start", "end", "server", "metric"])?;
    let (start, end) = range(&q, st.0.config.max_range_hours)?;
    let server = q
        .get("server")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let metric = q
        .get("metric")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    check_server_metric(&st.0.pool, server, metric).await?;
    let t0 = Instant::now();
    let range_secs = (end - start).num_seconds();
    let width = if range_secs <= 48 * 3600 {
        db::STORED_WIDTHS[0]
    } else {
        db::STORED_WIDTHS[1]
    };
    // Reuse what an earlier request fetched while the bins are unchanged.
    let version = if st.0.cache.enabled() {
        db::bins_version(&st.0.pool).await?
    } else {
        None
    };
    let key = Key {
        width,
        start,
        end,
        metric: metric.map(str::to_string),
    };
    let cached = version.and_then(|v| st.0.cache.get(&key, v));
    let cache_state = match (&cached, version) {
        (Some(_), _) => "hit",
        (None, Some(_)) => "miss",
        (None, None) => "off",
    };
    let ds = match cached {
        Some(ds) => ds,
        None => {
            // The version was read first: what is fetched is at least as new.
            let ds = Arc::new(db::fetch_bins(&st.0.pool, width, start, end, metric).await?);
            if let Some(v) = version {
                st.0.cache.put(key, v, Arc::clone(&ds));
            }
            ds
        }
    };
    let t_db = t0.elapsed();
    let t1 = Instant::now();
    // CPU-bound (tens of ms for 50 servers × 4 metrics × 1 day): off the
    // async workers.
    let (ds, an) = {
        let params = st.0.params.clone();
        let focus = server.map(str::to_string);
        let range = (start.timestamp(), end.timestamp());
        tokio::task::spawn_blocking(move || {
            let an = analyse(&ds, range, focus.as_deref(), &params);
            (ds, an)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("analysis task failed: {e}")))?
    };
    let t_an = t1.elapsed();
    let mut servers: Vec<String> = ds
        .series
        .iter()
        .filter(|s| server.is_none_or(|f| f == s.server))
        .map(|s| s.server.clone())
        .collect();
    servers.sort_by(|a, b| db::natural_cmp(a, b));
    servers.dedup();
    let bins: usize = ds
        .series
        .iter()
        .filter(|s| server.is_none_or(|f| f == s.server))
        .map(|s| s.len())
        .sum();
    let hours = range_secs as f64 / 3600.0;
    let mut facts = vec![period_fact(&an, hours, servers.len())];
    facts.extend(an.facts.iter().cloned());
    let t2 = Instant::now();
    let (narrative, llm) = narrate(
        st.0.llm.as_ref(),
        &an,
        &facts,
        st.0.config.prompt_budget_chars,
    )
    .await;
    let t_nar = t2.elapsed();
    let empty = bins == 0;
    let message = empty.then(|| {
        format!(
            "no data in [{start}, {end}){}{}: nothing to analyse",
            server.map(|s| format!(" for {s}")).unwrap_or_default(),
            metric.map(|m| format!(" metric {m}")).unwrap_or_default()
        )
    });
    let body = InsightsResponse {
        period: json!({"start": start, "end": end, "hours": hours, "width": width_name(width), "width_seconds": width, "bins": bins}),
        filter: json!({"server": server, "metric": metric}),
        servers,
        empty,
        message,
        facts,
        analysis: an,
        narrative,
        llm,
        timing_ms: json!({
            "db": t_db.as_secs_f64() * 1e3,
            "db_cache": cache_state,
            "analysis": t_an.as_secs_f64() * 1e3,
            "narrative": t_nar.as_secs_f64() * 1e3,
        }),
    };
    Ok((StatusCode::OK, Json(body)))
}
