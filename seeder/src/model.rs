//! What a server looks like: metrics, profiles and the base signal of each
//! metric (before anomalies).
//!
//! A base value is `level + seasonality + walk + noise`, clamped to the
//! metric's bounds and rounded to 0.01:
//! - seasonality is `sin(2π·(t − φ)/period)` with a daily and a weekly period,
//!   computed on absolute UTC time (so "daytime" is the same for every run);
//! - the walk is a mean-reverting random walk clamped to ±`walk_limit`;
//! - correlations are built in: on web servers network traffic follows CPU,
//!   on database servers disk I/O follows CPU, on batch servers everything
//!   follows the nightly batch window.

use crate::rng::{hash, hash_str, Rng};
use crate::timefmt::{MICROS_PER_DAY, MICROS_PER_SEC};
use std::f64::consts::TAU;

/// The metrics of the raw schema. Percent metrics lie in [0, 100]; rates in
/// MB/s are never negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Metric {
    /// CPU utilisation, percent.
    #[value(name = "cpu")]
    Cpu,
    /// Memory in use, percent.
    #[value(name = "memory")]
    Memory,
    /// Disk throughput, MB/s.
    #[value(name = "disk_io")]
    DiskIo,
    /// Network throughput, MB/s.
    #[value(name = "network")]
    Network,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Cpu, Metric::Memory, Metric::DiskIo, Metric::Network];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
            Metric::DiskIo => "disk_io",
            Metric::Network => "network",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_percent(self) -> bool {
        matches!(self, Metric::Cpu | Metric::Memory)
    }

    /// Clamps to the metric's physical bounds and rounds to 0.01.
    #[inline]
    pub fn finish(self, v: f64) -> f64 {
        let hi = if self.is_percent() { 100.0 } else { f64::MAX };
        ((v.clamp(0.0, hi)) * 100.0).round() / 100.0
    }
}

/// What kind of machine a server is; decides the shape of its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Busy in the (UTC) daytime and on weekdays; network follows CPU.
    Web,
    /// High, steady memory; disk I/O follows CPU; milder daily cycle.
    Database,
    /// Mostly idle, with a heavy nightly batch window around 02:00 UTC.
    Batch,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Web => "web",
            Profile::Database => "database",
            Profile::Batch => "batch",
        }
    }

    /// `srv-N` servers cycle web, database, batch by N; other names by hash.
    pub fn for_server(name: &str) -> Profile {
        let k = match name
            .strip_prefix("srv-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) => n.wrapping_sub(1),
            None => hash_str(name),
        };
        [Profile::Web, Profile::Database, Profile::Batch][(k % 3) as usize]
    }
}

/// Seasonal factors of one timestamp, shared by every server.
#[derive(Clone, Copy, Debug)]
pub struct Season {
    /// Daily cycle peaking at 14:00 UTC.
    pub day: f64,
    /// Daily cycle peaking at 02:00 UTC (batch windows).
    pub night: f64,
    /// Weekly cycle peaking on Wednesday 12:00 UTC (weekdays high, weekend low).
    pub week: f64,
}

const WEEK_US: i64 = 7 * MICROS_PER_DAY;
const HOUR_US: i64 = 3_600 * MICROS_PER_SEC;

/// `sin(2π·(t − φ)/period)`, with the phase reduced exactly in integers first.
#[inline]
fn seasonal(ts_us: i64, phase_us: i64, period_us: i64) -> f64 {
    let r = (ts_us - phase_us).rem_euclid(period_us);
    (TAU * (r as f64 / period_us as f64)).sin()
}

impl Season {
    pub fn at(ts_us: i64) -> Season {
        Season {
            // sin peaks a quarter period after φ: 8h + 6h = 14:00.
            day: seasonal(ts_us, 8 * HOUR_US, MICROS_PER_DAY),
            // 20h + 6h = 02:00 the next day.
            night: seasonal(ts_us, 20 * HOUR_US, MICROS_PER_DAY),
            // The Unix epoch is a Thursday; Monday 18:00 is 4d18h after it,
            // and the peak 1.75 days later is Wednesday 12:00.
            week: seasonal(ts_us, 4 * MICROS_PER_DAY + 18 * HOUR_US, WEEK_US),
        }
    }
}

