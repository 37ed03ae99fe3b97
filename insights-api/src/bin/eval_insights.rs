//! eval-insights: scores /insights anomaly windows against the seeder's
//! ground-truth labels (precision, recall, F1 per kind and overall, false
//! positives per server-day). `make eval-insights` seeds the data first.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clap::Parser;
use insights_api::config::{Config, Secret};
use insights_api::params::parse_time;
use serde_json::Value;
use tokio_postgres::NoTls;

mod eval;

/// Score /insights against metricagg.anomaly_labels.
#[derive(Parser, Debug)]
struct Args {
    /// Database the service reads (the api role).
    #[arg(long, env = "EVAL_API_DATABASE_URL", hide_env_values = true)]
    api_url: Secret,
    /// Database holding metricagg.anomaly_labels (admin).
    #[arg(long, env = "EVAL_LABELS_DATABASE_URL", hide_env_values = true)]
    labels_url: Secret,
    /// Start of the evaluated range.
    #[arg(long)]
    start: String,
    /// End of the evaluated range (exclusive).
    #[arg(long)]
    end: String,
    /// Tolerance when matching windows, in seconds (bins are one minute).
    #[arg(long, default_value_t = 60)]
    tolerance_secs: i64,
    /// Print every unmatched label and false positive.
    #[arg(long)]
    verbose: bool,
}

#[derive(Clone, Debug)]
struct Win {
    server: String,
    metric: String,
    kind: String,
    start: i64,
    end: i64,
}

fn overlaps(a: &Win, b: &Win, tol: i64) -> bool {
    a.server == b.server && a.metric == b.metric && a.start < b.end + tol && b.start < a.end + tol
}

