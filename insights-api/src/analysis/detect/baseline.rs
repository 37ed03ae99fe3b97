//! What a series is expected to do: its baseline and its noise.
//!
//! Without enough history the baseline is a centred rolling median (91 bins).
//! With at least 3 days of data it may be seasonal: a trend (rolling median
//! over a day) plus the median profile of the detrended values at each time
//! of day; with 3 weeks, at each time of the week. A profile is used only when it
//! clearly shrinks the residual noise (`seasonal_gain`, against the simpler
//! baseline), so an aseasonal series keeps the rolling median.

use crate::analysis::params::Params;
use crate::analysis::series::{is_percent, Series};
use crate::stats::{mad, median, median_in_place, rolling_median_fixed, MAD_TO_SIGMA};

const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;

/// How the baseline was built, for the explanation of each anomaly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BaselineKind {
    /// Centred rolling median over this many bins.
    Rolling { bins: usize },
    /// Trend plus the profile of a cycle, learnt from `days` of data.
    Seasonal { cycle: Cycle, days: f64 },
}

/// The seasonal cycles a baseline can learn, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cycle {
    /// The time of day.
    Day,
    /// The time of the week.
    Week,
}

impl Cycle {
    /// Data needed to learn it (seconds): three cycles.
    fn min_span(self) -> i64 {
        match self {
            Cycle::Day => 3 * DAY,
            Cycle::Week => 3 * WEEK,
        }
    }
    fn words(self) -> &'static str {
        match self {
            Cycle::Day => "time of day",
            Cycle::Week => "time of the week",
        }
    }
    /// The slot of time `t` with bins of `width` seconds, and the number of slots.
    fn slot(self, t: i64, width: i64) -> (usize, usize) {
        let per_day = (DAY / width).max(1) as usize;
        let of_day = (t.rem_euclid(DAY) / width) as usize % per_day;
        // the Unix epoch was a Thursday: Monday-based weekday = (day + 3) mod 7
        let weekday = (t.div_euclid(DAY) + 3).rem_euclid(7) as usize;
        match self {
            Cycle::Day => (of_day, per_day),
            Cycle::Week => (weekday * per_day + of_day, 7 * per_day),
        }
    }
}

impl BaselineKind {
    /// The baseline in words, with the width of a bin in seconds, and the
    /// numbers the words state.
    pub fn describe(self, width: i64) -> (String, Vec<(&'static str, f64)>) {
        match self {
            BaselineKind::Rolling { bins } => {
                let w = duration_words(bins as i64 * width);
                (
                    format!("the rolling median of the surrounding {w}"),
                    vec![("baseline_window", lead_number(&w))],
                )
            }
            BaselineKind::Seasonal { cycle, days } => (
                format!(
                    "the usual level for this {} (a profile learnt from {} days) on top of the trend over a day",
                    cycle.words(),
                    days.round(),
                ),
                vec![("profile_days", days.round())],
            ),
        }
    }
}

/// The number a phrase starts with (`91 minutes` → 91).
pub fn lead_number(s: &str) -> f64 {
    s.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0.0)
}

/// `91 minutes`, `45 hours`, `3 days`.
pub fn duration_words(secs: i64) -> String {
    crate::params::width_name(secs)
}

pub struct Baseline {
    /// Expected value of each bin.
    pub base: Vec<f64>,
    /// The seasonal part alone (zeros without seasonality): the values minus
    /// it are what the step detector compares.
    pub seasonal: Vec<f64>,
    /// Robust noise σ of the residuals, floored.
    pub sigma: f64,
    pub kind: BaselineKind,
    /// Half-width (bins) of the window the baseline follows the data with:
    /// excursions longer than about this are the step detector's.
    pub half: usize,
}

impl Baseline {
    /// Residuals of `xs` from this baseline in σ, 0 on `excluded` bins.
    pub fn z(&self, xs: &[f64], excluded: &[bool]) -> Vec<f64> {
        xs.iter()
            .zip(&self.base)
            .zip(excluded)
            .map(|((x, b), &e)| if e { 0.0 } else { (x - b) / self.sigma })
            .collect()
    }
}

