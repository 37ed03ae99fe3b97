//! Excursions: runs of bins far from the baseline. A run of |z| ≥ `z_enter`
//! of one sign (gaps ≤ 2 bins merged) is kept when its peak passes the
//! single-bin threshold, or when it lasts `persist_bins` with a peak of
//! `z_persist` and its 3-bin running median passes the persistence threshold.
//! Both thresholds are the series' own tail at the stated risk (upward and
//! downward separately: latencies spike up, not down), floored.

use crate::stats::{rolling_median, rolling_median_fixed, theil_sen};

use super::baseline::noise_sigma_for;
use super::{Basis, Ctx, LazyThreshold, Window};

/// Runs of |z| ≥ `enter` with one sign, gaps of up to 2 bins merged: (a, b, sign).
fn runs_of_one_sign(z: &[f64], enter: f64) -> Vec<(usize, usize, f64)> {
    let n = z.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        if z[i].abs() < enter {
            i += 1;
            continue;
        }
        let sign = z[i].signum();
        let a = i;
        let mut b = i + 1;
        let mut j = i + 1;
        while j < n && j <= b + 2 {
            if z[j].abs() >= enter && z[j].signum() == sign {
                b = j + 1;
            }
            j += 1;
        }
        out.push((a, b, sign));
        i = b;
    }
    out
}

pub fn excursions(c: &Ctx) -> Vec<Window> {
    let (s, p, z) = (c.s, c.p, &c.z);
    let z3 = rolling_median(z, 1);
    // [upward, downward]
    let single = LazyThreshold::both(z, p.z_single, c.q);
    let persist = LazyThreshold::both(&z3, 0.0, c.q);
    let mut out = Vec::new();
    for (a, b, sign) in runs_of_one_sign(z, p.z_enter) {
        let dir = usize::from(sign < 0.0);
        let (pi, pz) = (a..b)
            .map(|i| (i, z[i]))
            .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
            .expect("non-empty run");
        let z3_peak = (a..b).map(|i| z3[i] * sign).fold(f64::MIN, f64::max);
        let len = b - a;
        let by_peak = single[dir].passes(pz.abs());
        let by_persistence =
            len >= p.persist_bins && pz.abs() >= p.z_persist && persist[dir].passes(z3_peak);
        if !(by_peak || by_persistence) {
            continue;
        }
        let rate = if by_peak {
            single[dir].rate(pz.abs())
        } else {
            persist[dir].rate(z3_peak)
        };
        let mut w = Window::new(
            a,
            b,
            classify(&s.metric, &s.avg[a..b], sign, len, p.spike_max_bins),
            Basis::Baseline,
        );
        w.z = pz;
        w.peak_i = pi;
        w.typical = c.base.base[pi];
        w.rate = rate;
        out.push(w);
    }
    out
}

/// Short spikes inside one bin move its average a little but its maximum a
/// lot (and short dips its minimum): the same excursion test on the bins'
/// maxima (upward) and minima (downward), short runs, where no other window
/// already is.
pub fn extreme_spikes(c: &Ctx, found: &[Window]) -> Vec<Window> {
    let (s, p) = (c.s, c.p);
    let n = s.len();
    let mut out = Vec::new();
    for (xs, sign) in [(&s.max, 1.0), (&s.min, -1.0)] {
        // spikes here are ≤ 3 bins: a 31-bin window is plenty
        let base = rolling_median_fixed(xs, 15);
        let res: Vec<f64> = xs.iter().zip(&base).map(|(x, b)| (x - b) * sign).collect();
        let sig = noise_sigma_for(&res, &s.metric, xs, p);
        let z: Vec<f64> = (0..n)
            .map(|i| if c.excluded[i] { 0.0 } else { res[i] / sig })
            .collect();
        let thr = LazyThreshold::new(&z, false, p.z_single, c.q);
        for (a, b, run_sign) in runs_of_one_sign(&z, p.z_enter) {
            if run_sign < 0.0 || b - a > p.spike_max_bins {
                continue;
            }
            let (pi, pz) = (a..b)
                .map(|i| (i, z[i]))
                .max_by(|x, y| x.1.total_cmp(&y.1))
                .expect("non-empty run");
            let covered = found
                .iter()
                .chain(&out)
                .any(|w| w.kind != "dropout" && w.covers(a, b));
            if !covered && thr.passes(pz) {
                let kind = if sign > 0.0 { "spike" } else { "dip" };
                let mut w = Window::new(a, b, kind, Basis::Extremes { upward: sign > 0.0 });
                w.z = pz * sign;
                w.peak_i = pi;
                // compared with the extremes' own rolling median and noise
                w.typical = base[pi];
                w.sigma = Some(sig);
                w.rate = thr.rate(pz);
                out.push(w);
            }
        }
    }
    out
}

/// Kind of an excursion from its shape: short ones are spikes (or dips), a
/// memory excursion that climbs steadily to its peak is a leak, longer ones
/// are level shifts.
pub fn classify(
    metric: &str,
    vals: &[f64],
    sign: f64,
    len: usize,
    spike_max: usize,
) -> &'static str {
    if len <= spike_max {
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
