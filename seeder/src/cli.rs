//! The command line: clap definitions and their resolution into a [`Plan`].

use crate::anomaly::epoch_probability;
use crate::gen::GenConfig;
use crate::model::Metric;
use crate::timefmt::{format_duration, parse_duration, parse_rfc3339, MICROS_PER_DAY};
use clap::{Parser, ValueEnum};
use std::fmt;
use std::path::PathBuf;

/// Anomalies per server per day when --anomaly-rate is not given.
pub const DEFAULT_ANOMALY_RATE: f64 = 2.0;

const EXAMPLES: &str = "\
Examples:
  # one day of 1-second samples for 50 servers, into the database in $INGEST_DATABASE_URL
  seeder --servers 50 --start 2025-11-15T00:00:00Z --end 2025-11-16T00:00:00Z --seed 42

  # the last 6 hours ending now, one sample a minute, only cpu and memory
  seeder --servers srv-1,srv-2,db-7 --duration 6h --interval 1m --metrics cpu,memory

  # samples in real time until Ctrl-C
  seeder --mode live --servers 5

  # no database: write the binary COPY stream to a file, or just time the generator
  seeder --servers 50 --duration 1d --output samples.bin
  seeder --servers 50 --duration 1d --dry-run

The same --seed and arguments (with explicit --start and --end) always give
byte-identical rows; the summary prints the seed and a hash of the rows.
Loading over a range that already holds samples of these servers is refused.
Exit codes: 0 done, 1 database or I/O failure, 2 bad arguments,
3 range already loaded, 130 interrupted (the committed ranges are printed).";

/// Fills the metricagg raw database with realistic, labelled synthetic server
/// metrics, bulk-loaded with binary COPY over several connections.
///
/// Each server follows a profile (web, database or batch, by its number):
/// daily and weekly seasonality, clamped random walks and correlated metrics.
/// Anomalies (spike, level shift, memory leak, stuck value, dropout, noisy
/// neighbour) are injected at --anomaly-rate, each with a ground-truth row in
/// metricagg.anomaly_labels whose window matches the injected shape exactly.
#[derive(Parser, Debug)]
#[command(name = "seeder", version, after_long_help = EXAMPLES, after_help = "Run `seeder --help` for examples and exit codes.")]
pub struct Cli {
    /// Servers to simulate: a count (50 means srv-1 … srv-50) or a
    /// comma-separated list of names.
    #[arg(long, default_value = "10", value_parser = parse_servers)]
    pub servers: Servers,

    /// First timestamp (RFC 3339, e.g. 2025-11-15T00:00:00Z). Default: --end
    /// minus --duration.
    #[arg(long, value_parser = parse_rfc3339, value_name = "RFC3339")]
    pub start: Option<i64>,

    /// End of the range, exclusive (RFC 3339). Default: now, or --start plus
    /// --duration.
    #[arg(long, value_parser = parse_rfc3339, value_name = "RFC3339")]
    pub end: Option<i64>,

    /// Length of the range (e.g. 90m, 24h, 7d); with neither --start nor
    /// --end it ends now. Default: 24h.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<i64>,

    /// Time between two samples of a series (e.g. 1s, 250ms, 1m).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: i64,

    /// Metrics to generate, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cpu,memory,disk_io,network"
    )]
    pub metrics: Vec<Metric>,

    /// Seed of every random choice (0 … 2^63-1). Default: random, and printed.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
    pub seed: Option<u64>,

    /// Expected anomalies per server per day (0 disables them) [default: 2,
    /// or the most the interval allows]. At most one anomaly per server
    /// starts in each epoch (one hour, or 12 samples if that is longer).
    #[arg(long, value_name = "PER_DAY")]
    pub anomaly_rate: Option<f64>,

    /// PostgreSQL URL of the raw database, e.g.
    /// postgres://metricagg_ingest:…@127.0.0.1:5433/metrics_raw. Also read
    /// from ./.env.
    #[arg(long, env = "INGEST_DATABASE_URL", hide_env_values = true, value_parser = parse_url, value_name = "URL")]
    pub database_url: Option<DbUrl>,

    /// backfill: the whole range as fast as possible. live: one sample per
    /// interval in real time from now until Ctrl-C, which flushes and exits.
    #[arg(long, value_enum, default_value = "backfill")]
    pub mode: Mode,

    /// Parallel database connections; each commits whole batches.
    #[arg(long, short = 'j', default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,

    /// Approximate rows per batch (one COPY and one transaction each; at
    /// least one timestamp of every server and metric).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=2_000_000))]
    pub batch_rows: u64,

    /// Write the binary COPY stream to this file instead of a database.
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    pub output: Option<PathBuf>,

    /// Generate and hash the rows without writing them anywhere (measures
    /// the generator alone).
    #[arg(long)]
    pub dry_run: bool,

    /// No progress bar and no informational messages; the summary line on
    /// stdout and errors remain.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Backfill,
    Live,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Servers {
    Count(usize),
    List(Vec<String>),
}

