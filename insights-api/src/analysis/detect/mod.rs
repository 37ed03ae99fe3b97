//! Anomaly detection in one series: each detector proposes windows of bins,
//! which are merged and then explained and scored in `analysis::mod`.
//!
//! - [`baseline`]: the expected value of every bin and the noise σ;
//! - [`excursion`]: runs of bins far from the baseline (spikes, dips, short
//!   level shifts, short leaks), and spikes only the bins' maxima show;
//! - [`relative`]: drops on a relative scale, in series whose noise grows
//!   with their level;
//! - [`shift`]: level shifts longer than the baseline window;
//! - [`day`]: whole days that do not follow the series' usual profile;
//! - [`stuck`], [`dropout`]: a repeated value, missing samples;
//! - [`leak`]: slow leaks against the fleet (off by default);
//! - [`score`]: scores, severities and the words for how unusual a peak is.
//!
//! Thresholds are floors raised by the series' own tail at the stated risk
//! (`Params::risk`, `stats::Tail`): a series whose noise is heavy-tailed needs
//! a larger excursion to alarm.

pub mod baseline;
pub mod day;
pub mod dropout;
pub mod excursion;
pub mod leak;
pub mod relative;
pub mod score;
pub mod shift;
pub mod stuck;

use std::collections::HashMap;

use crate::analysis::params::Params;
use crate::analysis::series::Series;
use crate::stats::{median, Tail};

use baseline::{Baseline, BaselineKind};

/// What a window was compared with, for its explanation.
#[derive(Clone, Debug, PartialEq)]
pub enum Basis {
    /// The series' baseline.
    Baseline,
    /// The bins' maxima (upward) or minima against their own rolling median.
    Extremes { upward: bool },
    /// The level before a step.
    Before { bins: usize },
    /// A value repeated; the longest repeat in the history before it (bins).
    Repeat { value: f64, longest_before: usize },
    /// Samples missing: the usual count per bin and the fraction received.
    Missing { usual: f64, received: f64 },
    /// The fleet's median curve (slow leaks).
    Fleet,
    /// The series' profile over a whole day of this many bins (unusual days).
    Day { bins: usize },
    /// The baseline, on the logarithm of the values (`relative`): the
    /// window's `sigma` is the logarithm's noise σ.
    Relative,
}

/// A window of bins [a, b) with a kind; merged and scored later.
#[derive(Clone, Debug)]
pub struct Window {
    pub a: usize,
    pub b: usize,
    pub kind: &'static str,
    pub z: f64,
    pub peak_i: usize,
    pub typical: f64,
    pub start_override: Option<i64>,
    pub end_override: Option<i64>,
    pub basis: Basis,
    /// Per-bin rate at which this series' own noise reaches the peak (the
    /// fitted tail), when a tail could be fitted.
    pub rate: Option<f64>,
    /// The noise σ the window was judged with, when not the series' (the
    /// bins' maxima or minima have their own).
    pub sigma: Option<f64>,
    /// Detector windows merged into this one (an episode when more than 1).
    pub excursions: usize,
}

impl Window {
    pub fn new(a: usize, b: usize, kind: &'static str, basis: Basis) -> Window {
        Window {
            a,
            b,
            kind,
            z: 0.0,
            peak_i: a,
            typical: 0.0,
            start_override: None,
            end_override: None,
            basis,
            rate: None,
            sigma: None,
            excursions: 1,
        }
    }
    pub fn start_ts(&self, s: &Series) -> i64 {
        self.start_override
            .unwrap_or_else(|| s.ts[self.a.min(s.len() - 1)])
    }
    pub fn end_ts(&self, s: &Series) -> i64 {
        self.end_override.unwrap_or_else(|| {
            if self.b == 0 {
                s.ts[0]
            } else {
                s.ts[(self.b - 1).min(s.len() - 1)] + s.width
            }
        })
    }
    /// Overlaps bins [a, b) (a dropout's empty index range counts as one bin).
    pub fn covers(&self, a: usize, b: usize) -> bool {
        self.a < b && a < self.b.max(self.a + 1)
    }
}

fn priority(kind: &str) -> u8 {
    match kind {
        "stuck" => 7,
        "dropout" => 6,
        "leak" => 5,
        "level_shift" => 4,
        "noisy_neighbour" | "unusual_day" => 3,
        "spike" | "dip" => 2,
        _ => 1,
    }
}

