//! eval-nab: scores /insights on the labelled series of the Numenta Anomaly
//! Benchmark the NAB way, next to a rolling 3-sigma peer scored in the same
//! run. `make eval-nab` (bench/nab.sh) creates the databases first.
//!
//! The real path: every series is one server (`<category>.<file stem>`,
//! metric `value`), inserted by the ingest role at its own timestamps; the
//! job role runs `metricagg_run_once()`; `/insights` (the app on a socket, the
//! api role, mock narrator) is asked for the series' whole range.
//!
//! Scoring (NAB's conventions, ../shared/data/nab-dev/README.md): a labelled
//! window is found when a reported anomaly overlaps it; a false-alarm episode
//! is a reported anomaly that overlaps no window; anomalies and windows that
//! end inside the probation period (the first 15% of a series' points) are not
//! counted. The peer flags a point more than 3 standard deviations from the
//! mean of the previous day of points; flagged points less than 30 minutes
//! apart form one episode.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, NaiveDateTime, Utc};
use clap::Parser;
use insights_api::config::{Config, Secret};
use insights_api::params::parse_time;
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

mod eval;

/// Score /insights on NAB's labelled series.
#[derive(Parser, Debug)]
struct Args {
    /// The NAB directory: data/<category>/<name>.csv and labels/combined_windows.json.
    #[arg(long)]
    data_dir: PathBuf,
    /// Raw database, ingest role.
    #[arg(long, env = "NAB_INGEST_DATABASE_URL", hide_env_values = true)]
    ingest_url: Secret,
    /// Analytics database, job role (runs metricagg_run_once()).
    #[arg(long, env = "NAB_JOB_DATABASE_URL", hide_env_values = true)]
    job_url: Secret,
    /// Analytics database, api role (the service reads it).
    #[arg(long, env = "NAB_API_DATABASE_URL", hide_env_values = true)]
    api_url: Secret,
    /// Load the series and run the job (else they are already loaded).
    #[arg(long)]
    load: bool,
    /// Print every window, detection and false alarm.
    #[arg(long)]
    verbose: bool,
}

/// Fraction of a series' points that is probation (NAB: 15%).
const PROBATION: f64 = 0.15;
/// The peer's look-back and its episode gap.
const PEER_WINDOW_SECS: i64 = 86_400;
const PEER_EPISODE_GAP_SECS: i64 = 1_800;

struct File {
    /// `<category>/<name>.csv`, as in the labels.
    key: String,
    category: String,
    server: String,
    /// Sorted by time (stable: duplicates keep their order).
    points: Vec<(i64, f64)>,
    /// Labelled windows, closed [start, end], seconds.
    windows: Vec<(i64, i64)>,
}

impl File {
    /// Time of the first point after probation: what ends before it is not scored.
    fn probation_end(&self) -> i64 {
        let k = ((self.points.len() as f64) * PROBATION).floor() as usize;
        self.points[k.min(self.points.len() - 1)].0
    }
}

fn nab_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc().timestamp());
        }
    }
    Err(format!("not a NAB timestamp: {s:?}"))
}

