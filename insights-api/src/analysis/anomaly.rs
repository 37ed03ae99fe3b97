//! An anomaly as reported: a detected window of one series, scored, with what
//! it was compared with and how unusual it is in words.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::detect::baseline::{duration_words, lead_number, BaselineKind, Cycle};
use super::detect::score::{
    rarity_words, return_period_days, score_from_minutes, score_from_z, Severity,
};
use super::detect::{Basis, Detected, Window};
use super::series::{clamp_metric, fmt_num, r2, rv, ts, Series};

#[derive(Clone, Debug, Serialize)]
pub struct Anomaly {
    pub id: String,
    pub server: String,
    pub metric: String,
    /// spike, dip, level_shift, leak, stuck, dropout, noisy_neighbour
    pub kind: String,
    pub start: DateTime<Utc>,
    /// Exclusive end (end of the last anomalous bin).
    pub end: DateTime<Utc>,
    pub duration_minutes: f64,
    /// The most extreme value in the window: the bin average, or for a spike
    /// (dip) found on the bins' maxima (minima) the maximum (minimum).
    pub peak: f64,
    pub typical: f64,
    /// Expected band: typical ± 3σ (robust), clamped to the metric's range.
    pub band: [f64; 2],
    pub score: f64,
    pub severity: Severity,
    pub z: f64,
    /// What the bins were compared with.
    pub baseline: String,
    /// How unusual it is, in words.
    pub unusual: String,
    /// How often this series' own noise goes this far, in days (from the
    /// fitted tail; `null` when the series is too short to fit one; at most
    /// 3650, meaning "never").
    pub return_period_days: Option<f64>,
    /// The incident (one finding) this anomaly is part of.
    pub incident: String,
    /// The numbers `baseline` and `unusual` state, by name (fact values).
    #[serde(skip)]
    pub said: BTreeMap<String, f64>,
}

/// Longest return period stated: ten years stands for "never".
const NEVER_DAYS: f64 = 3650.0;

