//! The generator: a pure, sequential function of its configuration. It walks
//! the sample grid `start + k·interval` (k = 0, 1, …) time-major: for each
//! timestamp every server, for each server every selected metric. Rows go to
//! a [`RowSink`]; the output does not depend on how the run is cut into
//! batches.

use crate::anomaly::{Event, Label, Planner};
use crate::model::{Metric, Season, SeriesState, ServerModel};

/// Everything that determines the data. The same `GenConfig` gives the same
/// rows, byte for byte.
#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    pub seed: u64,
    pub servers: Vec<String>,
    pub metrics: Vec<Metric>,
    /// First sample, microseconds since the Unix epoch.
    pub start_us: i64,
    pub interval_us: i64,
    /// Number of timestamps; `None` runs forever (live mode).
    pub steps: Option<u64>,
    /// Expected anomalies per server per day.
    pub anomaly_rate: f64,
}

impl GenConfig {
    pub fn ts(&self, k: u64) -> i64 {
        self.start_us + k as i64 * self.interval_us
    }

    /// Rows of a run without dropouts: steps × servers × metrics.
    pub fn full_rows(&self) -> Option<u64> {
        self.steps
            .map(|s| s * self.servers.len() as u64 * self.metrics.len() as u64)
    }
}

/// Receives generated rows. `server` indexes `GenConfig::servers`.
pub trait RowSink {
    fn row(&mut self, server: usize, metric: Metric, ts_us: i64, value: f64);
}

/// Collects rows in memory (tests, small runs).
#[derive(Default, Debug)]
pub struct VecSink(pub Vec<(usize, Metric, i64, f64)>);

impl RowSink for VecSink {
    fn row(&mut self, server: usize, metric: Metric, ts_us: i64, value: f64) {
        self.0.push((server, metric, ts_us, value));
    }
}

pub struct Generator {
    cfg: GenConfig,
    models: Vec<ServerModel>,
    states: Vec<SeriesState>,
    planner: Planner,
    /// Next epoch to plan.
    next_epoch: u64,
    events: Vec<Option<Event>>,
    hold: Vec<[f64; 4]>,
    next_k: u64,
    labels: Vec<Label>,
    rows: u64,
}

impl Generator {
    pub fn new(cfg: GenConfig) -> Generator {
        let models = cfg
            .servers
            .iter()
            .map(|n| ServerModel::new(cfg.seed, n))
            .collect();
        let states = cfg
            .servers
            .iter()
            .map(|n| SeriesState::new(cfg.seed, n))
            .collect();
        let planner = Planner::new(
            cfg.seed,
            cfg.anomaly_rate,
            cfg.interval_us,
            cfg.steps,
            &cfg.metrics,
            &cfg.servers,
        );
        let n = cfg.servers.len();
        Generator {
            cfg,
            models,
            states,
            planner,
            next_epoch: 0,
            events: vec![None; n],
            hold: vec![[0.0; 4]; n],
            next_k: 0,
            labels: Vec::new(),
            rows: 0,
        }
    }

    pub fn config(&self) -> &GenConfig {
        &self.cfg
    }

