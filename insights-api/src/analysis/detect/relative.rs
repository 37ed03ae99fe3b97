//! Drops on a relative scale. In a positive series whose noise grows with
//! its level (prices, request rates, latencies: multiplicative noise), a
//! fall to 1% of the usual level can be smaller in absolute terms than the
//! everyday swings at its busy hours, and the σ of the absolute residuals,
//! set by those swings, never sees it. On the logarithm of such a series the
//! noise is the same at every level, and the fall is many σ.
//!
//! The scale is chosen per series from the data, with no threshold: the
//! logarithm when it makes the noise more alike between the series' low and
//! high levels than the values themselves do (the ratio of the residuals'
//! MAD below and above the baseline's median closer to 1). Additive noise
//! (a constant spread, relatively larger at low levels) keeps the values'
//! scale, where the other detectors already judge it. Only drops are taken
//! from the logarithm, where nothing else found anything: on a log scale a
//! spike is compressed and the detectors on the values find it better.

use crate::analysis::series::{is_percent, Series};
use crate::stats::{mad, median};

use crate::analysis::params::Params;

use super::baseline::{baseline_floored, noise_sigma, Baseline, BaselineKind};
use super::{excursion, Basis, Ctx, Window};

/// MAD of the residuals `x - base` where the baseline is below its median,
/// over the MAD where it is at or above it; `None` when either is 0.
pub fn spread_ratio(x: &[f64], base: &[f64]) -> Option<f64> {
    let mid = median(base)?;
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    for (v, b) in x.iter().zip(base) {
        if *b < mid {
            lo.push(v - b);
        } else {
            hi.push(v - b);
        }
    }
    let (l, h) = (mad(&lo)?, mad(&hi)?);
    (l > 0.0 && h > 0.0 && l.is_finite() && h.is_finite()).then(|| l / h)
}

/// Whether a series' noise is multiplicative: the residuals of its logarithm
/// `lx` from their baseline `lb` are more alike at low and high levels than
/// the values' residuals from theirs are. The first and last `edge` bins,
/// where a baseline's window is one-sided, are not compared.
fn multiplicative(x: &[f64], base: &[f64], lx: &[f64], lb: &[f64], edge: usize) -> bool {
    let n = x.len();
    if n <= 2 * edge {
        return false;
    }
    let r = edge..n - edge;
    let (x, base, lx, lb) = (&x[r.clone()], &base[r.clone()], &lx[r.clone()], &lb[r]);
    match (spread_ratio(x, base), spread_ratio(lx, lb)) {
        (Some(lin), Some(log)) => log.ln().abs() < lin.ln().abs(),
        _ => false,
    }
}

/// The baseline of the logarithm `ls` of the series, its σ floored at
/// `rel_floor` (1% of the level, whatever the level). A rolling median
/// commutes with the logarithm: the values' rolling baseline, when positive,
/// gives it without another pass (at the edges, where the values' baseline
/// continues its slope, the two differ a little). A seasonal one (trend plus
/// profile, additive) does not: it is learnt again on the logarithm.
fn log_baseline(ls: &Series, c: &Ctx, p: &Params) -> Baseline {
    match c.base.kind {
        BaselineKind::Rolling { .. } if c.base.base.iter().all(|b| *b > 0.0) => {
            let base: Vec<f64> = c.base.base.iter().map(|b| b.ln()).collect();
            let resid: Vec<f64> = ls.avg.iter().zip(&base).map(|(x, b)| x - b).collect();
            Baseline {
                sigma: noise_sigma(&resid, p.rel_floor),
                seasonal: vec![0.0; base.len()],
                base,
                kind: c.base.kind,
                half: c.base.half,
            }
        }
        _ => baseline_floored(ls, p, p.rel_floor),
    }
}

