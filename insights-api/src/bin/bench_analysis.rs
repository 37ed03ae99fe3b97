//! bench-analysis: the time `analyse` takes on the benchmark's dataset shape
//! (24 h x 50 servers x 4 metrics of one-minute bins, 288,000 bins) without a
//! database: deterministic series with a daily cycle, noise, and a few
//! injected anomalies. Prints the median and the best of `--runs` runs, and
//! the same for a 14-day range of hourly bins (the width of long ranges).
//!
//! `cargo run --release -p insights-api --bin bench_analysis`

use std::time::Instant;

use clap::Parser;
use insights_api::analysis::{analyse, Dataset, Params, Series};

#[derive(Parser, Debug)]
struct Args {
    /// Timed runs per dataset (after one warm-up run).
    #[arg(long, default_value_t = 15)]
    runs: usize,
    #[arg(long, default_value_t = 50)]
    servers: usize,
    /// Only the day of one-minute bins (what `make bench-api` asks for).
    #[arg(long)]
    day_only: bool,
}

/// Deterministic uniform numbers in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.next()).sum::<f64>() - 6.0
    }
}

/// `servers` x 4 metrics over `bins` bins of `width` seconds from `t0`.
fn dataset(servers: usize, t0: i64, bins: i64, width: i64) -> Dataset {
    let metrics = [
        ("cpu", 40.0, 3.0),
        ("disk_io", 120.0, 8.0),
        ("memory", 55.0, 1.0),
        ("network", 300.0, 20.0),
    ];
    let mut series = Vec::new();
    for k in 0..servers {
        for (m, (name, level, noise)) in metrics.iter().enumerate() {
            let mut rng = Lcg(1 + (k * 4 + m) as u64);
            let mut s = Series::new(&format!("srv-{}", k + 1), name, width);
            let phase = rng.next() * std::f64::consts::TAU;
            for i in 0..bins {
                let t = t0 + i * width;
                let day = 2.0 * std::f64::consts::PI * (t % 86400) as f64 / 86400.0;
                let mut v = level * (1.0 + 0.2 * (day + phase).sin()) + noise * rng.normal();
                // one anomaly per series: a spike, a shift or a dip
                let at = (k as i64 * 37 + m as i64 * 11) % bins;
                if (at..at + 2 + (k % 3) as i64 * 10).contains(&i) {
                    v += if k % 4 == 0 { -4.0 } else { 8.0 } * noise;
                }
                let v = v.max(0.0);
                s.ts.push(t);
                s.count.push(width / 60 * 60);
                s.avg.push(v);
                s.min.push((v - noise).max(0.0));
                s.max.push(v + noise);
            }
            series.push(s);
        }
    }
    Dataset { width, series }
}

fn time(ds: &Dataset, range: (i64, i64), runs: usize) -> (f64, f64, f64, usize) {
    let p = Params::default();
    let n = analyse(ds, range, None, &p).anomalies.len();
    let mut ms: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(analyse(ds, range, None, &p));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let p90 = ms[(ms.len() * 9 / 10).min(ms.len() - 1)];
    (ms[ms.len() / 2], ms[0], p90, n)
}

fn main() {
    let a = Args::parse();
    let t0 = 1_763_164_800; // 2025-11-15T00:00:00Z
    let day = dataset(a.servers, t0, 1440, 60);
    let bins: usize = day.series.iter().map(Series::len).sum();
    let (med, best, p90, n) = time(&day, (t0, t0 + 86400), a.runs);
    println!(
        "bench-analysis: 24 h x {} servers x 4 metrics, one-minute bins ({bins} bins): median_ms={med:.1} best_ms={best:.1} p90_ms={p90:.1} anomalies={n}",
        a.servers
    );
    if a.day_only {
        println!("analysis_day_median_ms={med:.1}");
        return;
    }
    let long = dataset(a.servers, t0, 14 * 24, 3600);
    let bins: usize = long.series.iter().map(Series::len).sum();
    let (med2, best2, p90_2, n2) = time(&long, (t0, t0 + 14 * 86400), a.runs);
    println!(
        "bench-analysis: 14 d x {} servers x 4 metrics, hourly bins ({bins} bins): median_ms={med2:.1} best_ms={best2:.1} p90_ms={p90_2:.1} anomalies={n2}",
        a.servers
    );
    println!("analysis_day_median_ms={med:.1} analysis_14d_median_ms={med2:.1}");
}