impl Servers {
    pub fn names(&self) -> Vec<String> {
        match self {
            Servers::Count(n) => (1..=*n).map(|i| format!("srv-{i}")).collect(),
            Servers::List(v) => v.clone(),
        }
    }
}

fn parse_servers(s: &str) -> Result<Servers, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let n: usize = t
            .parse()
            .map_err(|_| format!("`{t}` is too many servers"))?;
        if !(1..=100_000).contains(&n) {
            return Err(format!("server count must be 1 … 100000, not {n}"));
        }
        return Ok(Servers::Count(n));
    }
    let names: Vec<String> = t.split(',').map(|x| x.trim().to_string()).collect();
    if names.iter().any(String::is_empty) {
        return Err(format!(
            "`{s}`: give a count or comma-separated names, none empty"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for n in &names {
        if !seen.insert(n) {
            return Err(format!("server `{n}` is listed twice"));
        }
    }
    Ok(Servers::List(names))
}

/// A database URL; its password never prints.
#[derive(Clone)]
pub struct DbUrl {
    pub config: tokio_postgres::Config,
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", self.describe())
    }
}

impl DbUrl {
    /// `user@host:port/db`, without the password.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{host}:{port}/{}",
            c.get_user().unwrap_or("?"),
            c.get_dbname().unwrap_or("?")
        )
    }
}

fn parse_url(s: &str) -> Result<DbUrl, String> {
    let config: tokio_postgres::Config = s.parse().map_err(|e| {
        format!("not a PostgreSQL URL ({e}); write postgres://user:password@host:port/database")
    })?;
    Ok(DbUrl { config })
}

/// Where the rows go.
#[derive(Debug)]
pub enum Target {
    Database(Box<DbUrl>),
    File(PathBuf),
    DryRun,
}

/// A validated run.
#[derive(Debug)]
pub struct Plan {
    pub gen: GenConfig,
    pub mode: Mode,
    pub target: Target,
    pub connections: usize,
    pub batch_rows: u64,
    pub quiet: bool,
    /// Whether the user chose the seed (otherwise it was drawn).
    pub seed_given: bool,
}

impl Plan {
    /// Timestamps per batch.
    pub fn batch_steps(&self) -> u64 {
        let per_step = (self.gen.servers.len() * self.gen.metrics.len()).max(1) as u64;
        (self.batch_rows / per_step).max(1)
    }

    /// End of the range, exclusive (backfill).
    pub fn end_us(&self) -> Option<i64> {
        self.gen.steps.map(|s| self.gen.ts(s))
    }
}

