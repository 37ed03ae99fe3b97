//! The fleet: comparison of servers per metric, the fleet's median curve
//! (for slow leaks), and the rules that judge anomalies across servers
//! (fleet-wide regime changes, noisy neighbours).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::anomaly::Anomaly;
use super::params::Params;
use super::series::{r2, Series};
use crate::stats::{mad, median, median_in_place, MAD_TO_SIGMA};

#[derive(Clone, Debug, Serialize)]
pub struct Ranked {
    pub server: String,
    pub median: f64,
    pub robust_z: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Standout {
    pub id: String,
    pub server: String,
    pub metric: String,
    pub median: f64,
    pub fleet_median: f64,
    pub robust_z: f64,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub metric: String,
    pub fleet_median: f64,
    pub servers: usize,
    /// Highest median first.
    pub ranking: Vec<Ranked>,
    pub standouts: Vec<Standout>,
}

/// The series of each metric, in dataset order.
pub fn by_metric<'a>(series: &[&'a Series]) -> BTreeMap<&'a str, Vec<&'a Series>> {
    let mut out: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for s in series {
        out.entry(s.metric.as_str()).or_default().push(s);
    }
    out
}

/// Per metric with at least 5 servers, the fleet's median of the servers'
/// block medians (block start → value).
pub fn fleet_curves<'a>(
    per_metric: &BTreeMap<&'a str, Vec<&Series>>,
    block: i64,
) -> HashMap<&'a str, HashMap<i64, f64>> {
    let mut out = HashMap::new();
    for (m, ss) in per_metric {
        if ss.len() < 5 {
            continue;
        }
        let mut by_block: HashMap<i64, Vec<f64>> = HashMap::new();
        for s in ss {
            let mut i = 0;
            while i < s.len() {
                let k = s.ts[i].div_euclid(block);
                let a = i;
                while i < s.len() && s.ts[i].div_euclid(block) == k {
                    i += 1;
                }
                let mut vals: Vec<f64> = s.avg[a..i].to_vec();
                by_block
                    .entry(k * block)
                    .or_default()
                    .push(median_in_place(&mut vals));
            }
        }
        let curve = by_block
            .into_iter()
            .map(|(k, mut v)| (k, median_in_place(&mut v)))
            .collect();
        out.insert(*m, curve);
    }
    out
}

/// Per metric: each server's median, the fleet median and 1.4826·MAD across
/// servers (floored at 5% of the fleet median); servers at |robust z| ≥
/// `fleet_z` stand out (with at least 4 servers). Standouts only for `focus`.
pub fn comparisons(
    per_metric: &BTreeMap<&str, Vec<&Series>>,
    focus: Option<&str>,
    p: &Params,
) -> Vec<Comparison> {
    let mut out = Vec::new();
    let mut n_c = 0;
    for (m, ss) in per_metric {
        let mut ranking: Vec<Ranked> = ss
            .iter()
            .filter_map(|s| {
                median(&s.avg).map(|md| Ranked {
                    server: s.server.clone(),
                    median: md,
                    robust_z: 0.0,
                })
            })
            .collect();
        let meds: Vec<f64> = ranking.iter().map(|r| r.median).collect();
        let Some(fleet) = median(&meds) else { continue };
        let spread = (mad(&meds).unwrap_or(0.0) * MAD_TO_SIGMA)
            .max(0.05 * fleet.abs())
            .max(p.abs_floor);
        for r in &mut ranking {
            r.robust_z = r2((r.median - fleet) / spread);
            r.median = r2(r.median);
        }
        // highest first; ties in dataset (display) order: the sort is stable
        ranking.sort_by(|a, b| b.median.total_cmp(&a.median));
        let mut standouts = Vec::new();
        if ranking.len() >= 4 {
            for r in &ranking {
                if r.robust_z.abs() >= p.fleet_z && focus.is_none_or(|f| f == r.server) {
                    n_c += 1;
                    standouts.push(Standout {
                        id: format!("C{n_c}"),
                        server: r.server.clone(),
                        metric: m.to_string(),
                        median: r.median,
                        fleet_median: r2(fleet),
                        robust_z: r.robust_z,
                        direction: if r.robust_z > 0.0 { "above" } else { "below" },
                    });
                }
            }
        }
        out.push(Comparison {
            metric: m.to_string(),
            fleet_median: r2(fleet),
            servers: ranking.len(),
            ranking,
            standouts,
        });
    }
    out
}

/// Long level shifts (longer than 2 × `baseline_half_width` minutes: the
/// baseline window at one-minute bins; at hourly bins any shift of two bins
/// or more) that start within 30 minutes of a shift of the same metric in
/// the same direction on another server are a fleet or profile regime change
/// (a schedule, a deploy), not an anomaly of one server: dropped.
pub fn drop_fleet_regime_changes(anoms: &mut Vec<Anomaly>, p: &Params) {
    let long = |a: &Anomaly| {
        a.kind == "level_shift" && a.duration_minutes > (2 * p.baseline_half_width) as f64
    };
    let up = |a: &Anomaly| a.peak >= a.typical;
    let mut drop = vec![false; anoms.len()];
    for i in 0..anoms.len() {
        for j in (i + 1)..anoms.len() {
            let (a, b) = (&anoms[i], &anoms[j]);
            if long(a)
                && long(b)
                && a.server != b.server
                && a.metric == b.metric
                && up(a) == up(b)
                && (a.start - b.start).num_seconds().abs() <= 1800
            {
                drop[i] = true;
                drop[j] = true;
            }
        }
    }
    let mut k = 0;
    anoms.retain(|_| {
        k += 1;
        !drop[k - 1]
    });
}

/// A noisy neighbour (a shared host) lifts cpu and disk I/O of several
/// servers at once: level shifts on cpu/disk_io that coincide (start within
/// 3 minutes) with a shift on another server, or on the other of the two
/// metrics of the same server, are relabelled `noisy_neighbour`.
pub fn mark_noisy_neighbours(anoms: &mut [Anomaly]) {
    let cand =
        |a: &Anomaly| (a.metric == "cpu" || a.metric == "disk_io") && a.kind == "level_shift";
    let idx: Vec<usize> = (0..anoms.len()).filter(|&i| cand(&anoms[i])).collect();
    let mut mark = vec![false; anoms.len()];
    for (x, &i) in idx.iter().enumerate() {
        for &j in &idx[x + 1..] {
            let (a, b) = (&anoms[i], &anoms[j]);
            let close = (a.start - b.start).num_seconds().abs() <= 180;
            let other = a.server != b.server || a.metric != b.metric;
            if close && other {
                mark[i] = true;
                mark[j] = true;
            }
        }
    }
    for (a, m) in anoms.iter_mut().zip(mark) {
        if m {
            a.kind = "noisy_neighbour".to_string();
        }
    }
}
