//! The citable facts: every result the narrative may state, with an id and
//! the exact numbers it may use. One fact per finding: an incident grouping
//! several anomalies is one fact (`I…`), a lone anomaly its own (`A…`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::anomaly::Anomaly;
use super::detect::score::Severity;
use super::incident::Incident;
use super::series::{display_name as name, fmt_num};
use super::Analysis;

/// A citable result. `values` holds every number the narrative may state
/// about it, rounded as shown.
#[derive(Clone, Debug, Serialize)]
pub struct Fact {
    pub id: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The metric (for an incident, the one that led).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Every metric an incident involves.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    pub severity: Severity,
    /// Ranking key for prompt budgeting (higher first).
    pub weight: f64,
    pub statement: String,
    pub values: BTreeMap<String, f64>,
}

impl Fact {
    /// The metrics this fact is about.
    pub fn all_metrics(&self) -> impl Iterator<Item = &str> {
        self.metric
            .iter()
            .map(String::as_str)
            .chain(self.metrics.iter().map(String::as_str))
    }
}

/// `1 minute`, `2.5 minutes`.
pub fn minutes(m: f64) -> String {
    if m == 1.0 {
        "1 minute".into()
    } else {
        format!("{} minutes", fmt_num(m))
    }
}

/// Names as statements show them, comma-separated.
pub fn names(xs: &[String]) -> String {
    xs.iter().map(|x| name(x)).collect::<Vec<_>>().join(", ")
}

fn hm(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%MZ").to_string()
}

fn anomaly_fact(a: &Anomaly) -> Fact {
    let mut values = BTreeMap::new();
    values.insert("peak".into(), a.peak);
    values.insert("typical".into(), a.typical);
    values.insert("band_low".into(), a.band[0]);
    values.insert("band_high".into(), a.band[1]);
    values.insert("score".into(), a.score);
    values.insert("duration_minutes".into(), a.duration_minutes);
    values.insert("z".into(), a.z);
    if let Some(d) = a.return_period_days {
        values.insert("return_period_days".into(), d);
    }
    for (k, v) in &a.said {
        values.entry(k.clone()).or_insert(*v);
    }
    Fact {
        id: a.id.clone(),
        kind: "anomaly",
        server: Some(a.server.clone()),
        metric: Some(a.metric.clone()),
        metrics: Vec::new(),
        start: Some(a.start),
        end: Some(a.end),
        severity: a.severity,
        weight: a.score,
        statement: format!(
            "{} {} {} from {} to {}: peak {}, typical {}, expected {}..{}, score {} ({}); {}; compared with {}",
            name(&a.server),
            name(&a.metric),
            a.kind,
            hm(a.start),
            hm(a.end),
            fmt_num(a.peak),
            fmt_num(a.typical),
            fmt_num(a.band[0]),
            fmt_num(a.band[1]),
            fmt_num(a.score),
            a.severity.as_str(),
            a.unusual,
            a.baseline
        ),
        values,
    }
}

fn incident_fact(i: &Incident, members: &[&Anomaly]) -> Fact {
    let mut values = BTreeMap::new();
    values.insert("score".into(), i.score);
    values.insert("duration_minutes".into(), i.duration_minutes);
    values.insert("lead_minutes".into(), i.lead_minutes);
    values.insert("metrics".into(), i.metrics.len() as f64);
    values.insert("anomalies".into(), members.len() as f64);
    let silent = i.kind == "dropout";
    let mut parts = Vec::new();
    for a in members {
        if a.kind == "dropout" || a.kind == "stuck" {
            parts.push(format!("{} {} {}", a.id, name(&a.metric), a.kind));
            continue;
        }
        values.entry(format!("{}_peak", a.metric)).or_insert(a.peak);
        values
            .entry(format!("{}_typical", a.metric))
            .or_insert(a.typical);
        parts.push(format!(
            "{} {} {} peak {} typical {}",
            a.id,
            name(&a.metric),
            a.kind,
            fmt_num(a.peak),
            fmt_num(a.typical)
        ));
    }
    let lead = if silent {
        "every metric silent together".to_string()
    } else if i.lead_minutes > 0.0 {
        format!(
            "led by {} ({} ahead)",
            name(&i.led_by),
            minutes(i.lead_minutes)
        )
    } else {
        format!("led by {} (the others started with it)", name(&i.led_by))
    };
    Fact {
        id: i.id.clone(),
        kind: "incident",
        server: Some(i.server.clone()),
        metric: Some(i.led_by.clone()),
        metrics: i.metrics.clone(),
        start: Some(i.start),
        end: Some(i.end),
        severity: i.severity,
        weight: i.score + members.len() as f64,
        statement: format!(
            "{} {} across {} from {} to {}, {}: {}; score {} ({})",
            name(&i.server),
            i.kind,
            names(&i.metrics),
            hm(i.start),
            hm(i.end),
            lead,
            parts.join("; "),
            fmt_num(i.score),
            i.severity.as_str()
        ),
        values,
    }
}

