//! Health per server: a status an operator can act on.
//!
//! - `critical` — act now: a critical incident that is ongoing or ended
//!   within the recent window (the last `recent_secs`, at least 5% of the
//!   range) before the end of the data; a server still silent at the end of
//!   the data (an ongoing dropout); or a forecast reaching its threshold
//!   within the forecast horizon.
//! - `warning` — look today: critical incidents earlier in the range that
//!   recur (two or more) or were sustained (`sustained_secs`), a warning
//!   incident that is ongoing or recent, or a forecast reaching its threshold
//!   within 24 hours.
//! - `ok` — nothing above: a one-off short incident that is over, minor or
//!   past warning incidents are listed, not alarmed on.
//!
//! "Now" is the end of the data: the fleet's last bin within the range.

use std::collections::BTreeMap;

use serde::Serialize;

use super::detect::score::Severity;
use super::facts::names;
use super::fleet::Comparison;
use super::forecast::Forecast;
use super::incident::Incident;
use super::params::Params;
use super::series::display_name as name;
use super::series::{r2, Series};
use crate::stats::median;

#[derive(Clone, Debug, Serialize)]
pub struct Health {
    pub id: String,
    pub server: String,
    /// ok, warning (look today) or critical (act now).
    pub status: &'static str,
    pub score: f64,
    /// Anomalies of this server (one per metric and window).
    pub anomalies: usize,
    /// Incidents (findings): anomalies that happened together count once.
    pub incidents: usize,
    /// Incidents by severity.
    pub critical: usize,
    pub warnings: usize,
    pub medians: BTreeMap<String, f64>,
    pub notes: Vec<String>,
    /// Why the status, in words (the rule that decided it).
    pub reason: String,
}

/// Everything health is judged on.
pub struct Inputs<'a> {
    pub series: &'a [&'a Series],
    pub incidents: &'a [Incident],
    pub anomalies_per_server: &'a BTreeMap<String, usize>,
    pub forecasts: &'a [Forecast],
    pub comparisons: &'a [Comparison],
    /// The end of the data (seconds).
    pub as_of: i64,
    pub range_secs: i64,
}

fn hhmm(i: &Incident) -> String {
    format!("{}–{}", i.start.format("%H:%M"), i.end.format("%H:%M"))
}

fn described(i: &Incident) -> String {
    format!(
        "{} {} on {} ({}, {})",
        i.severity.as_str(),
        i.kind.replace('_', " "),
        names(&i.metrics),
        i.fact,
        hhmm(i)
    )
}

/// The health of each server, in the order given.
pub fn health(servers: &[&str], x: &Inputs, p: &Params) -> Vec<Health> {
    let recent = p.recent_secs.max(x.range_secs / 20);
    let mut out = Vec::new();
    for (k, srv) in servers.iter().enumerate() {
        let mine: Vec<&Incident> = x.incidents.iter().filter(|i| i.server == *srv).collect();
        let is_recent = |i: &Incident| i.end.timestamp() >= x.as_of - recent;
        let ongoing = |i: &Incident| i.end.timestamp() >= x.as_of;
        let count = |s: Severity| mine.iter().filter(|i| i.severity == s).count();
        let forecasts: Vec<&Forecast> = x
            .forecasts
            .iter()
            .filter(|f| f.server == *srv && f.hours_to_threshold.is_some())
            .collect();
        let mut notes = Vec::new();
        for f in &forecasts {
            if let (Some(h), Some(t)) = (f.hours_to_threshold, f.threshold) {
                notes.push(format!(
                    "{} reaches {} in {} h at the current trend ({})",
                    name(&f.metric),
                    t,
                    h,
                    f.id
                ));
            }
        }
        for c in x
            .comparisons
            .iter()
            .flat_map(|c| &c.standouts)
            .filter(|c| c.server == *srv)
        {
            notes.push(format!(
                "{} stands out from the fleet ({})",
                name(&c.metric),
                c.id
            ));
        }
        let soon = |hours: f64| {
            forecasts
                .iter()
                .find(|f| f.hours_to_threshold.is_some_and(|h| h <= hours))
        };
        let act_now = mine
            .iter()
            .find(|i| i.severity == Severity::Critical && is_recent(i))
            .map(|i| {
                format!(
                    "{} is ongoing or ended in the last {} minutes",
                    described(i),
                    recent / 60
                )
            })
            .or_else(|| {
                mine.iter()
                    .find(|i| i.kind == "dropout" && ongoing(i))
                    .map(|i| format!("silent at the end of the data: {}", described(i)))
            })
            .or_else(|| {
                soon(p.forecast_hours as f64).map(|f| {
                    format!(
                        "{} is forecast to reach {} within {} hours ({})",
                        name(&f.metric),
                        f.threshold.unwrap_or_default(),
                        p.forecast_hours,
                        f.id
                    )
                })
            });
        let crit: Vec<&&Incident> = mine
            .iter()
            .filter(|i| i.severity == Severity::Critical)
            .collect();
        let look_today = || {
            if crit.len() >= 2 {
                return Some(format!(
                    "{} critical incidents earlier, the first {}",
                    crit.len(),
                    described(crit[0])
                ));
            }
            crit.iter()
                .find(|i| (i.end - i.start).num_seconds() >= p.sustained_secs)
                .map(|i| format!("earlier sustained {}", described(i)))
                .or_else(|| {
                    mine.iter()
                        .find(|i| i.severity == Severity::Warning && is_recent(i))
                        .map(|i| format!("{} is ongoing or recent", described(i)))
                })
                .or_else(|| {
                    soon(24.0).map(|f| {
                        format!(
                            "{} is forecast to reach {} within 24 hours ({})",
                            name(&f.metric),
                            f.threshold.unwrap_or_default(),
                            f.id
                        )
                    })
                })
        };
        let (status, reason) = match act_now {
            Some(r) => ("critical", r),
            None => match look_today() {
                Some(r) => ("warning", r),
                None if mine.is_empty() => ("ok", "no incident".to_string()),
                None => (
                    "ok",
                    format!(
                        "{} incidents, none ongoing, recurring or sustained",
                        mine.len()
                    ),
                ),
            },
        };
        let penalty: f64 = mine
            .iter()
            .map(|i| i.score / if is_recent(i) { 2.0 } else { 4.0 })
            .sum::<f64>()
            + 5.0 * notes.len() as f64;
        let medians = x
            .series
            .iter()
            .filter(|s| s.server == *srv)
            .filter_map(|s| median(&s.avg).map(|m| (s.metric.clone(), r2(m))))
            .collect();
        out.push(Health {
            id: format!("H{}", k + 1),
            server: srv.to_string(),
            status,
            score: (100.0 - penalty).clamp(0.0, 100.0).round(),
            anomalies: x.anomalies_per_server.get(*srv).copied().unwrap_or(0),
            incidents: mine.len(),
            critical: count(Severity::Critical),
            warnings: count(Severity::Warning),
            medians,
            notes,
            reason,
        });
    }
    out
}
