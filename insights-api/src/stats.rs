//! Robust statistics used by the analysis: median, MAD, rolling median,
//! Theil–Sen regression with Sen's confidence interval, Kendall's tau.

/// Median of a slice (NaNs must already be removed). `None` when empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    Some(median_in_place(&mut v))
}

/// Median, reordering `v`. Panics on empty input (callers check).
pub fn median_in_place(v: &mut [f64]) -> f64 {
    let n = v.len();
    let mid = n / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let hi = *m;
    if n % 2 == 1 {
        hi
    } else {
        let lo = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + hi) / 2.0
    }
}

/// Median absolute deviation from the median (unscaled).
pub fn mad(xs: &[f64]) -> Option<f64> {
    let m = median(xs)?;
    let mut d: Vec<f64> = xs.iter().map(|x| (x - m).abs()).collect();
    Some(median_in_place(&mut d))
}

/// Consistency constant: 1.4826 × MAD estimates σ for Gaussian noise.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// Order-preserving map of an `f64` to a `u64`: `a.total_cmp(b)` equals
/// `key(a).cmp(key(b))`, so windows compare integers.
#[inline(always)]
fn key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}

#[inline(always)]
fn unkey(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Windows up to this many keys move the outgoing key to the incoming one's
/// place by walking (insertion-sort steps, its position tracked); larger ones
/// binary-search both places and move the keys between with one
/// `copy_within`. Measured on one-minute series (`bench_analysis`): the walk
/// is faster up to a window of about 50.
const WALK_MAX_WINDOW: usize = 49;

/// Centred rolling median with half-width `h` (window 2h+1, truncated at the
/// edges). A sorted window of order-preserving keys: each step moves the
/// outgoing value's slot to the incoming value's place, shifting the keys
/// between them, O(n·h) in the worst case with a small constant for the
/// windows used here (h = 1, the median of three, in closed form). Gives
/// exactly the median of each window under
/// `f64::total_cmp` (the two middle values' mean for an even window), as
/// sorting every window would.
pub fn rolling_median(xs: &[f64], h: usize) -> Vec<f64> {
    let n = xs.len();
    match h {
        0 => return xs.to_vec(),
        1 if n >= 3 => return median_of_three(xs),
        // a window of 2h + 1 keys, at most WALK_MAX_WINDOW
        _ if 2 * h < WALK_MAX_WINDOW => return rolling_median_walk(xs, h),
        _ => {}
    }
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let median = window_median;
    // The slot of `k` in the sorted window: the first key not below it.
    let slot = |win: &[u64], k: u64| win.partition_point(|&y| y < k);
    let mut win: Vec<u64> = Vec::with_capacity(2 * h + 2);
    // window for i is [i-h, i+h] ∩ [0, n)
    for &x in xs.iter().take(h.min(n - 1) + 1) {
        let k = key(x);
        win.insert(slot(&win, k), k);
    }
    for i in 0..n {
        out.push(median(&win));
        let add = i + h + 1;
        match (add < n, i >= h) {
            (true, true) => {
                // Replace the outgoing key by the incoming one, keeping order.
                let old = key(xs[i - h]);
                let new = key(xs[add]);
                let r = slot(&win, old);
                if new >= old {
                    let p = r + slot(&win[r + 1..], new);
                    win.copy_within(r + 1..=p, r);
                    win[p] = new;
                } else {
                    let p = slot(&win[..r], new);
                    win.copy_within(p..r, p + 1);
                    win[p] = new;
                }
            }
            (true, false) => {
                let k = key(xs[add]);
                win.insert(slot(&win, k), k);
            }
            (false, true) => {
                let r = slot(&win, key(xs[i - h]));
                win.remove(r);
            }
            (false, false) => {}
        }
    }
    out
}

/// `rolling_median(xs, h)[i]` alone: the median of the window of half-width
/// `h` around `i`, truncated at the edges (`i < xs.len()`).
pub fn median_around(xs: &[f64], i: usize, h: usize) -> f64 {
    let mut win: Vec<u64> = xs[i.saturating_sub(h)..(i + h + 1).min(xs.len())]
        .iter()
        .map(|&x| key(x))
        .collect();
    win.sort_unstable();
    window_median(&win)
}

/// `rolling_median` with h = 1 (n ≥ 3): the median of three in closed form.
fn median_of_three(xs: &[f64]) -> Vec<f64> {
    let n = xs.len();
    let pair = |a: f64, b: f64| {
        let (a, b) = (key(a), key(b));
        window_median(&[a.min(b), a.max(b)])
    };
    let mut out = Vec::with_capacity(n);
    out.push(pair(xs[0], xs[1]));
    out.extend(xs.windows(3).map(|w| {
        let (a, b, c) = (key(w[0]), key(w[1]), key(w[2]));
        unkey(a.min(b).max(a.max(b).min(c)))
    }));
    out.push(pair(xs[n - 2], xs[n - 1]));
    out
}

/// The median of a sorted window of keys (not empty).
#[inline(always)]
fn window_median(win: &[u64]) -> f64 {
    let k = win.len();
    if k % 2 == 1 {
        unkey(win[k / 2])
    } else {
        (unkey(win[k / 2 - 1]) + unkey(win[k / 2])) / 2.0
    }
}

/// `rolling_median` for small windows: value j lives in ring slot j mod
/// (2h+1), and `pos` tracks each slot's place in the sorted window, so the
/// outgoing key is found without a search; the incoming key, which takes the
/// same slot, walks from there to its place.
fn rolling_median_walk(xs: &[f64], h: usize) -> Vec<f64> {
    let n = xs.len();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let cap = 2 * h + 1;
    let mut win: Vec<u64> = Vec::with_capacity(cap);
    // the ring slot of each place, and the place of each ring slot
    let mut ring: Vec<u32> = Vec::with_capacity(cap);
    let mut pos: Vec<u32> = vec![0; cap];
    let reindex = |ring: &[u32], pos: &mut [u32], from: usize| {
        for (p, &r) in ring.iter().enumerate().skip(from) {
            pos[r as usize] = p as u32;
        }
    };
    // window for i is [i-h, i+h] ∩ [0, n)
    for (j, &x) in xs.iter().enumerate().take(h.min(n - 1) + 1) {
        let k = key(x);
        let p = win.partition_point(|&y| y < k);
        win.insert(p, k);
        ring.insert(p, j as u32);
        reindex(&ring, &mut pos, p);
    }
    // (i + h + 1) mod cap: the incoming value's slot, which is also the
    // outgoing one's, (i - h) mod cap
    let mut slot = (h + 1) % cap;
    for i in 0..n {
        out.push(window_median(&win));
        let add = i + h + 1;
        match (add < n, i >= h) {
            (true, true) => {
                // xs[add] replaces xs[i - h] in the same slot
                let new = key(xs[add]);
                let mut p = pos[slot] as usize;
                let len = win.len();
                if new >= win[p] {
                    while p + 1 < len && win[p + 1] < new {
                        win[p] = win[p + 1];
                        let r = ring[p + 1];
                        ring[p] = r;
                        pos[r as usize] = p as u32;
                        p += 1;
                    }
                } else {
                    while p > 0 && win[p - 1] >= new {
                        win[p] = win[p - 1];
                        let r = ring[p - 1];
                        ring[p] = r;
                        pos[r as usize] = p as u32;
                        p -= 1;
                    }
                }
                win[p] = new;
                ring[p] = slot as u32;
                pos[slot] = p as u32;
            }
            (true, false) => {
                let k = key(xs[add]);
                let p = win.partition_point(|&y| y < k);
                win.insert(p, k);
                ring.insert(p, slot as u32);
                reindex(&ring, &mut pos, p);
            }
            (false, true) => {
                let r = pos[slot] as usize;
                win.remove(r);
                ring.remove(r);
                reindex(&ring, &mut pos, r);
            }
            (false, false) => {}
        }
        slot += 1;
        if slot == cap {
            slot = 0;
        }
    }
    out
}

/// Rolling median whose window keeps its full size 2h+1 at the edges (the
/// window is shifted inwards instead of truncated), so an excursion near the
/// start or end of a series cannot drag the edge baseline.
pub fn rolling_median_fixed(xs: &[f64], h: usize) -> Vec<f64> {
    let n = xs.len();
    let mut out = rolling_median(xs, h);
    if n > 2 * h + 1 {
        let (first, last) = (out[h], out[n - 1 - h]);
        for o in out.iter_mut().take(h) {
            *o = first;
        }
        for o in out.iter_mut().skip(n - h) {
            *o = last;
        }
    }
    out
}

/// Result of a Theil–Sen fit `y = intercept + slope·x`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SenFit {
    pub slope: f64,
    pub intercept: f64,
    /// Sen's distribution-free confidence interval for the slope.
    pub slope_lo: f64,
    pub slope_hi: f64,
    /// Kendall's tau between x and y.
    pub tau: f64,
    pub n: usize,
    /// 1.4826 × MAD of the residuals.
    pub resid_sigma: f64,
}

