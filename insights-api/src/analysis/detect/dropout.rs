//! Dropouts: on the time grid of the data, runs of bins that are missing or
//! hold clearly fewer samples than usual. Only for a source that reports
//! regularly: when its own history has short bins more often than
//! `dropout_regular_frac` of the time, silence is how it normally behaves.

use crate::analysis::params::Params;
use crate::analysis::series::Series;
use crate::stats::median;

use super::{Basis, Window};

/// Each bin of the grid over `[first, last)`: the samples it holds.
fn grid(s: &Series, first: i64, last: i64) -> Vec<(i64, f64, usize)> {
    let mut out = Vec::new();
    let mut k = 0usize;
    let mut t = first;
    while t < last {
        while k < s.len() && s.ts[k] < t {
            k += 1;
        }
        if k < s.len() && s.ts[k] == t {
            out.push((t, s.count[k] as f64, k));
        } else {
            out.push((t, 0.0, k.min(s.len().saturating_sub(1))));
        }
        t += s.width;
    }
    out
}

/// Runs of short bins losing at least one bin's worth (and
/// `dropout_min_samples`) of samples, judged within `span`.
pub fn dropouts(s: &Series, p: &Params, span: (i64, i64)) -> Vec<Window> {
    let n = s.len();
    if n == 0 || s.width <= 0 {
        return Vec::new();
    }
    let usual = median(&s.count.iter().map(|&c| c as f64).collect::<Vec<_>>()).unwrap_or(0.0);
    if usual <= 0.0 {
        return Vec::new();
    }
    let first = span.0.min(s.ts[0]);
    let last = span.1.max(s.ts[n - 1] + s.width);
    let g = grid(s, first, last);
    let low = |c: f64| c == 0.0 || (usual >= 4.0 && c < 0.75 * usual);
    // Irregular reporters: short bins are part of their normal behaviour.
    let lows = g.iter().filter(|x| low(x.1)).count();
    if lows as f64 > p.dropout_regular_frac * g.len() as f64 {
        return Vec::new();
    }
    let need = (p.dropout_min_bins as f64 * usual).max(p.dropout_min_samples);
    let mut out = Vec::new();
    let mut i = 0;
    while i < g.len() {
        if !low(g[i].1) {
            i += 1;
            continue;
        }
        let a = i;
        while i < g.len() && low(g[i].1) {
            i += 1;
        }
        let missing: f64 = g[a..i].iter().map(|x| (usual - x.1).max(0.0)).sum();
        let received: f64 = g[a..i].iter().map(|x| x.1).sum();
        if missing >= need {
            let end = if i < g.len() { g[i].0 } else { last };
            let k = g[a].2;
            let mut w = Window::new(
                k,
                k,
                "dropout",
                Basis::Missing {
                    usual,
                    received: received / (usual * (i - a) as f64),
                },
            );
            w.typical = usual;
            w.start_override = Some(g[a].0);
            w.end_override = Some(end);
            out.push(w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(counts: &[i64]) -> Series {
        let mut s = Series::new("srv-1", "cpu", 60);
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 {
                s.ts.push(i as i64 * 60);
                s.count.push(c);
                s.avg.push(1.0);
                s.min.push(1.0);
                s.max.push(1.0);
            }
        }
        s
    }

    #[test]
    fn gaps_and_short_bins_of_a_regular_source() {
        let mut c = vec![60i64; 200];
        for x in c.iter_mut().skip(50).take(3) {
            *x = 0;
        }
        c[120] = 20; // a third of the samples: short
        c[121] = 30;
        c[160] = 50; // above 75%: fine
        let s = series(&c);
        let w = dropouts(&s, &Params::default(), (0, 200 * 60));
        let spans: Vec<(i64, i64)> = w
            .iter()
            .map(|w| (w.start_override.unwrap() / 60, w.end_override.unwrap() / 60))
            .collect();
        assert_eq!(spans, [(50, 53), (120, 122)]);
        assert_eq!(
            w[0].basis,
            Basis::Missing {
                usual: 60.0,
                received: 0.0
            }
        );
    }

    #[test]
    fn an_irregular_source_has_no_dropouts_and_one_missed_report_is_none() {
        // every fourth bin empty: 25% of the grid is short
        let c: Vec<i64> = (0..400).map(|i| if i % 4 == 0 { 0 } else { 12 }).collect();
        assert!(dropouts(&series(&c), &Params::default(), (0, 400 * 60)).is_empty());
        // one sample per bin, one missing: not a dropout; three missing: one
        let mut c = vec![1i64; 300];
        c[100] = 0;
        c[200] = 0;
        c[201] = 0;
        c[202] = 0;
        let w = dropouts(&series(&c), &Params::default(), (0, 300 * 60));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].start_override, Some(200 * 60));
    }
}
