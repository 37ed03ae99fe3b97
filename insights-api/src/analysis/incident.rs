//! Incidents: what happened together on one server is one finding. Anomalies
//! of one server are correlated when they start within `incident_gap_secs`
//! (at least two bins) of each other, or overlap for at least half of the
//! shorter one; correlation is transitive. An agent that stops reporting
//! silences every metric at once: one dropout incident, not four anomalies.
//! The incident names the metric that moved first (`led_by`): the earliest
//! start, the highest score among those that started together.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::anomaly::Anomaly;
use super::detect::score::Severity;
use super::params::Params;
use super::series::r2;

#[derive(Clone, Debug, Serialize)]
pub struct Incident {
    pub id: String,
    pub server: String,
    /// The leading anomaly's kind (`dropout` when every metric went silent).
    pub kind: String,
    pub start: DateTime<Utc>,
    /// Exclusive.
    pub end: DateTime<Utc>,
    pub duration_minutes: f64,
    /// The metrics involved, the leading one first.
    pub metrics: Vec<String>,
    /// The metric whose anomaly started first.
    pub led_by: String,
    /// Minutes from the leading metric's start to the next metric's (0 when
    /// they started together, or for one metric).
    pub lead_minutes: f64,
    /// Ids of the anomalies it groups, in order of start.
    pub anomalies: Vec<String>,
    pub severity: Severity,
    pub score: f64,
    /// The fact that states it: its own id when it groups several anomalies,
    /// else its anomaly's.
    pub fact: String,
}

fn find(parent: &mut [usize], i: usize) -> usize {
    let mut r = i;
    while parent[r] != r {
        r = parent[r];
    }
    let mut k = i;
    while parent[k] != r {
        let next = parent[k];
        parent[k] = r;
        k = next;
    }
    r
}

fn correlated(a: &Anomaly, b: &Anomaly, gap: i64) -> bool {
    if a.server != b.server {
        return false;
    }
    if (a.start - b.start).num_seconds().abs() <= gap {
        return true;
    }
    let overlap = (a.end.min(b.end) - a.start.max(b.start)).num_seconds();
    let shorter = (a.end - a.start)
        .num_seconds()
        .min((b.end - b.start).num_seconds());
    shorter > 0 && 2 * overlap >= shorter
}