/// Robust noise σ of a series: 1.4826 × MAD of the residuals from its
/// baseline, at least `floor` (`sigma_floor`) so that flat series do not turn
/// noise into anomalies.
pub fn noise_sigma(resid: &[f64], floor: f64) -> f64 {
    (mad(resid).unwrap_or(0.0) * MAD_TO_SIGMA).max(floor)
}

/// `noise_sigma(resid, sigma_floor(metric, xs, p))`, without the floor's
/// two selections when the residuals' own σ is at least the largest floor
/// values like `xs` can have (`rel_floor` × max |x|, or the unit's floor).
pub fn noise_sigma_for(resid: &[f64], metric: &str, xs: &[f64], p: &Params) -> f64 {
    let sigma = mad(resid).unwrap_or(0.0) * MAD_TO_SIGMA;
    let top = xs
        .iter()
        .try_fold(0.0f64, |m, x| x.is_finite().then(|| m.max(x.abs())));
    let unit = if is_percent(metric) { p.abs_floor } else { 0.0 };
    match top {
        Some(top) if sigma >= (p.rel_floor * top).max(unit).max(f64::MIN_POSITIVE) => sigma,
        _ => sigma.max(sigma_floor(metric, xs, p)),
    }
}

/// The smallest noise σ a series of `metric` with values `xs` is judged
/// with, in its own unit: `rel_floor` of its magnitude (the larger of its
/// median and a tenth of its 99th percentile of |x|, so that a series that
/// mostly sits at zero is judged on the size of what it does when it moves),
/// and for percentages `abs_floor` points. No absolute floor applies to other
/// units: 0.05 is noise in bytes per second and half the level of a price.
pub fn sigma_floor(metric: &str, xs: &[f64], p: &Params) -> f64 {
    let mut mags: Vec<f64> = xs
        .iter()
        .filter(|x| x.is_finite())
        .map(|x| x.abs())
        .collect();
    let level = median(xs).unwrap_or(0.0).abs();
    let high = if mags.is_empty() {
        0.0
    } else {
        let k = ((mags.len() - 1) as f64 * 0.99).round() as usize;
        *mags.select_nth_unstable_by(k, f64::total_cmp).1
    };
    let unit = if is_percent(metric) { p.abs_floor } else { 0.0 };
    (p.rel_floor * level.max(high * 0.1))
        .max(unit)
        .max(f64::MIN_POSITIVE)
}

