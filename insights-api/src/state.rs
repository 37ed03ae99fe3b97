//! What every handler shares: the pool, the configuration, the LLM client,
//! the caches and the request slots.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use deadpool_postgres::Pool;
use tokio::sync::Semaphore;

use crate::analysis::Params;
use crate::cache::{DatasetCache, NarrativeCache};
use crate::config::Config;
use crate::db;
use crate::llm::LlmClient;
use crate::params::Limits;

pub struct Inner {
    pub pool: Pool,
    pub config: Config,
    pub llm: Option<LlmClient>,
    pub params: Params,
    pub cache: DatasetCache,
    pub narratives: NarrativeCache,
    /// One permit per request in progress (MAX_CONCURRENT_REQUESTS).
    pub slots: Arc<Semaphore>,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// What the query extractor needs of the state.
impl FromRef<AppState> for Limits {
    fn from_ref(st: &AppState) -> Limits {
        Limits {
            max_range_hours: st.0.config.max_range_hours,
        }
    }
}

impl AppState {
    pub fn new(config: Config) -> Result<AppState, String> {
        let pool = db::make_pool(
            config.database_url.expose(),
            config.db_pool_size,
            Duration::from_secs(config.db_timeout_secs.max(1)),
            Duration::from_secs(config.db_statement_timeout_secs.max(1)),
        )?;
        let llm = LlmClient::from_config(&config)?;
        let params = Params {
            forecast_hours: config.forecast_hours.clamp(0, 168),
            ..Params::default()
        };
        let cache = DatasetCache::new(config.cache_max_bins);
        let narratives = NarrativeCache::new(config.narrative_cache_entries);
        let slots = Arc::new(Semaphore::new(
            config.max_concurrent_requests.max(1) as usize
        ));
        Ok(AppState(Arc::new(Inner {
            pool,
            config,
            llm,
            params,
            cache,
            narratives,
            slots,
        })))
    }
}
