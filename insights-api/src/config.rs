//! Configuration from flags, environment and an optional `.env` file.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// A secret string (API key, database URL with a password). `Debug` and
/// `Display` never show the value; only [`Secret::expose`] does.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// How the narrative is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LlmMode {
    /// An OpenAI-compatible Chat Completions server (OpenAI, Ollama, vLLM, llama.cpp).
    Openai,
    /// The local deterministic narrator (no network).
    Mock,
}

impl LlmMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmMode::Openai => "openai",
            LlmMode::Mock => "mock",
        }
    }
}

/// insights-api: grounded insights over metricagg bins.
#[derive(Clone, Debug, Parser)]
#[command(name = "insights-api", version, about)]
pub struct Config {
    /// Address to listen on. Any address but a loopback one requires API_TOKEN.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:3000")]
    pub bind: SocketAddr,

    /// Bearer token every request but /health must carry
    /// (`Authorization: Bearer …`); at least 16 characters; never logged.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Secret>,

    /// Host names (comma-separated) accepted in the Host header besides
    /// localhost, 127.0.0.1 and [::1] when BIND is a loopback address (a
    /// reverse proxy's name, for instance). Other names are refused (DNS
    /// rebinding).
    #[arg(long, env = "ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Deadline of one request, in seconds: past it the answer is 503.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub request_timeout_secs: u64,

    /// Requests served at once (all but /health); more wait for a slot until
    /// their deadline. Keep it at most DB_POOL_SIZE: a request holds one
    /// connection.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_concurrent_requests: u64,

    /// Largest response body, in bytes; a larger answer is a 400 asking for
    /// a narrower request.
    #[arg(long, env = "MAX_RESPONSE_BYTES", default_value_t = 16 << 20)]
    pub max_response_bytes: usize,

    /// Analytics database URL (the read-only api role).
    #[arg(long, env = "API_DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,

    /// Maximum database connections in the pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: usize,

    /// Seconds to wait for a database connection before answering 503.
    #[arg(long, env = "DB_TIMEOUT_SECS", default_value_t = 3)]
    pub db_timeout_secs: u64,

    /// statement_timeout of the service's connections, in seconds (a
    /// statement running longer is canceled: 503 `timeout`).
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub db_statement_timeout_secs: u64,

    /// `openai` or `mock`; defaults to openai when OPENAI_API_KEY is set, mock otherwise.
    #[arg(long, env = "LLM_MODE", value_enum)]
    pub llm_mode: Option<LlmMode>,

    /// API key for the OpenAI-compatible server (never logged).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<Secret>,

    /// Base URL of the OpenAI-compatible server, up to and including `/v1`.
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,

    /// Model name sent to the server.
    #[arg(long, env = "OPENAI_MODEL", default_value = "gpt-4o-mini")]
    pub openai_model: String,

    /// Timeout of one LLM request, in seconds.
    #[arg(long, env = "LLM_TIMEOUT_SECS", default_value_t = 15)]
    pub llm_timeout_secs: u64,

    /// Attempts on 429/5xx (including the first).
    #[arg(long, env = "LLM_MAX_ATTEMPTS", default_value_t = 3)]
    pub llm_max_attempts: u32,

    /// Total time the LLM may take for one request (every call, retry and
    /// wait), in seconds; then the local narrator answers. Also bounded by
    /// what is left of the request's deadline.
    #[arg(long, env = "LLM_BUDGET_SECS", default_value_t = 15)]
    pub llm_budget_secs: u64,

    /// LLM requests in flight at once, over all requests; a request that
    /// finds none free within its budget gets the local narrative.
    #[arg(long, env = "LLM_MAX_CONCURRENT", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub llm_max_concurrent: u64,

    /// Narratives kept per (range, filter, bins version), so a repeated
    /// request makes no new LLM call; 0 keeps none.
    #[arg(long, env = "NARRATIVE_CACHE_ENTRIES", default_value_t = 256)]
    pub narrative_cache_entries: usize,

    /// Upper bound on the prompt's facts section, in characters (about 4 per token).
    #[arg(long, env = "PROMPT_BUDGET_CHARS", default_value_t = 16000)]
    pub prompt_budget_chars: usize,

    /// Longest range accepted by /insights and /series, in hours.
    #[arg(long, env = "MAX_RANGE_HOURS", default_value_t = 24 * 31)]
    pub max_range_hours: i64,

    /// A gap longer than this many bins splits a period in /periods.
    #[arg(long, env = "PERIOD_GAP_BINS", default_value_t = 5)]
    pub period_gap_bins: i64,

    /// Hours ahead that forecasts cover.
    #[arg(long, env = "FORECAST_HOURS", default_value_t = 6)]
    pub forecast_hours: i64,