/// A detector's thresholds for one statistic: the floor, raised to the level
/// the statistic's own upper tail exceeds at `q` per bin.
#[derive(Clone, Copy, Debug)]
pub struct Threshold {
    pub tail: Option<Tail>,
    pub level: f64,
}

impl Threshold {
    pub fn new(stat: &[f64], floor: f64, q: f64) -> Threshold {
        let u = Tail::high_quantile(stat);
        let tail = u.and_then(|u| Tail::fit_above(stat, u));
        // Without a tail (too few peaks above the high quantile u, typically
        // because many bins sit at u): only values beyond u are unusual.
        let level = match tail {
            Some(t) => t.quantile(q).max(floor),
            None => u.map_or(floor, |u| floor.max(u * (1.0 + 1e-9) + 1e-9)),
        };
        Threshold { tail, level }
    }
    /// Per-bin rate of noise this extreme, from the tail.
    pub fn rate(&self, x: f64) -> Option<f64> {
        self.tail.map(|t| t.rate(x))
    }
}

/// A [`Threshold`] fitted on first use. Its level is never below its floor,
/// so a value under the floor fails without the fit (a selection over the
/// whole statistic): most series have few values or none that reach it.
/// `negated` judges the statistic's lower tail as an upper one.
pub struct LazyThreshold<'a> {
    stat: &'a [f64],
    negated: bool,
    floor: f64,
    q: f64,
    fitted: std::cell::OnceCell<Threshold>,
}

impl<'a> LazyThreshold<'a> {
    pub fn new(stat: &'a [f64], negated: bool, floor: f64, q: f64) -> LazyThreshold<'a> {
        LazyThreshold {
            stat,
            negated,
            floor,
            q,
            fitted: std::cell::OnceCell::new(),
        }
    }
    /// The pair [upward, downward] over one statistic.
    pub fn both(stat: &'a [f64], floor: f64, q: f64) -> [LazyThreshold<'a>; 2] {
        [
            LazyThreshold::new(stat, false, floor, q),
            LazyThreshold::new(stat, true, floor, q),
        ]
    }
    pub fn get(&self) -> &Threshold {
        self.fitted.get_or_init(|| {
            if self.negated {
                let neg: Vec<f64> = self.stat.iter().map(|x| -x).collect();
                Threshold::new(&neg, self.floor, self.q)
            } else {
                Threshold::new(self.stat, self.floor, self.q)
            }
        })
    }
    /// `x` reaches the threshold (`x` on the judged side's scale).
    pub fn passes(&self, x: f64) -> bool {
        x >= self.floor && x >= self.get().level
    }
    pub fn rate(&self, x: f64) -> Option<f64> {
        self.get().rate(x)
    }
}

/// Everything the detectors of one series share.
pub struct Ctx<'a> {
    pub s: &'a Series,
    pub p: &'a Params,
    pub level: f64,
    pub base: Baseline,
    /// Residuals in σ, 0 on stuck bins.
    pub z: Vec<f64>,
    /// Bins of a stuck run (no excursion or step is judged there).
    pub excluded: Vec<bool>,
    /// Per-bin risk: `risk / bins`.
    pub q: f64,
}

/// What one series' detection found, and its noise σ.
pub struct Detected {
    pub windows: Vec<Window>,
    pub sigma: f64,
    pub baseline: BaselineKind,
    /// The series' median.
    pub level: f64,
}

