//! Anomalies and their ground-truth labels.
//!
//! Time is cut into epochs of `epoch_len` samples (one hour at the default
//! 1 s interval, never fewer than 12 samples). In each epoch each server
//! starts at most one anomaly, with probability `rate × epoch / 1 day`, and
//! its whole window lies inside the epoch, so anomalies of one server never
//! overlap. A noisy-neighbour episode takes several servers that have nothing
//! else in that epoch. Planning is a pure function of (seed, epoch, server
//! names): any range can be planned on its own, which live mode needs.
//!
//! A window is `[start, end)` in sample indices; the label carries the same
//! window as timestamps, so the label and the injected shape match exactly.
//! Anomalies are drawn from their own hash stream, so the base series with
//! and without anomalies are identical outside the labelled windows.

use crate::model::{Metric, ServerModel};
use crate::rng::{hash, hash_str, Rng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A short burst far above the baseline (cpu, disk_io or network).
    Spike,
    /// The level jumps up for a while, then returns.
    LevelShift,
    /// Memory climbs linearly until near full (a leak), then is freed.
    Leak,
    /// The metric reports the same value for the whole window.
    Stuck,
    /// The server reports nothing: no rows for any metric.
    Dropout,
    /// Several servers at once: extra CPU and disk load from a shared host.
    NoisyNeighbour,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::LevelShift => "level_shift",
            Kind::Leak => "leak",
            Kind::Stuck => "stuck",
            Kind::Dropout => "dropout",
            Kind::NoisyNeighbour => "noisy_neighbour",
        }
    }
}

/// How an anomaly changes one metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Effect {
    /// Add a constant, then clamp to the metric's bounds.
    Add(f64),
    /// Ramp linearly from the base value towards the target: at the last
    /// sample of the window the value is the target.
    RampTo(f64),
    /// Repeat the base value of the window's first sample.
    Hold,
    /// Emit no row.
    Drop,
}

/// One anomaly on one server: a window and per-metric effects.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
    pub effects: [Option<Effect>; 4],
}

/// A ground-truth label, in sample indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub server: usize,
    pub metric: Metric,
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
    pub magnitude: Option<f64>,
}

pub struct Planner {
    seed: u64,
    /// Probability that a server starts an anomaly in an epoch.
    p: f64,
    pub epoch_len: u64,
    /// Total samples in the run (`None` in live mode).
    total: Option<u64>,
    metrics: [bool; 4],
    name_hashes: Vec<u64>,
}

/// Epoch length in samples for an interval: one hour, at least 12 samples.
pub fn epoch_len(interval_us: i64) -> u64 {
    (3_600_000_000 / interval_us.max(1)).max(12) as u64
}

/// Probability per server and epoch for `rate` anomalies per server per day.
pub fn epoch_probability(rate: f64, interval_us: i64) -> f64 {
    rate * (epoch_len(interval_us) as f64 * interval_us as f64) / 86_400e6
}

impl Planner {
    pub fn new(
        seed: u64,
        rate_per_day: f64,
        interval_us: i64,
        total: Option<u64>,
        metrics: &[Metric],
        servers: &[String],
    ) -> Planner {
        let mut sel = [false; 4];
        for m in metrics {
            sel[m.index()] = true;
        }
        Planner {
            seed,
            p: epoch_probability(rate_per_day, interval_us),
            epoch_len: epoch_len(interval_us),
            total,
            metrics: sel,
            name_hashes: servers.iter().map(|s| hash_str(s)).collect(),
        }
    }

    fn has(&self, m: Metric) -> bool {
        self.metrics[m.index()]
    }

    fn kinds(&self) -> Vec<Kind> {
        let mut k = Vec::new();
        let spiky = [Metric::Cpu, Metric::DiskIo, Metric::Network];
        if spiky.iter().any(|&m| self.has(m)) {
            k.push(Kind::Spike);
        }
        k.push(Kind::LevelShift);
        if self.has(Metric::Memory) {
            k.push(Kind::Leak);
        }
        k.push(Kind::Stuck);
        k.push(Kind::Dropout);
        if self.name_hashes.len() >= 2 && (self.has(Metric::Cpu) || self.has(Metric::DiskIo)) {
            k.push(Kind::NoisyNeighbour);
        }
        k
    }

    fn pick_metric(&self, r: &mut Rng, from: &[Metric]) -> Metric {
        let avail: Vec<Metric> = from.iter().copied().filter(|&m| self.has(m)).collect();
        let avail = if avail.is_empty() {
            Metric::ALL
                .iter()
                .copied()
                .filter(|&m| self.has(m))
                .collect()
        } else {
            avail
        };
        avail[r.int_in(0, avail.len() as u64 - 1) as usize]
    }

