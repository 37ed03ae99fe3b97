//! Deterministic analysis over the bins: anomalies grouped into incidents,
//! trends, fleet comparisons, forecasts and per-server health. Every result
//! becomes a [`Fact`] with an id that the narrative must cite. Methods are
//! documented in docs/api.md ("Methods of analysis").
//!
//! By concern:
//! - [`series`]: the input (plain series of bins) and value helpers;
//! - [`detect`]: anomaly detection in one series;
//! - [`anomaly`]: a detection scored and explained;
//! - [`fleet`]: fleet comparison and the cross-server rules;
//! - [`incident`]: what happened together on one server, one finding;
//! - [`forecast`]: trends and forecasts;
//! - [`health`]: per-server status;
//! - [`facts`]: the citable facts.
//!
//! The module depends on nothing but the statistics in `crate::stats`: the
//! database layer builds its input, the routes call [`analyse`].

pub mod anomaly;
pub mod detect;
pub mod facts;
pub mod fleet;
pub mod forecast;
pub mod health;
pub mod incident;
pub mod params;
pub mod series;
#[cfg(test)]
pub mod synth;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Serialize;

pub use anomaly::Anomaly;
pub use detect::score::{score_from_z, Severity};
pub use facts::Fact;
pub use fleet::{Comparison, Ranked, Standout};
pub use forecast::{block_secs, Forecast, ForecastPoint, Trend};
pub use health::Health;
pub use incident::Incident;
pub use params::Params;
pub use series::{fmt_num, r2, round_sig, threshold_for, Dataset, Series};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Analysis {
    /// Carried separately in responses (with the period fact first).
    #[serde(skip)]
    pub facts: Vec<Fact>,
    pub anomalies: Vec<Anomaly>,
    /// Anomalies of one server that happened together: one finding each.
    pub incidents: Vec<Incident>,
    pub trends: Vec<Trend>,
    pub comparisons: Vec<Comparison>,
    pub forecasts: Vec<Forecast>,
    pub health: Vec<Health>,
}

/// What one series contributes, computed in parallel.
struct PerSeries {
    detected: detect::Detected,
    fits: forecast::Fits,
}

/// Runs `work` over `items` on up to 8 threads (the per-series work is
/// independent), results in order. Items are handed out one at a time, so a
/// thread the host pauses holds up one item, not half of them.
fn parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    if threads == 1 || items.len() < 8 {
        return items.iter().map(&work).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, work(item)));
        }
    };
    let mut out: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|sc| {
        // the calling thread is one of the workers
        let others: Vec<_> = (1..threads).map(|_| sc.spawn(worker)).collect();
        let mine = worker();
        for (i, r) in others
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .chain(mine)
        {
            out[i] = Some(r);
        }
    });
    out.into_iter()
        .map(|r| r.expect("every item was handed out once"))
        .collect()
}

/// Runs the whole analysis. `focus` limits anomalies, trends, forecasts and
/// health to one server; comparisons always use the whole fleet. Results keep
/// the dataset's order of series.
pub fn analyse(ds: &Dataset, range: (i64, i64), focus: Option<&str>, p: &Params) -> Analysis {
    let mut an = Analysis::default();
    let range_secs = range.1 - range.0;
    let block = block_secs(range_secs, ds.width.max(60));
    let series: Vec<&Series> = ds.series.iter().filter(|s| !s.is_empty()).collect();
    let per_metric = fleet::by_metric(&series);
    // the fleet's block curves serve slow leaks only
    let fleet_curves = if p.slow_leaks {
        fleet::fleet_curves(&per_metric, block)
    } else {
        Default::default()
    };

    // Dropouts are judged within the fleet's data span, not the requested
    // range: a range that runs past the last bin is not a dropout.
    let span = (
        series
            .iter()
            .map(|s| s.ts[0])
            .min()
            .unwrap_or(range.0)
            .max(range.0),
        series
            .iter()
            .map(|s| s.ts[s.len() - 1] + s.width)
            .max()
            .unwrap_or(range.1)
            .min(range.1),
    );
    let focused = |s: &Series| focus.is_none_or(|f| f == s.server);
    let todo: Vec<&Series> = series.iter().copied().filter(|s| focused(s)).collect();
    // each series at its own cadence (a slower source read at a finer width)
    let regrid: Vec<std::borrow::Cow<Series>> =
        todo.iter().map(|s| series::at_cadence(s)).collect();
    let todo: Vec<&Series> = regrid.iter().map(|s| s.as_ref()).collect();
    let results = parallel(&todo, |s| PerSeries {
        detected: detect::detect_series(s, p, span, fleet_curves.get(s.metric.as_str()), block),
        fits: forecast::fit(s, block, p),
    });
    for (s, res) in todo.iter().copied().zip(&results) {
        for w in &res.detected.windows {
            an.anomalies.push(anomaly::explain(s, w, &res.detected));
        }
        if let Some((t, f)) =
            forecast::trend_and_forecast(s, &res.fits, res.detected.sigma, range, p)
        {
            if let Some(mut t) = t {
                t.id = format!("T{}", an.trends.len() + 1);
                an.trends.push(t);
            }
            if let Some(mut f) = f {
                f.id = format!("F{}", an.forecasts.len() + 1);
                an.forecasts.push(f);
            }
        }
    }
    fleet::drop_fleet_regime_changes(&mut an.anomalies, p);
    fleet::mark_noisy_neighbours(&mut an.anomalies);
    for (k, a) in an.anomalies.iter_mut().enumerate() {
        a.id = format!("A{}", k + 1);
    }
    an.incidents = incident::group(&mut an.anomalies, p, ds.width);
    an.comparisons = fleet::comparisons(&per_metric, focus, p);

    let mut servers: Vec<&str> = todo.iter().map(|s| s.server.as_str()).collect();
    servers.dedup();
    let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
    for a in &an.anomalies {
        *per_server.entry(a.server.clone()).or_default() += 1;
    }
    an.health = health::health(
        &servers,
        &health::Inputs {
            series: &series,
            incidents: &an.incidents,
            anomalies_per_server: &per_server,
            forecasts: &an.forecasts,
            comparisons: &an.comparisons,
            as_of: span.1,
            range_secs,
        },
        p,
    );
    an.facts = facts::facts_of(&an);
    an
}