/// Detects anomalies in one series. `span` is the fleet's data span within
/// the range (dropouts are judged there); `fleet_blocks` is the fleet's median
/// block curve for the metric, for slow leaks.
pub fn detect_series(
    s: &Series,
    p: &Params,
    span: (i64, i64),
    fleet_blocks: Option<&HashMap<i64, f64>>,
    block: i64,
) -> Detected {
    let n = s.len();
    let mut out = dropout::dropouts(s, p, span);
    let level = median(&s.avg).unwrap_or(0.0);
    if n < 2 * p.persist_bins + 10 {
        return Detected {
            windows: out,
            sigma: baseline::noise_sigma(&[], baseline::sigma_floor(&s.metric, &s.avg, p)),
            baseline: BaselineKind::Rolling { bins: 0 },
            level,
        };
    }
    let (stuck, excluded) = stuck::stuck(s, p);
    out.extend(stuck);
    let base = baseline::baseline(s, p);
    let z = base.z(&s.avg, &excluded);
    let ctx = Ctx {
        s,
        p,
        level,
        q: p.risk / n as f64,
        base,
        z,
        excluded,
    };
    out.extend(excursion::excursions(&ctx));
    let spikes = excursion::extreme_spikes(&ctx, &out);
    out.extend(spikes);
    let drops = relative::relative_drops(&ctx, &out);
    out.extend(drops);
    let shifts = shift::long_shifts(&ctx, &out);
    out.extend(shifts);
    let days = day::unusual_days(&ctx, &out);
    out.extend(days);
    if p.slow_leaks {
        if let Some(fb) = fleet_blocks {
            out.extend(leak::slow_leaks(&ctx, fb, block));
        }
    }
    Detected {
        windows: merge(s, out, p),
        sigma: ctx.base.sigma,
        baseline: ctx.base.kind,
        level,
    }
}

/// Merges windows of one family into episodes; the higher-priority kind wins.
/// Dropouts and stuck runs merge when they overlap or touch (2 bins apart);
/// excursions and shifts when fewer than `Params::episode_gap_bins` bins
/// apart: an operator acts on an episode (a burst of spikes, a shift and its
/// overshoot), not on each excursion in it. A dropout or a stuck sensor stays
/// its own finding even inside a longer excursion.
fn merge(s: &Series, mut out: Vec<Window>, p: &Params) -> Vec<Window> {
    let w = s.width;
    out.sort_by_key(|x| (x.start_ts(s), x.end_ts(s)));
    let family = |k: &str| match k {
        "dropout" => 0,
        "stuck" => 1,
        _ => 2,
    };
    let mut merged: Vec<Window> = Vec::new();
    for wdw in out {
        // Sorted by start: the last window of a family is the one to extend.
        if let Some(last) = merged
            .iter_mut()
            .rev()
            .find(|m| family(m.kind) == family(wdw.kind))
        {
            let gap = if family(wdw.kind) == 2 {
                p.episode_gap_bins as i64
            } else {
                2
            };
            if wdw.start_ts(s) <= last.end_ts(s) + gap * w {
                let (sa, sb) = (
                    last.start_ts(s).min(wdw.start_ts(s)),
                    last.end_ts(s).max(wdw.end_ts(s)),
                );
                let (a, b) = (last.a.min(wdw.a), last.b.max(wdw.b));
                let excursions = last.excursions + wdw.excursions;
                if priority(wdw.kind) > priority(last.kind) {
                    *last = wdw;
                }
                last.excursions = excursions;
                last.a = a;
                last.b = b;
                last.start_override = Some(sa);
                last.end_override = Some(sb);
                continue;
            }
        }
        merged.push(wdw);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lazy threshold decides as the eager one on the statistic (or its
    /// negation) does, and fits only when a value reaches the floor.
    #[test]
    fn a_lazy_threshold_decides_as_the_eager_one() {
        let mut rng = crate::analysis::synth::Rng(11);
        let mut next = || rng.uniform();
        let stat: Vec<f64> = (0..600)
            .map(|i| (next() - 0.5) * 4.0 + if i % 97 == 0 { 9.0 } else { 0.0 })
            .collect();
        let neg: Vec<f64> = stat.iter().map(|x| -x).collect();
        for floor in [0.0, 1.0, 3.0] {
            let lazy = LazyThreshold::both(&stat, floor, 1e-3);
            let eager = [
                Threshold::new(&stat, floor, 1e-3),
                Threshold::new(&neg, floor, 1e-3),
            ];
            for x in (-40..=120).map(|k| k as f64 / 10.0) {
                for dir in 0..2 {
                    assert_eq!(
                        lazy[dir].passes(x),
                        x >= eager[dir].level,
                        "{floor} {x} {dir}"
                    );
                }
            }
            assert_eq!(lazy[1].rate(5.0), eager[1].rate(5.0));
        }
        let lazy = LazyThreshold::new(&stat, false, 50.0, 1e-3);
        assert!(!lazy.passes(49.0));
        assert!(lazy.fitted.get().is_none(), "fitted below its floor");
    }
}