/// Builds the citable facts from the results, in a stable order.
pub fn facts_of(an: &Analysis) -> Vec<Fact> {
    let mut facts = Vec::new();
    for i in &an.incidents {
        let members: Vec<&Anomaly> = an.anomalies.iter().filter(|a| a.incident == i.id).collect();
        match members.as_slice() {
            [one] => facts.push(anomaly_fact(one)),
            _ => facts.push(incident_fact(i, &members)),
        }
    }
    for t in an.trends.iter().filter(|t| t.significant && t.material) {
        let mut values = BTreeMap::new();
        values.insert("slope_per_hour".into(), t.slope_per_hour);
        values.insert("ci_low".into(), t.ci_low);
        values.insert("ci_high".into(), t.ci_high);
        values.insert("change_over_window".into(), t.change_over_window);
        values.insert("confidence_pct".into(), (t.confidence * 100.0).round());
        facts.push(Fact {
            id: t.id.clone(),
            kind: "trend",
            server: Some(t.server.clone()),
            metric: Some(t.metric.clone()),
            metrics: Vec::new(),
            start: None,
            end: None,
            severity: Severity::Info,
            weight: 20.0,
            statement: format!(
                "{} {} trend {} per hour ({}% CI {} to {}), change over the window {}",
                name(&t.server),
                name(&t.metric),
                fmt_num(t.slope_per_hour),
                fmt_num((t.confidence * 100.0).round()),
                fmt_num(t.ci_low),
                fmt_num(t.ci_high),
                fmt_num(t.change_over_window)
            ),
            values,
        });
    }
    for c in &an.comparisons {
        for s in &c.standouts {
            let mut values = BTreeMap::new();
            values.insert("median".into(), s.median);
            values.insert("fleet_median".into(), s.fleet_median);
            values.insert("robust_z".into(), s.robust_z);
            facts.push(Fact {
                id: s.id.clone(),
                kind: "comparison",
                server: Some(s.server.clone()),
                metric: Some(s.metric.clone()),
                metrics: Vec::new(),
                start: None,
                end: None,
                severity: Severity::Minor,
                weight: 30.0 + s.robust_z.abs(),
                statement: format!(
                    "{} {} median {} is {} the fleet median {} (robust z {})",
                    name(&s.server),
                    name(&s.metric),
                    fmt_num(s.median),
                    s.direction,
                    fmt_num(s.fleet_median),
                    fmt_num(s.robust_z)
                ),
                values,
            });
        }
    }
    for f in an
        .forecasts
        .iter()
        .filter(|f| f.hours_to_threshold.is_some())
    {
        let mut values = BTreeMap::new();
        let (h, thr) = (
            f.hours_to_threshold.unwrap_or(0.0),
            f.threshold.unwrap_or(0.0),
        );
        values.insert("hours_to_threshold".into(), h);
        values.insert("threshold".into(), thr);
        if let Some(last) = f.points.last() {
            values.insert("forecast_value".into(), last.value);
            values.insert("forecast_low".into(), last.lo);
            values.insert("forecast_high".into(), last.hi);
            values.insert("forecast_hours".into(), f.points.len() as f64);
        }
        facts.push(Fact {
            id: f.id.clone(),
            kind: "forecast",
            server: Some(f.server.clone()),
            metric: Some(f.metric.clone()),
            metrics: Vec::new(),
            start: None,
            end: f.threshold_eta,
            severity: if h <= 24.0 {
                Severity::Warning
            } else {
                Severity::Minor
            },
            weight: 60.0 - h.min(50.0),
            statement: format!(
                "{} {} is forecast to reach {} in {} hours at the current trend",
                name(&f.server),
                name(&f.metric),
                fmt_num(thr),
                fmt_num(h)
            ),
            values,
        });
    }
    for h in &an.health {
        let mut values: BTreeMap<String, f64> = h
            .medians
            .iter()
            .map(|(k, v)| (format!("median_{k}"), *v))
            .collect();
        values.insert("health_score".into(), h.score);
        values.insert("anomalies".into(), h.anomalies as f64);
        values.insert("incidents".into(), h.incidents as f64);
        values.insert("critical".into(), h.critical as f64);
        values.insert("warnings".into(), h.warnings as f64);
        let meds: Vec<String> = h
            .medians
            .iter()
            .map(|(k, v)| format!("{} {}", name(k), fmt_num(*v)))
            .collect();
        facts.push(Fact {
            id: h.id.clone(),
            kind: "health",
            server: Some(h.server.clone()),
            metric: None,
            metrics: Vec::new(),
            start: None,
            end: None,
            severity: match h.status {
                "critical" => Severity::Critical,
                "warning" => Severity::Warning,
                _ => Severity::Info,
            },
            weight: match h.status {
                "critical" => 15.0,
                "warning" => 10.0,
                _ => 1.0,
            },
            statement: format!(
                "{} health {} (score {}): {}; {} incidents ({} critical); medians: {}",
                name(&h.server),
                h.status,
                fmt_num(h.score),
                h.reason,
                h.incidents,
                h.critical,
                meds.join(", ")
            ),
            values,
        });
    }
    facts
}
