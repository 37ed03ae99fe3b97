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

/// Centred rolling median with half-width `h` (window 2h+1, truncated at the
/// edges). A sorted window of order-preserving keys: each step moves the
/// outgoing value's slot to the incoming value's place with one shift of the
/// keys between them, O(n·h) with a small constant for the windows used here.
pub fn rolling_median(xs: &[f64], h: usize) -> Vec<f64> {
    let n = xs.len();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let median = |win: &[u64]| {
        let k = win.len();
        if k % 2 == 1 {
            unkey(win[k / 2])
        } else {
            (unkey(win[k / 2 - 1]) + unkey(win[k / 2])) / 2.0
        }
    };
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
    let nth =
        |v: &mut Vec<f64>, k: usize| -> f64 { *v.select_nth_unstable_by(k, f64::total_cmp).1 };
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
    let slope_lo = if lo_rank < 1.0 {
        f64::NEG_INFINITY
    } else {
        nth(&mut slopes, lo_rank as usize - 1)
    };
    let slope_hi = if hi_rank > m as f64 {
        f64::INFINITY
    } else {
        nth(&mut slopes, (hi_rank as usize).max(1) - 1)
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
}