/// The per-server constants, drawn once from the seed and the server's name.
#[derive(Clone, Debug)]
pub struct ServerModel {
    pub profile: Profile,
    cpu_base: f64,
    cpu_day: f64,
    cpu_week: f64,
    mem_base: f64,
    disk_base: f64,
    disk_per_cpu: f64,
    net_base: f64,
    net_per_cpu: f64,
    walk_sigma: [f64; 4],
    walk_limit: [f64; 4],
    noise_sigma: [f64; 4],
}

/// Mean reversion of the walks per step.
const WALK_THETA: f64 = 0.01;

impl ServerModel {
    pub fn new(seed: u64, name: &str) -> ServerModel {
        let profile = Profile::for_server(name);
        let mut r = Rng::new(hash(&[seed, 0x5E4E_4D0D, hash_str(name)]));
        match profile {
            Profile::Web => ServerModel {
                profile,
                cpu_base: r.range(22.0, 35.0),
                cpu_day: r.range(15.0, 25.0),
                cpu_week: r.range(3.0, 6.0),
                mem_base: r.range(35.0, 55.0),
                disk_base: r.range(2.0, 6.0),
                disk_per_cpu: r.range(0.02, 0.05),
                net_base: r.range(1.0, 3.0),
                net_per_cpu: r.range(0.4, 0.8),
                walk_sigma: [0.8, 0.2, 0.15, 0.3],
                walk_limit: [8.0, 6.0, 1.5, 3.0],
                noise_sigma: [1.5, 0.4, 0.3, 0.8],
            },
            Profile::Database => ServerModel {
                profile,
                cpu_base: r.range(15.0, 25.0),
                cpu_day: r.range(8.0, 14.0),
                cpu_week: r.range(2.0, 4.0),
                mem_base: r.range(70.0, 80.0),
                disk_base: r.range(8.0, 15.0),
                disk_per_cpu: r.range(0.4, 0.7),
                net_base: r.range(3.0, 6.0),
                net_per_cpu: r.range(0.05, 0.1),
                walk_sigma: [0.6, 0.1, 0.4, 0.2],
                walk_limit: [6.0, 3.0, 4.0, 2.0],
                noise_sigma: [1.2, 0.2, 0.8, 0.4],
            },
            Profile::Batch => ServerModel {
                profile,
                cpu_base: r.range(8.0, 14.0),
                cpu_day: r.range(55.0, 70.0),
                cpu_week: r.range(1.0, 3.0),
                mem_base: r.range(30.0, 45.0),
                disk_base: r.range(2.0, 4.0),
                disk_per_cpu: r.range(0.4, 0.6),
                net_base: r.range(0.5, 1.5),
                net_per_cpu: r.range(0.1, 0.2),
                walk_sigma: [0.5, 0.2, 0.3, 0.15],
                walk_limit: [5.0, 5.0, 3.0, 1.0],
                noise_sigma: [1.0, 0.3, 0.5, 0.2],
            },
        }
    }

    /// A typical high level of `metric` (at the peak of its daily cycle),
    /// used to scale anomaly magnitudes on MB/s metrics.
    pub fn typical(&self, metric: Metric) -> f64 {
        let cpu = self.cpu_base + self.cpu_day;
        match metric {
            Metric::Cpu => cpu,
            Metric::Memory => self.mem_base,
            Metric::DiskIo => self.disk_base + self.disk_per_cpu * cpu,
            Metric::Network => self.net_base + self.net_per_cpu * cpu,
        }
        .max(1.0)
    }