/// The label kind a detected kind answers to (a dip is a downward spike).
fn canonical(kind: &str) -> &str {
    match kind {
        "dip" => "spike",
        k => k,
    }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let start: DateTime<Utc> = parse_time("start", &args.start)?;
    let end: DateTime<Utc> = parse_time("end", &args.end)?;

    // labels
    let (lc, conn) = tokio_postgres::connect(args.labels_url.expose(), NoTls)
        .await
        .map_err(|e| format!("labels database: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let rows = lc
        .query(
            "SELECT server_id, metric_type, kind, extract(epoch FROM start_ts)::bigint, extract(epoch FROM end_ts)::bigint
               FROM metricagg.anomaly_labels WHERE start_ts < $2 AND end_ts > $1 ORDER BY start_ts",
            &[&start, &end],
        )
        .await
        .map_err(|e| format!("reading labels: {e}"))?;
    let labels: Vec<Win> = rows
        .iter()
        .map(|r| Win {
            server: r.get(0),
            metric: r.get(1),
            kind: r.get(2),
            start: r.get(3),
            end: r.get(4),
        })
        .collect();

    // the service, on a real socket, mock narrator
    let base = eval::serve(Config::for_database(args.api_url.expose())).await?;
    let url = format!(
        "{base}/insights?start={}&end={}",
        start.format("%Y-%m-%dT%H:%M:%SZ"),
        end.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let t = std::time::Instant::now();
    let resp = reqwest::get(&url)
        .await
        .map_err(|e| format!("GET /insights: {e}"))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|e| format!("/insights body: {e}"))?;
    if !status.is_success() {
        return Err(format!("/insights answered {status}: {v}"));
    }
    let latency = t.elapsed();
    let servers = v["servers"].as_array().map(Vec::len).unwrap_or(0);
    let days = (end - start).num_seconds() as f64 / 86400.0;
    let ts = |x: &Value| {
        x.as_str()
            .and_then(|s| parse_time("ts", s).ok())
            .map(|t| t.timestamp())
            .unwrap_or(0)
    };
    let dets: Vec<Win> = v["anomalies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| Win {
            server: a["server"].as_str().unwrap_or("").into(),
            metric: a["metric"].as_str().unwrap_or("").into(),
            kind: a["kind"].as_str().unwrap_or("").into(),
            start: ts(&a["start"]),
            end: ts(&a["end"]),
        })
        .collect();

    let tol = args.tolerance_secs;
    let det_hit: Vec<Option<usize>> = dets
        .iter()
        .map(|d| labels.iter().position(|l| overlaps(d, l, tol)))
        .collect();
    let lab_hit: Vec<bool> = labels
        .iter()
        .map(|l| dets.iter().any(|d| overlaps(d, l, tol)))
        .collect();

    let mut kinds: Vec<String> = labels.iter().map(|l| l.kind.clone()).collect();
    kinds.extend(dets.iter().map(|d| canonical(&d.kind).to_string()));
    kinds.sort();
    kinds.dedup();
    println!(
        "eval-insights: {} labels, {} detections, {servers} servers, {days:.2} days, /insights {} ms",
        labels.len(),
        dets.len(),
        latency.as_millis()
    );
    println!(
        "{:<16} {:>6} {:>6} {:>9} {:>7} {:>6} {:>10}",
        "kind", "labels", "found", "precision", "recall", "f1", "kind_right"
    );
    let mut by_kind: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    for k in &kinds {
        let nl = labels.iter().filter(|l| &l.kind == k).count();
        let found = labels
            .iter()
            .zip(&lab_hit)
            .filter(|(l, h)| &l.kind == k && **h)
            .count();
        let nd = dets.iter().filter(|d| canonical(&d.kind) == k).count();
        let tp_d = dets
            .iter()
            .zip(&det_hit)
            .filter(|(d, h)| canonical(&d.kind) == k && h.is_some())
            .count();
        let kind_right = dets
            .iter()
            .zip(&det_hit)
            .filter(|(d, h)| h.is_some_and(|i| &labels[i].kind == k) && canonical(&d.kind) == k)
            .count();
        let matched_of_kind = dets
            .iter()
            .zip(&det_hit)
            .filter(|(_, h)| h.is_some_and(|i| &labels[i].kind == k))
            .count();
        let p = ratio(tp_d, nd);
        let r = ratio(found, nl);
        by_kind.insert(k.clone(), (p, r, f1(p, r)));
        println!(
            "{:<16} {:>6} {:>6} {:>9.3} {:>7.3} {:>6.3} {:>10}",
            k,
            nl,
            found,
            p,
            r,
            f1(p, r),
            format!("{kind_right}/{matched_of_kind}")
        );
    }
    if args.verbose {
        for (l, h) in labels.iter().zip(&lab_hit) {
            if !h {
                println!(
                    "missed  {} {} {} {}..{}",
                    l.server, l.metric, l.kind, l.start, l.end
                );
            }
        }
        for (d, h) in dets.iter().zip(&det_hit) {
            if let Some(i) = h {
                if canonical(&d.kind) != labels[*i].kind {
                    let l = &labels[*i];
                    println!(
                        "kind    {} {} detected {} {}..{} label {} {}..{}",
                        d.server, d.metric, d.kind, d.start, d.end, l.kind, l.start, l.end
                    );
                }
            }
            if h.is_none() {
                println!(
                    "false+  {} {} {} {}..{}",
                    d.server, d.metric, d.kind, d.start, d.end
                );
            }
        }
    }
    let tp = det_hit.iter().filter(|h| h.is_some()).count();
    let fp = dets.len() - tp;
    let precision = ratio(tp, dets.len());
    let recall = ratio(lab_hit.iter().filter(|h| **h).count(), labels.len());
    let fp_per = if servers > 0 && days > 0.0 {
        fp as f64 / (servers as f64 * days)
    } else {
        0.0
    };
    let core = ["spike", "level_shift", "leak", "stuck"];
    let core_f1: Vec<String> = core
        .iter()
        .filter_map(|k| by_kind.get(*k).map(|(_, _, f)| format!("{k}={f:.2}")))
        .collect();
    println!("core kinds F1: {}", core_f1.join(" "));
    println!(
        "f1={:.2} precision={:.2} recall={:.2} fp_per_server_day={:.2}",
        f1(precision, recall),
        precision,
        recall,
        fp_per
    );
    Ok(())
}
