//! Slow leaks (hours long) against the fleet's median curve, behind
//! `Params::slow_leaks` (off by default: without history a diurnal rise
//! looks like a leak). A sustained monotone rise in fleet-relative block
//! medians, too large for the noise, climbing without one dominant step.

use std::collections::HashMap;

use crate::stats::{mad, median_in_place, theil_sen, MAD_TO_SIGMA};

use super::{Basis, Ctx, Window};

/// Runs of `true` as [a, b) index ranges.
fn runs_of_true(mask: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < mask.len() {
        if mask[i] {
            let a = i;
            while i < mask.len() && mask[i] {
                i += 1;
            }
            out.push((a, i));
        } else {
            i += 1;
        }
    }
    out
}

pub fn slow_leaks(c: &Ctx, fleet_blocks: &HashMap<i64, f64>, block: i64) -> Vec<Window> {
    let (s, p) = (c.s, c.p);
    let n = s.len();
    let v = &s.avg;
    let sigma = c.base.sigma;
    let mut out = Vec::new();
    if n == 0 || s.ts[n - 1] - s.ts[0] < p.leak_min_secs {
        return out;
    }
    let mut bstart: Vec<i64> = Vec::new();
    let mut bval: Vec<f64> = Vec::new();
    let mut bidx: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < n {
        let k = s.ts[i].div_euclid(block);
        let a = i;
        while i < n && s.ts[i].div_euclid(block) == k {
            i += 1;
        }
        let mut vals: Vec<f64> = v[a..i].to_vec();
        let mut m = median_in_place(&mut vals);
        if let Some(f) = fleet_blocks.get(&(k * block)) {
            m -= f;
        }
        bstart.push(k * block);
        bval.push(m);
        bidx.push((a, i));
    }
    let nb = bval.len();
    let win = ((p.leak_min_secs / block) as usize).max(4);
    if nb < win {
        return out;
    }
    let bsig = {
        let d: Vec<f64> = bval.windows(2).map(|x| x[1] - x[0]).collect();
        (mad(&d).unwrap_or(0.0) * MAD_TO_SIGMA / std::f64::consts::SQRT_2).max(sigma / 4.0)
    };
    let mut rising = vec![false; nb];
    for st in 0..=(nb - win) {
        let xs: Vec<f64> = bstart[st..st + win]
            .iter()
            .map(|&t| (t - bstart[st]) as f64 / 3600.0)
            .collect();
        if let Some(f) = theil_sen(&xs, &bval[st..st + win], 1.96) {
            let rise = f.slope * (xs[win - 1] - xs[0]);
            if f.tau >= 0.7 && rise > 0.0 && rise >= 4.0 * bsig {
                for r in rising.iter_mut().skip(st).take(win) {
                    *r = true;
                }
            }
        }
    }
    for (a, b) in runs_of_true(&rising) {
        if b - a < win {
            continue;
        }
        // trim to the rising part: from the lowest to the highest block
        let lo = (a..b)
            .min_by(|&x, &y| bval[x].total_cmp(&bval[y]))
            .unwrap_or(a);
        let hi = (lo..b)
            .max_by(|&x, &y| bval[x].total_cmp(&bval[y]))
            .unwrap_or(b - 1);
        if hi <= lo {
            continue;
        }
        let rise = bval[hi] - bval[lo];
        let steps: f64 = (lo..hi)
            .map(|k| (bval[k + 1] - bval[k]).max(0.0))
            .fold(0.0, f64::max);
        let dur = bstart[hi] + block - bstart[lo];
        if dur < p.leak_min_secs
            || rise < p.leak_min_rise_sigma * sigma.min(bsig * 2.0).max(p.abs_floor)
            || steps > 0.5 * rise
        {
            continue;
        }
        let (ia, ib) = (bidx[lo].0, bidx[hi].1);
        let mut w = Window::new(ia, ib, "leak", Basis::Fleet);
        w.z = rise / sigma;
        w.peak_i = (ia..ib)
            .max_by(|&x, &y| v[x].total_cmp(&v[y]))
            .unwrap_or(ia);
        w.typical =
            v[ia..(ia + 5).min(ib)].iter().copied().sum::<f64>() / ((ia + 5).min(ib) - ia) as f64;
        out.push(w);
    }
    out
}
