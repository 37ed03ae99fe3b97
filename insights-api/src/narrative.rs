//! The narrative: its schema, the local (mock) narrator, the prompt built from
//! budgeted facts, and the validation every narrative must pass.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::analysis::{Analysis, Fact, Severity};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub text: String,
    pub evidence: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Narrative {
    pub summary: String,
    pub findings: Vec<Finding>,
}

/// JSON Schema of the narrative, for `response_format: json_schema`.
pub fn narrative_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["summary", "findings"],
        "properties": {
            "summary": {"type": "string"},
            "findings": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["text", "evidence"],
                    "properties": {
                        "text": {"type": "string"},
                        "evidence": {"type": "array", "items": {"type": "string"}}
                    }
                }
            }
        }
    })
}

/// The period fact `P1`: counts the summary may state.
pub fn period_fact(an: &Analysis, hours: f64, servers: usize) -> Fact {
    let mut values = BTreeMap::new();
    let crit = an
        .anomalies
        .iter()
        .filter(|a| a.severity == Severity::Critical)
        .count();
    let warn = an
        .anomalies
        .iter()
        .filter(|a| a.severity == Severity::Warning)
        .count();
    let unhealthy = an.health.iter().filter(|h| h.status != "ok").count();
    values.insert("hours".into(), crate::analysis::r2(hours));
    values.insert("servers".into(), servers as f64);
    values.insert("anomalies".into(), an.anomalies.len() as f64);
    values.insert("critical".into(), crit as f64);
    values.insert("warnings".into(), warn as f64);
    values.insert("servers_needing_attention".into(), unhealthy as f64);
    Fact {
        id: "P1".into(),
        kind: "period",
        server: None,
        metric: None,
        metrics: Vec::new(),
        start: None,
        end: None,
        severity: Severity::Info,
        weight: 1000.0,
        statement: format!(
            "{} hours, {} servers, {} anomalies ({} critical, {} warning), {} servers need attention",
            crate::analysis::r2(hours),
            servers,
            an.anomalies.len(),
            crit,
            warn,
            unhealthy
        ),
        values,
    }
}

fn n(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// The local narrator: deterministic, the same schema, every number taken from
/// the facts it cites.
pub fn local_narrative(an: &Analysis, facts: &[Fact]) -> Narrative {
    let p = facts.iter().find(|f| f.id == "P1");
    let get = |k: &str| p.and_then(|f| f.values.get(k)).copied().unwrap_or(0.0);
    let mut findings = Vec::new();
    let summary = if an.anomalies.is_empty() && an.health.is_empty() {
        "No data in the requested range: nothing to analyse.".to_string()
    } else if an.anomalies.is_empty() {
        format!(
            "Over {} hours, {} servers showed no anomalies.",
            n(get("hours")),
            n(get("servers"))
        )
    } else {
        format!(
            "Over {} hours, {} servers had {} anomalies ({} critical, {} warning); {} servers need attention.",
            n(get("hours")),
            n(get("servers")),
            n(get("anomalies")),
            n(get("critical")),
            n(get("warnings")),
            n(get("servers_needing_attention"))
        )
    };
    // the most severe anomalies first, then forecasts, standouts, trends
    let mut ranked: Vec<&Fact> = facts
        .iter()
        .filter(|f| f.kind != "period" && f.kind != "health")
        .collect();
    ranked.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.id.cmp(&b.id)));
    for f in ranked.into_iter().take(12) {
        let srv = f.server.as_deref().unwrap_or("fleet");
        let met = f.metric.as_deref().unwrap_or("");
        let v = |k: &str| n(f.values.get(k).copied().unwrap_or(0.0));
        let text = match f.kind {
            "anomaly" => {
                let kind = f.statement.split(' ').nth(2).unwrap_or("anomaly").replace('_', " ");
                format!(
                    "{srv} {met}: {kind} from {} to {} UTC, peak {} against a typical {} (expected {} to {}); score {}, {}.",
                    f.start.map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default(),
                    f.end.map(|t| t.format("%H:%M").to_string()).unwrap_or_default(),
                    v("peak"),
                    v("typical"),
                    v("band_low"),
                    v("band_high"),
                    v("score"),
                    f.severity.as_str()
                )
            }
            "forecast" => format!(
                "{srv} {met} is on course to reach {} in about {} hours if the current trend holds.",
                v("threshold"),
                v("hours_to_threshold")
            ),
            "comparison" => format!(
                "{srv} {met} runs at a median of {} while the fleet median is {} (robust z {}).",
                v("median"),
                v("fleet_median"),
                v("robust_z")
            ),
            "trend" => format!(
                "{srv} {met} trends by {} per hour ({}% interval {} to {}).",
                v("confidence_pct"),
                v("slope_per_hour"),
                v("ci_low"),
                v("ci_high")
            ),
            _ => f.statement.clone(),
        };
        findings.push(Finding {
            text,
            evidence: vec![f.id.clone()],
        });
    }
    let mut evidence_summary = vec!["P1".to_string()];
    evidence_summary.dedup();
    if findings.is_empty() && !an.health.is_empty() {
        findings.push(Finding {
            text: summary.clone(),
            evidence: evidence_summary,
        });
    }
    Narrative { summary, findings }
}