impl Cli {
    /// Checks the arguments together and fixes the range and the seed.
    /// `now_us` is the wall clock; `entropy` seeds a default seed.
    pub fn resolve(self, now_us: i64, entropy: u64) -> Result<Plan, String> {
        let interval = self.interval;
        let mut metrics = self.metrics.clone();
        metrics.sort();
        metrics.dedup();
        let max_rate = 1.0 / epoch_probability(1.0, interval);
        let anomaly_rate = match self.anomaly_rate {
            None => DEFAULT_ANOMALY_RATE.min(max_rate),
            Some(r) if !r.is_finite() || r < 0.0 => {
                return Err(format!("--anomaly-rate must be a number ≥ 0, not {r}"));
            }
            Some(r) if r > max_rate => {
                return Err(format!(
                    "--anomaly-rate {r} is too high: at most one anomaly per server per epoch, so at most {max_rate:.2} per day at --interval {}",
                    format_duration(interval)
                ));
            }
            Some(r) => r,
        };
        let align = |t: i64| t - t.rem_euclid(interval);
        let (start, steps) = match self.mode {
            Mode::Live => {
                if self.start.is_some() || self.end.is_some() || self.duration.is_some() {
                    return Err("--mode live starts now and runs until Ctrl-C: drop --start, --end and --duration".into());
                }
                if self.output.is_some() || self.dry_run {
                    return Err(
                        "--mode live writes to the database: drop --output / --dry-run".into(),
                    );
                }
                (align(now_us), None)
            }
            Mode::Backfill => {
                let day = MICROS_PER_DAY;
                let (start, end) = match (self.start, self.end, self.duration) {
                    (Some(_), Some(_), Some(_)) => {
                        return Err("give at most two of --start, --end and --duration".into())
                    }
                    (Some(s), Some(e), None) => (s, e),
                    (Some(s), None, d) => (s, s + d.unwrap_or(day)),
                    (None, Some(e), d) => (e - d.unwrap_or(day), e),
                    (None, None, d) => {
                        let e = align(now_us);
                        (e - d.unwrap_or(day), e)
                    }
                };
                if start >= end {
                    return Err(format!(
                        "the range is empty: --start {} is not before --end {}",
                        crate::timefmt::format_ts(start),
                        crate::timefmt::format_ts(end)
                    ));
                }
                let steps = ((end - start) as u64).div_ceil(interval as u64);
                (start, Some(steps))
            }
        };
        let servers = self.servers.names();
        if let Some(s) = steps {
            let rows = (s as u128) * servers.len() as u128 * metrics.len() as u128;
            if rows > 1_000_000_000_000 {
                return Err(format!(
                    "{rows} rows is more than this tool will make in one run (10^12)"
                ));
            }
        }
        let target = match (self.output, self.dry_run, self.database_url) {
            (Some(path), _, _) => Target::File(path),
            (None, true, _) => Target::DryRun,
            (None, false, Some(url)) => Target::Database(Box::new(url)),
            (None, false, None) => {
                return Err("no database: pass --database-url, set INGEST_DATABASE_URL (or put it in ./.env), or use --output FILE / --dry-run".into())
            }
        };
        let seed_given = self.seed.is_some();
        let seed = self
            .seed
            .unwrap_or_else(|| crate::rng::mix64(entropy ^ now_us as u64) & (i64::MAX as u64));
        Ok(Plan {
            gen: GenConfig {
                seed,
                servers,
                metrics,
                start_us: start,
                interval_us: interval,
                steps,
                anomaly_rate,
            },
            mode: self.mode,
            target,
            connections: self.connections as usize,
            batch_rows: self.batch_rows,
            quiet: self.quiet,
            seed_given,
        })
    }
}

/// Loads `KEY=VALUE` lines from `path` into the environment, without
/// overriding variables that are already set. Missing file: nothing.
pub fn load_dotenv(path: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for (k, v) in parse_dotenv(&text) {
        if std::env::var_os(&k).is_none() {
            std::env::set_var(k, v);
        }
    }
}