/// Groups `anoms` (ids already set) into incidents and records each
/// anomaly's incident. Incidents come in the order of their first anomaly.
pub fn group(anoms: &mut [Anomaly], p: &Params, width: i64) -> Vec<Incident> {
    let n = anoms.len();
    let gap = p.incident_gap_secs.max(2 * width);
    let mut parent: Vec<usize> = (0..n).collect();
    for i in 0..n {
        for j in (i + 1)..n {
            if correlated(&anoms[i], &anoms[j], gap) {
                let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                parent[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        let r = find(&mut parent, i);
        members[r].push(i);
    }
    let mut out = Vec::new();
    for mut m in members.into_iter().filter(|m| !m.is_empty()) {
        m.sort_by(|&x, &y| {
            anoms[x]
                .start
                .cmp(&anoms[y].start)
                .then(anoms[y].score.total_cmp(&anoms[x].score))
        });
        let lead = &anoms[m[0]];
        let mut metrics: Vec<String> = Vec::new();
        for &i in &m {
            if !metrics.contains(&anoms[i].metric) {
                metrics.push(anoms[i].metric.clone());
            }
        }
        let next = m
            .iter()
            .map(|&i| &anoms[i])
            .find(|a| a.metric != lead.metric);
        let lead_minutes = next.map_or(0.0, |a| {
            r2((a.start - lead.start).num_seconds() as f64 / 60.0)
        });
        let start = m
            .iter()
            .map(|&i| anoms[i].start)
            .min()
            .unwrap_or(lead.start);
        let end = m.iter().map(|&i| anoms[i].end).max().unwrap_or(lead.end);
        let all_dropouts = m.iter().all(|&i| anoms[i].kind == "dropout");
        let worst = m
            .iter()
            .map(|&i| &anoms[i])
            .max_by(|a, b| {
                a.severity
                    .cmp(&b.severity)
                    .then(a.score.total_cmp(&b.score))
            })
            .expect("an incident has an anomaly");
        let id = format!("I{}", out.len() + 1);
        let fact = if m.len() == 1 {
            lead.id.clone()
        } else {
            id.clone()
        };
        out.push(Incident {
            id,
            server: lead.server.clone(),
            kind: if all_dropouts {
                "dropout".into()
            } else {
                lead.kind.clone()
            },
            start,
            end,
            duration_minutes: r2((end - start).num_seconds() as f64 / 60.0),
            metrics,
            led_by: lead.metric.clone(),
            lead_minutes,
            anomalies: m.iter().map(|&i| anoms[i].id.clone()).collect(),
            severity: worst.severity,
            score: worst.score,
            fact,
        });
    }
    out.sort_by_key(|x| anoms.iter().position(|a| a.id == x.anomalies[0]));
    for (k, inc) in out.iter_mut().enumerate() {
        let id = format!("I{}", k + 1);
        if inc.fact == inc.id {
            inc.fact = id.clone();
        }
        inc.id = id;
        for a in anoms.iter_mut().filter(|a| inc.anomalies.contains(&a.id)) {
            a.incident = inc.id.clone();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::series::ts;

    fn anomaly(
        id: &str,
        server: &str,
        metric: &str,
        kind: &str,
        start: i64,
        end: i64,
        score: f64,
    ) -> Anomaly {
        Anomaly {
            id: id.into(),
            server: server.into(),
            metric: metric.into(),
            kind: kind.into(),
            start: ts(start),
            end: ts(end),
            duration_minutes: (end - start) as f64 / 60.0,
            peak: 1.0,
            typical: 0.0,
            band: [0.0, 0.5],
            score,
            severity: Severity::from_score(score),
            z: 5.0,
            baseline: String::new(),
            unusual: String::new(),
            return_period_days: None,
            incident: String::new(),
            said: Default::default(),
        }
    }

    #[test]
    fn a_dropout_of_every_metric_is_one_incident() {
        let mut a: Vec<Anomaly> = ["cpu", "disk_io", "memory", "network"]
            .iter()
            .enumerate()
            .map(|(k, m)| {
                anomaly(
                    &format!("A{}", k + 1),
                    "srv-3",
                    m,
                    "dropout",
                    600,
                    780,
                    30.0,
                )
            })
            .collect();
        a.push(anomaly("A5", "srv-4", "cpu", "dropout", 600, 780, 30.0));
        let inc = group(&mut a, &Params::default(), 60);
        assert_eq!(inc.len(), 2, "{inc:#?}");
        assert_eq!(inc[0].kind, "dropout");
        assert_eq!(inc[0].metrics, ["cpu", "disk_io", "memory", "network"]);
        assert_eq!(inc[0].anomalies, ["A1", "A2", "A3", "A4"]);
        assert_eq!(inc[0].fact, "I1");
        assert_eq!(
            inc[1].fact, "A5",
            "a lone anomaly is stated by its own fact"
        );
        assert!(a[..4].iter().all(|x| x.incident == "I1") && a[4].incident == "I2");
    }

    #[test]
    fn the_metric_that_moved_first_leads_and_unrelated_anomalies_stay_apart() {
        let mut a = vec![
            anomaly("A1", "srv-1", "cpu", "level_shift", 1000, 1900, 70.0),
            anomaly("A2", "srv-1", "disk_io", "level_shift", 1120, 1900, 90.0),
            // inside the shift but short and much later: overlap is all of it → grouped
            anomaly("A3", "srv-1", "network", "spike", 1500, 1560, 60.0),
            // a day later: its own incident
            anomaly("A4", "srv-1", "cpu", "spike", 90_000, 90_060, 95.0),
        ];
        let inc = group(&mut a, &Params::default(), 60);
        assert_eq!(inc.len(), 2, "{inc:#?}");
        assert_eq!(inc[0].led_by, "cpu");
        assert_eq!(inc[0].lead_minutes, 2.0);
        assert_eq!(inc[0].metrics, ["cpu", "disk_io", "network"]);
        assert_eq!(inc[0].severity, Severity::Critical);
        assert_eq!(inc[0].kind, "level_shift");
        assert_eq!(inc[1].anomalies, ["A4"]);
    }
}
