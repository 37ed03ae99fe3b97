//! Deterministic analysis over the bins: anomalies, trends, fleet comparisons,
//! forecasts and per-server health. Every result becomes a [`Fact`] with an id
//! that the narrative must cite. Methods are documented in docs/api.md.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::natural_cmp;
use crate::stats::{
    mad, median, median_in_place, rolling_median, rolling_median_fixed, theil_sen, MAD_TO_SIGMA,
};

/// One (server, metric) series of stored bins, sorted by time.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub server: String,
    pub metric: String,
    pub width: i64,
    /// Bin start, seconds since the epoch (UTC).
    pub ts: Vec<i64>,
    pub count: Vec<i64>,
    pub avg: Vec<f64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
}

impl Series {
    pub fn new(server: &str, metric: &str, width: i64) -> Series {
        Series {
            server: server.to_string(),
            metric: metric.to_string(),
            width,
            ..Default::default()
        }
    }
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub width: i64,
    pub series: Vec<Series>,
}

/// Tunables of the detectors; the defaults are what `make eval-insights` scores.
#[derive(Clone, Debug)]
pub struct Params {
    /// Half-width of the centred rolling median baseline, in bins.
    pub baseline_half_width: usize,
    /// |z| that opens a candidate run.
    pub z_enter: f64,
    /// A single-bin (or two-bin) excursion must reach this |z|.
    pub z_single: f64,
    /// A run of at least `persist_bins` bins must reach this |z|.
    pub z_persist: f64,
    pub persist_bins: usize,
    /// A run this long (bins) whose before/after medians differ is a level shift.
    pub level_shift_min_bins: usize,
    /// Consecutive identical values that make a series stuck (one sample per bin).
    pub stuck_min_bins: usize,
    /// Consecutive flat bins (min = max, several samples) with one value that make it stuck.
    pub stuck_min_flat_bins: usize,
    /// Excursions up to this many bins are spikes; longer ones level shifts (or leaks).
    pub spike_max_bins: usize,
    /// Detect slow (hours-long) leaks against the fleet's median curve.
    pub slow_leaks: bool,
    /// Missing bins that make a dropout.
    pub dropout_min_bins: i64,
    /// Relative noise floor (fraction of the series median) for σ.
    pub rel_floor: f64,
    /// Absolute noise floor for σ, in the metric's unit.
    pub abs_floor: f64,
    /// Leak: minimum duration (seconds) and rise in σ.
    pub leak_min_secs: i64,
    pub leak_min_rise_sigma: f64,
    /// Fleet: robust z that makes a server stand out.
    pub fleet_z: f64,
    /// Hours forecast ahead.
    pub forecast_hours: i64,
    /// Confidence of trend intervals and forecast prediction intervals.
    pub confidence: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            baseline_half_width: 45,
            z_enter: 4.0,
            z_single: 8.0,
            z_persist: 5.0,
            persist_bins: 3,
            level_shift_min_bins: 20,
            stuck_min_bins: 10,
            stuck_min_flat_bins: 2,
            spike_max_bins: 3,
            slow_leaks: false,
            dropout_min_bins: 1,
            rel_floor: 0.01,
            abs_floor: 0.05,
            leak_min_secs: 2 * 3600,
            leak_min_rise_sigma: 8.0,
            fleet_z: 3.5,
            forecast_hours: 6,
            confidence: 0.95,
        }
    }
}

/// Threshold used for time-to-threshold forecasts, per metric.
pub fn threshold_for(metric: &str) -> Option<f64> {
    match metric {
        "memory" | "cpu" => Some(90.0),
        _ => None,
    }
}

fn is_percent(metric: &str) -> bool {
    matches!(metric, "cpu" | "memory")
}

fn clamp_metric(metric: &str, v: f64) -> f64 {
    if is_percent(metric) {
        v.clamp(0.0, 100.0)
    } else {
        v.max(0.0)
    }
}

/// Rounds to 2 decimals: facts carry exactly the numbers the narrative may use.
pub fn r2(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        x
    }
}

fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Minor,
    Warning,
    Critical,
}