fn raw_sigma(resid: &[f64]) -> f64 {
    mad(resid).unwrap_or(0.0) * MAD_TO_SIGMA
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

/// The profile of `detr` over a cycle: the median at each slot (UTC). Slots
/// seen fewer than 3 times get 0.
fn profile(s: &Series, detr: &[f64], cycle: Cycle) -> Vec<f64> {
    let slots = cycle.slot(0, s.width).1;
    let mut by: Vec<Vec<f64>> = vec![Vec::new(); slots];
    for (i, &t) in s.ts.iter().enumerate() {
        if detr[i].is_finite() {
            by[cycle.slot(t, s.width).0].push(detr[i]);
        }
    }
    let med: Vec<f64> = by
        .iter_mut()
        .map(|v| {
            if v.len() >= 3 {
                median_in_place(v)
            } else {
                0.0
            }
        })
        .collect();
    s.ts.iter()
        .map(|&t| med[cycle.slot(t, s.width).0])
        .collect()
}

/// The baseline of a series (see the module's documentation).
pub fn baseline(s: &Series, p: &Params) -> Baseline {
    baseline_floored(s, p, sigma_floor(&s.metric, &s.avg, p))
}

/// [`baseline`] with the noise floor given.
pub fn baseline_floored(s: &Series, p: &Params, floor: f64) -> Baseline {
    let v = &s.avg;
    let n = v.len();
    let h = p.baseline_half_width;
    let rolling = edge_trended(rolling_median_fixed(v, h), h);
    let resid: Vec<f64> = v.iter().zip(&rolling).map(|(x, b)| x - b).collect();
    let plain = Baseline {
        sigma: noise_sigma(&resid, floor),
        base: rolling,
        seasonal: vec![0.0; n],
        kind: BaselineKind::Rolling { bins: 2 * h + 1 },
        half: h,
    };
    let span = match (s.ts.first(), s.ts.last()) {
        (Some(a), Some(b)) => b - a + s.width,
        _ => 0,
    };
    // One bin per phase at most (a period of whole bins), and enough periods.
    if s.width > DAY / 24 || DAY % s.width != 0 || span < Cycle::Day.min_span() {
        return plain;
    }
    let per_day = (DAY / s.width) as usize;
    let trend = rolling_median_fixed(v, per_day / 2);
    let detr: Vec<f64> = v.iter().zip(&trend).map(|(x, t)| x - t).collect();
    let mut best = (raw_sigma(&resid), None::<(Cycle, Vec<f64>)>);
    for cycle in [Cycle::Day, Cycle::Week] {
        if span < cycle.min_span() {
            continue;
        }
        let seas = profile(s, &detr, cycle);
        let r: Vec<f64> = detr.iter().zip(&seas).map(|(d, x)| d - x).collect();
        let sig = raw_sigma(&r);
        if sig < p.seasonal_gain * best.0 {
            best = (sig, Some((cycle, seas)));
        }
    }
    let Some((cycle, seasonal)) = best.1 else {
        return plain;
    };
    let base: Vec<f64> = trend.iter().zip(&seasonal).map(|(t, x)| t + x).collect();
    let resid: Vec<f64> = v.iter().zip(&base).map(|(x, b)| x - b).collect();
    Baseline {
        sigma: noise_sigma(&resid, floor),
        base,
        seasonal,
        kind: BaselineKind::Seasonal {
            cycle,
            days: span as f64 / DAY as f64,
        },
        half: per_day / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hourly(days: i64, f: impl Fn(i64) -> f64) -> Series {
        let mut s = Series::new("srv-1", "cpu", 3600);
        for i in 0..days * 24 {
            let t = 1_700_000_000 / 86_400 * 86_400 + i * 3600;
            let v = f(i);
            s.ts.push(t);
            s.count.push(60);
            s.avg.push(v);
            s.min.push(v);
            s.max.push(v);
        }
        s
    }

    #[test]
    fn sigma_floor_is_in_the_series_unit() {
        let p = Params::default();
        let flat = vec![0.1; 200];
        // 1% of the level, whatever the unit
        assert!((sigma_floor("value", &flat, &p) - 0.001).abs() < 1e-12);
        // percentages keep their absolute floor of 0.05 points
        assert_eq!(sigma_floor("cpu", &flat, &p), 0.05);
        assert!((sigma_floor("cpu", &vec![60.0; 200], &p) - 0.6).abs() < 1e-12);
        // mostly zero with bursts to 10: judged on a tenth of the bursts' size
        let bursts: Vec<f64> = (0..200)
            .map(|i| if i % 20 < 3 { 10.0 } else { 0.0 })
            .collect();
        assert!((sigma_floor("value", &bursts, &p) - 0.01).abs() < 1e-12);
        // all zero, NaNs, nothing: positive, never NaN
        for xs in [vec![0.0; 50], vec![f64::NAN; 5], vec![]] {
            let f = sigma_floor("value", &xs, &p);
            assert!(f > 0.0 && f.is_finite(), "{f}");
        }
    }

    /// The shortcut gives exactly the floored σ, the floor used or not.
    #[test]
    fn noise_sigma_for_equals_the_floored_sigma() {
        let p = Params::default();
        let mut rng = crate::analysis::synth::Rng(7);
        let mut next = || rng.uniform();
        let mut used = [0, 0];
        for case in 0..400 {
            let n = 1 + (next() * 120.0) as usize;
            let (level, noise) = (next() * 100.0 - 20.0, 10f64.powf(next() * 6.0 - 4.0));
            let mut xs: Vec<f64> = (0..n).map(|_| level + noise * (next() - 0.5)).collect();
            if case % 7 == 0 {
                xs[n / 2] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][case % 3];
            }
            if case % 5 == 0 {
                xs.iter_mut().step_by(2).for_each(|x| *x = 0.0);
            }
            let resid: Vec<f64> = xs.iter().map(|x| (x - level) * next()).collect();
            for metric in ["cpu", "value"] {
                let floor = sigma_floor(metric, &xs, &p);
                let want = noise_sigma(&resid, floor);
                let got = noise_sigma_for(&resid, metric, &xs, &p);
                assert_eq!(got.to_bits(), want.to_bits(), "case {case} {metric}");
                used[usize::from(want == floor)] += 1;
            }
        }
        // both sides of the shortcut were exercised
        assert!(used[0] > 50 && used[1] > 50, "{used:?}");
    }

    #[test]
    fn daily_profile_is_learnt_and_removed() {
        // a strong daily cycle plus small deterministic noise
        let s = hourly(14, |i| {
            50.0 + 20.0 * (std::f64::consts::TAU * (i % 24) as f64 / 24.0).sin()
                + ((i * 7919) % 13) as f64 / 13.0
                - 0.5
        });
        let b = baseline(&s, &Params::default());
        assert!(
            matches!(
                b.kind,
                BaselineKind::Seasonal {
                    cycle: Cycle::Day,
                    ..
                }
            ),
            "{:?}",
            b.kind
        );
        let worst = s
            .avg
            .iter()
            .zip(&b.base)
            .skip(24)
            .take(s.len() - 48)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(worst < 2.0, "{worst}");
        assert!(b.sigma < 1.0, "{}", b.sigma);
        assert!(b.kind.describe(3600).0.contains("time of day"));
    }

    #[test]
    fn short_or_aseasonal_series_keep_the_rolling_median() {
        let flat = hourly(14, |i| 50.0 + ((i * 7919) % 13) as f64 / 13.0);
        assert!(matches!(
            baseline(&flat, &Params::default()).kind,
            BaselineKind::Rolling { .. }
        ));
        let short = hourly(2, |i| {
            50.0 + 20.0 * (std::f64::consts::TAU * i as f64 / 24.0).sin()
        });
        assert!(matches!(
            baseline(&short, &Params::default()).kind,
            BaselineKind::Rolling { bins: 91 }
        ));
        assert_eq!(
            BaselineKind::Rolling { bins: 91 }.describe(60).0,
            "the rolling median of the surrounding 91 minutes"
        );
    }

    #[test]
    fn weekly_profile_with_enough_weeks() {
        // every day of the week its own level, a daily cycle on top
        let dow = |i: i64| (i / 24 + 3) % 7; // Monday = 0; day 0 of the epoch was a Thursday
        let week = hourly(35, |i| {
            10.0 * dow(i) as f64
                + 5.0 * (std::f64::consts::TAU * (i % 24) as f64 / 24.0).sin()
                + ((i * 7919) % 13) as f64 / 26.0
        });
        let b = baseline(&week, &Params::default());
        assert!(
            matches!(
                b.kind,
                BaselineKind::Seasonal {
                    cycle: Cycle::Week,
                    ..
                }
            ),
            "{:?}",
            b.kind
        );
        assert!(b.kind.describe(3600).0.contains("time of the week"));
        // two weeks are not enough for a weekly profile
        let short = hourly(14, |i| {
            10.0 * dow(i) as f64 + ((i * 7919) % 13) as f64 / 26.0
        });
        assert!(!matches!(
            baseline(&short, &Params::default()).kind,
            BaselineKind::Seasonal {
                cycle: Cycle::Week,
                ..
            }
        ));
    }
}