impl SenFit {
    pub fn significant(&self) -> bool {
        self.slope_lo > 0.0 || self.slope_hi < 0.0
    }
}

/// Theil–Sen regression with Sen's (1968) confidence interval at normal
/// quantile `z` (1.96 for 95%). Needs at least 3 points with distinct x.
pub fn theil_sen(x: &[f64], y: &[f64], z: f64) -> Option<SenFit> {
    let n = x.len().min(y.len());
    if n < 3 {
        return None;
    }
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    let mut s: i64 = 0;
    for i in 0..n {
        for j in (i + 1)..n {
            let dx = x[j] - x[i];
            if dx != 0.0 {
                let d = (y[j] - y[i]) / dx;
                slopes.push(d);
                s += if d > 0.0 {
                    1
                } else if d < 0.0 {
                    -1
                } else {
                    0
                };
            }
        }
    }
    let m = slopes.len();
    if m == 0 {
        return None;
    }
    // Order statistics by selection (O(m)) rather than a full sort.
    fn nth_in(v: &mut [f64], k: usize) -> f64 {
        *v.select_nth_unstable_by(k, f64::total_cmp).1
    }
    let nth = |v: &mut Vec<f64>, k: usize| -> f64 { nth_in(v, k) };
    let slope = if m % 2 == 1 {
        nth(&mut slopes, m / 2)
    } else {
        let hi = nth(&mut slopes, m / 2);
        let lo = slopes[..m / 2]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (lo + hi) / 2.0
    };
    let nf = n as f64;
    let var_s = nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0;
    let c = z * var_s.sqrt();
    let lo_rank = ((m as f64 - c) / 2.0).floor();
    let hi_rank = ((m as f64 + c) / 2.0).ceil();
    // With too few points for the requested confidence the interval is
    // unbounded on that side, so it can never exclude zero by accident.
    // The selection of m/2 left the slopes partitioned around it: the other
    // order statistics are selected within the side they are on.
    let mid = m / 2;
    let mut beside_mid = |k: usize| -> f64 {
        match k.cmp(&mid) {
            std::cmp::Ordering::Less => nth_in(&mut slopes[..mid], k),
            std::cmp::Ordering::Equal => slopes[mid],
            std::cmp::Ordering::Greater => nth_in(&mut slopes[mid + 1..], k - mid - 1),
        }
    };
    let slope_lo = if lo_rank < 1.0 {
        f64::NEG_INFINITY
    } else {
        beside_mid(lo_rank as usize - 1)
    };
    let slope_hi = if hi_rank > m as f64 {
        f64::INFINITY
    } else {
        beside_mid((hi_rank as usize).max(1) - 1)
    };
    let mut resid: Vec<f64> = (0..n).map(|i| y[i] - slope * x[i]).collect();
    let intercept = median_in_place(&mut resid);
    let resid: Vec<f64> = (0..n).map(|i| y[i] - intercept - slope * x[i]).collect();
    let resid_sigma = mad(&resid).unwrap_or(0.0) * MAD_TO_SIGMA;
    Some(SenFit {
        slope,
        intercept,
        slope_lo,
        slope_hi,
        tau: s as f64 / m as f64,
        n,
        resid_sigma,
    })
}

