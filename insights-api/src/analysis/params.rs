//! The detectors' settings. One set for every series: nothing here is chosen
//! per server, metric or data set (docs/api.md, "Methods of analysis").

/// Tunables of the detectors; the defaults are what `make eval-insights` and
/// `make eval-nab` score.
#[derive(Clone, Debug)]
pub struct Params {
    /// Half-width of the centred rolling median baseline, in bins.
    pub baseline_half_width: usize,
    /// |z| that opens a candidate run.
    pub z_enter: f64,
    /// A single-bin (or two-bin) excursion must reach this |z| (a floor: a
    /// heavy-tailed series' own tail can raise it, see `risk`).
    pub z_single: f64,
    /// A run of at least `persist_bins` bins must reach this |z|.
    pub z_persist: f64,
    pub persist_bins: usize,
    /// The stated risk: the expected number of excursions per series and
    /// analysed range that noise alone would push past a threshold. The
    /// thresholds are the levels the series' own tail (peaks over threshold,
    /// `stats::Tail`) exceeds at `risk / bins` per bin, never below the floors.
    pub risk: f64,
    /// A run this long (bins) whose before/after medians differ is a level shift.
    pub level_shift_min_bins: usize,
    /// Consecutive identical values that make a series stuck (one sample per bin).
    pub stuck_min_bins: usize,
    /// Consecutive flat bins (min = max, several samples) with one value that make it stuck.
    pub stuck_min_flat_bins: usize,
    /// Excursions up to this many bins are spikes; longer ones level shifts (or leaks).
    pub spike_max_bins: usize,
    /// Excursions and shifts of one series fewer than this many bins apart
    /// are one episode, reported as one anomaly (at the analysis width: 24
    /// minutes of one-minute bins, a day of hourly ones).
    pub episode_gap_bins: usize,
    /// Detect slow (hours-long) leaks against the fleet's median curve.
    pub slow_leaks: bool,
    /// Missing bins that make a dropout.
    pub dropout_min_bins: i64,
    /// Missing samples that make a dropout (a source reporting once an hour
    /// that misses one report has not dropped out).
    pub dropout_min_samples: f64,
    /// A source whose bins are short of samples more often than this (a
    /// fraction of its time grid) reports irregularly: its silences are
    /// reported as coverage, not as dropouts.
    pub dropout_regular_frac: f64,
    /// Relative noise floor: σ is at least this fraction of the series'
    /// magnitude (`detect::baseline::sigma_floor`).
    pub rel_floor: f64,
    /// Absolute noise floor for σ, in percentage points, for percent metrics
    /// only (no absolute floor fits every unit).
    pub abs_floor: f64,
    /// A seasonal profile is used only when it shrinks the residual noise σ
    /// to at most this fraction of the non-seasonal baseline's.
    pub seasonal_gain: f64,
    /// Leak: minimum duration (seconds) and rise in σ.
    pub leak_min_secs: i64,
    pub leak_min_rise_sigma: f64,
    /// Fleet: robust z that makes a server stand out.
    pub fleet_z: f64,
    /// Hours forecast ahead.
    pub forecast_hours: i64,
    /// Confidence of trend intervals and forecast prediction intervals.
    pub confidence: f64,
    /// Anomalies of one server this close (seconds) or overlapping form one incident.
    pub incident_gap_secs: i64,
    /// Health: an anomaly ending this close to the end of the data is recent
    /// (seconds; at least 5% of the range).
    pub recent_secs: i64,
    /// Health: a critical incident this long (seconds) is sustained: worth a
    /// look today even when it is over.
    pub sustained_secs: i64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            baseline_half_width: 45,
            z_enter: 4.0,
            z_single: 8.0,
            z_persist: 5.0,
            persist_bins: 3,
            risk: 0.1,
            level_shift_min_bins: 20,
            stuck_min_bins: 10,
            stuck_min_flat_bins: 2,
            spike_max_bins: 3,
            episode_gap_bins: 24,
            slow_leaks: false,
            dropout_min_bins: 1,
            dropout_min_samples: 3.0,
            dropout_regular_frac: 0.05,
            rel_floor: 0.01,
            abs_floor: 0.05,
            seasonal_gain: 0.8,
            leak_min_secs: 2 * 3600,
            leak_min_rise_sigma: 8.0,
            fleet_z: 3.5,
            forecast_hours: 6,
            confidence: 0.95,
            incident_gap_secs: 120,
            recent_secs: 3600,
            sustained_secs: 1800,
        }
    }
}