    /// A window of `lo..=hi` samples (fractions of the epoch) inside epoch `e`,
    /// or `None` if it would run past the end of the run.
    fn window(&self, r: &mut Rng, e: u64, lo: u64, hi: u64) -> Option<(u64, u64)> {
        let m = self.epoch_len;
        let lo = (m / lo).max(1);
        let hi = (m / hi).max(lo);
        let n = r.int_in(lo, hi);
        let start = e * m + r.int_in(0, m - n);
        let end = start + n;
        match self.total {
            Some(t) if end > t => None,
            _ => Some((start, end)),
        }
    }

    /// Plans epoch `e`: at most one event per server.
    pub fn plan(&self, e: u64, models: &[ServerModel]) -> Vec<Option<Event>> {
        let n = self.name_hashes.len();
        let mut out: Vec<Option<Event>> = vec![None; n];
        if self.p <= 0.0 {
            return out;
        }
        let kinds = self.kinds();
        let mut noisy: Vec<(usize, Rng)> = Vec::new();
        for s in 0..n {
            let mut r = Rng::new(hash(&[self.seed, 0x0A40_04A1, e, self.name_hashes[s]]));
            if r.unit() >= self.p {
                continue;
            }
            let kind = kinds[r.int_in(0, kinds.len() as u64 - 1) as usize];
            if kind == Kind::NoisyNeighbour {
                noisy.push((s, r));
                continue;
            }
            out[s] = self.single(kind, &mut r, e, &models[s]);
        }
        for (s, mut r) in noisy {
            if out[s].is_some() {
                continue; // taken as a victim of an earlier episode
            }
            // Victims: 1–3 other servers without an event in this epoch,
            // in a seeded order.
            let mut free: Vec<(u64, usize)> = (0..n)
                .filter(|&v| v != s && out[v].is_none())
                .map(|v| (hash(&[self.seed, 0x04E1_64B0, e, self.name_hashes[v]]), v))
                .collect();
            if free.is_empty() {
                continue;
            }
            free.sort_unstable();
            let k = (r.int_in(1, 3) as usize).min(free.len());
            let Some((start, end)) = self.window(&mut r, e, 12, 4) else {
                continue;
            };
            let cpu_add = r.range(20.0, 35.0);
            let disk_mult = r.range(1.5, 3.0);
            for v in std::iter::once(s).chain(free.iter().take(k).map(|&(_, v)| v)) {
                let mut effects = [None; 4];
                if self.has(Metric::Cpu) {
                    effects[Metric::Cpu.index()] = Some(Effect::Add(round2(cpu_add)));
                }
                if self.has(Metric::DiskIo) {
                    let add = disk_mult * models[v].typical(Metric::DiskIo);
                    effects[Metric::DiskIo.index()] = Some(Effect::Add(round2(add)));
                }
                out[v] = Some(Event {
                    kind: Kind::NoisyNeighbour,
                    start,
                    end,
                    effects,
                });
            }
        }
        out
    }

