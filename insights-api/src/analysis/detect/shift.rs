//! Level shifts longer than the baseline window (the baseline follows them,
//! so the excursion detector sees only their edges). The step statistic at a
//! bin is the median of the 2L+1 bins from it on minus the median of the 2L+1
//! before it (L = half the baseline's half-width, at least 6), in σ, on the values with
//! their seasonal profile removed. A step past its threshold (the floor
//! `z_persist + 1`, raised by the statistic's own tail at the stated risk)
//! whose new level holds for a whole baseline window is a shift; it ends at
//! the next opposite step of at least half its size, else where the values
//! come back across the midpoint, else at the end of the data. A step that
//! merely ends an excursion, or borders a stuck sensor, is not a new shift.

use crate::stats::{median, median_around, rolling_median};

use super::{Basis, Ctx, LazyThreshold, Window};

pub fn long_shifts(c: &Ctx, found: &[Window]) -> Vec<Window> {
    let (s, p) = (c.s, c.p);
    let n = s.len();
    let sigma = c.base.sigma;
    let l = (c.base.half / 2).max(6);
    let hold = 2 * c.base.half + 1;
    if n < 2 * l + 3 {
        return Vec::new();
    }
    let v: Vec<f64> = s
        .avg
        .iter()
        .zip(&c.base.seasonal)
        .map(|(x, y)| x - y)
        .collect();
    let rm = rolling_median(&v, l);
    // the level at a bin, a little smoothed (only a few bins need it)
    let tiny = |k: usize| median_around(&v, k, 3);
    let step = |i: usize| (rm[i + l] - rm[i - l - 1]) / sigma;
    let d: Vec<f64> = (0..n)
        .map(|i| if i > l && i + l < n { step(i) } else { 0.0 })
        .collect();
    // [upward, downward]
    let thr = LazyThreshold::both(&d, p.z_persist + 1.0, c.q);
    let mut cps: Vec<(usize, f64, f64, f64, Option<f64>)> = Vec::new(); // start, sign, shift, pre, rate
    let mut i = l + 1;
    while i + l < n {
        let dir = usize::from(d[i] < 0.0);
        if !thr[dir].passes(d[i].abs()) {
            i += 1;
            continue;
        }
        // the extremum of this run of large |d|
        let sign = d[i].signum();
        let mut c_at = i;
        let mut j = i;
        while j + l < n && thr[dir].passes(d[j] * sign) {
            if d[j] * sign > d[c_at] * sign {
                c_at = j;
            }
            j += 1;
        }
        let pre = rm[c_at - l - 1];
        let post = rm[c_at + l];
        let mid = (pre + post) / 2.0;
        // refine the start: first bin from c-l on that stays past the midpoint
        let st = (c_at.saturating_sub(l)..(c_at + l).min(n))
            .find(|&k| (tiny(k) - mid) * sign > 0.0)
            .unwrap_or(c_at);
        // Shorter excursions are the excursion detector's: a step counts only
        // when the new level holds for a whole baseline window (or to the end).
        let persist_end = (st + hold).min(n);
        let held = median(&v[st..persist_end]).is_some_and(|m| (m - mid) * sign > 0.0);
        if !held || persist_end - st < p.level_shift_min_bins {
            i = j.max(i + 1);
            continue;
        }
        let near_stuck = c.excluded[st.saturating_sub(l + 1)..(st + l + 1).min(n)]
            .iter()
            .any(|&e| e);
        // A step right after an excursion is that excursion ending, not a new level.
        let lo = st.saturating_sub(l + 1);
        let after_excursion = found
            .iter()
            .any(|w| w.kind != "dropout" && w.a <= st + 1 && w.b >= lo && w.b > w.a);
        if !near_stuck && !after_excursion {
            cps.push((st, sign, post - pre, pre, thr[dir].rate(d[c_at].abs())));
        }
        i = j.max(i + 1);
    }
    // Pair each shift with the next opposite step of at least half its size.
    let mut out = Vec::new();
    let mut k = 0;
    while k < cps.len() {
        let (st, sign, shift, pre, rate) = cps[k];
        let back =
            (k + 1..cps.len()).find(|&m| cps[m].1 != sign && cps[m].2.abs() >= 0.5 * shift.abs());
        let mid = pre + shift / 2.0;
        let end = back.map(|m| cps[m].0).unwrap_or_else(|| {
            (st + p.level_shift_min_bins..n)
                .find(|&q| (tiny(q) - mid) * sign < 0.0)
                .unwrap_or(n)
        });
        let ext = (st..end)
            .max_by(|&x, &y| ((v[x] - pre) * sign).total_cmp(&((v[y] - pre) * sign)))
            .unwrap_or(st);
        let mut w = Window::new(st, end, "level_shift", Basis::Before { bins: 2 * l + 1 });
        w.z = shift / sigma;
        w.peak_i = ext;
        w.typical = pre + c.base.seasonal[ext];
        w.rate = rate;
        out.push(w);
        k = back.map(|m| m + 1).unwrap_or(cps.len());
    }
    out
}
