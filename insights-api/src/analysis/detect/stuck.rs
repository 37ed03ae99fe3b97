//! Stuck: the same value repeated. A bin of several samples whose min equals
//! its max is flat; consecutive flat bins with one value are stuck (with one
//! sample per bin, `stuck_min_bins` equal averages are needed). A repeat is
//! reported only when the series varied before it: a series that was flat
//! from the start, or whose history before the repeat is mostly repeats too
//! (more than `STUCK_NORMAL`: a square wave, an idle counter), is flat by
//! nature, not stuck. Never at a clamp bound (0, or 100 for percentages).

use crate::analysis::params::Params;
use crate::analysis::series::{is_percent, Series};

use super::{Basis, Window};

/// Share of the history before a repeat that may be repeats for it to count.
const STUCK_NORMAL: f64 = 0.1;

fn eq(x: f64, y: f64) -> bool {
    (x - y).abs() <= 1e-9 * x.abs().max(1.0)
}

/// Stuck windows and the mask of every repeated run's bins (reported or not:
/// excursions are not judged on a repeated value).
pub fn stuck(s: &Series, p: &Params) -> (Vec<Window>, Vec<bool>) {
    let n = s.len();
    let v = &s.avg;
    let w = s.width;
    let mut out = Vec::new();
    let mut excluded = vec![false; n];
    let flat: Vec<bool> = (0..n)
        .map(|i| s.count[i] >= 2 && eq(s.max[i], s.min[i]))
        .collect();
    // bins in repeats so far, and the longest repeat (bins)
    let (mut repeated, mut longest) = (0usize, 0usize);
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && s.ts[j] - s.ts[j - 1] == w && eq(v[j], v[i]) && flat[j] == flat[i] {
            j += 1;
        }
        let len = j - i;
        let at_bound = v[i] == 0.0 || (is_percent(&s.metric) && v[i] == 100.0);
        let need = if flat[i] {
            p.stuck_min_flat_bins
        } else {
            p.stuck_min_bins
        };
        if len >= need && !at_bound {
            // partial stuck bins at the edges: the neighbour whose min or max equals the value
            let a = if i > 0 && (eq(s.min[i - 1], v[i]) || eq(s.max[i - 1], v[i])) {
                i - 1
            } else {
                i
            };
            let b = if j < n && (eq(s.min[j], v[i]) || eq(s.max[j], v[i])) {
                j + 1
            } else {
                j
            };
            for e in excluded.iter_mut().take(b).skip(a) {
                *e = true;
            }
            let varied_before = i > 0 && (repeated as f64) <= STUCK_NORMAL * i as f64;
            if varied_before {
                let mut wdw = Window::new(
                    a,
                    b,
                    "stuck",
                    Basis::Repeat {
                        value: v[i],
                        longest_before: longest,
                    },
                );
                wdw.peak_i = i;
                wdw.typical = v[i];
                out.push(wdw);
            }
        }
        if len >= need && !at_bound {
            repeated += len;
            longest = longest.max(len);
        }
        i = j;
    }
    (out, excluded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(vals: &[f64], flat: bool) -> Series {
        let mut s = Series::new("srv-1", "disk_io", 60);
        for (i, &v) in vals.iter().enumerate() {
            s.ts.push(i as i64 * 60);
            s.count.push(if flat { 60 } else { 1 });
            s.avg.push(v);
            let d = if flat { 0.0 } else { 0.5 };
            s.min.push(v - d * (i % 2) as f64);
            s.max.push(v + d * (i % 2) as f64);
        }
        s
    }

    fn wiggle(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 30.0 + ((i * 37) % 11) as f64 / 3.0)
            .collect()
    }

    #[test]
    fn a_repeat_after_variation_is_stuck() {
        let mut v = wiggle(300);
        for x in v.iter_mut().skip(100).take(12) {
            *x = 31.25;
        }
        let mut s = series(&v, false);
        for i in 100..112 {
            s.min[i] = 31.25;
            s.max[i] = 31.25;
        }
        let (w, mask) = stuck(&s, &Params::default());
        assert_eq!(w.len(), 1, "{w:#?}");
        assert_eq!((w[0].a, w[0].b), (100, 112));
        assert_eq!(
            w[0].basis,
            Basis::Repeat {
                value: 31.25,
                longest_before: 0
            }
        );
        assert_eq!(mask.iter().filter(|&&m| m).count(), 12);
    }

    #[test]
    fn a_second_repeat_is_stuck_too() {
        let mut v = wiggle(600);
        for (a, b, x) in [(100, 112, 31.25), (400, 406, 33.5)] {
            for y in v.iter_mut().take(b).skip(a) {
                *y = x;
            }
        }
        let s = series(&v, true);
        let (w, _) = stuck(&s, &Params::default());
        assert_eq!(w.len(), 2, "{w:#?}");
        assert_eq!(
            w[1].basis,
            Basis::Repeat {
                value: 33.5,
                longest_before: 12
            }
        );
    }

    #[test]
    fn flat_by_nature_is_not_stuck() {
        // flat from the start
        let (w, mask) = stuck(&series(&[45.0; 300], true), &Params::default());
        assert!(w.is_empty());
        assert!(mask.iter().all(|&m| m), "not judged as excursions either");
        // a square wave: every half-period repeats the last one
        let sq: Vec<f64> = (0..600)
            .map(|i| if (i / 50) % 2 == 0 { 20.0 } else { 80.0 })
            .collect();
        let (w, _) = stuck(&series(&sq, true), &Params::default());
        assert!(w.is_empty(), "{w:#?}");
        // at the clamp bound
        let mut v = wiggle(200);
        for x in v.iter_mut().skip(50).take(20) {
            *x = 0.0;
        }
        let (w, _) = stuck(&series(&v, false), &Params::default());
        assert!(w.is_empty());
    }
}
