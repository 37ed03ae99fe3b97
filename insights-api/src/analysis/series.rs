//! The analysis' input: plain series of bins, independent of where they come
//! from (the database layer builds them), and the small helpers on values.

use chrono::{DateTime, Utc};

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

/// The bins of one request. `series` is in display order (the caller sorts
/// servers naturally, srv-2 before srv-10): results keep that order.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub width: i64,
    pub series: Vec<Series>,
}

/// Threshold used for time-to-threshold forecasts, per metric.
pub fn threshold_for(metric: &str) -> Option<f64> {
    match metric {
        "memory" | "cpu" => Some(90.0),
        _ => None,
    }
}

pub(crate) fn is_percent(metric: &str) -> bool {
    matches!(metric, "cpu" | "memory")
}

pub(crate) fn clamp_metric(metric: &str, v: f64) -> f64 {
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

/// Rounds to 4 significant digits (slopes can be small).
pub fn round_sig(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let mag = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(3 - mag);
    (x * scale).round() / scale
}

pub(crate) fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

/// A number as facts print it: no trailing `.0`.
pub fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}
