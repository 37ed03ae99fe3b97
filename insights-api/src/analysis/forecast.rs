//! Trends and forecasts, on block medians of each series.
//!
//! - Trend: Theil–Sen slope with Sen's distribution-free interval, over the
//!   whole range; `material` when the change over the range is at least 3
//!   noise σ (autocorrelation makes the interval optimistic).
//! - Forecast: a Theil–Sen line on the last 12 hours of blocks; prediction
//!   interval ±z·√(σ_res² + (se_slope·h)²); time to the metric's threshold
//!   only when the trend is significant and material.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::params::Params;
use super::series::{clamp_metric, r2, round_sig, threshold_for, ts, Series};
use crate::stats::{median_in_place, theil_sen, z_for, SenFit};

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

/// Block medians of a series: x in hours since its first bin.
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

/// The two fits of one series (computed with its detection, in parallel).
pub struct Fits {
    first_x: Option<f64>,
    last_x: Option<f64>,
    trend: Option<SenFit>,
    recent: Option<SenFit>,
}

pub fn fit(s: &Series, block: i64, p: &Params) -> Fits {
    let zq = z_for(p.confidence);
    let (bx, by) = block_medians(s, block);
    let trend = theil_sen(&bx, &by, zq);
    let cut = bx.last().copied().unwrap_or(0.0) - 12.0;
    let k0 = bx.iter().position(|&x| x >= cut).unwrap_or(0);
    let recent = theil_sen(&bx[k0..], &by[k0..], zq);
    Fits {
        first_x: bx.first().copied(),
        last_x: bx.last().copied(),
        trend,
        recent,
    }
}

/// The trend and the forecast of series `s` from its fits; `sigma` is its
/// noise σ; ids are set by the caller. No trend when too few blocks give no
/// interval at the requested confidence (a slope without an interval says
/// nothing); the forecast only needs its own fit.
pub fn trend_and_forecast(
    s: &Series,
    f: &Fits,
    sigma: f64,
    range: (i64, i64),
    p: &Params,
) -> Option<(Option<Trend>, Option<Forecast>)> {
    let t = f.trend?;
    let range_secs = range.1 - range.0;
    let hours =
        (range_secs as f64 / 3600.0).max(f.last_x.unwrap_or(0.0) - f.first_x.unwrap_or(0.0));
    let change = t.slope * hours;
    let material = change.abs() >= 3.0 * sigma.max(t.resid_sigma / 2.0);
    let bounded = t.slope_lo.is_finite() && t.slope_hi.is_finite();
    let trend = bounded.then(|| Trend {
        id: String::new(),
        server: s.server.clone(),
        metric: s.metric.clone(),
        slope_per_hour: round_sig(t.slope),
        ci_low: round_sig(t.slope_lo),
        ci_high: round_sig(t.slope_hi),
        confidence: p.confidence,
        significant: t.significant(),
        material,
        change_over_window: r2(change),
        points: t.n,
        method: "Theil-Sen on block medians, Sen's interval",
    });
    let forecast = f.recent.map(|ff| {
        let zq = z_for(p.confidence);
        let se_slope = if ff.slope_hi.is_finite() && ff.slope_lo.is_finite() {
            (ff.slope_hi - ff.slope_lo) / (2.0 * zq)
        } else {
            ff.slope.abs()
        };
        // x is hours since the series' first bin (as in block_medians)
        let x_end = (range.1 - s.ts[0]) as f64 / 3600.0;
        let points = (1..=p.forecast_hours.max(0))
            .map(|h| {
                let x = x_end + h as f64;
                let val = ff.intercept + ff.slope * x;
                let ahead = x - f.last_x.unwrap_or(x_end);
                let half = zq * (ff.resid_sigma.powi(2) + (se_slope * ahead).powi(2)).sqrt();
                ForecastPoint {
                    ts: ts(range.1 + h * 3600),
                    value: r2(clamp_metric(&s.metric, val)),
                    lo: r2(clamp_metric(&s.metric, val - half)),
                    hi: r2(clamp_metric(&s.metric, val + half)),
                }
            })
            .collect();
        let threshold = threshold_for(&s.metric);
        let mut hours_to = None;
        if let Some(thr) = threshold {
            let now = ff.intercept + ff.slope * x_end;
            if ff.significant() && material && ff.slope > 0.0 && now < thr {
                let h = (thr - now) / ff.slope;
                if h <= 24.0 * 14.0 {
                    hours_to = Some(r2(h));
                }
            }
        }
        Forecast {
            id: String::new(),
            server: s.server.clone(),
            metric: s.metric.clone(),
            method: "Theil-Sen line on the last 12 h of block medians; interval from residual scatter and slope uncertainty",
            confidence: p.confidence,
            points,
            threshold,
            hours_to_threshold: hours_to,
            threshold_eta: hours_to.map(|h| ts(range.1 + (h * 3600.0) as i64)),
        }
    });
    Some((trend, forecast))
}