/// Scores and explains one window detected in series `s`.
pub fn explain(s: &Series, w: &Window, d: &Detected) -> Anomaly {
    let (sigma, baseline) = (d.sigma, d.baseline);
    let start = w.start_ts(s);
    let end = w.end_ts(s);
    let minutes = (end - start) as f64 / 60.0;
    // the statistic the window was found on: a spike only the bins' maxima
    // show peaks at a maximum, not at its bin's average
    let at = w.peak_i.min(s.len() - 1);
    let peak = match w.basis {
        Basis::Extremes { upward: true } => s.max[at],
        Basis::Extremes { upward: false } => s.min[at],
        _ => s.avg[at],
    };
    let sigma = w.sigma.unwrap_or(sigma);
    let score = match w.kind {
        "stuck" | "dropout" => score_from_minutes(minutes),
        _ => score_from_z(w.z),
    };
    let severity = Severity::from_score(score);
    let typical = match w.basis {
        Basis::Missing { .. } => d.level,
        _ => w.typical,
    };
    // on a relative scale σ is the logarithm's: the band is a factor
    let (lo, hi) = match w.basis {
        Basis::Relative => (
            typical * (-3.0 * sigma).exp(),
            typical * (3.0 * sigma).exp(),
        ),
        _ => (typical - 3.0 * sigma, typical + 3.0 * sigma),
    };
    let band = [
        rv(clamp_metric(&s.metric, lo)),
        rv(clamp_metric(&s.metric, hi)),
    ];
    let days = return_period_days(w.rate, s.width).map(|d| r2(d.min(NEVER_DAYS)));
    let dur = duration_words((end - start).max(60));
    // every number the words state, for the facts
    let mut said: Vec<(&'static str, f64)> = vec![("for", lead_number(&dur))];
    let (basis, unusual) = match &w.basis {
        Basis::Baseline
        | Basis::Extremes { .. }
        | Basis::Before { .. }
        | Basis::Fleet
        | Basis::Relative
        | Basis::Day { .. } => {
            let compared = match &w.basis {
                Basis::Extremes { upward } => {
                    let win = duration_words(31 * s.width);
                    said.push(("baseline_window", lead_number(&win)));
                    format!(
                        "the rolling median of the bins' {} over the surrounding {win}",
                        if *upward { "maxima" } else { "minima" },
                    )
                }
                Basis::Before { bins } => {
                    let win = duration_words(*bins as i64 * s.width);
                    said.push(("baseline_window", lead_number(&win)));
                    format!(
                        "the level of the {win} before it{}",
                        match baseline {
                            BaselineKind::Seasonal {
                                cycle: Cycle::Week, ..
                            } => ", the usual weekly profile removed",
                            BaselineKind::Seasonal { .. } => ", the usual daily profile removed",
                            BaselineKind::Rolling { .. } => "",
                        }
                    )
                }
                Basis::Fleet => "the fleet's median curve of this metric".to_string(),
                Basis::Day { bins } => {
                    let (words, nums) = baseline.describe(s.width);
                    said.extend(nums);
                    let win = duration_words(*bins as i64 * s.width);
                    said.push(("day_window", lead_number(&win)));
                    format!("{words}, over each {win} around it")
                }
                Basis::Relative => {
                    let (words, nums) = baseline.describe(s.width);
                    said.extend(nums);
                    format!(
                        "{words}, on a relative scale (this series' noise grows with its level)"
                    )
                }
                _ => {
                    let (words, nums) = baseline.describe(s.width);
                    said.extend(nums);
                    words
                }
            };
            let sigmas = (w.z.abs() * 10.0).round() / 10.0;
            let (rarity, rarity_n) =
                rarity_words(days.map(|d| if d >= NEVER_DAYS { f64::INFINITY } else { d }));
            said.push(("sigmas", sigmas));
            if let Some(x) = rarity_n {
                said.push(("rarity", x));
            }
            // an episode: its span is the episode's, its σ its largest excursion's
            let span = if w.excursions > 1 {
                said.push(("excursions", w.excursions as f64));
                format!(
                    "at its peak, in an episode of {} excursions over {dur}",
                    w.excursions
                )
            } else {
                format!("for {dur}")
            };
            let words = if let Basis::Day { .. } = w.basis {
                // a day off its profile: the median bin's distance, not a peak;
                // a run longer than a day and a half is said as days, the
                // distance being that of the day around its worst bin
                let (what, whose) = if end - start > 36 * 3600 {
                    (
                        "the days did not follow their usual profile: in the day around the worst bin",
                        "the",
                    )
                } else {
                    ("the day did not follow its usual profile:", "its")
                };
                format!(
                    "{}: {what} half {whose} bins were {}σ or more from the expected level, {span}; {rarity}",
                    severity.adjective(),
                    fmt_num(sigmas),
                )
            } else if w.basis == Basis::Relative {
                // a fall to a fraction of the usual level, in σ of the logarithm
                let pct = if typical > 0.0 {
                    (1000.0 * peak / typical).round() / 10.0
                } else {
                    0.0
                };
                said.push(("percent_of_expected", pct));
                format!(
                    "{}: {}% of the expected {}, {}σ below it on a relative scale, {span}; {rarity}",
                    severity.adjective(),
                    fmt_num(pct),
                    fmt_num(rv(typical)),
                    fmt_num(sigmas),
                )
            } else {
                format!(
                    "{}: {}σ {} the expected {} {span}; {rarity}",
                    severity.adjective(),
                    fmt_num(sigmas),
                    if w.z >= 0.0 { "above" } else { "below" },
                    fmt_num(rv(typical)),
                )
            };
            (compared, words)
        }
        Basis::Repeat {
            value,
            longest_before,
        } => {
            said.push(("stuck_value", rv(*value)));
            let compared = if *longest_before == 0 {
                "the series' own variation: it never repeated a value before".to_string()
            } else {
                let before = duration_words(*longest_before as i64 * s.width);
                said.push(("longest_repeat_before", lead_number(&before)));
                format!(
                    "the series' own variation: it never repeated a value for more than {before} before"
                )
            };
            (
                compared,
                format!("stuck at {} for {dur}", fmt_num(rv(*value))),
            )
        }
        Basis::Missing { usual, received } => {
            let per = duration_words(s.width);
            said.push(("usual_samples", r2(*usual)));
            said.push(("per", lead_number(&per)));
            let words = if *received <= 0.0 {
                format!("no samples for {dur}")
            } else {
                let pct = (received * 100.0).round();
                said.push(("received_pct", pct));
                format!("{}% of the usual samples for {dur}", fmt_num(pct))
            };
            (
                format!("the usual {} samples per {per}", fmt_num(r2(*usual))),
                words,
            )
        }
    };
    Anomaly {
        id: String::new(),
        server: s.server.clone(),
        metric: s.metric.clone(),
        kind: w.kind.to_string(),
        start: ts(start),
        end: ts(end),
        duration_minutes: r2(minutes),
        peak: rv(peak),
        typical: rv(typical),
        band,
        score,
        severity,
        z: r2(w.z),
        baseline: basis,
        unusual,
        return_period_days: days,
        incident: String::new(),
        said: said.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}