/// Two-sided standard normal quantile for a few common confidence levels.
pub fn z_for(confidence: f64) -> f64 {
    if confidence >= 0.99 {
        2.576
    } else if confidence >= 0.95 {
        1.96
    } else if confidence >= 0.9 {
        1.645
    } else {
        1.282
    }
}

/// The upper tail of a statistic, fitted the peaks-over-threshold way: above
/// a high threshold `u`, runs of exceedances are declustered (one peak per
/// run: an anomaly lasting many bins counts once) and the excesses of the
/// peaks follow an exponential distribution of scale `beta` (the generalised
/// Pareto of shape 0). The scale matches the 10th to 60th percentiles of the
/// excesses, so the largest 40% of the peaks — where the anomalies being
/// looked for are — do not shape the tail that judges them.
///
/// No shape is fitted. A series offers tens of independent peaks, from which
/// a shape cannot be told apart from 0 (its standard error at 30 peaks is
/// about ±0.2), and a shape over-estimated from a few large peaks puts the
/// threshold at hundreds of σ: the series' own anomalies then hide each other
/// (measured on NAB's ad-exchange series: shape 0.5, a threshold of 202σ, a
/// labelled 100σ spike missed). The exponential is the limit of every
/// light-to-moderate tail (normal, lognormal, gamma noise) and the common
/// choice when the shape is unknown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tail {
    pub u: f64,
    pub beta: f64,
    /// Clusters above `u` per observation.
    pub rate_u: f64,
    /// Clusters the fit used.
    pub clusters: usize,
}