/// `KEY=VALUE` pairs of a .env file: `#` comments, optional `export `, and
/// values optionally in single or double quotes.
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"'))
                    || (v.starts_with('\'') && v.ends_with('\'')))
            {
                &v[1..v.len() - 1]
            } else {
                v
            };
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut v = vec!["seeder"];
        v.extend_from_slice(args);
        let cli = Cli::try_parse_from(v).map_err(|e| e.to_string())?;
        cli.resolve(parse_rfc3339("2026-11-30T12:34:56.5Z").unwrap(), 7)
    }

    #[test]
    fn ranges_resolve() {
        let p = plan(&[
            "--dry-run",
            "--start",
            "2025-01-01T00:00:00Z",
            "--end",
            "2025-01-01T01:00:00Z",
        ])
        .unwrap();
        assert_eq!(p.gen.steps, Some(3600));
        assert_eq!(p.gen.servers.len(), 10);
        assert_eq!(p.gen.metrics.len(), 4);
        let p = plan(&["--dry-run", "--duration", "2h", "--interval", "1m"]).unwrap();
        assert_eq!(p.gen.steps, Some(120));
        assert_eq!(
            crate::timefmt::format_ts(p.end_us().unwrap()),
            "2026-11-30T12:34:00Z"
        );
        let p = plan(&[
            "--dry-run",
            "--end",
            "2025-01-02T00:00:00Z",
            "--interval",
            "1h",
        ])
        .unwrap();
        assert_eq!(
            crate::timefmt::format_ts(p.gen.start_us),
            "2025-01-01T00:00:00Z"
        );
        let p = plan(&[
            "--dry-run",
            "--servers",
            "a, b ,c",
            "--metrics",
            "memory,cpu,cpu",
        ])
        .unwrap();
        assert_eq!(p.gen.servers, vec!["a", "b", "c"]);
        assert_eq!(p.gen.metrics, vec![Metric::Cpu, Metric::Memory]);
        // A partial last interval still gets its sample.
        let p = plan(&[
            "--dry-run",
            "--start",
            "2025-01-01T00:00:00Z",
            "--duration",
            "90s",
            "--interval",
            "1m",
        ])
        .unwrap();
        assert_eq!(p.gen.steps, Some(2));
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let cases: &[(&[&str], &str)] = &[
            (
                &[
                    "--dry-run",
                    "--start",
                    "2025-01-02T00:00:00Z",
                    "--end",
                    "2025-01-01T00:00:00Z",
                ],
                "range is empty",
            ),
            (&["--dry-run", "--start", "yesterday"], "RFC 3339"),
            (&["--dry-run", "--interval", "0s"], "positive"),
            (&["--dry-run", "--servers", "0"], "1 … 100000"),
            (&["--dry-run", "--servers", "a,a"], "twice"),
            (&["--dry-run", "--metrics", "cpu,gpu"], "gpu"),
            (&["--dry-run", "--anomaly-rate", "1000"], "too high"),
            (&["--dry-run", "--anomaly-rate=-1"], "≥ 0"),
            (&["--dry-run", "--seed", "-3"], "-3"),
            (&["--dry-run", "--connections", "0"], "0"),
            (&["--mode", "live", "--dry-run"], "live"),
            (
                &[
                    "--mode",
                    "live",
                    "--duration",
                    "1h",
                    "--database-url",
                    "postgres://u@h/d",
                ],
                "live",
            ),
            (
                &[
                    "--dry-run",
                    "--start",
                    "2025-01-01T00:00:00Z",
                    "--end",
                    "2025-01-02T00:00:00Z",
                    "--duration",
                    "1h",
                ],
                "at most two",
            ),
            (&["--dry-run", "--output", "x"], "cannot be used"),
        ];
        for (args, want) in cases {
            match plan(args) {
                Ok(_) => panic!("{args:?} was accepted"),
                Err(e) => assert!(e.contains(want), "{args:?}: `{e}` lacks `{want}`"),
            }
        }
    }

    #[test]
    fn database_url_is_required_and_its_password_hidden() {
        std::env::remove_var("INGEST_DATABASE_URL");
        let e = plan(&["--duration", "1h"]).unwrap_err();
        assert!(e.contains("INGEST_DATABASE_URL"), "{e}");
        let p = plan(&[
            "--duration",
            "1h",
            "--database-url",
            "postgres://ingest:s3cret@127.0.0.1:5433/raw",
        ])
        .unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        match p.target {
            Target::Database(u) => assert_eq!(u.describe(), "ingest@127.0.0.1:5433/raw"),
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn seeds_are_drawn_when_absent_and_kept_when_given() {
        let a = plan(&["--dry-run"]).unwrap();
        assert!(!a.seed_given && a.gen.seed <= i64::MAX as u64);
        let b = plan(&["--dry-run", "--seed", "99"]).unwrap();
        assert!(b.seed_given);
        assert_eq!(b.gen.seed, 99);
    }

    #[test]
    fn dotenv_lines() {
        let kv = parse_dotenv("# c\nexport A=1\nB = \"two words\"\n\nC='x=y'\nbad line\n");
        assert_eq!(
            kv,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into())
            ]
        );
    }
}