/// Numbers stated in a text, skipping identifiers (srv-3, A12, p80), dates and
/// times (2025-11-15, 10:05), and splitting ranges (35.1–47.3).
pub fn numbers_in(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for raw in text.split(|c: char| c.is_whitespace() || "(),;[]{}\"'=/".contains(c)) {
        let w = raw.trim_matches(|c: char| ".,:;!?%".contains(c));
        if w.is_empty() || !w.chars().any(|c| c.is_ascii_digit()) {
            continue;
        }
        if w.chars().any(|c| c.is_alphabetic() || c == ':' || c == '_') {
            continue; // identifiers, times, units glued to numbers
        }
        let dashes = w.matches('-').count();
        if dashes >= 2 && !w.starts_with('-') {
            continue; // dates
        }
        // split ranges on en dash / "to"-like hyphens between digits
        let mut parts: Vec<String> = Vec::new();
        let mut cur = String::new();
        let chars: Vec<char> = w.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            let between_digits = i > 0 && chars[i - 1].is_ascii_digit();
            if c == '–' || c == '—' || (c == '-' && between_digits) {
                parts.push(std::mem::take(&mut cur));
            } else {
                cur.push(c);
            }
        }
        parts.push(cur);
        for p in parts {
            let p = p.trim_matches(|c: char| ".,%+".contains(c) && c != '-');
            if let Ok(x) = p.parse::<f64>() {
                out.push(x);
            }
        }
    }
    out
}

fn decimals(x: f64) -> i32 {
    let s = format!("{x}");
    s.split_once('.').map(|(_, d)| d.len() as i32).unwrap_or(0)
}

/// Whether a stated number matches a fact value within the rounding shown.
pub fn matches_value(stated: f64, value: f64) -> bool {
    let tol = 0.5 * 10f64.powi(-decimals(stated)) + 1e-9;
    (stated - value).abs() <= tol
        || (stated.abs() - value.abs()).abs() <= tol // "fell by 3.2" for -3.2
        || (value != 0.0 && ((stated - value) / value).abs() <= 0.005)
}