    /// Advances the walks one step and returns the base values of all four
    /// metrics (in `Metric::ALL` order). Always draws the same number of
    /// random values, so a server's data does not depend on which metrics
    /// are selected.
    #[inline]
    pub fn step(&self, st: &mut SeriesState, s: &Season) -> [f64; 4] {
        for i in 0..4 {
            let w = st.walk[i] * (1.0 - WALK_THETA) + self.walk_sigma[i] * st.rng.normal();
            st.walk[i] = w.clamp(-self.walk_limit[i], self.walk_limit[i]);
        }
        let mut noise = [0.0; 4];
        for (i, n) in noise.iter_mut().enumerate() {
            *n = self.noise_sigma[i] * st.rng.normal();
        }
        let w = &st.walk;
        let (cpu, mem, disk, net);
        match self.profile {
            Profile::Web => {
                cpu = self.cpu_base + self.cpu_day * s.day + self.cpu_week * s.week + w[0];
                mem = self.mem_base + 4.0 * s.day + w[1];
                disk = self.disk_base * (1.0 + 0.3 * s.day) + self.disk_per_cpu * cpu + w[2];
                net = self.net_base + self.net_per_cpu * cpu + w[3];
            }
            Profile::Database => {
                cpu = self.cpu_base + self.cpu_day * s.day + self.cpu_week * s.week + w[0];
                mem = self.mem_base + 1.5 * s.day + w[1];
                disk = self.disk_base + self.disk_per_cpu * cpu + w[2];
                net = self.net_base + self.net_per_cpu * cpu + 2.0 * s.day + w[3];
            }
            Profile::Batch => {
                // A smooth window: 0 outside ~22:00–06:00 UTC, up to 1 at 02:00.
                let pulse = ((s.night - 0.3) / 0.7).max(0.0);
                cpu = self.cpu_base + self.cpu_day * pulse + self.cpu_week * s.week + w[0];
                mem = self.mem_base + 25.0 * pulse + w[1];
                disk = self.disk_base + self.disk_per_cpu * cpu + w[2];
                net = self.net_base + self.net_per_cpu * cpu + w[3];
            }
        }
        [
            Metric::Cpu.finish(cpu + noise[0]),
            Metric::Memory.finish(mem + noise[1]),
            Metric::DiskIo.finish(disk + noise[2]),
            Metric::Network.finish(net + noise[3]),
        ]
    }
}

/// The evolving state of one server's series.
#[derive(Clone, Debug)]
pub struct SeriesState {
    pub rng: Rng,
    pub walk: [f64; 4],
}

impl SeriesState {
    pub fn new(seed: u64, name: &str) -> SeriesState {
        SeriesState {
            rng: Rng::new(hash(&[seed, 0x005E_41E5, hash_str(name)])),
            walk: [0.0; 4],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::parse_rfc3339;

    #[test]
    fn seasons_peak_where_documented() {
        let at = |s: &str| Season::at(parse_rfc3339(s).unwrap());
        assert!((at("2025-11-12T14:00:00Z").day - 1.0).abs() < 1e-12);
        assert!((at("2025-11-12T02:00:00Z").day + 1.0).abs() < 1e-12);
        assert!((at("2025-11-12T02:00:00Z").night - 1.0).abs() < 1e-12);
        // 2025-11-12 is a Wednesday; the following Sunday 00:00 is the trough.
        assert!((at("2025-11-12T12:00:00Z").week - 1.0).abs() < 1e-12);
        assert!((at("2025-11-16T00:00:00Z").week + 1.0).abs() < 1e-12);
    }

    #[test]
    fn profiles_cycle_over_srv_numbers() {
        assert_eq!(Profile::for_server("srv-1"), Profile::Web);
        assert_eq!(Profile::for_server("srv-2"), Profile::Database);
        assert_eq!(Profile::for_server("srv-3"), Profile::Batch);
        assert_eq!(Profile::for_server("srv-4"), Profile::Web);
    }

    #[test]
    fn finish_clamps_and_rounds() {
        assert_eq!(Metric::Cpu.finish(104.2), 100.0);
        assert_eq!(Metric::Memory.finish(-3.0), 0.0);
        assert_eq!(Metric::Network.finish(-0.001), 0.0);
        assert_eq!(Metric::DiskIo.finish(1234.5678), 1234.57);
    }
}