    /// Index of the next timestamp to generate.
    pub fn next_index(&self) -> u64 {
        self.next_k
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn is_done(&self) -> bool {
        self.cfg.steps.is_some_and(|s| self.next_k >= s)
    }

    pub fn profile_of(&self, server: usize) -> crate::model::Profile {
        self.models[server].profile
    }

    /// Labels planned so far that have not been taken yet. A label appears as
    /// soon as its epoch is planned, possibly before its samples are made.
    pub fn take_labels(&mut self) -> Vec<Label> {
        std::mem::take(&mut self.labels)
    }

    /// Generates up to `steps` timestamps; returns how many it made.
    pub fn generate<S: RowSink>(&mut self, steps: u64, sink: &mut S) -> u64 {
        let end = match self.cfg.steps {
            Some(total) => (self.next_k + steps).min(total),
            None => self.next_k + steps,
        };
        let made = end.saturating_sub(self.next_k);
        let metrics = self.cfg.metrics.clone();
        for k in self.next_k..end {
            if k / self.planner.epoch_len >= self.next_epoch {
                self.plan_next_epoch();
            }
            let ts = self.cfg.ts(k);
            let season = Season::at(ts);
            for s in 0..self.models.len() {
                let base = self.models[s].step(&mut self.states[s], &season);
                match &self.events[s] {
                    Some(ev) if k >= ev.start && k < ev.end => {
                        if k == ev.start {
                            self.hold[s] = base;
                            self.labels.extend(ev.labels(s, &base));
                        }
                        for &m in &metrics {
                            let i = m.index();
                            if let Some(v) = ev.apply(m, k, base[i], self.hold[s][i]) {
                                sink.row(s, m, ts, v);
                                self.rows += 1;
                            }
                        }
                    }
                    _ => {
                        for &m in &metrics {
                            sink.row(s, m, ts, base[m.index()]);
                        }
                        self.rows += metrics.len() as u64;
                    }
                }
            }
        }
        self.next_k = end;
        made
    }

    fn plan_next_epoch(&mut self) {
        self.events = self.planner.plan(self.next_epoch, &self.models);
        self.next_epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::Kind;
    use crate::timefmt::parse_rfc3339;
    use std::collections::HashMap;

    fn cfg(seed: u64, rate: f64) -> GenConfig {
        GenConfig {
            seed,
            servers: (1..=6).map(|i| format!("srv-{i}")).collect(),
            metrics: Metric::ALL.to_vec(),
            start_us: parse_rfc3339("2025-11-10T00:00:00Z").unwrap(),
            interval_us: 60_000_000,
            steps: Some(7 * 1440),
            anomaly_rate: rate,
        }
    }

    type Row = (usize, Metric, i64, f64);

    fn run(c: &GenConfig) -> (Vec<Row>, Vec<Label>) {
        let mut g = Generator::new(c.clone());
        let mut sink = VecSink::default();
        while !g.is_done() {
            g.generate(1000, &mut sink);
        }
        let labels = g.take_labels();
        (sink.0, labels)
    }

    fn hash_of(c: &GenConfig) -> (u64, u64) {
        let mut g = Generator::new(c.clone());
        let mut enc = crate::encode::CopyEncoder::new(&c.servers);
        let mut h = crate::encode::StreamHash::default();
        while !g.is_done() {
            enc.clear();
            g.generate(777, &mut enc);
            h.update(&enc.buf);
        }
        (h.finish(), g.rows())
    }

    #[test]
    fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
        let a = hash_of(&cfg(42, 6.0));
        assert_eq!(a, hash_of(&cfg(42, 6.0)));
        assert_ne!(a.0, hash_of(&cfg(43, 6.0)).0);
        // Other arguments matter too.
        let mut c = cfg(42, 6.0);
        c.start_us += 60_000_000;
        assert_ne!(a.0, hash_of(&c).0);
    }

    #[test]
    fn values_stay_in_bounds() {
        let (rows, _) = run(&cfg(11, 12.0));
        assert!(!rows.is_empty());
        for (_, m, _, v) in rows {
            assert!(v.is_finite());
            if m.is_percent() {
                assert!((0.0..=100.0).contains(&v), "{m:?} {v}");
            } else {
                assert!(v >= 0.0, "{m:?} {v}");
            }
        }
    }

    #[test]
    fn web_servers_are_busier_by_day_than_by_night() {
        let (rows, _) = run(&cfg(3, 0.0));
        for server in [0usize, 3] {
            let (mut day, mut night) = ((0.0, 0), (0.0, 0));
            for &(s, m, ts, v) in &rows {
                if s != server || m != Metric::Cpu {
                    continue;
                }
                let hour = ts.rem_euclid(86_400_000_000) / 3_600_000_000;
                if (10..18).contains(&hour) {
                    day = (day.0 + v, day.1 + 1);
                } else if !(6..22).contains(&hour) {
                    night = (night.0 + v, night.1 + 1);
                }
            }
            let (d, n) = (day.0 / day.1 as f64, night.0 / night.1 as f64);
            assert!(
                d > n + 15.0,
                "srv-{} day {d:.1} vs night {n:.1}",
                server + 1
            );
        }
    }

    #[test]
    fn weekdays_are_busier_than_the_weekend() {
        // cfg() starts on Monday 2025-11-10 and covers one week.
        let (rows, _) = run(&cfg(3, 0.0));
        let start = cfg(3, 0.0).start_us;
        for server in [0usize, 3] {
            let (mut wd, mut we) = ((0.0, 0), (0.0, 0));
            for &(s, m, ts, v) in &rows {
                if s == server && m == Metric::Cpu {
                    if (ts - start) / 86_400_000_000 < 5 {
                        wd = (wd.0 + v, wd.1 + 1);
                    } else {
                        we = (we.0 + v, we.1 + 1);
                    }
                }
            }
            let (d, e) = (wd.0 / wd.1 as f64, we.0 / we.1 as f64);
            assert!(
                d > e + 2.0,
                "srv-{}: weekdays {d:.1} vs weekend {e:.1}",
                server + 1
            );
        }
    }

    #[test]
    fn network_follows_cpu_on_web_servers() {
        let (rows, _) = run(&cfg(9, 0.0));
        let series = |m: Metric| -> Vec<f64> {
            rows.iter()
                .filter(|r| r.0 == 0 && r.1 == m)
                .map(|r| r.3)
                .collect()
        };
        let (x, y) = (series(Metric::Cpu), series(Metric::Network));
        let n = x.len() as f64;
        let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
        let cov: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
        let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
        let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
        let r = cov / (vx * vy).sqrt();
        assert!(r > 0.8, "correlation {r}");
    }

    #[test]
    fn batching_does_not_change_the_rows() {
        let c = cfg(21, 8.0);
        let (a, la) = run(&c);
        let mut g = Generator::new(c);
        let mut sink = VecSink::default();
        let mut step = 1;
        while !g.is_done() {
            g.generate(step, &mut sink);
            step = step % 97 + 13;
        }
        assert_eq!(a, sink.0);
        assert_eq!(la, g.take_labels());
    }

    /// The ground truth: with and without anomalies, the rows differ exactly
    /// inside the labelled windows, and each window has its kind's shape.
    #[test]
    fn labels_match_the_injected_shapes() {
        let (base, none) = run(&cfg(42, 0.0));
        assert!(none.is_empty());
        let (rows, labels) = run(&cfg(42, 20.0));
        let kinds: std::collections::BTreeSet<_> = labels.iter().map(|l| l.kind).collect();
        assert_eq!(kinds.len(), 6, "{kinds:?}");

        let c = cfg(42, 20.0);
        let key = |s: usize, m: Metric, ts: i64| (s, m, ts);
        let base_map: HashMap<_, f64> = base.iter().map(|r| (key(r.0, r.1, r.2), r.3)).collect();
        let rows_map: HashMap<_, f64> = rows.iter().map(|r| (key(r.0, r.1, r.2), r.3)).collect();
        let label_at = |s: usize, m: Metric, ts: i64| {
            labels
                .iter()
                .find(|l| l.server == s && l.metric == m && ts >= c.ts(l.start) && ts < c.ts(l.end))
        };
        // Outside every window, identical; every difference is labelled.
        for (k, v) in &base_map {
            match rows_map.get(k) {
                Some(w) if w == v => {}
                other => assert!(
                    label_at(k.0, k.1, k.2).is_some(),
                    "unlabelled change at {k:?}: {v} -> {other:?}"
                ),
            }
        }
        for l in &labels {
            let window: Vec<(f64, Option<f64>)> = (l.start..l.end)
                .map(|k| {
                    let kk = key(l.server, l.metric, c.ts(k));
                    (base_map[&kk], rows_map.get(&kk).copied())
                })
                .collect();
            let mean = |xs: &mut dyn Iterator<Item = f64>| {
                let v: Vec<f64> = xs.collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            match l.kind {
                Kind::Dropout => assert!(window.iter().all(|w| w.1.is_none())),
                Kind::Stuck => {
                    let first = window[0].1.unwrap();
                    assert!(window.iter().all(|w| w.1 == Some(first)));
                    assert_eq!(l.magnitude, Some(first));
                }
                Kind::Spike => {
                    let b = mean(&mut window.iter().map(|w| w.0));
                    let a = mean(&mut window.iter().map(|w| w.1.unwrap()));
                    let need = if l.metric.is_percent() {
                        (b + 25.0).min(99.0)
                    } else {
                        b * 3.0
                    };
                    assert!(a >= need, "spike {l:?}: {a} vs base {b}");
                }
                Kind::Leak => {
                    let last = window.last().unwrap().1.unwrap();
                    assert_eq!(Some(last), l.magnitude);
                    assert!(last >= 95.0);
                    let vals: Vec<f64> = window.iter().map(|w| w.1.unwrap()).collect();
                    assert!(vals[vals.len() / 2] < last && vals[0] < vals[vals.len() / 2]);
                }
                Kind::LevelShift | Kind::NoisyNeighbour => {
                    let b = mean(&mut window.iter().map(|w| w.0));
                    let a = mean(&mut window.iter().map(|w| w.1.unwrap()));
                    assert!(
                        a > b + 0.5 * l.magnitude.unwrap().min(100.0 - b),
                        "{l:?}: {a} vs {b}"
                    );
                }
            }
            // And the samples just outside the window are untouched.
            for k in [l.start.wrapping_sub(1), l.end] {
                if k < c.steps.unwrap() {
                    let kk = key(l.server, l.metric, c.ts(k));
                    if label_at(kk.0, kk.1, kk.2).is_none() {
                        assert_eq!(rows_map.get(&kk), Some(&base_map[&kk]));
                    }
                }
            }
        }
    }

    #[test]
    fn noisy_neighbour_labels_come_in_groups() {
        let (_, labels) = run(&cfg(42, 20.0));
        let nn: Vec<_> = labels
            .iter()
            .filter(|l| l.kind == Kind::NoisyNeighbour && l.metric == Metric::Cpu)
            .collect();
        assert!(!nn.is_empty());
        for l in &nn {
            let peers = nn
                .iter()
                .filter(|o| o.start == l.start && o.end == l.end && o.server != l.server)
                .count();
            assert!(peers >= 1, "{l:?} has no peer server");
        }
    }
}
