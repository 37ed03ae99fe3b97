//! The router and the API's handlers (the dashboard's are in
//! [`crate::dashboard`]). Handlers parse their query with
//! [`crate::params::Query`], take one connection for all their queries
//! ([`db::connect`]) and let it go before the analysis and the narrative.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::analysis::{analyse, Analysis, Fact};
use crate::cache::{Key, NarrativeKey};
use crate::db;
use crate::error::ApiError;
use crate::guard::{Deadline, Slot};
use crate::llm::{narrate, LlmInfo};
use crate::narrative::{period_fact, Narrative};
use crate::params::{utc, width_name, InsightsQuery, NoQuery, Query, SeriesQuery};
use crate::state::AppState;

/// The application: every route, with no socket, so tests can call it
/// directly; every request passes [`crate::guard::guard`].
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/servers", get(servers))
        .route("/periods", get(periods))
        .route("/series", get(series))
        .route("/insights", get(insights))
        .route("/openapi.json", get(openapi))
        .merge(crate::dashboard::router())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::guard::guard,
        ))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route {}; see /openapi.json for /health, /servers, /periods, /series, /insights, /fleet, / (the dashboard)",
        uri.path().chars().take(200).collect::<String>()
    ))
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{method} is not allowed on {}; every endpoint is GET (see /openapi.json)",
        uri.path().chars().take(200).collect::<String>()
    ))
}

async fn openapi(Query(NoQuery): Query<NoQuery>) -> Json<Value> {
    Json(crate::openapi::document())
}

/// The service, its database and the job that feeds it. `status` is
/// `degraded` (still 200) while change-log entries wait in quarantine: the
/// bins are current except for what was set aside.
#[tracing::instrument(skip_all)]
async fn health(
    State(st): State<AppState>,
    Query(NoQuery): Query<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    let c = db::connect(&st.0.pool).await?;
    db::ping(&c).await?;
    let job = db::job_health(&c).await?;
    drop(c);
    let quarantined = job.as_ref().map_or(0, |j| j.quarantined);
    let message = (quarantined > 0).then(|| {
        format!(
            "{quarantined} change-log entries are quarantined: their samples are not in the bins \
             (see metricagg.quarantine in the analytics database)"
        )
    });
    Ok(Json(json!({
        "status": if quarantined > 0 { "degraded" } else { "ok" },
        "database": "ok",
        "llm_mode": st.0.config.effective_llm_mode().as_str(),
        "job": job,
        "message": message,
    })))
}

#[tracing::instrument(skip_all)]
async fn servers(
    State(st): State<AppState>,
    Query(NoQuery): Query<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    let c = db::connect(&st.0.pool).await?;
    let widths = db::meta(&c).await?.widths;
    let s = db::servers(&c, widths.finest()).await?;
    let message = s
        .is_empty()
        .then_some("no bins stored yet: run the seeder and metricagg_run_once()");
    Ok(Json(
        json!({"count": s.len(), "servers": s, "message": message}),
    ))
}

#[tracing::instrument(skip_all)]
async fn periods(
    State(st): State<AppState>,
    Query(NoQuery): Query<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    let gap = st.0.config.period_gap_bins;
    let c = db::connect(&st.0.pool).await?;
    let width = db::meta(&c).await?.widths.finest();
    let p = db::periods(&c, width, gap).await?;
    let message = p.is_empty().then_some("no bins stored yet: no periods");
    Ok(Json(json!({
        "width": width_name(width),
        "gap_bins": gap,
        "count": p.len(),
        "periods": p,
        "message": message,
    })))
}

/// Most bins per series `/insights` analyses: ranges longer than this many
/// bins of the finest stored width are analysed at a coarser stored width.
pub const ANALYSIS_MAX_BINS: i64 = 48 * 60;

/// The width `/insights` analyses a range at: the finest stored width giving
/// at most [`ANALYSIS_MAX_BINS`] bins per series, else the coarsest (with the
/// default widths: one minute up to 48 hours, one hour beyond).
pub fn analysis_width(widths: &db::StoredWidths, range_secs: i64) -> i64 {
    let all = widths.all();
    all.iter()
        .copied()
        .find(|w| range_secs / w <= ANALYSIS_MAX_BINS)
        .unwrap_or(all[all.len() - 1])
}

/// Most points `/series` returns.
const SERIES_MAX_POINTS: i64 = 100_000;