/// Fraction of observations above the tail threshold `u`: 5%, more for short
/// series so that the fit sees about 20 exceedances.
fn tail_fraction(n: usize) -> f64 {
    (20.0 / n as f64).clamp(0.05, 0.1)
}

/// Exceedances closer than this (observations) belong to one cluster: an
/// excursion that dips under the threshold for a few bins is still one event.
const DECLUSTER_GAP: usize = 6;

/// Fewer independent peaks than this fit no tail: the threshold is then the
/// detector's floor (or just above u).
pub const MIN_TAIL_CLUSTERS: usize = 10;

/// The levels F whose excess quantiles the fit matches.
const TAIL_LEVELS: [f64; 6] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];

/// Scale of the exponential distribution whose quantiles best match (least
/// squares) the sorted excesses' 10th, 20th, …, 60th percentiles: the
/// quantile at F is β·h(F) with h(F) = −ln(1 − F), so β = Σ h·x / Σ h².
fn exp_scale_by_quantiles(y: &[f64]) -> f64 {
    let q = |f: f64| {
        let x = f * (y.len() - 1) as f64;
        let (i, t) = (x.floor() as usize, x.fract());
        y[i] + t * (y[(i + 1).min(y.len() - 1)] - y[i])
    };
    let (mut hx, mut hh) = (0.0, 0.0);
    for f in TAIL_LEVELS {
        let h = -(1.0 - f).ln();
        hx += h * q(f);
        hh += h * h;
    }
    (hx / hh).max(f64::MIN_POSITIVE)
}

impl Tail {
    /// The high quantile above which the tail is fitted (`None` for fewer
    /// than 50 finite values).
    pub fn high_quantile(xs: &[f64]) -> Option<f64> {
        let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        let n = v.len();
        if n < 50 {
            return None;
        }
        let k = ((n as f64) * tail_fraction(n)).ceil() as usize;
        Some(
            *v.select_nth_unstable_by(n - 1 - k.min(n - 1), f64::total_cmp)
                .1,
        )
    }

    /// Fits the upper tail of `xs` (non-finite values are skipped). `None`
    /// with fewer than `MIN_TAIL_CLUSTERS` clusters above `u`: too little
    /// tail to extrapolate.
    pub fn fit(xs: &[f64]) -> Option<Tail> {
        Tail::fit_above(xs, Tail::high_quantile(xs)?)
    }

    /// [`Tail::fit`] above `u`, which is `Tail::high_quantile(xs)`.
    pub fn fit_above(xs: &[f64], u: f64) -> Option<Tail> {
        let n = xs.iter().filter(|x| x.is_finite()).count();
        // cluster peaks: runs of values above u, gaps of up to DECLUSTER_GAP merged
        let mut peaks: Vec<f64> = Vec::new();
        let mut last_above: Option<usize> = None;
        for (i, &x) in xs.iter().enumerate() {
            if !(x.is_finite() && x > u) {
                continue;
            }
            match (last_above, peaks.last_mut()) {
                (Some(j), Some(p)) if i - j <= DECLUSTER_GAP => *p = p.max(x),
                _ => peaks.push(x),
            }
            last_above = Some(i);
        }
        let clusters = peaks.len();
        if clusters < MIN_TAIL_CLUSTERS {
            return None;
        }
        peaks.sort_by(f64::total_cmp);
        let y: Vec<f64> = peaks.iter().map(|p| p - u).collect();
        Some(Tail {
            u,
            beta: exp_scale_by_quantiles(&y),
            rate_u: clusters as f64 / n as f64,
            clusters,
        })
    }

