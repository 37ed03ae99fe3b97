//! insights-api: grounded anomaly, trend, comparison and forecast insights over
//! metricagg bins, narrated by an OpenAI-compatible LLM or a local narrator.

pub mod analysis;
pub mod cache;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod guard;
pub mod llm;
pub mod narrative;
pub mod openapi;
pub mod params;
pub mod routes;
pub mod state;
pub mod stats;

pub use routes::app;
pub use state::AppState;