impl Severity {
    pub fn from_score(score: f64) -> Severity {
        if score >= 80.0 {
            Severity::Critical
        } else if score >= 50.0 {
            Severity::Warning
        } else {
            Severity::Minor
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Score 0–100 from a robust z: 0 at 3σ, about 50 at 7σ, about 90 at 17σ.
pub fn score_from_z(z: f64) -> f64 {
    let s = 100.0 * (1.0 - (-(z.abs() - 3.0).max(0.0) / 6.0).exp());
    s.clamp(0.0, 100.0).round()
}

/// Score 0–100 from a duration: about 50 at 40 minutes.
fn score_from_minutes(m: f64) -> f64 {
    (100.0 * (1.0 - (-m / 60.0).exp()))
        .clamp(0.0, 100.0)
        .round()
        .max(30.0)
}

#[derive(Clone, Debug, Serialize)]
pub struct Anomaly {
    pub id: String,
    pub server: String,
    pub metric: String,
    /// spike, dip, level_shift, leak, stuck, dropout, noisy_neighbour
    pub kind: String,
    pub start: DateTime<Utc>,
    /// Exclusive end (end of the last anomalous bin).
    pub end: DateTime<Utc>,
    pub duration_minutes: f64,
    /// The most extreme value in the window (bin average).
    pub peak: f64,
    pub typical: f64,
    /// Expected band: typical ± 3σ (robust), clamped to the metric's range.
    pub band: [f64; 2],
    pub score: f64,
    pub severity: Severity,
    pub z: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Trend {
    pub id: String,
    pub server: String,
    pub metric: String,
    pub slope_per_hour: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub confidence: f64,
    /// The confidence interval excludes zero.
    pub significant: bool,
    /// Slope × window is at least 3 noise σ: large enough to matter.
    pub material: bool,
    pub change_over_window: f64,
    pub points: usize,
    pub method: &'static str,
}

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

#[derive(Clone, Debug, Serialize)]
pub struct ForecastPoint {
    pub ts: DateTime<Utc>,
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Forecast {
    pub id: String,
    pub server: String,
    pub metric: String,
    pub method: &'static str,
    pub confidence: f64,
    pub points: Vec<ForecastPoint>,
    pub threshold: Option<f64>,
    /// Hours from the end of the range until the fitted line crosses the
    /// threshold; only when the trend is significant and material.
    pub hours_to_threshold: Option<f64>,
    pub threshold_eta: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Health {
    pub id: String,
    pub server: String,
    pub status: &'static str,
    pub score: f64,
    pub anomalies: usize,
    pub critical: usize,
    pub warnings: usize,
    pub medians: BTreeMap<String, f64>,
    pub notes: Vec<String>,
}

/// A citable result. `values` holds every number the narrative may state
/// about it, rounded as shown.
#[derive(Clone, Debug, Serialize)]
pub struct Fact {
    pub id: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    pub severity: Severity,
    /// Ranking key for prompt budgeting (higher first).
    pub weight: f64,
    pub statement: String,
    pub values: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Analysis {
    /// Carried separately in responses (with the period fact first).
    #[serde(skip)]
    pub facts: Vec<Fact>,
    pub anomalies: Vec<Anomaly>,
    pub trends: Vec<Trend>,
    pub comparisons: Vec<Comparison>,
    pub forecasts: Vec<Forecast>,
    pub health: Vec<Health>,
}

/// Robust noise σ of a series: 1.4826 × MAD of the residuals from its rolling
/// median, floored so that flat series do not turn noise into anomalies.
fn noise_sigma(resid: &[f64], level: f64, p: &Params) -> f64 {
    let raw = mad(resid).unwrap_or(0.0) * MAD_TO_SIGMA;
    raw.max(p.rel_floor * level.abs()).max(p.abs_floor)
}

/// A window of bins [a, b) with a kind; merged and scored later.
#[derive(Clone, Debug)]
struct Window {
    a: usize,
    b: usize,
    kind: &'static str,
    z: f64,
    peak_i: usize,
    typical: f64,
    start_override: Option<i64>,
    end_override: Option<i64>,
}

fn priority(kind: &str) -> u8 {
    match kind {
        "stuck" => 7,
        "dropout" => 6,
        "leak" => 5,
        "level_shift" => 4,
        "noisy_neighbour" => 3,
        "spike" | "dip" => 2,
        _ => 1,
    }
}

/// At the edges a fixed window's median is flat, which turns a ramp near
/// the start or end of the data (a nightly batch window beginning) into false
/// excursions: continue the baseline's own slope over the last h bins instead.
fn edge_trended(mut base: Vec<f64>, h: usize) -> Vec<f64> {
    let n = base.len();
    if h == 0 || n < 4 * h + 2 {
        return base;
    }
    let (e, s) = (n - 1 - h, h);
    let slope_end = (base[e] - base[e - h]) / h as f64;
    let slope_start = (base[s + h] - base[s]) / h as f64;
    for i in (e + 1)..n {
        base[i] = base[e] + slope_end * (i - e) as f64;
    }
    for i in 0..s {
        base[i] = base[s] - slope_start * (s - i) as f64;
    }
    base
}

/// What one series contributes, computed in parallel.
struct PerSeries {
    windows: Vec<Window>,
    base_sigma: f64,
    bx0: Option<f64>,
    last_x: Option<f64>,
    fit: Option<crate::stats::SenFit>,
    ffit: Option<crate::stats::SenFit>,
}

/// Runs of `true` as [a, b) index ranges.
fn runs(mask: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < mask.len() {
        if mask[i] {
            let a = i;
            while i < mask.len() && mask[i] {
                i += 1;
            }
            out.push((a, i));
        } else {
            i += 1;
        }
    }
    out
}

/// Detects anomalies in one series. `fleet_blocks` is the fleet's median
/// block curve for the metric (block start → value), used to remove shared
/// seasonality before leak detection.
fn detect_series(
    s: &Series,
    p: &Params,
    range: (i64, i64),
    fleet_blocks: Option<&HashMap<i64, f64>>,
    block: i64,
) -> (Vec<Window>, f64) {
    let n = s.len();
    let w = s.width;
    let mut out: Vec<Window> = Vec::new();
    if n == 0 {
        return (out, p.abs_floor);
    }
    let v = &s.avg;
    let level = median(v).unwrap_or(0.0);

    // Dropouts: on the time grid of the data span, runs of bins that are
    // missing or hold clearly fewer samples than usual, losing at least one
    // bin's worth of samples in total.
    let med_count = median(&s.count.iter().map(|&c| c as f64).collect::<Vec<_>>()).unwrap_or(0.0);
    {
        let first = range.0.min(s.ts[0]);
        let last = range.1.max(s.ts[n - 1] + w);
        let mut k = 0usize;
        let mut t = first;
        let mut run: Option<(i64, f64, usize)> = None; // start, missing samples, index
        while t < last {
            let (c, here) = if k < n && s.ts[k] == t {
                k += 1;
                (s.count[k - 1] as f64, true)
            } else {
                (0.0, false)
            };
            let low = !here || (med_count >= 4.0 && c < 0.75 * med_count);
            match (&mut run, low) {
                (Some(r), true) => r.1 += (med_count - c).max(0.0),
                (None, true) => run = Some((t, (med_count - c).max(0.0), k.saturating_sub(1))),
                (Some(r), false) => {
                    let missing_bins = if med_count > 0.0 {
                        r.1 / med_count
                    } else {
                        0.0
                    };
                    if missing_bins >= p.dropout_min_bins as f64 {
                        out.push(Window {
                            a: r.2,
                            b: r.2,
                            kind: "dropout",
                            z: 0.0,
                            peak_i: r.2,
                            typical: level,
                            start_override: Some(r.0),
                            end_override: Some(t),
                        });
                    }
                    run = None;
                }
                (None, false) => {}
            }
            t += w;
        }
        if let Some(r) = run {
            let missing_bins = if med_count > 0.0 {
                r.1 / med_count
            } else {
                0.0
            };
            if missing_bins >= p.dropout_min_bins as f64 {
                out.push(Window {
                    a: r.2,
                    b: r.2,
                    kind: "dropout",
                    z: 0.0,
                    peak_i: r.2,
                    typical: level,
                    start_override: Some(r.0),
                    end_override: Some(last),
                });
            }
        }
    }

    if n < 2 * p.persist_bins + 10 {
        let floor = noise_sigma(&[], level, p);
        return (out, floor);
    }

    // Stuck: the same value repeated. A bin of several samples whose min
    // equals its max is flat; consecutive flat bins with one value are stuck.
    // With one sample per bin, `stuck_min_bins` equal averages are needed.
    let mut excluded = vec![false; n];
    {
        let eq = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(1.0);
        let flat: Vec<bool> = (0..n)
            .map(|i| s.count[i] >= 2 && eq(s.max[i], s.min[i]))
            .collect();
        let mut i = 0;
        while i < n {
            let mut j = i + 1;
            while j < n && s.ts[j] - s.ts[j - 1] == w && eq(v[j], v[i]) && flat[j] == flat[i] {
                j += 1;
            }
            let len = j - i;
            let at_bound = v[i] == 0.0 || (is_percent(&s.metric) && v[i] == 100.0);
            let need = if flat[i] {
                p.stuck_min_flat_bins
            } else {
                p.stuck_min_bins
            };
            if len >= need && !at_bound {
                // partial stuck bins at the edges: the neighbour whose min or max equals the value
                let a = if i > 0 && (eq(s.min[i - 1], v[i]) || eq(s.max[i - 1], v[i])) {
                    i - 1
                } else {
                    i
                };
                let b = if j < n && (eq(s.min[j], v[i]) || eq(s.max[j], v[i])) {
                    j + 1
                } else {
                    j
                };
                out.push(Window {
                    a,
                    b,
                    kind: "stuck",
                    z: 0.0,
                    peak_i: i,
                    typical: level,
                    start_override: None,
                    end_override: None,
                });
                for e in excluded.iter_mut().take(b).skip(a) {
                    *e = true;
                }
            }
            i = j;
        }
    }

    // Baseline: centred rolling median; residual scale: robust σ.
    let base = edge_trended(
        rolling_median_fixed(v, p.baseline_half_width),
        p.baseline_half_width,
    );
    let resid: Vec<f64> = v.iter().zip(&base).map(|(x, b)| x - b).collect();
    let sigma = noise_sigma(&resid, level, p);
    let z: Vec<f64> = resid
        .iter()
        .zip(&excluded)
        .map(|(r, &e)| if e { 0.0 } else { r / sigma })
        .collect();

    // Excursions: runs of |z| ≥ z_enter with one sign, gaps ≤ 2 bins merged.
    let mut cand: Vec<(usize, usize, f64)> = Vec::new(); // a, b, sign
    let mut i = 0;
    while i < n {
        if z[i].abs() >= p.z_enter {
            let sign = z[i].signum();
            let a = i;
            let mut b = i + 1;
            let mut j = i + 1;
            while j < n && j <= b + 2 {
                if z[j].abs() >= p.z_enter && z[j].signum() == sign {
                    b = j + 1;
                }
                j += 1;
            }
            cand.push((a, b, sign));
            i = b;
        } else {
            i += 1;
        }
    }
    for (a, b, sign) in cand {
        let (pi, pz) = (a..b)
            .map(|i| (i, z[i]))
            .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
            .expect("non-empty run");
        let len = b - a;
        let keep = pz.abs() >= p.z_single || (len >= p.persist_bins && pz.abs() >= p.z_persist);
        if !keep {
            continue;
        }
        out.push(Window {
            a,
            b,
            kind: classify_excursion(&s.metric, &v[a..b], sign, len, p),
            z: pz,
            peak_i: pi,
            typical: base[pi],
            start_override: None,
            end_override: None,
        });
    }

    // Short spikes inside one bin move its average a little but its maximum
    // a lot: the same excursion test on the bins' maxima, upward, short runs.
    {
        let mx = &s.max;
        // spikes here are ≤ 3 bins: a 31-bin window is plenty
        let mbase = rolling_median_fixed(mx, 15);
        let mres: Vec<f64> = mx.iter().zip(&mbase).map(|(x, b)| x - b).collect();
        let msig = noise_sigma(&mres, median(mx).unwrap_or(0.0), p);
        let hot: Vec<bool> = (0..n)
            .map(|i| !excluded[i] && mres[i] / msig >= p.z_enter)
            .collect();
        for (a, b) in runs(&hot) {
            let (pi, pz) = (a..b)
                .map(|i| (i, mres[i] / msig))
                .max_by(|x, y| x.1.total_cmp(&y.1))
                .expect("non-empty run");
            let covered = out
                .iter()
                .any(|w| w.kind != "dropout" && w.a < b && a < w.b.max(w.a + 1));
            if b - a <= p.spike_max_bins && pz >= p.z_single && !covered {
                out.push(Window {
                    a,
                    b,
                    kind: "spike",
                    z: pz,
                    peak_i: pi,
                    typical: base[pi],
                    start_override: None,
                    end_override: None,
                });
            }
        }
    }

    // Level shifts: the median of the next L bins differs from the median of
    // the previous L bins by ≥ z_persist σ, and the new level persists.
    let l = p.baseline_half_width / 2; // 15 bins each side
    let rm = rolling_median(v, l);
    let tiny = rolling_median(v, 3);
    let mut cps: Vec<(usize, f64, f64, f64)> = Vec::new(); // start, sign, shift, pre
    let mut i = l + 1;
    while i + l < n {
        let d = (rm[i + l] - rm[i - l - 1]) / sigma;
        if d.abs() < p.z_persist + 1.0 {
            i += 1;
            continue;
        }
        // the extremum of this run of large |d|
        let sign = d.signum();
        let mut c = i;
        let mut j = i;
        while j + l < n && ((rm[j + l] - rm[j - l - 1]) / sigma) * sign >= p.z_persist + 1.0 {
            if (rm[j + l] - rm[j - l - 1]) * sign > (rm[c + l] - rm[c - l - 1]) * sign {
                c = j;
            }
            j += 1;
        }
        let pre = rm[c - l - 1];
        let post = rm[c + l];
        let mid = (pre + post) / 2.0;
        // refine the start: first bin from c-l on that stays past the midpoint
        let st = (c.saturating_sub(l)..(c + l).min(n))
            .find(|&k| (tiny[k] - mid) * sign > 0.0)
            .unwrap_or(c);
        // Shorter excursions are the excursion detector's: a step counts only
        // when the new level holds for a whole baseline window (or to the end).
        let hold = 2 * p.baseline_half_width + 1;
        let persist_end = (st + hold).min(n);
        let held = median(&v[st..persist_end]).is_some_and(|m| (m - mid) * sign > 0.0);
        if !held || persist_end - st < p.level_shift_min_bins {
            i = j.max(i + 1);
            continue;
        }
        let near_stuck = excluded[st.saturating_sub(l + 1)..(st + l + 1).min(n)]
            .iter()
            .any(|&e| e);
        // A step right after an excursion is that excursion ending, not a new level.
        let lo = st.saturating_sub(l + 1);
        let after_excursion = out
            .iter()
            .any(|w| w.kind != "dropout" && w.a <= st + 1 && w.b >= lo && w.b > w.a);
        if !near_stuck && !after_excursion {
            cps.push((st, sign, post - pre, pre));
        }
        i = j.max(i + 1);
    }
    // Pair each shift with the next opposite step of at least half its size:
    // that is where it ends; unpaired shifts last to the end of the data.
    let mut k = 0;
    while k < cps.len() {
        let (st, sign, shift, pre) = cps[k];
        let back =
            (k + 1..cps.len()).find(|&m| cps[m].1 != sign && cps[m].2.abs() >= 0.5 * shift.abs());
        // Unpaired: until the values come back across the midpoint, if they do.
        let mid = pre + shift / 2.0;
        let end = back.map(|m| cps[m].0).unwrap_or_else(|| {
            (st + p.level_shift_min_bins..n)
                .find(|&q| (tiny[q] - mid) * sign < 0.0)
                .unwrap_or(n)
        });
        let ext = (st..end)
            .max_by(|&x, &y| ((v[x] - pre) * sign).total_cmp(&((v[y] - pre) * sign)))
            .unwrap_or(st);
        out.push(Window {
            a: st,
            b: end,
            kind: "level_shift",
            z: shift / sigma,
            peak_i: ext,
            typical: pre,
            start_override: None,
            end_override: None,
        });
        k = back.map(|m| m + 1).unwrap_or(cps.len());
    }

    // Leak: a sustained monotone rise in block medians (fleet-relative when
    // the fleet is large enough), too large for the noise.
    // Without a fleet reference a diurnal rise looks exactly like a leak, so
    // leaks are only detected fleet-relative.
    if p.slow_leaks && fleet_blocks.is_some() && s.ts[n - 1] - s.ts[0] >= p.leak_min_secs {
        let mut bstart: Vec<i64> = Vec::new();
        let mut bval: Vec<f64> = Vec::new();
        let mut bidx: Vec<(usize, usize)> = Vec::new();
        let mut i = 0;
        while i < n {
            let k = s.ts[i].div_euclid(block);
            let a = i;
            while i < n && s.ts[i].div_euclid(block) == k {
                i += 1;
            }
            let mut vals: Vec<f64> = v[a..i].to_vec();
            let mut m = median_in_place(&mut vals);
            if let Some(f) = fleet_blocks.and_then(|fb| fb.get(&(k * block))) {
                m -= f;
            }
            bstart.push(k * block);
            bval.push(m);
            bidx.push((a, i));
        }
        let nb = bval.len();
        let win = ((p.leak_min_secs / block) as usize).max(4);
        if nb >= win {
            let bsig = {
                let d: Vec<f64> = bval.windows(2).map(|x| x[1] - x[0]).collect();
                (mad(&d).unwrap_or(0.0) * MAD_TO_SIGMA / std::f64::consts::SQRT_2).max(sigma / 4.0)
            };
            let mut rising = vec![false; nb];
            for st in 0..=(nb - win) {
                let xs: Vec<f64> = bstart[st..st + win]
                    .iter()
                    .map(|&t| (t - bstart[st]) as f64 / 3600.0)
                    .collect();
                if let Some(f) = theil_sen(&xs, &bval[st..st + win], 1.96) {
                    let rise = f.slope * (xs[win - 1] - xs[0]);
                    if f.tau >= 0.7 && rise > 0.0 && rise >= 4.0 * bsig {
                        for r in rising.iter_mut().skip(st).take(win) {
                            *r = true;
                        }
                    }
                }
            }
            for (a, b) in runs(&rising) {
                if b - a < win {
                    continue;
                }
                // trim to the rising part: from the lowest to the highest block
                let lo = (a..b)
                    .min_by(|&x, &y| bval[x].total_cmp(&bval[y]))
                    .unwrap_or(a);
                let hi = (lo..b)
                    .max_by(|&x, &y| bval[x].total_cmp(&bval[y]))
                    .unwrap_or(b - 1);
                if hi <= lo {
                    continue;
                }
                let rise = bval[hi] - bval[lo];
                let steps: f64 = (lo..hi)
                    .map(|k| (bval[k + 1] - bval[k]).max(0.0))
                    .fold(0.0, f64::max);
                let dur = bstart[hi] + block - bstart[lo];
                if dur < p.leak_min_secs
                    || rise < p.leak_min_rise_sigma * sigma.min(bsig * 2.0).max(p.abs_floor)
                    || steps > 0.5 * rise
                {
                    continue;
                }
                let (ia, ib) = (bidx[lo].0, bidx[hi].1);
                let pi = (ia..ib)
                    .max_by(|&x, &y| v[x].total_cmp(&v[y]))
                    .unwrap_or(ia);
                out.push(Window {
                    a: ia,
                    b: ib,
                    kind: "leak",
                    z: rise / sigma,
                    peak_i: pi,
                    typical: v[ia..(ia + 5).min(ib)].iter().copied().sum::<f64>()
                        / ((ia + 5).min(ib) - ia) as f64,
                    start_override: None,
                    end_override: None,
                });
            }
        }
    }

    // Merge overlapping or touching windows; the higher-priority kind wins.
    // (Sorted by start, so the last window of a family is the one to extend.)
    out.sort_by_key(|x| (x.start_ts(s), x.end_ts(s)));
    let mut merged: Vec<Window> = Vec::new();
    for wdw in out {
        // Only windows of one family merge: a dropout or a stuck sensor is
        // its own finding even inside a longer excursion.
        let family = |k: &str| match k {
            "dropout" => 0,
            "stuck" => 1,
            _ => 2,
        };
        if let Some(last) = merged
            .iter_mut()
            .rev()
            .find(|m| family(m.kind) == family(wdw.kind))
        {
            if wdw.start_ts(s) <= last.end_ts(s) + 2 * w {
                let (sa, sb) = (
                    last.start_ts(s).min(wdw.start_ts(s)),
                    last.end_ts(s).max(wdw.end_ts(s)),
                );
                if priority(wdw.kind) > priority(last.kind) {
                    let mut nw = wdw.clone();
                    nw.a = last.a.min(wdw.a);
                    nw.b = last.b.max(wdw.b);
                    *last = nw;
                } else {
                    last.a = last.a.min(wdw.a);
                    last.b = last.b.max(wdw.b);
                }
                last.start_override = Some(sa);
                last.end_override = Some(sb);
                continue;
            }
        }
        merged.push(wdw);
    }
    (merged, sigma)
}

/// Kind of an excursion from its shape: short ones are spikes (or dips), a
/// memory excursion that climbs steadily to its peak is a leak, longer ones
/// are level shifts.
fn classify_excursion(
    metric: &str,
    vals: &[f64],
    sign: f64,
    len: usize,
    p: &Params,
) -> &'static str {
    if len <= p.spike_max_bins {
        return if sign > 0.0 { "spike" } else { "dip" };
    }
    if metric == "memory" && sign > 0.0 && len >= 4 {
        let x: Vec<f64> = (0..vals.len()).map(|i| i as f64).collect();
        if let Some(f) = theil_sen(&x, vals, 1.96) {
            let peak_at = (0..vals.len())
                .max_by(|&i, &j| vals[i].total_cmp(&vals[j]))
                .unwrap_or(0);
            if f.tau >= 0.6 && peak_at + 2 >= vals.len() * 2 / 3 {
                return "leak";
            }
        }
    }
    "level_shift"
}

impl Window {
    fn start_ts(&self, s: &Series) -> i64 {
        self.start_override
            .unwrap_or_else(|| s.ts[self.a.min(s.len() - 1)])
    }
    fn end_ts(&self, s: &Series) -> i64 {
        self.end_override.unwrap_or_else(|| {
            if self.b == 0 {
                s.ts[0]
            } else {
                s.ts[(self.b - 1).min(s.len() - 1)] + s.width
            }
        })
    }
}

/// Block size for trends and leaks: 15 minutes for ranges up to two days,
/// then coarser so that a range has at most ~200 blocks; a multiple of the width.
pub fn block_secs(range_secs: i64, width: i64) -> i64 {
    let b = if range_secs <= 2 * 86400 {
        900
    } else {
        (range_secs / 200).max(900)
    };
    let b = b.max(width);
    b - b % width
}

/// Runs the whole analysis. `focus` limits anomalies, trends, forecasts and
/// health to some servers; comparisons always use the whole fleet.
pub fn analyse(ds: &Dataset, range: (i64, i64), focus: Option<&str>, p: &Params) -> Analysis {
    let mut an = Analysis::default();
    let range_secs = range.1 - range.0;
    let block = block_secs(range_secs, ds.width.max(60));
    let mut series: Vec<&Series> = ds.series.iter().filter(|s| !s.is_empty()).collect();
    series.sort_by(|a, b| natural_cmp(&a.server, &b.server).then_with(|| a.metric.cmp(&b.metric)));

    // Fleet block medians per metric (for fleet-relative leak detection).
    let mut per_metric: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for s in &series {
        per_metric.entry(s.metric.as_str()).or_default().push(s);
    }
    let mut fleet_curves: HashMap<&str, HashMap<i64, f64>> = HashMap::new();
    for (m, ss) in &per_metric {
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
        fleet_curves.insert(m, curve);
    }

    // Dropouts are judged within the fleet's data span, not the requested
    // range: a range that runs past the last bin is not a dropout.
    let span = (
        series
            .iter()
            .map(|s| s.ts[0])
            .min()
            .unwrap_or(range.0)
            .max(range.0),
        series
            .iter()
            .map(|s| s.ts[s.len() - 1] + s.width)
            .max()
            .unwrap_or(range.1)
            .min(range.1),
    );
    let focused = |s: &Series| focus.is_none_or(|f| f == s.server);
    let mut n_a = 0;
    let mut n_t = 0;
    let mut n_f = 0;
    // The per-series work (detection, trend and forecast fits) is independent:
    // spread it over the available cores, then assemble in order.
    let todo: Vec<&Series> = series.iter().copied().filter(|s| focused(s)).collect();
    let zq = crate::stats::z_for(p.confidence);
    let work = |s: &Series| -> PerSeries {
        let (windows, base_sigma) =
            detect_series(s, p, span, fleet_curves.get(s.metric.as_str()), block);
        let (bx, by) = block_medians(s, block);
        let fit = theil_sen(&bx, &by, zq);
        let cut = bx.last().copied().unwrap_or(0.0) - 12.0;
        let k0 = bx.iter().position(|&x| x >= cut).unwrap_or(0);
        let ffit = theil_sen(&bx[k0..], &by[k0..], zq);
        let last_x = bx.last().copied();
        PerSeries {
            windows,
            base_sigma,
            bx0: bx.first().copied(),
            last_x,
            fit,
            ffit,
        }
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let results: Vec<PerSeries> = if threads == 1 || todo.len() < 8 {
        todo.iter().map(|s| work(s)).collect()
    } else {
        let chunk = todo.len().div_ceil(threads);
        std::thread::scope(|sc| {
            let handles: Vec<_> = todo
                .chunks(chunk)
                .map(|c| sc.spawn(|| c.iter().map(|s| work(s)).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    };
    for (s, res) in todo.iter().copied().zip(results) {
        let PerSeries {
            windows,
            base_sigma,
            bx0,
            last_x,
            fit,
            ffit,
        } = res;
        for wdw in windows {
            n_a += 1;
            let start = wdw.start_ts(s);
            let end = wdw.end_ts(s);
            let minutes = (end - start) as f64 / 60.0;
            let (score, peak) = match wdw.kind {
                "stuck" | "dropout" => (
                    score_from_minutes(minutes),
                    s.avg[wdw.peak_i.min(s.len() - 1)],
                ),
                _ => (score_from_z(wdw.z), s.avg[wdw.peak_i.min(s.len() - 1)]),
            };
            let typical = wdw.typical;
            let band = [
                r2(clamp_metric(&s.metric, typical - 3.0 * base_sigma)),
                r2(clamp_metric(&s.metric, typical + 3.0 * base_sigma)),
            ];
            an.anomalies.push(Anomaly {
                id: format!("A{n_a}"),
                server: s.server.clone(),
                metric: s.metric.clone(),
                kind: wdw.kind.to_string(),
                start: ts(start),
                end: ts(end),
                duration_minutes: r2(minutes),
                peak: r2(peak),
                typical: r2(typical),
                band,
                score,
                severity: Severity::from_score(score),
                z: r2(wdw.z),
            });
        }

        // trend on block medians
        if let Some(f) = fit {
            n_t += 1;
            let hours =
                (range_secs as f64 / 3600.0).max(last_x.unwrap_or(0.0) - bx0.unwrap_or(0.0));
            let change = f.slope * hours;
            let material = change.abs() >= 3.0 * base_sigma.max(f.resid_sigma / 2.0);
            an.trends.push(Trend {
                id: format!("T{n_t}"),
                server: s.server.clone(),
                metric: s.metric.clone(),
                slope_per_hour: round_sig(f.slope),
                ci_low: round_sig(f.slope_lo),
                ci_high: round_sig(f.slope_hi),
                confidence: p.confidence,
                significant: f.significant(),
                material,
                change_over_window: r2(change),
                points: f.n,
                method: "Theil-Sen on block medians, Sen's interval",
            });

            // forecast from the last 12 hours of blocks (or all)
            if let Some(ff) = ffit {
                n_f += 1;
                let zq = crate::stats::z_for(p.confidence);
                let se_slope = if ff.slope_hi.is_finite() && ff.slope_lo.is_finite() {
                    (ff.slope_hi - ff.slope_lo) / (2.0 * zq)
                } else {
                    ff.slope.abs()
                };
                // x is hours since the series' first bin (as in block_medians)
                let x_end = (range.1 - s.ts[0]) as f64 / 3600.0;
                let mut points = Vec::new();
                for h in 1..=p.forecast_hours.max(0) {
                    let x = x_end + h as f64;
                    let val = ff.intercept + ff.slope * x;
                    let ahead = x - last_x.unwrap_or(x_end);
                    let half = zq * (ff.resid_sigma.powi(2) + (se_slope * ahead).powi(2)).sqrt();
                    points.push(ForecastPoint {
                        ts: ts(range.1 + h * 3600),
                        value: r2(clamp_metric(&s.metric, val)),
                        lo: r2(clamp_metric(&s.metric, val - half)),
                        hi: r2(clamp_metric(&s.metric, val + half)),
                    });
                }
                let threshold = threshold_for(&s.metric);
                let mut hours_to = None;
                if let Some(thr) = threshold {
                    let now = ff.intercept + ff.slope * x_end;
                    let trend_ok = ff.significant() && material;
                    if trend_ok && ff.slope > 0.0 && now < thr {
                        let h = (thr - now) / ff.slope;
                        if h <= 24.0 * 14.0 {
                            hours_to = Some(r2(h));
                        }
                    }
                }
                an.forecasts.push(Forecast {
                    id: format!("F{n_f}"),
                    server: s.server.clone(),
                    metric: s.metric.clone(),
                    method: "Theil-Sen line on the last 12 h of block medians; interval from residual scatter and slope uncertainty",
                    confidence: p.confidence,
                    points,
                    threshold,
                    hours_to_threshold: hours_to,
                    threshold_eta: hours_to.map(|h| ts(range.1 + (h * 3600.0) as i64)),
                });
            }
        }
    }

    drop_fleet_regime_changes(&mut an.anomalies, p);
    mark_noisy_neighbours(&mut an.anomalies);
    for (k, a) in an.anomalies.iter_mut().enumerate() {
        a.id = format!("A{}", k + 1);
    }

    // fleet comparison per metric
    let mut n_c = 0;
    for (m, ss) in &per_metric {
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
        ranking.sort_by(|a, b| {
            b.median
                .total_cmp(&a.median)
                .then_with(|| natural_cmp(&a.server, &b.server))
        });
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
        an.comparisons.push(Comparison {
            metric: m.to_string(),
            fleet_median: r2(fleet),
            servers: ranking.len(),
            ranking,
            standouts,
        });
    }

    // health per server
    let mut servers: Vec<&str> = series
        .iter()
        .filter(|s| focused(s))
        .map(|s| s.server.as_str())
        .collect();
    servers.dedup();
    for (k, srv) in servers.iter().enumerate() {
        let mine: Vec<&Anomaly> = an.anomalies.iter().filter(|a| a.server == *srv).collect();
        let critical = mine
            .iter()
            .filter(|a| a.severity == Severity::Critical)
            .count();
        let warnings = mine
            .iter()
            .filter(|a| a.severity == Severity::Warning)
            .count();
        let mut notes = Vec::new();
        for f in an.forecasts.iter().filter(|f| f.server == *srv) {
            if let (Some(h), Some(t)) = (f.hours_to_threshold, f.threshold) {
                notes.push(format!(
                    "{} reaches {} in {} h at the current trend ({})",
                    f.metric, t, h, f.id
                ));
            }
        }
        for c in an
            .comparisons
            .iter()
            .flat_map(|c| &c.standouts)
            .filter(|c| c.server == *srv)
        {
            notes.push(format!("{} stands out from the fleet ({})", c.metric, c.id));
        }
        let status = if critical > 0 {
            "critical"
        } else if warnings > 0 || !notes.is_empty() {
            "warning"
        } else {
            "ok"
        };
        let penalty: f64 =
            mine.iter().map(|a| a.score / 4.0).sum::<f64>() + 5.0 * notes.len() as f64;
        let medians = series
            .iter()
            .filter(|s| s.server == *srv)
            .filter_map(|s| median(&s.avg).map(|m| (s.metric.clone(), r2(m))))
            .collect();
        an.health.push(Health {
            id: format!("H{}", k + 1),
            server: srv.to_string(),
            status,
            score: (100.0 - penalty).clamp(0.0, 100.0).round(),
            anomalies: mine.len(),
            critical,
            warnings,
            medians,
            notes,
        });
    }

    an.facts = facts_of(&an);
    an
}

/// Long level shifts (longer than the baseline window, so found by the step
/// detector) that start within 30 minutes of a shift of the same metric in
/// the same direction on another server are a fleet or profile regime change
/// (a schedule, a deploy), not an anomaly of one server: dropped.
fn drop_fleet_regime_changes(anoms: &mut Vec<Anomaly>, p: &Params) {
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
fn mark_noisy_neighbours(anoms: &mut [Anomaly]) {
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

/// Rounds to 4 significant digits (slopes can be small).
pub fn round_sig(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let mag = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(3 - mag);
    (x * scale).round() / scale
}

fn block_medians(s: &Series, block: i64) -> (Vec<f64>, Vec<f64>) {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut i = 0;
    let t0 = s.ts.first().copied().unwrap_or(0);
    while i < s.len() {
        let k = s.ts[i].div_euclid(block);
        let a = i;
        while i < s.len() && s.ts[i].div_euclid(block) == k {
            i += 1;
        }
        if i - a >= 2 || block == s.width {
            let mut vals = s.avg[a..i].to_vec();
            xs.push(((s.ts[a] + s.ts[i - 1]) / 2 - t0) as f64 / 3600.0);
            ys.push(median_in_place(&mut vals));
        }
    }
    (xs, ys)
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Builds the citable facts from the results, in a stable order.
fn facts_of(an: &Analysis) -> Vec<Fact> {
    let mut facts = Vec::new();
    for a in &an.anomalies {
        let mut values = BTreeMap::new();
        values.insert("peak".into(), a.peak);
        values.insert("typical".into(), a.typical);
        values.insert("band_low".into(), a.band[0]);
        values.insert("band_high".into(), a.band[1]);
        values.insert("score".into(), a.score);
        values.insert("duration_minutes".into(), a.duration_minutes);
        facts.push(Fact {
            id: a.id.clone(),
            kind: "anomaly",
            server: Some(a.server.clone()),
            metric: Some(a.metric.clone()),
            start: Some(a.start),
            end: Some(a.end),
            severity: a.severity,
            weight: a.score,
            statement: format!(
                "{} {} {} from {} to {}: peak {}, typical {}, expected {}..{}, score {} ({})",
                a.server,
                a.metric,
                a.kind,
                a.start.format("%Y-%m-%dT%H:%MZ"),
                a.end.format("%Y-%m-%dT%H:%MZ"),
                fmt_num(a.peak),
                fmt_num(a.typical),
                fmt_num(a.band[0]),
                fmt_num(a.band[1]),
                fmt_num(a.score),
                a.severity.as_str()
            ),
            values,
        });
    }
    for t in an.trends.iter().filter(|t| t.significant && t.material) {
        let mut values = BTreeMap::new();
        values.insert("slope_per_hour".into(), t.slope_per_hour);
        values.insert("ci_low".into(), t.ci_low);
        values.insert("ci_high".into(), t.ci_high);
        values.insert("change_over_window".into(), t.change_over_window);
        values.insert("confidence_pct".into(), (t.confidence * 100.0).round());
        facts.push(Fact {
            id: t.id.clone(),
            kind: "trend",
            server: Some(t.server.clone()),
            metric: Some(t.metric.clone()),
            start: None,
            end: None,
            severity: Severity::Info,
            weight: 20.0,
            statement: format!(
                "{} {} trend {} per hour ({}% CI {} to {}), change over the window {}",
                t.server,
                t.metric,
                fmt_num(t.slope_per_hour),
                fmt_num((t.confidence * 100.0).round()),
                fmt_num(t.ci_low),
                fmt_num(t.ci_high),
                fmt_num(t.change_over_window)
            ),
            values,
        });
    }
    for c in &an.comparisons {
        for s in &c.standouts {
            let mut values = BTreeMap::new();
            values.insert("median".into(), s.median);
            values.insert("fleet_median".into(), s.fleet_median);
            values.insert("robust_z".into(), s.robust_z);
            facts.push(Fact {
                id: s.id.clone(),
                kind: "comparison",
                server: Some(s.server.clone()),
                metric: Some(s.metric.clone()),
                start: None,
                end: None,
                severity: Severity::Minor,
                weight: 30.0 + s.robust_z.abs(),
                statement: format!(
                    "{} {} median {} is {} the fleet median {} (robust z {})",
                    s.server,
                    s.metric,
                    fmt_num(s.median),
                    s.direction,
                    fmt_num(s.fleet_median),
                    fmt_num(s.robust_z)
                ),
                values,
            });
        }
    }
    for f in an
        .forecasts
        .iter()
        .filter(|f| f.hours_to_threshold.is_some())
    {
        let mut values = BTreeMap::new();
        let (h, thr) = (
            f.hours_to_threshold.unwrap_or(0.0),
            f.threshold.unwrap_or(0.0),
        );
        values.insert("hours_to_threshold".into(), h);
        values.insert("threshold".into(), thr);
        if let Some(last) = f.points.last() {
            values.insert("forecast_value".into(), last.value);
            values.insert("forecast_low".into(), last.lo);
            values.insert("forecast_high".into(), last.hi);
            values.insert("forecast_hours".into(), f.points.len() as f64);
        }
        facts.push(Fact {
            id: f.id.clone(),
            kind: "forecast",
            server: Some(f.server.clone()),
            metric: Some(f.metric.clone()),
            start: None,
            end: f.threshold_eta,
            severity: if h <= 24.0 {
                Severity::Warning
            } else {
                Severity::Minor
            },
            weight: 60.0 - h.min(50.0),
            statement: format!(
                "{} {} is forecast to reach {} in {} hours at the current trend",
                f.server,
                f.metric,
                fmt_num(thr),
                fmt_num(h)
            ),
            values,
        });
    }
    for h in &an.health {
        let mut values: BTreeMap<String, f64> = h
            .medians
            .iter()
            .map(|(k, v)| (format!("median_{k}"), *v))
            .collect();
        values.insert("health_score".into(), h.score);
        values.insert("anomalies".into(), h.anomalies as f64);
        values.insert("critical".into(), h.critical as f64);
        values.insert("warnings".into(), h.warnings as f64);
        let meds: Vec<String> = h
            .medians
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt_num(*v)))
            .collect();
        facts.push(Fact {
            id: h.id.clone(),
            kind: "health",
            server: Some(h.server.clone()),
            metric: None,
            start: None,
            end: None,
            severity: match h.status {
                "critical" => Severity::Critical,
                "warning" => Severity::Warning,
                _ => Severity::Info,
            },
            weight: if h.status == "ok" { 1.0 } else { 10.0 },
            statement: format!(
                "{} health {} (score {}), {} anomalies ({} critical); medians: {}",
                h.server,
                h.status,
                fmt_num(h.score),
                h.anomalies,
                h.critical,
                meds.join(", ")
            ),
            values,
        });
    }
    facts
}

#[cfg(test)]
pub mod synth {
    //! Synthetic series with known anomalies, shared by unit tests.
    use super::Series;

    /// Deterministic pseudo-random numbers (PCG-like), approx. N(0,1) via sums.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn uniform(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
        }
        pub fn normal(&mut self) -> f64 {
            (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
        }
    }

    /// A day of one-minute bins: daily sine around `level` plus noise.
    pub fn day(server: &str, metric: &str, t0: i64, level: f64, noise: f64, seed: u64) -> Series {
        let mut rng = Rng(seed);
        let mut s = Series::new(server, metric, 60);
        for i in 0..1440i64 {
            let t = t0 + i * 60;
            let season = 10.0 * (2.0 * std::f64::consts::PI * (i as f64) / 1440.0).sin();
            let v = level + season + noise * rng.normal();
            s.ts.push(t);
            s.count.push(12);
            s.avg.push(v);
            s.min.push(v - noise);
            s.max.push(v + noise);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::synth::*;
    use super::*;

    const T0: i64 = 1_763_164_800; // 2025-11-15T00:00:00Z

    fn run(series: Vec<Series>) -> Analysis {
        let ds = Dataset { width: 60, series };
        analyse(&ds, (T0, T0 + 86400), None, &Params::default())
    }

    fn anomalies_of<'a>(an: &'a Analysis, server: &str, metric: &str) -> Vec<&'a Anomaly> {
        an.anomalies
            .iter()
            .filter(|a| a.server == server && a.metric == metric)
            .collect()
    }

    #[test]
    fn clean_series_have_no_anomalies() {
        let series: Vec<Series> = (1..=10)
            .map(|k| day(&format!("srv-{k}"), "cpu", T0, 40.0, 1.5, k))
            .collect();
        let an = run(series);
        assert!(an.anomalies.is_empty(), "{:#?}", an.anomalies);
    }

    #[test]
    fn spike_is_found_with_window_and_peak() {
        let mut s = day("srv-1", "cpu", T0, 40.0, 1.0, 7);
        for i in 600..602 {
            s.avg[i] += 30.0;
        }
        for i in 900..915 {
            s.avg[i] += 20.0; // 15 minutes: a short level shift
        }
        let an = run(vec![s.clone()]);
        let a = anomalies_of(&an, "srv-1", "cpu");
        assert_eq!(a.len(), 2, "{a:#?}");
        assert_eq!(a[0].kind, "spike");
        assert_eq!(a[0].start.timestamp(), T0 + 600 * 60);
        assert_eq!(a[0].end.timestamp(), T0 + 602 * 60);
        assert_eq!(a[1].kind, "level_shift");
        assert_eq!(a[1].start.timestamp(), T0 + 900 * 60);
        assert_eq!(a[1].end.timestamp(), T0 + 915 * 60);
        let peak = s.avg[600..602].iter().copied().fold(f64::MIN, f64::max);
        assert_eq!(a[0].peak, r2(peak));
        assert!(a[0].typical < a[0].band[1] && a[0].band[1] < a[0].peak);
        assert_eq!(a[0].severity, Severity::Critical);
        assert!(an
            .facts
            .iter()
            .any(|f| f.id == a[0].id && f.values["peak"] == a[0].peak));
    }

    #[test]
    fn single_bin_blip_below_persistence_threshold_is_ignored() {
        let mut s = day("srv-1", "cpu", T0, 40.0, 1.0, 9);
        s.avg[700] += 6.0; // about 6σ, one bin: below z_single
        let an = run(vec![s]);
        assert!(an.anomalies.is_empty(), "{:#?}", an.anomalies);
    }

    #[test]
    fn level_shift_is_found_with_its_end() {
        let mut s = day("srv-1", "memory", T0, 50.0, 1.0, 11);
        for i in 500..800 {
            s.avg[i] += 15.0;
        }
        let an = run(vec![s]);
        let a = anomalies_of(&an, "srv-1", "memory");
        assert_eq!(a.len(), 1, "{a:#?}");
        assert_eq!(a[0].kind, "level_shift");
        let st = (a[0].start.timestamp() - T0) / 60;
        let en = (a[0].end.timestamp() - T0) / 60;
        assert!((499..=502).contains(&st), "start {st}");
        assert!((795..=806).contains(&en), "end {en}");
    }

    #[test]
    fn stuck_and_dropout_are_found() {
        let mut s = day("srv-2", "disk_io", T0, 30.0, 1.0, 13);
        for i in 200..240 {
            s.avg[i] = 31.25;
        }
        // remove 10 bins: a dropout
        let keep: Vec<usize> = (0..1440).filter(|i| !(900..910).contains(i)).collect();
        let pick = |v: &Vec<f64>| keep.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        s.avg = pick(&s.avg);
        s.min = pick(&s.min);
        s.max = pick(&s.max);
        s.ts = keep.iter().map(|&i| s.ts[i]).collect();
        s.count = keep.iter().map(|&i| s.count[i]).collect();
        let an = run(vec![s]);
        let a = anomalies_of(&an, "srv-2", "disk_io");
        let stuck: Vec<_> = a.iter().filter(|x| x.kind == "stuck").collect();
        let drop: Vec<_> = a.iter().filter(|x| x.kind == "dropout").collect();
        assert_eq!(stuck.len(), 1, "{a:#?}");
        assert_eq!(stuck[0].start.timestamp(), T0 + 200 * 60);
        assert_eq!(stuck[0].end.timestamp(), T0 + 240 * 60);
        assert_eq!(drop.len(), 1, "{a:#?}");
        assert_eq!(drop[0].start.timestamp(), T0 + 900 * 60);
        assert_eq!(drop[0].end.timestamp(), T0 + 910 * 60);
        assert_eq!(a.len(), 2, "{a:#?}");
    }

    #[test]
    fn short_memory_ramp_is_a_leak() {
        let mut s = day("srv-4", "memory", T0, 50.0, 1.0, 21);
        for i in 700..740 {
            let base = s.avg[i];
            s.avg[i] = base + (97.0 - base) * (i - 699) as f64 / 40.0;
        }
        let an = run(vec![s]);
        let a = anomalies_of(&an, "srv-4", "memory");
        assert_eq!(a.len(), 1, "{a:#?}");
        assert_eq!(a[0].kind, "leak");
        assert!(a[0].start.timestamp() <= T0 + 710 * 60, "{a:#?}");
        assert_eq!(a[0].end.timestamp(), T0 + 740 * 60);
        assert!(a[0].peak > 95.0);
    }

    #[test]
    fn slow_leak_is_found_against_the_fleet() {
        let mut series: Vec<Series> = (1..=8)
            .map(|k| day(&format!("srv-{k}"), "memory", T0, 50.0, 1.0, 100 + k))
            .collect();
        for i in 600..1000 {
            series[2].avg[i] += (i - 600) as f64 * 0.08; // +32 over 400 minutes
        }
        for i in 1000..1440 {
            series[2].avg[i] += 32.0;
        }
        let ds = Dataset { width: 60, series };
        let p = Params {
            slow_leaks: true,
            ..Params::default()
        };
        let an = analyse(&ds, (T0, T0 + 86400), None, &p);
        let a = anomalies_of(&an, "srv-3", "memory");
        assert!(a.iter().any(|x| x.kind == "leak"), "{a:#?}");
        let leak = a.iter().find(|x| x.kind == "leak").unwrap();
        assert!(
            leak.start.timestamp() <= T0 + 660 * 60 && leak.end.timestamp() >= T0 + 960 * 60,
            "{leak:#?}"
        );
        let others: Vec<_> = an
            .anomalies
            .iter()
            .filter(|x| x.server != "srv-3")
            .collect();
        assert!(others.is_empty(), "{others:#?}");
        // the leak also makes a significant upward trend and srv-3 memory rises
        let t = an.trends.iter().find(|t| t.server == "srv-3").unwrap();
        assert!(t.significant && t.slope_per_hour > 0.0, "{t:#?}");
    }

    #[test]
    fn fleet_standout_and_ranking() {
        let mut series: Vec<Series> = (1..=8)
            .map(|k| {
                day(
                    &format!("srv-{k}"),
                    "cpu",
                    T0,
                    40.0 + k as f64 * 0.3,
                    1.0,
                    200 + k,
                )
            })
            .collect();
        series.push(day("srv-9", "cpu", T0, 80.0, 1.0, 300));
        let an = run(series);
        let c = &an.comparisons[0];
        assert_eq!(c.ranking[0].server, "srv-9");
        assert_eq!(c.standouts.len(), 1, "{c:#?}");
        assert_eq!(c.standouts[0].server, "srv-9");
        assert_eq!(c.standouts[0].direction, "above");
        // independent recomputation of the fleet median of server medians
        let mut meds: Vec<f64> = an.health.iter().map(|h| h.medians["cpu"]).collect();
        meds.sort_by(f64::total_cmp);
        assert!(
            (c.fleet_median - meds[4]).abs() < 0.02,
            "{} vs {}",
            c.fleet_median,
            meds[4]
        );
    }

    #[test]
    fn forecast_reaches_threshold_only_with_a_trend() {
        let mut rng = Rng(5);
        let mut rising = Series::new("srv-1", "memory", 60);
        let mut flat = Series::new("srv-2", "memory", 60);
        for i in 0..1440i64 {
            let t = T0 + i * 60;
            for (s, v) in [
                (&mut rising, 40.0 + i as f64 * (1.0 / 60.0)),
                (&mut flat, 60.0),
            ] {
                let v = v + 0.5 * rng.normal();
                s.ts.push(t);
                s.count.push(12);
                s.avg.push(v);
                s.min.push(v);
                s.max.push(v);
            }
        }
        let an = run(vec![rising, flat]);
        let f1 = an.forecasts.iter().find(|f| f.server == "srv-1").unwrap();
        // 40 + 24 = 64 at the end; 1 per hour → 90 in about 26 hours
        let h = f1.hours_to_threshold.expect("rising memory has an ETA");
        assert!((h - 26.0).abs() < 1.5, "{h}");
        let p1 = &f1.points[0];
        assert!((p1.value - 65.0).abs() < 0.6, "{p1:?}");
        assert!(p1.lo < p1.value && p1.value < p1.hi);
        let t1 = an.trends.iter().find(|t| t.server == "srv-1").unwrap();
        assert!(
            (t1.slope_per_hour - 1.0).abs() < 0.05 && t1.ci_low < 1.0 && t1.ci_high > 1.0,
            "{t1:#?}"
        );
        let f2 = an.forecasts.iter().find(|f| f.server == "srv-2").unwrap();
        assert!(f2.hours_to_threshold.is_none());
        let t2 = an.trends.iter().find(|t| t.server == "srv-2").unwrap();
        assert!(!t2.material, "{t2:#?}");
    }

    #[test]
    fn coincident_shifts_are_a_noisy_neighbour() {
        let mut series: Vec<Series> = (1..=4)
            .map(|k| day(&format!("srv-{k}"), "cpu", T0, 40.0, 1.0, 400 + k))
            .collect();
        for s in series.iter_mut().take(2) {
            for i in 300..310 {
                s.avg[i] += 25.0;
            }
        }
        for i in 800..810 {
            series[3].avg[i] += 25.0; // alone: a level shift
        }
        let an = run(series);
        let kinds: Vec<(&str, &str)> = an
            .anomalies
            .iter()
            .map(|a| (a.server.as_str(), a.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("srv-1", "noisy_neighbour"),
                ("srv-2", "noisy_neighbour"),
                ("srv-4", "level_shift")
            ]
        );
    }

    #[test]
    fn degenerate_series_do_not_panic() {
        let mk = |name: &str, vals: &[f64]| {
            let mut s = Series::new(name, "cpu", 60);
            for (i, v) in vals.iter().enumerate() {
                s.ts.push(T0 + i as i64 * 60);
                s.count.push(1);
                s.avg.push(*v);
                s.min.push(*v);
                s.max.push(*v);
            }
            s
        };
        let flat = vec![42.0; 500];
        let nan = vec![f64::NAN; 200];
        let series = vec![
            mk("srv-1", &[5.0]),
            mk("srv-2", &[5.0, 6.0, 7.0]),
            mk("srv-3", &flat),
            mk("srv-4", &nan),
            mk(
                "srv-5",
                &(0..300)
                    .map(|i| if i % 2 == 0 { 0.0 } else { 100.0 })
                    .collect::<Vec<_>>(),
            ),
        ];
        let ds = Dataset { width: 60, series };
        for range in [(T0, T0 + 86400), (T0, T0 + 60), (T0 + 3600, T0 + 7200)] {
            let an = analyse(&ds, range, None, &Params::default());
            assert_eq!(an.health.len(), 5);
            // a flat series is stuck only through its identical values, never an excursion
            assert!(
                an.anomalies
                    .iter()
                    .all(|a| a.server != "srv-3" || a.kind == "stuck" || a.kind == "dropout"),
                "{:#?}",
                an.anomalies
            );
        }
        let empty = analyse(
            &Dataset {
                width: 60,
                series: vec![],
            },
            (T0, T0 + 3600),
            None,
            &Params::default(),
        );
        assert!(empty.anomalies.is_empty() && empty.health.is_empty() && empty.facts.is_empty());
    }

    #[test]
    fn scores_and_severity() {
        assert_eq!(score_from_z(3.0), 0.0);
        assert!(score_from_z(7.0) > 40.0 && score_from_z(7.0) < 60.0);
        assert!(score_from_z(30.0) > 95.0);
        assert_eq!(Severity::from_score(85.0), Severity::Critical);
        assert_eq!(round_sig(0.000123456), 0.0001235);
    }
}
