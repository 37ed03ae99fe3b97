//! insights-api: reads config, sets up tracing, serves with graceful shutdown.

use clap::Parser;
use insights_api::config::{load_dotenv, Config};
use insights_api::{app, AppState};

fn main() -> std::process::ExitCode {
    // Before any thread starts: `.env` fills only variables not already set.
    let dotenv = load_dotenv(std::path::Path::new(".env"));
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "insights_api=info,tower_http=info".into()),
        )
        .init();
    if let Err(e) = dotenv {
        tracing::warn!(error = %e, "could not read .env");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("insights-api: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "insights-api stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    config.check()?;
    if config.max_concurrent_requests > config.db_pool_size as u64 {
        tracing::warn!(
            max_concurrent_requests = config.max_concurrent_requests,
            db_pool_size = config.db_pool_size,
            "more request slots than pooled connections: requests may wait for a connection"
        );
    }
    let bind = config.bind;
    let auth = if config.token().is_some() {
        "bearer token"
    } else {
        "none (loopback only)"
    };
    let mode = config.effective_llm_mode();
    let model = config.openai_model.clone();
    let state = AppState::new(config)?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    tracing::info!(%bind, llm_mode = mode.as_str(), %model, auth, "insights-api listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