/// Checks a narrative against the facts: at least the summary, every cited id
/// exists, every number in a finding matches a fact it cites (the summary may
/// use P1 and any fact cited anywhere). Returns every problem found.
pub fn validate(nv: &Narrative, facts: &[Fact]) -> Result<(), Vec<String>> {
    let by_id: BTreeMap<&str, &Fact> = facts.iter().map(|f| (f.id.as_str(), f)).collect();
    let mut errors = Vec::new();
    if nv.summary.trim().is_empty() {
        errors.push("summary is empty".to_string());
    }
    let mut all_cited: BTreeSet<&str> = BTreeSet::new();
    all_cited.insert("P1");
    for (i, f) in nv.findings.iter().enumerate() {
        if f.text.trim().is_empty() {
            errors.push(format!("finding {i} has empty text"));
        }
        if f.evidence.is_empty() {
            errors.push(format!("finding {i} cites no fact id"));
        }
        let mut values: Vec<f64> = Vec::new();
        for id in &f.evidence {
            match by_id.get(id.as_str()) {
                Some(fact) => {
                    all_cited.insert(fact.id.as_str());
                    values.extend(fact.values.values().copied());
                }
                None => errors.push(format!("finding {i} cites unknown fact id {id:?}")),
            }
        }
        for x in numbers_in(&f.text) {
            if !values.iter().any(|&v| matches_value(x, v)) {
                errors.push(format!(
                    "finding {i}: the number {x} does not match any value of the facts it cites ({})",
                    f.evidence.join(", ")
                ));
            }
        }
    }
    let summary_values: Vec<f64> = all_cited
        .iter()
        .filter_map(|id| by_id.get(id))
        .flat_map(|f| f.values.values().copied())
        .collect();
    for x in numbers_in(&nv.summary) {
        if !summary_values.iter().any(|&v| matches_value(x, v)) {
            errors.push(format!(
                "summary: the number {x} does not match P1 or any cited fact"
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The facts section of the prompt: one compact line per fact, the most
/// severe first, within `budget` characters; quiet servers are one health
/// line each, and what does not fit is counted.
pub fn facts_prompt(facts: &[Fact], budget: usize) -> String {
    let mut ranked: Vec<&Fact> = facts.iter().collect();
    ranked.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.id.cmp(&b.id)));
    let mut out = String::new();
    let mut omitted = 0usize;
    for f in ranked {
        let line = format!("{} [{}] {}\n", f.id, f.kind, f.statement);
        if out.len() + line.len() > budget {
            omitted += 1;
            continue;
        }
        out.push_str(&line);
    }
    if omitted > 0 {
        out.push_str(&format!(
            "({omitted} lower-ranked facts omitted for length)\n"
        ));
    }
    out
}

pub const SYSTEM_PROMPT: &str = "You are a site-reliability analyst. You receive facts computed \
deterministically from server metrics; each fact has an id. Write a short narrative for an \
operator as JSON: {\"summary\": string, \"findings\": [{\"text\": string, \"evidence\": [fact ids]}]}. \
Rules: use only the facts given; every finding cites the ids of the facts it relies on; every \
number you write must be copied from a fact you cite (same value, rounding allowed); do not \
compute new numbers, percentages or differences; name servers and metrics as given; write times \
as HH:MM UTC; the summary may use numbers from fact P1. Most severe first, at most 10 findings. \
Answer with the JSON object only.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyse, synth::day, Dataset, Params};

    fn sample() -> (Analysis, Vec<Fact>) {
        let t0 = 1_763_164_800;
        let mut s = day("srv-1", "cpu", t0, 40.0, 1.0, 7);
        for i in 600..606 {
            s.avg[i] += 30.0;
        }
        let mut series = vec![s];
        for k in 2..=6 {
            series.push(day(&format!("srv-{k}"), "cpu", t0, 40.0, 1.0, k));
        }
        let an = analyse(
            &Dataset { width: 60, series },
            (t0, t0 + 86400),
            None,
            &Params::default(),
        );
        let mut facts = vec![period_fact(&an, 24.0, 6)];
        facts.extend(an.facts.clone());
        (an, facts)
    }

    #[test]
    fn number_extraction() {
        let xs = numbers_in("srv-3 cpu: spike from 2025-11-15 10:05 to 10:17 UTC, peak 97.3% (expected 35.1–47.3), z -2.5, A12 p80, 4 hours.");
        assert_eq!(xs, vec![97.3, 35.1, 47.3, -2.5, 4.0]);
        assert_eq!(numbers_in("between 1,200 and 3"), vec![1.0, 200.0, 3.0]);
    }

    #[test]
    fn local_narrative_validates() {
        let (an, facts) = sample();
        let nv = local_narrative(&an, &facts);
        assert!(!nv.findings.is_empty());
        assert!(
            nv.findings[0].evidence.iter().any(|e| e.starts_with('A')),
            "{nv:#?}"
        );
        validate(&nv, &facts).unwrap_or_else(|e| panic!("{e:?}\n{nv:#?}"));
        // deterministic
        assert_eq!(nv, local_narrative(&an, &facts));
    }

    #[test]
    fn wrong_number_and_unknown_id_are_rejected() {
        let (an, facts) = sample();
        let a = &an.anomalies[0];
        let good = Narrative {
            summary: "One spike.".into(),
            findings: vec![Finding {
                text: format!("srv-1 cpu peaked at {}.", a.peak),
                evidence: vec![a.id.clone()],
            }],
        };
        validate(&good, &facts).unwrap();
        let wrong = Narrative {
            summary: "One spike.".into(),
            findings: vec![Finding {
                text: format!("srv-1 cpu peaked at {}.", a.peak + 7.0),
                evidence: vec![a.id.clone()],
            }],
        };
        let e = validate(&wrong, &facts).unwrap_err();
        assert!(e[0].contains("does not match"), "{e:?}");
        let unknown = Narrative {
            summary: "x".into(),
            findings: vec![Finding {
                text: "bad".into(),
                evidence: vec!["Z9".into()],
            }],
        };
        assert!(validate(&unknown, &facts).unwrap_err()[0].contains("unknown fact id"));
        let bad_summary = Narrative {
            summary: "There were 999 anomalies.".into(),
            findings: vec![],
        };
        assert!(validate(&bad_summary, &facts).is_err());
    }

    #[test]
    fn rounding_tolerance() {
        assert!(matches_value(97.3, 97.26));
        assert!(matches_value(97.0, 97.4));
        assert!(!matches_value(97.0, 97.6));
        assert!(!matches_value(90.0, 91.0));
    }

    #[test]
    fn prompt_respects_budget() {
        let (_, facts) = sample();
        let full = facts_prompt(&facts, usize::MAX);
        assert!(full.starts_with("P1 "));
        let small = facts_prompt(&facts, 200);
        assert!(small.len() <= 260, "{small}");
        assert!(small.contains("omitted"));
    }
}