    /// Bins that /insights keeps fetched while `metricagg.bins_version` is
    /// unchanged (about 64 bytes each); 0 fetches on every request.
    #[arg(long, env = "CACHE_MAX_BINS", default_value_t = 2_000_000)]
    pub cache_max_bins: usize,
}

impl Config {
    /// The effective narrator mode: explicit, else openai when a key is set.
    pub fn effective_llm_mode(&self) -> LlmMode {
        let has_key = self.openai_api_key.as_ref().is_some_and(|k| !k.is_empty());
        match self.llm_mode {
            Some(LlmMode::Openai) if has_key => LlmMode::Openai,
            Some(LlmMode::Openai) => LlmMode::Mock,
            Some(LlmMode::Mock) => LlmMode::Mock,
            None if has_key => LlmMode::Openai,
            None => LlmMode::Mock,
        }
    }

    pub fn llm_timeout(&self) -> Duration {
        Duration::from_secs(self.llm_timeout_secs.max(1))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    /// The token to enforce, if one is set (an empty value is none).
    pub fn token(&self) -> Option<&Secret> {
        self.api_token.as_ref().filter(|t| !t.is_empty())
    }

    /// What must hold before the service listens: a token whenever BIND is
    /// not a loopback address, and a token long enough to resist guessing.
    pub fn check(&self) -> Result<(), String> {
        match self.token() {
            None if !self.bind.ip().is_loopback() => Err(format!(
                "BIND={} is reachable from other hosts: set API_TOKEN (at least {MIN_TOKEN_CHARS} characters) \
                 or bind a loopback address such as 127.0.0.1:3000",
                self.bind
            )),
            Some(t) if t.expose().trim().chars().count() < MIN_TOKEN_CHARS => Err(format!(
                "API_TOKEN is shorter than {MIN_TOKEN_CHARS} characters"
            )),
            _ => Ok(()),
        }
    }

    /// A config for tests and tools: mock mode, defaults everywhere.
    pub fn for_database(url: &str) -> Config {
        Config::parse_from(["insights-api", "--database-url", url, "--llm-mode", "mock"])
    }
}

/// Shortest API_TOKEN accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Loads `KEY=VALUE` lines from `path` into the environment, without
/// overriding variables that are already set. Call before any thread starts.
pub fn load_dotenv(path: &std::path::Path) -> std::io::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        let v = v.trim().trim_matches('"').trim_matches('\'');
        if !k.is_empty() && std::env::var_os(k).is_none() {
            // SAFETY-free in edition 2021; called before the runtime starts threads.
            std::env::set_var(k, v);
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Config::command().debug_assert();
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{s:?}").contains("very"));
        let c = Config::parse_from([
            "x",
            "--database-url",
            "postgres://u:pw@h/db",
            "--openai-api-key",
            "sk-very-secret",
        ]);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sk-very-secret"), "{dbg}");
        assert!(!dbg.contains("pw@"), "{dbg}");
        assert_eq!(c.effective_llm_mode(), LlmMode::Openai);
    }

    #[test]
    fn a_token_is_required_off_loopback() {
        let c = |args: &[&str]| {
            let mut v = vec!["x", "--database-url", "postgres://h/db"];
            v.extend_from_slice(args);
            Config::parse_from(v)
        };
        assert!(c(&[]).check().is_ok(), "loopback without a token");
        assert!(c(&["--bind", "[::1]:3000"]).check().is_ok());
        let e = c(&["--bind", "0.0.0.0:3000"]).check().unwrap_err();
        assert!(e.contains("API_TOKEN"), "{e}");
        let e = c(&["--bind", "10.0.0.5:3000", "--api-token", "  "])
            .check()
            .unwrap_err();
        assert!(e.contains("API_TOKEN"), "an empty token is no token: {e}");
        let e = c(&["--bind", "0.0.0.0:3000", "--api-token", "short"])
            .check()
            .unwrap_err();
        assert!(e.contains("shorter"), "{e}");
        let ok = c(&["--bind", "0.0.0.0:3000", "--api-token", "0123456789abcdef"]);
        assert!(ok.check().is_ok());
        assert!(!format!("{ok:?}").contains("0123456789abcdef"));
        // a short token is refused on loopback too: it is enforced there as well
        assert!(c(&["--api-token", "short"]).check().is_err());
        assert!(Config::try_parse_from([
            "x",
            "--database-url",
            "u",
            "--request-timeout-secs",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn mode_defaults_to_mock_without_key() {
        let c = Config::parse_from(["x", "--database-url", "postgres://h/db"]);
        assert_eq!(c.effective_llm_mode(), LlmMode::Mock);
        let c = Config::parse_from([
            "x",
            "--database-url",
            "postgres://h/db",
            "--llm-mode",
            "openai",
        ]);
        assert_eq!(c.effective_llm_mode(), LlmMode::Mock);
    }
}