#[tracing::instrument(skip_all, fields(server = %q.server, metric = %q.metric))]
async fn series(
    State(st): State<AppState>,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let c = db::connect(&st.0.pool).await?;
    let widths = db::meta(&c).await?.widths;
    let width = q.width.unwrap_or(widths.finest());
    let source = widths.source(width)?;
    // Whole bins: align the range outward to the requested width.
    let (s_al, e_al) = q.range.aligned(width)?;
    if (e_al - s_al) / width > SERIES_MAX_POINTS {
        return Err(ApiError::BadRequest(format!(
            "{} would return more than {SERIES_MAX_POINTS} points; use a coarser `width`",
            width_name(width)
        )));
    }
    let (s_al, e_al) = (utc(s_al), utc(e_al));
    db::check_server_metric(&c, Some(&q.server), Some(&q.metric)).await?;
    let points = db::series(&c, &q.server, &q.metric, (s_al, e_al), width, source).await?;
    drop(c);
    let p80 = if width == source {
        "exact (stored)".to_string()
    } else {
        format!(
            "null: no stored {} bins; p80 is only exact at stored widths ({}) and p80s are never averaged",
            width_name(width),
            widths.names()
        )
    };
    let message = points
        .is_empty()
        .then(|| format!("no data for {} {} in [{s_al}, {e_al})", q.server, q.metric));
    Ok(Json(json!({
        "server": q.server,
        "metric": q.metric,
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

/// Time kept back from the narrative for the rest of a request (the
/// answer's serialization): a tenth of the deadline, at most a second.
fn reserve(timeout: Duration) -> Duration {
    (timeout / 10).min(Duration::from_secs(1))
}

#[tracing::instrument(skip_all, fields(server = ?q.server, metric = ?q.metric))]
async fn insights(
    State(st): State<AppState>,
    Query(q): Query<InsightsQuery>,
    deadline: Option<Extension<Deadline>>,
    slot: Option<Extension<Slot>>,
) -> Result<Json<InsightsResponse>, ApiError> {
    let config = &st.0.config;
    let deadline = deadline.map_or_else(|| Instant::now() + config.request_timeout(), |d| d.0 .0);
    let InsightsQuery {
        range,
        server,
        metric,
    } = q;
    let (start, end) = (range.start, range.end);
    let range_secs = range.secs();
    let t0 = Instant::now();
    // One connection for every query of the request, let go before the
    // analysis and the narrative.
    let (version, width, ds, cache_state) = {
        let c = db::connect(&st.0.pool).await?;
        let meta = db::meta(&c).await?;
        let width = analysis_width(&meta.widths, range_secs);
        db::check_server_metric(&c, server.as_deref(), metric.as_deref()).await?;
        // Reuse what an earlier request fetched while the bins are unchanged.
        let key = Key {
            width,
            start,
            end,
            metric: metric.clone(),
        };
        let cached = st.0.cache.get(&key, meta.version);
        let cache_state = match &cached {
            Some(_) => "hit",
            None if st.0.cache.enabled() => "miss",
            None => "off",
        };
        let ds = match cached {
            Some(ds) => ds,
            None => {
                // The version was read first: what is fetched is at least as new.
                let plan = db::fetch_plan(&c, meta.hypertable, (start, end)).await;
                let ds =
                    db::fetch_bins(&st.0.pool, &c, plan, width, (start, end), metric.as_deref())
                        .await?;
                let ds = Arc::new(ds);
                st.0.cache.put(key, meta.version, Arc::clone(&ds));
                ds
            }
        };
        (meta.version, width, ds, cache_state)
    };
    let t_db = t0.elapsed();
    let t1 = Instant::now();
    // CPU-bound (tens of ms for 50 servers × 4 metrics × 1 day): off the
    // async workers. The closure holds the request's slot: a request that
    // times out does not free its slot while its analysis still runs.
    let (ds, an) = {
        let params = st.0.params.clone();
        let focus = server.clone();
        let span = (start.timestamp(), end.timestamp());
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let an = analyse(&ds, span, focus.as_deref(), &params);
            (ds, an)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("analysis task failed: {e}")))?
    };
    let t_an = t1.elapsed();
    let in_scope = |s: &&crate::analysis::Series| server.as_deref().is_none_or(|f| f == s.server);
    let mut servers: Vec<String> = ds
        .series
        .iter()
        .filter(in_scope)
        .map(|s| s.server.clone())
        .collect();
    servers.sort_by(|a, b| db::natural_cmp(a, b));
    servers.dedup();
    let bins: usize = ds.series.iter().filter(in_scope).map(|s| s.len()).sum();
    let hours = range_secs as f64 / 3600.0;
    let mut facts = vec![period_fact(&an, hours, servers.len())];
    facts.extend(an.facts.iter().cloned());
    let t2 = Instant::now();
    let nkey = NarrativeKey {
        width,
        start,
        end,
        server: server.clone(),
        metric: metric.clone(),
    };
    let remembered = st.0.narratives.get(&nkey, version);
    let (narrative, llm) = match remembered {
        Some(hit) => {
            let (n, mut info) = (*hit).clone();
            info.cached = true;
            info.calls = 0;
            info.latency_ms = 0;
            (n, info)
        }
        None => {
            let by = deadline - reserve(config.request_timeout());
            let (n, info) = narrate(
                st.0.llm.as_ref(),
                &an,
                &facts,
                config.prompt_budget_chars,
                by,
            )
            .await;
            if info.cacheable() {
                st.0.narratives
                    .put(nkey, version, (n.clone(), info.clone()));
            }
            (n, info)
        }
    };
    let t_nar = t2.elapsed();
    let empty = bins == 0;
    let message = empty.then(|| {
        format!(
            "no data in [{start}, {end}){}{}: nothing to analyse",
            server
                .as_deref()
                .map(|s| format!(" for {s}"))
                .unwrap_or_default(),
            metric
                .as_deref()
                .map(|m| format!(" metric {m}"))
                .unwrap_or_default()
        )
    });
    Ok(Json(InsightsResponse {
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
    }))
}