/// Drops found on the logarithm of a positive series with multiplicative
/// noise, where no other window (`found`, dropouts aside) is. Each window's
/// `typical` is the baseline back on the values' scale and its `sigma` the
/// noise σ of the logarithm (`Basis::Relative`).
pub fn relative_drops(c: &Ctx, found: &[Window]) -> Vec<Window> {
    let (s, p) = (c.s, c.p);
    if is_percent(&s.metric) || s.avg.iter().any(|x| !(*x > 0.0 && x.is_finite())) {
        return Vec::new();
    }
    let ln = |v: &[f64]| {
        v.iter()
            .map(|x| x.max(f64::MIN_POSITIVE).ln())
            .collect::<Vec<f64>>()
    };
    // the excursion test reads only the averages (and the metric, the times)
    let ls = Series {
        server: String::new(),
        metric: s.metric.clone(),
        width: s.width,
        ts: s.ts.clone(),
        avg: ln(&s.avg),
        ..Default::default()
    };
    let lbase = log_baseline(&ls, c, p);
    let edge = c.base.half.max(lbase.half);
    if !multiplicative(&s.avg, &c.base.base, &ls.avg, &lbase.base, edge) {
        return Vec::new();
    }
    let sigma = lbase.sigma;
    let z = lbase.z(&ls.avg, &c.excluded);
    let lc = Ctx {
        s: &ls,
        p,
        level: c.level,
        q: c.q,
        base: lbase,
        z,
        excluded: c.excluded.clone(),
    };
    excursion::excursions(&lc)
        .into_iter()
        .filter(|w| w.z < 0.0)
        .filter(|w| {
            !found
                .iter()
                .any(|f| f.kind != "dropout" && f.covers(w.a, w.b))
        })
        .map(|mut w| {
            w.typical = w.typical.exp();
            w.sigma = Some(sigma);
            w.basis = Basis::Relative;
            w
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::detect::detect_series;

    /// Deterministic noise in [-1, 1) (splitmix64 of `i`).
    fn noise(i: usize) -> f64 {
        let mut x = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// A week of hourly bins, busy (1.0) at noon and quiet (0.1) at
    /// midnight, with the noise `f(level, i)`.
    fn prices(f: impl Fn(f64, usize) -> f64) -> Series {
        let mut s = Series::new("srv-1", "cpc", 3600);
        for i in 0..168 {
            let phase = std::f64::consts::TAU * (i % 24) as f64 / 24.0;
            let level = 0.55 - 0.45 * phase.cos();
            let v = f(level, i);
            s.ts.push(1_700_000_000 / 86_400 * 86_400 + i as i64 * 3600);
            s.count.push(1);
            s.avg.push(v);
            s.min.push(v);
            s.max.push(v);
        }
        s
    }

    fn detect(s: &Series) -> Vec<Window> {
        let span = (s.ts[0], s.ts[s.len() - 1] + s.width);
        detect_series(s, &Params::default(), span, None, 3600).windows
    }

    /// The relative drops of `s` alone, with the values' own baseline.
    fn drops(s: &Series) -> Vec<Window> {
        let p = Params::default();
        let base = crate::analysis::detect::baseline::baseline(s, &p);
        let c = Ctx {
            s,
            p: &p,
            level: median(&s.avg).unwrap_or(0.0),
            q: p.risk / s.len() as f64,
            z: vec![0.0; s.len()],
            excluded: vec![false; s.len()],
            base,
        };
        relative_drops(&c, &[])
    }

    fn set(s: &mut Series, i: usize, v: f64) {
        s.avg[i] = v;
        s.min[i] = v;
        s.max[i] = v;
    }

    #[test]
    fn a_fall_to_a_hundredth_in_multiplicative_noise_is_a_relative_dip() {
        // 20% relative noise: ±0.2 at the busy level, ±0.02 at the quiet one
        let mut s = prices(|level, i| level * (1.0 + 0.2 * noise(i)));
        // at midnight the quiet level falls to 1% of itself for one hour: 0.099
        // lower, half the busy hours' everyday swing
        set(&mut s, 48, 0.001);
        let w = detect(&s);
        let dip = w
            .iter()
            .find(|w| w.covers(48, 49))
            .unwrap_or_else(|| panic!("not found: {w:?}"));
        assert_eq!(dip.kind, "dip");
        assert_eq!(dip.basis, Basis::Relative);
        assert!(dip.z < -8.0, "{}", dip.z);
        assert!((dip.typical - 0.1).abs() < 0.03, "{}", dip.typical);
        assert!(
            dip.sigma.is_some_and(|x| x > 0.01 && x < 0.2),
            "{:?}",
            dip.sigma
        );
        // the values' own scale does not see it: the reason for this detector
        let b = crate::analysis::detect::baseline::baseline(&s, &Params::default());
        assert!(((s.avg[48] - b.base[48]) / b.sigma).abs() < 4.0);
        // and without the fall nothing is found on the relative scale
        let clean = prices(|level, i| level * (1.0 + 0.2 * noise(i)));
        assert!(drops(&clean).is_empty(), "{:?}", drops(&clean));
    }

    #[test]
    fn additive_noise_keeps_the_values_scale() {
        // the same spread ±0.02 at both levels: relatively 10× larger when quiet
        let mut s = prices(|level, i| level + 0.02 * noise(i));
        let scales = |s: &Series| {
            let p = Params::default();
            let b = crate::analysis::detect::baseline::baseline(s, &p);
            let l = Series {
                avg: s.avg.iter().map(|x| x.ln()).collect(),
                ..s.clone()
            };
            let lb = baseline_floored(&l, &p, p.rel_floor);
            multiplicative(&s.avg, &b.base, &l.avg, &lb.base, b.half)
        };
        assert!(!scales(&s));
        assert!(scales(&prices(|level, i| level * (1.0 + 0.2 * noise(i)))));
        // a quiet hour at a tenth of its level is for the values' scale to judge
        set(&mut s, 48, 0.01);
        assert!(drops(&s).is_empty(), "{:?}", drops(&s));
    }

    #[test]
    fn zeros_percentages_and_flat_series_are_left_to_the_other_detectors() {
        let mut zero = prices(|level, i| level * (1.0 + 0.2 * noise(i)));
        set(&mut zero, 48, 0.0);
        assert!(drops(&zero).is_empty());
        let mut pct = prices(|level, i| 50.0 * level * (1.0 + 0.2 * noise(i)));
        pct.metric = "cpu".into();
        set(&mut pct, 48, 0.05);
        assert!(drops(&pct).is_empty());
        assert_eq!(spread_ratio(&[1.0; 10], &[1.0; 10]), None);
        assert_eq!(spread_ratio(&[], &[]), None);
    }

    #[test]
    fn the_logarithm_of_a_rolling_baseline_is_the_rolling_baseline_of_the_logarithm() {
        // a day of minutes: too short for a profile, the baseline is a rolling median
        let mut s = Series::new("srv-1", "requests", 60);
        for i in 0..1440 {
            let v = 100.0 * (1.0 + 0.5 * (i as f64 / 200.0).sin()) * (1.0 + 0.3 * noise(i));
            s.ts.push(1_700_000_000 / 86_400 * 86_400 + i as i64 * 60);
            s.count.push(1);
            s.avg.push(v);
            s.min.push(v);
            s.max.push(v);
        }
        let p = Params::default();
        let base = crate::analysis::detect::baseline::baseline(&s, &p);
        assert!(matches!(base.kind, BaselineKind::Rolling { .. }));
        let ls = Series {
            avg: s.avg.iter().map(|x| x.ln()).collect(),
            ..s.clone()
        };
        let c = Ctx {
            s: &s,
            p: &p,
            level: 100.0,
            q: p.risk / 1440.0,
            z: vec![0.0; 1440],
            excluded: vec![false; 1440],
            base,
        };
        let fast = log_baseline(&ls, &c, &p);
        let full = baseline_floored(&ls, &p, p.rel_floor);
        let h = full.half;
        for i in h..1440 - h {
            assert!((fast.base[i] - full.base[i]).abs() < 1e-12, "{i}");
        }
        assert!(
            (fast.sigma / full.sigma - 1.0).abs() < 0.05,
            "{} {}",
            fast.sigma,
            full.sigma
        );
    }
}