fn read_files(dir: &Path) -> Result<Vec<File>, String> {
    let labels_path = dir.join("labels/combined_windows.json");
    let labels: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(
        &std::fs::read_to_string(&labels_path)
            .map_err(|e| format!("{}: {e}", labels_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", labels_path.display()))?;
    let mut out = Vec::new();
    for (key, wins) in labels {
        let path = dir.join("data").join(&key);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut points = Vec::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            let (t, v) = line
                .split_once(',')
                .ok_or_else(|| format!("{}:{}: expected timestamp,value", path.display(), i + 1))?;
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
            points.push((nab_time(t)?, v));
        }
        if points.is_empty() {
            return Err(format!("{}: no points", path.display()));
        }
        points.sort_by_key(|p| p.0);
        let (category, name) = key
            .split_once('/')
            .ok_or_else(|| format!("label key {key:?} is not <category>/<file>"))?;
        let stem = name.trim_end_matches(".csv");
        let server = format!("{category}.{stem}");
        insights_api::params::check_ident("server", &server)?;
        let windows = wins
            .iter()
            .map(|(a, b)| Ok((nab_time(a)?, nab_time(b)?)))
            .collect::<Result<Vec<_>, String>>()?;
        out.push(File {
            key: key.clone(),
            category: category.to_string(),
            server,
            points,
            windows,
        });
    }
    Ok(out)
}

async fn connect(url: &Secret, what: &str) -> Result<Client, String> {
    let (c, conn) = tokio_postgres::connect(url.expose(), NoTls)
        .await
        .map_err(|e| format!("{what} database: {}", explain(&e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(c)
}

/// A database error with the server's message, detail and hint.
fn explain(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "{}{}{}",
            d.message(),
            d.detail().map(|x| format!(" ({x})")).unwrap_or_default(),
            d.hint().map(|x| format!("; hint: {x}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

fn utc(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

/// Every series through the ingest role, then the job until nothing is left.
async fn load(files: &[File], args: &Args) -> Result<(), String> {
    let ingest = connect(&args.ingest_url, "raw (ingest role)").await?;
    let t = Instant::now();
    let mut rows = 0usize;
    for f in files {
        let (lo, hi) = (f.points[0].0, f.points[f.points.len() - 1].0);
        ingest
            .execute(
                "SELECT metricagg.ensure_partitions($1, $2)",
                &[&utc(lo), &utc(hi + 86_400)],
            )
            .await
            .map_err(|e| format!("ensure_partitions for {}: {}", f.key, explain(&e)))?;
        let ts: Vec<DateTime<Utc>> = f.points.iter().map(|p| utc(p.0)).collect();
        let vs: Vec<f64> = f.points.iter().map(|p| p.1).collect();
        rows += ingest
            .execute(
                "INSERT INTO metricagg.samples (server_id, metric_type, ts, value)
                 SELECT $1, 'value', t, v FROM unnest($2::timestamptz[], $3::float8[]) AS u(t, v)",
                &[&f.server, &ts, &vs],
            )
            .await
            .map_err(|e| format!("inserting {}: {}", f.key, explain(&e)))? as usize;
    }
    eprintln!(
        "eval-nab: {} series, {rows} samples inserted by the ingest role in {:.1} s",
        files.len(),
        t.elapsed().as_secs_f64()
    );
    let job = connect(&args.job_url, "analytics (job role)").await?;
    for _ in 0..5 {
        let r: String = job
            .query_one("SELECT metricagg_run_once()", &[])
            .await
            .map_err(|e| format!("metricagg_run_once(): {}", explain(&e)))?
            .get(0);
        eprintln!("eval-nab: {r}");
        if r.contains(": 0 change-log entries") {
            break;
        }
    }
    Ok(())
}

/// A reported interval, [start, end) in seconds, and what it was.
#[derive(Clone, Debug)]
struct Det {
    start: i64,
    end: i64,
    what: String,
}

/// The anomalies /insights reports for one server, over its whole range.
async fn insights(base: &str, f: &File) -> Result<(Vec<Det>, f64), String> {
    let hour = 3600;
    let start = f.points[0].0.div_euclid(hour) * hour;
    let end = f.points[f.points.len() - 1].0.div_euclid(hour) * hour + hour;
    let url = format!(
        "{base}/insights?start={}&end={}&server={}",
        utc(start).format("%Y-%m-%dT%H:%M:%SZ"),
        utc(end).format("%Y-%m-%dT%H:%M:%SZ"),
        f.server
    );
    let t = Instant::now();
    let resp = reqwest::get(&url)
        .await
        .map_err(|e| format!("GET /insights for {}: {e}", f.key))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|e| format!("/insights body for {}: {e}", f.key))?;
    if !status.is_success() {
        return Err(format!("/insights for {} answered {status}: {v}", f.key));
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let secs = |x: &Value| {
        x.as_str()
            .and_then(|s| parse_time("ts", s).ok())
            .map(|t| t.timestamp())
    };
    let mut out = Vec::new();
    for a in v["anomalies"].as_array().into_iter().flatten() {
        if a["server"].as_str() != Some(f.server.as_str()) {
            continue;
        }
        let (Some(s), Some(e)) = (secs(&a["start"]), secs(&a["end"])) else {
            return Err(format!("anomaly without start/end for {}: {a}", f.key));
        };
        out.push(Det {
            start: s,
            end: e,
            what: format!(
                "{} score {} z {} return_days {} minutes {}",
                a["kind"].as_str().unwrap_or("?"),
                a["score"],
                a["z"],
                a["return_period_days"],
                a["duration_minutes"]
            ),
        });
    }
    Ok((out, ms))
}

/// The peer: a point further than 3 standard deviations from the mean of the
/// previous day of points is flagged; flagged points less than 30 minutes
/// apart are one episode, [first, last + 1 s).
fn peer(points: &[(i64, f64)]) -> Vec<Det> {
    let mut flagged = Vec::new();
    let mut lo = 0usize;
    for (i, &(t, x)) in points.iter().enumerate() {
        while points[lo].0 < t - PEER_WINDOW_SECS {
            lo += 1;
        }
        // the previous day: [t - 1 day, t), strictly earlier points
        let prev: Vec<f64> = points[lo..i]
            .iter()
            .filter(|p| p.0 < t)
            .map(|p| p.1)
            .collect();
        if prev.len() >= 2 {
            let n = prev.len() as f64;
            let mean = prev.iter().sum::<f64>() / n;
            let var = prev.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            if (x - mean).abs() > 3.0 * var.sqrt() {
                flagged.push(t);
            }
        }
    }
    let mut out: Vec<Det> = Vec::new();
    for t in flagged {
        match out.last_mut() {
            Some(d) if t - (d.end - 1) < PEER_EPISODE_GAP_SECS => d.end = t + 1,
            _ => out.push(Det {
                start: t,
                end: t + 1,
                what: "peer 3-sigma".into(),
            }),
        }
    }
    out
}

#[derive(Default, Clone, Copy)]
struct Score {
    files: usize,
    windows: usize,
    found: usize,
    false_alarms: usize,
}

impl Score {
    fn add(&mut self, o: Score) {
        self.files += o.files;
        self.windows += o.windows;
        self.found += o.found;
        self.false_alarms += o.false_alarms;
    }
    fn recall(&self) -> f64 {
        if self.windows == 0 {
            1.0
        } else {
            self.found as f64 / self.windows as f64
        }
    }
    fn fp_per_file(&self) -> f64 {
        if self.files == 0 {
            0.0
        } else {
            self.false_alarms as f64 / self.files as f64
        }
    }
}

/// NAB scoring of one file's detections; `log` lists what was missed and the false alarms.
fn score(f: &File, dets: &[Det], who: &str, verbose: bool) -> Score {
    let cut = f.probation_end();
    let overlaps = |d: &Det, w: &(i64, i64)| d.start <= w.1 && d.end > w.0;
    let scored: Vec<&Det> = dets.iter().filter(|d| d.end > cut).collect();
    let windows: Vec<&(i64, i64)> = f.windows.iter().filter(|w| w.1 > cut).collect();
    let found = windows
        .iter()
        .filter(|w| scored.iter().any(|d| overlaps(d, w)))
        .count();
    let fa: Vec<&&Det> = scored
        .iter()
        .filter(|d| !f.windows.iter().any(|w| overlaps(d, w)))
        .collect();
    if verbose {
        for w in &windows {
            let hit = scored.iter().any(|d| overlaps(d, w));
            println!(
                "  {who:<5} window {} .. {} {}",
                utc(w.0).format("%Y-%m-%d %H:%M"),
                utc(w.1).format("%Y-%m-%d %H:%M"),
                if hit { "found" } else { "MISSED" }
            );
        }
        for d in scored
            .iter()
            .filter(|d| f.windows.iter().any(|w| overlaps(d, w)))
        {
            println!(
                "  {who:<5} detection {} .. {} {}",
                utc(d.start).format("%Y-%m-%d %H:%M"),
                utc(d.end).format("%Y-%m-%d %H:%M"),
                d.what
            );
        }
        for d in &fa {
            println!(
                "  {who:<5} false alarm {} .. {} {}",
                utc(d.start).format("%Y-%m-%d %H:%M"),
                utc(d.end).format("%Y-%m-%d %H:%M"),
                d.what
            );
        }
    }
    Score {
        files: 1,
        windows: windows.len(),
        found,
        false_alarms: fa.len(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let files = read_files(&args.data_dir)?;
    if args.load {
        load(&files, &args).await?;
    }

    // the service, on a real socket, mock narrator; ranges up to a year
    let mut config = Config::for_database(args.api_url.expose());
    config.max_range_hours = 24 * 400;
    let base = eval::serve(config).await?;

    let mut ours: BTreeMap<String, Score> = BTreeMap::new();
    let mut theirs: BTreeMap<String, Score> = BTreeMap::new();
    let mut total_ms = 0.0;
    for f in &files {
        let (dets, ms) = insights(&base, f).await?;
        total_ms += ms;
        if args.verbose {
            println!(
                "{} ({} points, {} windows, {} reported, /insights {ms:.0} ms)",
                f.key,
                f.points.len(),
                f.windows.len(),
                dets.len()
            );
        }
        let s = score(f, &dets, "ours", args.verbose);
        let p = score(f, &peer(&f.points), "peer", args.verbose);
        ours.entry(f.category.clone()).or_default().add(s);
        theirs.entry(f.category.clone()).or_default().add(p);
    }

    println!(
        "eval-nab: {} files, /insights {:.0} ms in total",
        files.len(),
        total_ms
    );
    println!(
        "{:<22} {:>5} {:>7} {:>6} {:>7} {:>8} | {:>6} {:>7} {:>8}",
        "category", "files", "windows", "found", "recall", "fa/file", "peer", "recall", "fa/file"
    );
    let (mut all, mut all_p) = (Score::default(), Score::default());
    for (cat, s) in &ours {
        let p = theirs[cat];
        println!(
            "{:<22} {:>5} {:>7} {:>6} {:>7.3} {:>8.2} | {:>6} {:>7.3} {:>8.2}",
            cat,
            s.files,
            s.windows,
            s.found,
            s.recall(),
            s.fp_per_file(),
            p.found,
            p.recall(),
            p.fp_per_file()
        );
        all.add(*s);
        all_p.add(p);
    }
    println!(
        "{:<22} {:>5} {:>7} {:>6} {:>7.3} {:>8.2} | {:>6} {:>7.3} {:>8.2}",
        "all",
        all.files,
        all.windows,
        all.found,
        all.recall(),
        all.fp_per_file(),
        all_p.found,
        all_p.recall(),
        all_p.fp_per_file()
    );
    println!(
        "nab_window_recall={:.3} nab_fp_per_file={:.2} peer_recall={:.3} peer_fp_per_file={:.2}",
        all.recall(),
        all.fp_per_file(),
        all_p.recall(),
        all_p.fp_per_file()
    );
    Ok(())
}
