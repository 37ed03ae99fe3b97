//! What the evaluation binaries share: the real app on a local socket.

use insights_api::config::Config;
use insights_api::{app, AppState};

/// Serves the app (mock narrator) on 127.0.0.1 at a free port in the
/// background; returns its base URL.
pub async fn serve(config: Config) -> Result<String, String> {
    let state = AppState::new(config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app(state)).await;
    });
    Ok(format!("http://{addr}"))
}
