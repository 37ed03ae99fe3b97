//! Synthetic series with known anomalies, shared by unit tests.

use super::Series;

/// Deterministic pseudo-random numbers (PCG-like), approx. N(0,1) via sums.
pub struct Rng(pub u64);
impl Rng {
    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
    pub fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

/// A day of one-minute bins: daily sine around `level` plus noise.
pub fn day(server: &str, metric: &str, t0: i64, level: f64, noise: f64, seed: u64) -> Series {
    let mut rng = Rng(seed);
    let mut s = Series::new(server, metric, 60);
    for i in 0..1440i64 {
        let t = t0 + i * 60;
        let season = 10.0 * (2.0 * std::f64::consts::PI * (i as f64) / 1440.0).sin();
        let v = level + season + noise * rng.normal();
        s.ts.push(t);
        s.count.push(12);
        s.avg.push(v);
        s.min.push(v - noise);
        s.max.push(v + noise);
    }
    s
}

/// Removes the bins with indices in `gone` (a dropout).
pub fn without(s: &mut Series, gone: std::ops::Range<usize>) {
    let keep: Vec<usize> = (0..s.len()).filter(|i| !gone.contains(i)).collect();
    let pick = |v: &Vec<f64>| keep.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    s.avg = pick(&s.avg);
    s.min = pick(&s.min);
    s.max = pick(&s.max);
    s.ts = keep.iter().map(|&i| s.ts[i]).collect();
    s.count = keep.iter().map(|&i| s.count[i]).collect();
}

/// The analysis of one day of one-minute bins from `t0`, and the facts a
/// narrative may cite (the period fact first).
pub fn day_facts(series: Vec<Series>, t0: i64) -> (super::Analysis, Vec<super::Fact>) {
    let n = {
        let mut v: Vec<&str> = series.iter().map(|s| s.server.as_str()).collect();
        v.dedup();
        v.len()
    };
    let an = super::analyse(
        &super::Dataset { width: 60, series },
        (t0, t0 + 86400),
        None,
        &super::Params::default(),
    );
    let mut facts = vec![crate::narrative::period_fact(&an, 24.0, n)];
    facts.extend(an.facts.clone());
    (an, facts)
}