    fn single(&self, kind: Kind, r: &mut Rng, e: u64, model: &ServerModel) -> Option<Event> {
        let mut effects = [None; 4];
        let (start, end) = match kind {
            Kind::Spike => {
                let m = self.pick_metric(r, &[Metric::Cpu, Metric::DiskIo, Metric::Network]);
                let add = if m.is_percent() {
                    r.range(45.0, 70.0)
                } else {
                    r.range(4.0, 8.0) * model.typical(m)
                };
                effects[m.index()] = Some(Effect::Add(round2(add)));
                self.window(r, e, 120, 40)?
            }
            Kind::LevelShift => {
                let m = self.pick_metric(r, &Metric::ALL);
                let add = if m.is_percent() {
                    r.range(15.0, 30.0)
                } else {
                    r.range(1.0, 2.0) * model.typical(m)
                };
                effects[m.index()] = Some(Effect::Add(round2(add)));
                self.window(r, e, 6, 2)?
            }
            Kind::Leak => {
                effects[Metric::Memory.index()] = Some(Effect::RampTo(round2(r.range(95.0, 99.0))));
                self.window(r, e, 4, 1)?
            }
            Kind::Stuck => {
                let m = self.pick_metric(r, &Metric::ALL);
                effects[m.index()] = Some(Effect::Hold);
                self.window(r, e, 12, 4)?
            }
            Kind::Dropout => {
                for m in Metric::ALL {
                    if self.has(m) {
                        effects[m.index()] = Some(Effect::Drop);
                    }
                }
                self.window(r, e, 30, 6)?
            }
            Kind::NoisyNeighbour => unreachable!("planned across servers"),
        };
        Some(Event {
            kind,
            start,
            end,
            effects,
        })
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl Event {
    /// The labels of this event on `server`; `hold` gives the stuck values.
    pub fn labels(&self, server: usize, hold: &[f64; 4]) -> Vec<Label> {
        Metric::ALL
            .iter()
            .filter_map(|&m| {
                let eff = self.effects[m.index()]?;
                let magnitude = match eff {
                    Effect::Add(a) => Some(a),
                    Effect::RampTo(t) => Some(t),
                    Effect::Hold => Some(hold[m.index()]),
                    Effect::Drop => None,
                };
                Some(Label {
                    server,
                    metric: m,
                    kind: self.kind,
                    start: self.start,
                    end: self.end,
                    magnitude,
                })
            })
            .collect()
    }

    /// Applies the event to the base value of `m` at sample `k` (inside the
    /// window). `None` means no row.
    #[inline]
    pub fn apply(&self, m: Metric, k: u64, base: f64, hold: f64) -> Option<f64> {
        match self.effects[m.index()] {
            None => Some(base),
            Some(Effect::Add(a)) => Some(m.finish(base + a)),
            Some(Effect::RampTo(t)) => {
                let f = (k - self.start + 1) as f64 / (self.end - self.start) as f64;
                Some(m.finish(base + (t - base) * f))
            }
            Some(Effect::Hold) => Some(hold),
            Some(Effect::Drop) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("srv-{i}")).collect()
    }

    #[test]
    fn windows_stay_inside_their_epoch_and_the_run() {
        let names = servers(20);
        let models: Vec<_> = names.iter().map(|n| ServerModel::new(1, n)).collect();
        let total = 10 * 3600 + 1234;
        let p = Planner::new(1, 24.0, 1_000_000, Some(total), &Metric::ALL, &names);
        let mut seen = std::collections::BTreeSet::new();
        for e in 0..11 {
            for ev in p.plan(e, &models).into_iter().flatten() {
                assert!(ev.start < ev.end);
                assert!(ev.start >= e * 3600 && ev.end <= (e + 1) * 3600);
                assert!(ev.end <= total);
                seen.insert(ev.kind);
            }
        }
        assert_eq!(seen.len(), 6, "every kind appears at rate 24/day: {seen:?}");
    }

    #[test]
    fn noisy_neighbour_hits_several_servers_with_one_window() {
        let names = servers(30);
        let models: Vec<_> = names.iter().map(|n| ServerModel::new(5, n)).collect();
        let p = Planner::new(5, 24.0, 1_000_000, None, &Metric::ALL, &names);
        let mut episodes = 0;
        for e in 0..20 {
            let plan = p.plan(e, &models);
            let hit: Vec<_> = plan
                .iter()
                .flatten()
                .filter(|ev| ev.kind == Kind::NoisyNeighbour)
                .collect();
            if !hit.is_empty() {
                episodes += 1;
                assert!(hit.len() >= 2, "an episode hits at least two servers");
                // Episodes in one epoch may be several; each has ≥ 2 servers
                // sharing its exact window.
                for ev in &hit {
                    let same = hit
                        .iter()
                        .filter(|o| o.start == ev.start && o.end == ev.end);
                    assert!(same.count() >= 2);
                }
            }
        }
        assert!(episodes > 0);
    }

    #[test]
    fn zero_rate_plans_nothing() {
        let names = servers(5);
        let models: Vec<_> = names.iter().map(|n| ServerModel::new(1, n)).collect();
        let p = Planner::new(1, 0.0, 1_000_000, None, &Metric::ALL, &names);
        assert!((0..50).all(|e| p.plan(e, &models).iter().all(Option::is_none)));
    }

    #[test]
    fn ramp_ends_at_its_target() {
        let ev = Event {
            kind: Kind::Leak,
            start: 10,
            end: 20,
            effects: [None, Some(Effect::RampTo(97.0)), None, None],
        };
        assert_eq!(ev.apply(Metric::Memory, 19, 50.0, 0.0), Some(97.0));
        assert_eq!(ev.apply(Metric::Memory, 10, 50.0, 0.0), Some(54.7));
        assert_eq!(ev.apply(Metric::Cpu, 12, 33.0, 0.0), Some(33.0));
    }
}