    /// The level that independent clusters exceed at a rate of `q` per
    /// observation (`u` when `q` is not below the rate at `u`).
    pub fn quantile(&self, q: f64) -> f64 {
        if q.is_nan() || q <= 0.0 || q >= self.rate_u {
            return self.u;
        }
        self.u - self.beta * (q / self.rate_u).ln()
    }

    /// Rate per observation of clusters exceeding `x`.
    pub fn rate(&self, x: f64) -> f64 {
        if x <= self.u {
            return self.rate_u;
        }
        self.rate_u * (-(x - self.u) / self.beta).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_median(xs: &[f64]) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(mad(&[1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0]), Some(1.0));
    }

    #[test]
    fn rolling_median_matches_naive() {
        let mut state = 12345u64;
        let xs: Vec<f64> = (0..300)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % 1000) as f64 / 10.0
            })
            .collect();
        for h in [0usize, 1, 3, 10, 30, 400] {
            let got = rolling_median(&xs, h);
            for (i, g) in got.iter().enumerate() {
                let lo = i.saturating_sub(h);
                let hi = (i + h + 1).min(xs.len());
                assert_eq!(*g, naive_median(&xs[lo..hi]), "h={h} i={i}");
            }
        }
    }

    /// Values for property tests: few distinct values (ties) or many,
    /// with signed zeros, infinities and NaNs of both signs mixed in.
    fn awkward(state: &mut u64, n: usize) -> Vec<f64> {
        let distinct = 1 + (uniform(state) * 4.0) as u64 * 40; // 1, 41, 81 or 121
        let specials = [
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
        ];
        let special_rate = [0.0, 0.02, 0.2][(uniform(state) * 3.0) as usize];
        (0..n)
            .map(|_| {
                if uniform(state) < special_rate {
                    specials[(uniform(state) * 6.0) as usize]
                } else {
                    ((uniform(state) * distinct as f64) as u64) as f64 / 4.0 - 10.0
                }
            })
            .collect()
    }

    /// Bit-for-bit equality (a NaN equals the same NaN).
    fn same(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn rolling_median_property_equals_sorting_every_window() {
        let naive = |xs: &[f64], h: usize| -> Vec<f64> {
            (0..xs.len())
                .map(|i| naive_median(&xs[i.saturating_sub(h)..(i + h + 1).min(xs.len())]))
                .collect::<Vec<f64>>()
        };
        let mut state = 2026u64;
        for case in 0..3000 {
            let n = (uniform(&mut state) * 260.0) as usize;
            // every window strategy (h = 0, the median of three, the walk,
            // binary search), windows longer than the series
            let h = match case % 4 {
                0 => (uniform(&mut state) * 8.0) as usize,
                1 => (uniform(&mut state) * 60.0) as usize,
                2 => 20 + (uniform(&mut state) * 10.0) as usize,
                _ => (uniform(&mut state) * 300.0) as usize,
            };
            let xs = awkward(&mut state, n);
            let want = naive(&xs, h);
            assert!(
                same(&rolling_median(&xs, h), &want),
                "case {case} n={n} h={h} {xs:?}"
            );
            let one: Vec<f64> = (0..n).map(|i| median_around(&xs, i, h)).collect();
            assert!(same(&one, &want), "median_around: case {case} n={n} h={h}");
            // fixed: interior as above, the edges the first and last full window's
            let mut fixed = want.clone();
            if n > 2 * h + 1 {
                for i in 0..h {
                    fixed[i] = want[h];
                    fixed[n - 1 - i] = want[n - 1 - h];
                }
            }
            assert!(
                same(&rolling_median_fixed(&xs, h), &fixed),
                "case {case} n={n} h={h}"
            );
        }
    }

    #[test]
    fn theil_sen_property_equals_sorting_all_slopes() {
        let mut state = 99u64;
        for case in 0..400 {
            let n = 3 + (uniform(&mut state) * 60.0) as usize;
            let x: Vec<f64> = (0..n)
                .map(|i| {
                    if case % 3 == 0 {
                        (i / 2) as f64
                    } else {
                        i as f64
                    }
                })
                .collect();
            let y: Vec<f64> = awkward(&mut state, n)
                .into_iter()
                .map(|v| if v.is_finite() { v } else { 1.0 })
                .collect();
            let z = [1.282, 1.96, 2.576][case % 3];
            let Some(f) = theil_sen(&x, &y, z) else {
                continue;
            };
            let mut s: Vec<f64> = Vec::new();
            for i in 0..n {
                for j in (i + 1)..n {
                    if x[j] != x[i] {
                        s.push((y[j] - y[i]) / (x[j] - x[i]));
                    }
                }
            }
            s.sort_by(f64::total_cmp);
            let m = s.len();
            assert_eq!(f.slope.to_bits(), naive_median(&s).to_bits(), "case {case}");
            let c = z * (n as f64 * (n as f64 - 1.0) * (2.0 * n as f64 + 5.0) / 18.0).sqrt();
            let (lo, hi) = (
                ((m as f64 - c) / 2.0).floor(),
                ((m as f64 + c) / 2.0).ceil(),
            );
            let want_lo = if lo < 1.0 {
                f64::NEG_INFINITY
            } else {
                s[lo as usize - 1]
            };
            let want_hi = if hi > m as f64 {
                f64::INFINITY
            } else {
                s[(hi as usize).max(1) - 1]
            };
            assert_eq!(f.slope_lo.to_bits(), want_lo.to_bits(), "case {case}");
            assert_eq!(f.slope_hi.to_bits(), want_hi.to_bits(), "case {case}");
        }
    }

    #[test]
    fn theil_sen_recovers_line_despite_outliers() {
        let x: Vec<f64> = (0..30).map(|i| i as f64).collect();
        let mut y: Vec<f64> = x
            .iter()
            .map(|x| 2.0 + 0.5 * x + if (*x as i64) % 2 == 0 { 0.1 } else { -0.1 })
            .collect();
        y[5] = 100.0;
        y[20] = -50.0;
        let f = theil_sen(&x, &y, 1.96).unwrap();
        assert!((f.slope - 0.5).abs() < 0.02, "{f:?}");
        assert!((f.intercept - 2.0).abs() < 0.3, "{f:?}");
        assert!(f.significant());
        assert!(f.slope_lo <= f.slope && f.slope <= f.slope_hi);
        assert!(f.tau > 0.8);
    }

    #[test]
    fn theil_sen_matches_sorted_oracle() {
        let x: Vec<f64> = (0..40).map(|i| i as f64).collect();
        let y: Vec<f64> = (0..40)
            .map(|i| 0.3 * i as f64 + ((i * 37 % 11) as f64 - 5.0))
            .collect();
        let f = theil_sen(&x, &y, 1.96).unwrap();
        let mut s: Vec<f64> = Vec::new();
        for i in 0..40 {
            for j in (i + 1)..40 {
                s.push((y[j] - y[i]) / (x[j] - x[i]));
            }
        }
        s.sort_by(f64::total_cmp);
        let m = s.len();
        assert_eq!(
            f.slope,
            if m % 2 == 1 {
                s[m / 2]
            } else {
                (s[m / 2 - 1] + s[m / 2]) / 2.0
            }
        );
        let c = 1.96 * (40.0f64 * 39.0 * 85.0 / 18.0).sqrt();
        assert_eq!(f.slope_lo, s[((m as f64 - c) / 2.0).floor() as usize - 1]);
        assert_eq!(f.slope_hi, s[((m as f64 + c) / 2.0).ceil() as usize - 1]);
    }

    #[test]
    fn theil_sen_flat_noise_is_not_significant() {
        let x: Vec<f64> = (0..24).map(|i| i as f64).collect();
        let y: Vec<f64> = (0..24)
            .map(|i| [1.0, -1.0, 0.5, -0.5, 0.0, 0.3][i % 6])
            .collect();
        let f = theil_sen(&x, &y, 1.96).unwrap();
        assert!(!f.significant(), "{f:?}");
    }

    /// Uniform in (0, 1) from a 64-bit LCG.
    fn uniform(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    #[test]
    fn tail_of_exponential_noise_has_the_right_scale_and_quantiles() {
        // Exp(1) by inversion of a fixed uniform sequence, P(X > x) = e^-x,
        // every 10th value (the rest far below): exceedances never merge
        // into clusters, so cluster peaks are the exceedances themselves.
        let mut state = 7u64;
        let xs: Vec<f64> = (0..100_000)
            .map(|i| {
                let u = uniform(&mut state);
                if i % 10 == 0 {
                    -u.ln()
                } else {
                    -1.0
                }
            })
            .collect();
        let t = Tail::fit(&xs).unwrap();
        assert!((t.beta - 1.0).abs() < 0.15, "{t:?}");
        // one value in 10 is exponential: the 1e-5 quantile is ln(1e4)
        let q = t.quantile(1e-5);
        assert!((q - 1e4f64.ln()).abs() < 0.8, "{q} {t:?}");
        assert!((t.rate(q) - 1e-5).abs() < 1e-7);
        assert_eq!(t.quantile(0.5), t.u);
    }

    #[test]
    fn exponential_scale_matches_exact_quantiles() {
        // excesses at exactly the quantiles of Exp(2.5): β = 2.5
        let y: Vec<f64> = (0..1001)
            .map(|i| -2.5 * (1.0 - i as f64 / 1001.0).ln())
            .collect();
        assert!((exp_scale_by_quantiles(&y) - 2.5).abs() < 0.01);
        // all ties at 0: the smallest positive scale, never 0 or NaN
        assert_eq!(exp_scale_by_quantiles(&[0.0; 20]), f64::MIN_POSITIVE);
    }

    #[test]
    fn outliers_do_not_inflate_the_tail() {
        // Exp(1) noise; the 1e-4 level is fitted from the bulk of the peaks
        let mut state = 11u64;
        let mut xs: Vec<f64> = (0..100_000).map(|_| -uniform(&mut state).ln()).collect();
        let clean = Tail::fit(&xs).unwrap();
        let q = clean.quantile(1e-4);
        // five huge outliers (the anomalies) barely move the fitted tail
        for i in [100, 5000, 15000, 60000, 90000] {
            xs[i] = 1000.0;
        }
        let dirty = Tail::fit(&xs).unwrap();
        assert!(
            (dirty.quantile(1e-4) - q).abs() < 0.05 * q,
            "{dirty:?} vs {clean:?}"
        );
        assert!(dirty.rate(1000.0) < 1e-12);
    }

    #[test]
    fn a_few_large_peaks_do_not_raise_the_threshold_out_of_reach() {
        // Gaussian-like noise plus six spikes of 60 to 120 (the NAB
        // ad-exchange shape): the spikes stay far above the level noise
        // reaches once in 10 series of 1,600 bins.
        let mut state = 5u64;
        let mut xs: Vec<f64> = (0..1600)
            .map(|_| (0..12).map(|_| uniform(&mut state)).sum::<f64>() - 6.0)
            .collect();
        for (k, i) in [100, 300, 500, 800, 1100, 1400].into_iter().enumerate() {
            xs[i] = 60.0 + 12.0 * k as f64;
        }
        let t = Tail::fit(&xs).unwrap();
        let level = t.quantile(0.1 / 1600.0);
        assert!(level < 20.0, "{level} {t:?}");
    }

    #[test]
    fn tail_declusters_runs_and_needs_enough_peaks() {
        let mut state = 3u64;
        let mut xs: Vec<f64> = (0..2000).map(|_| uniform(&mut state)).collect();
        let before = Tail::fit(&xs).unwrap();
        // a run of 10 far above the rest counts as one cluster
        for x in xs.iter_mut().skip(100).take(10) {
            *x = 50.0;
        }
        let after = Tail::fit(&xs).unwrap();
        assert!(
            after.clusters <= before.clusters + 1,
            "{before:?} {after:?}"
        );
        assert!(Tail::fit(&xs[..40]).is_none());
        // nine separate peaks are too few for a tail, ten are enough
        let mut sparse = vec![0.0; 1000];
        for k in 0..9 {
            sparse[k * 100] = 1.0 + k as f64;
        }
        assert!(Tail::fit(&sparse).is_none());
        sparse[950] = 5.0;
        assert_eq!(
            Tail::fit(&sparse).map(|t| t.clusters),
            Some(MIN_TAIL_CLUSTERS)
        );
        assert!(Tail::fit(&[1.0; 500]).is_none(), "no values above u");
    }
}
