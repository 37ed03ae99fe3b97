//! Unusual days: a whole day that does not follow the series' usual profile
//! (a public holiday in a traffic series, a day of batch jobs that did not
//! run, a service serving another time zone for a day). No single bin need
//! be extreme, and the trend over a day follows the day's level, so neither
//! the excursion test nor the step detector sees it; but most of the day's
//! bins sit several σ from their profile, which a normal day never does.
//!
//! Only with a seasonal baseline (a profile learnt from at least 3 days, so
//! there are days to compare). Statistic at each bin: the median |z| over
//! the day centred on it, robust to the day's spikes (one spike moves a
//! mean, not a median). A run where it reaches `z_enter` (half the day's
//! bins at least as far off as an excursion must be to begin; pure noise
//! gives ≈ 0.67), raised by the statistic's own tail at the stated risk, is
//! an `unusual_day` over the days it covers, where no other window is.

use crate::stats::rolling_median_fixed;

use super::baseline::BaselineKind;
use super::{Basis, Ctx, LazyThreshold, Window};

const DAY: i64 = 86_400;

pub fn unusual_days(c: &Ctx, found: &[Window]) -> Vec<Window> {
    let (s, p) = (c.s, c.p);
    let n = s.len();
    if !matches!(c.base.kind, BaselineKind::Seasonal { .. }) || s.width <= 0 {
        return Vec::new();
    }
    let per_day = (DAY / s.width) as usize;
    let h = per_day / 2;
    if per_day < 4 || n < 3 * per_day {
        return Vec::new();
    }
    let abs: Vec<f64> = c.z.iter().map(|z| z.abs()).collect();
    let m = rolling_median_fixed(&abs, h);
    let thr = LazyThreshold::new(&m, false, p.z_enter, c.q);
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        if !thr.passes(m[i]) {
            i += 1;
            continue;
        }
        let a = i;
        while i < n && thr.passes(m[i]) {
            i += 1;
        }
        // the run's centres, widened to the days their medians cover
        let (wa, wb) = (a.saturating_sub(h), (i + h).min(n));
        if found
            .iter()
            .any(|f| f.kind != "dropout" && f.covers(wa, wb))
        {
            continue;
        }
        let peak = (a..i)
            .max_by(|&x, &y| m[x].total_cmp(&m[y]))
            .expect("non-empty run");
        let mut w = Window::new(wa, wb, "unusual_day", Basis::Day { bins: 2 * h + 1 });
        // a distance, unsigned: such a day is often above and below its profile
        w.z = m[peak];
        w.peak_i = peak;
        w.typical = c.base.base[peak];
        w.rate = thr.rate(m[peak]);
        out.push(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::detect::baseline::{Baseline, Cycle};
    use crate::analysis::params::Params;
    use crate::analysis::series::Series;
    use crate::analysis::synth::Rng;

    const N: usize = 21 * 24;

    /// Three weeks of hourly bins with residuals `z` and a weekly
    /// profile (or a rolling baseline when `seasonal` is false).
    fn unusual(z: Vec<f64>, seasonal: bool, found: &[Window]) -> Vec<Window> {
        let mut s = Series::new("srv-1", "requests", 3600);
        let t0 = 1_700_000_000 / 86_400 * 86_400;
        s.ts = (0..N as i64).map(|i| t0 + i * 3600).collect();
        s.avg = vec![100.0; N];
        let p = Params::default();
        let c = Ctx {
            s: &s,
            p: &p,
            level: 100.0,
            q: p.risk / N as f64,
            base: Baseline {
                base: vec![100.0; N],
                seasonal: vec![0.0; N],
                sigma: 1.0,
                kind: if seasonal {
                    BaselineKind::Seasonal {
                        cycle: Cycle::Week,
                        days: 21.0,
                    }
                } else {
                    BaselineKind::Rolling { bins: 91 }
                },
                half: 12,
            },
            z,
            excluded: vec![false; N],
        };
        unusual_days(&c, found)
    }

    fn noise(seed: u64) -> Vec<f64> {
        let mut rng = Rng(seed);
        (0..N).map(|_| rng.normal()).collect()
    }

    #[test]
    fn a_day_off_its_profile_is_an_unusual_day() {
        // day 15: every bin 5σ off, above at night and below by day (a
        // holiday: its trend is lower, its daytime peak missing), no bin
        // past the 8σ a single excursion needs
        let mut z = noise(3);
        for (i, x) in z.iter_mut().enumerate().skip(15 * 24).take(24) {
            let hour = i % 24;
            *x = if (8..20).contains(&hour) { -5.0 } else { 5.0 } + 0.5 * *x;
        }
        let w = unusual(z.clone(), true, &[]);
        assert_eq!(w.len(), 1, "{w:?}");
        let d = &w[0];
        assert_eq!(d.kind, "unusual_day");
        assert!(
            d.covers(15 * 24, 16 * 24) && d.a >= 14 * 24 && d.b <= 17 * 24,
            "{d:?}"
        );
        assert!(d.z >= 4.0 && d.z < 6.0, "{}", d.z);
        assert_eq!(d.basis, Basis::Day { bins: 25 });
        // already explained by another window: not reported again
        let shift = Window::new(15 * 24 + 8, 15 * 24 + 20, "level_shift", Basis::Baseline);
        assert!(unusual(z.clone(), true, &[shift]).is_empty());
        // without a profile there is no usual day to differ from
        assert!(unusual(z, false, &[]).is_empty());
    }

    #[test]
    fn ordinary_days_and_one_spike_are_not_unusual() {
        assert!(unusual(noise(5), true, &[]).is_empty());
        // a 100σ spike and a 3-hour excursion of 6σ on day 10: the day's
        // median is untouched
        let mut z = noise(5);
        z[10 * 24 + 14] = 100.0;
        for x in &mut z[10 * 24 + 2..10 * 24 + 5] {
            *x = -6.0;
        }
        assert!(unusual(z, true, &[]).is_empty());
    }
}
