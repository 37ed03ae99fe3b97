//! Scores, severities, and how unusual a peak is in words.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Minor,
    Warning,
    Critical,
}

impl Severity {
    pub fn from_score(score: f64) -> Severity {
        if score >= 80.0 {
            Severity::Critical
        } else if score >= 50.0 {
            Severity::Warning
        } else {
            Severity::Minor
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
    /// The score band in words.
    pub fn adjective(self) -> &'static str {
        match self {
            Severity::Critical => "extreme",
            Severity::Warning => "large",
            _ => "moderate",
        }
    }
}

/// Score 0–100 from a robust z: 0 at 3σ, about 50 at 7σ, about 90 at 17σ.
pub fn score_from_z(z: f64) -> f64 {
    let s = 100.0 * (1.0 - (-(z.abs() - 3.0).max(0.0) / 6.0).exp());
    s.clamp(0.0, 100.0).round()
}

/// Score 0–100 from a duration: about 50 at 40 minutes, at least 30.
pub fn score_from_minutes(m: f64) -> f64 {
    (100.0 * (1.0 - (-m / 60.0).exp()))
        .clamp(0.0, 100.0)
        .round()
        .max(30.0)
}

/// Days between occurrences for a per-bin rate, `None` without a tail.
pub fn return_period_days(rate: Option<f64>, width: i64) -> Option<f64> {
    let r = rate?;
    if r <= 0.0 {
        return Some(f64::INFINITY);
    }
    Some(width as f64 / r / 86_400.0)
}

/// A return period in words (how often this series' own noise goes this
/// far) and the number the words state.
pub fn rarity_words(days: Option<f64>) -> (String, Option<f64>) {
    let own = "this series' own noise goes this far";
    match days {
        None => (
            "too few bins to fit this series' tail: judged on the fixed threshold".into(),
            None,
        ),
        Some(d) if !d.is_finite() => (
            "beyond anything this series' own noise reaches".into(),
            None,
        ),
        Some(d) if d < 1.0 => {
            let h = (d * 24.0).round().max(1.0);
            (format!("{own} about every {h} hours"), Some(h))
        }
        Some(d) if d < 60.0 => {
            let n = d.round();
            (format!("{own} about once in {n} days"), Some(n))
        }
        Some(d) if d < 730.0 => {
            let n = (d / 30.4).round();
            (format!("{own} about once in {n} months"), Some(n))
        }
        Some(_) => (format!("{own} less than once a year"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_severity() {
        assert_eq!(score_from_z(3.0), 0.0);
        assert!(score_from_z(7.0) > 40.0 && score_from_z(7.0) < 60.0);
        assert!(score_from_z(30.0) > 95.0);
        assert_eq!(Severity::from_score(85.0), Severity::Critical);
        assert_eq!(score_from_minutes(1.0), 30.0);
        assert!((score_from_minutes(40.0) - 49.0).abs() <= 1.0);
    }

    #[test]
    fn rarity_in_words() {
        // one bin in 1440 of one minute: once a day
        assert_eq!(return_period_days(Some(1.0 / 1440.0), 60), Some(1.0));
        assert_eq!(return_period_days(None, 60), None);
        assert_eq!(
            rarity_words(Some(0.25)),
            (
                "this series' own noise goes this far about every 6 hours".into(),
                Some(6.0)
            )
        );
        assert!(rarity_words(Some(14.2)).0.contains("once in 14 days"));
        assert_eq!(rarity_words(Some(120.0)).1, Some(4.0));
        assert!(rarity_words(Some(1000.0))
            .0
            .contains("less than once a year"));
        assert!(rarity_words(Some(f64::INFINITY)).0.contains("beyond"));
    }
}
