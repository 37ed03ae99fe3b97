//! Detection and analysis on synthetic series with known anomalies.

use super::synth::*;
use super::*;

const T0: i64 = 1_763_164_800; // 2025-11-15T00:00:00Z

fn run(series: Vec<Series>) -> Analysis {
    let ds = Dataset { width: 60, series };
    analyse(&ds, (T0, T0 + 86400), None, &Params::default())
}

fn anomalies_of<'a>(an: &'a Analysis, server: &str, metric: &str) -> Vec<&'a Anomaly> {
    an.anomalies
        .iter()
        .filter(|a| a.server == server && a.metric == metric)
        .collect()
}

#[test]
fn clean_series_have_no_anomalies() {
    let series: Vec<Series> = (1..=10)
        .map(|k| day(&format!("srv-{k}"), "cpu", T0, 40.0, 1.5, k))
        .collect();
    let an = run(series);
    assert!(an.anomalies.is_empty(), "{:#?}", an.anomalies);
}

#[test]
fn spike_is_found_with_window_and_peak() {
    let mut s = day("srv-1", "cpu", T0, 40.0, 1.0, 7);
    for i in 600..602 {
        s.avg[i] += 30.0;
    }
    for i in 900..915 {
        s.avg[i] += 20.0; // 15 minutes: a short level shift
    }
    let an = run(vec![s.clone()]);
    let a = anomalies_of(&an, "srv-1", "cpu");
    assert_eq!(a.len(), 2, "{a:#?}");
    assert_eq!(a[0].kind, "spike");
    assert_eq!(a[0].start.timestamp(), T0 + 600 * 60);
    assert_eq!(a[0].end.timestamp(), T0 + 602 * 60);
    assert_eq!(a[1].kind, "level_shift");
    assert_eq!(a[1].start.timestamp(), T0 + 900 * 60);
    assert_eq!(a[1].end.timestamp(), T0 + 915 * 60);
    let peak = s.avg[600..602].iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(a[0].peak, r2(peak));
    assert!(a[0].typical < a[0].band[1] && a[0].band[1] < a[0].peak);
    assert_eq!(a[0].severity, Severity::Critical);
    assert!(an
        .facts
        .iter()
        .any(|f| f.id == a[0].id && f.values["peak"] == a[0].peak));
}

#[test]
fn excursions_close_together_are_one_episode() {
    let mut s = day("srv-1", "cpu", T0, 40.0, 1.0, 7);
    // two spikes 10 bins apart: one episode; a third 90 bins later: its own
    for i in [600, 601, 612, 613, 700, 701] {
        s.avg[i] += 30.0;
    }
    let an = run(vec![s]);
    let a = anomalies_of(&an, "srv-1", "cpu");
    assert_eq!(a.len(), 2, "{a:#?}");
    assert_eq!(a[0].kind, "spike");
    assert_eq!(a[0].start.timestamp(), T0 + 600 * 60);
    assert_eq!(a[0].end.timestamp(), T0 + 614 * 60);
    assert_eq!(a[1].start.timestamp(), T0 + 700 * 60);
    assert_eq!(a[1].end.timestamp(), T0 + 702 * 60);
    // the episode says so, and its span is the episode's
    assert!(
        a[0].unusual
            .contains("at its peak, in an episode of 2 excursions over 14 minutes"),
        "{}",
        a[0].unusual
    );
    assert_eq!(a[0].said["excursions"], 2.0);
    assert_eq!(a[0].said["for"], 14.0);
    assert!(a[1].unusual.contains("for 2 minutes"), "{}", a[1].unusual);
    assert!(!a[1].said.contains_key("excursions"));
    // the gap is a parameter: at 2 bins (touching only) the first episode splits
    let p = Params {
        episode_gap_bins: 2,
        ..Params::default()
    };
    let mut s = day("srv-1", "cpu", T0, 40.0, 1.0, 7);
    for i in [600, 601, 612, 613] {
        s.avg[i] += 30.0;
    }
    let ds = Dataset {
        width: 60,
        series: vec![s],
    };
    let an = analyse(&ds, (T0, T0 + 86400), None, &p);
    assert_eq!(
        anomalies_of(&an, "srv-1", "cpu").len(),
        2,
        "{:#?}",
        an.anomalies
    );
}

#[test]
fn a_spike_only_the_maxima_show_reports_the_maximum() {
    // one bin's maximum jumps by 40 while its average moves by 1: found on
    // the maxima, it peaks at the maximum and is compared with the maxima
    let mut s = day("srv-1", "cpu", T0, 40.0, 1.0, 5);
    s.avg[500] += 1.0;
    s.max[500] += 40.0;
    let an = run(vec![s.clone()]);
    let a = anomalies_of(&an, "srv-1", "cpu");
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].kind, "spike");
    assert!(a[0].baseline.contains("maxima"), "{}", a[0].baseline);
    assert_eq!(a[0].peak, r2(s.max[500]));
    // the typical value is the maxima's nearby level, not the average's
    assert!(
        (a[0].typical - (s.max[499] + s.max[501]) / 2.0).abs() < 3.0,
        "{a:#?}"
    );
    assert!(
        a[0].band[1] < a[0].peak && a[0].typical < a[0].band[1],
        "{a:#?}"
    );
}

#[test]
fn small_valued_series_are_judged_in_their_own_unit() {
    // a price around 0.1 with noise of 0.002: a dip of 0.05 is 25σ (an
    // absolute σ floor of 0.05 would have made it 1σ)
    let mut s = day("srv-1", "cpc", T0, 0.0, 0.0, 3);
    let mut rng = Rng(11);
    for v in s.avg.iter_mut() {
        *v = 0.1 + 0.002 * rng.normal();
    }
    s.min = s.avg.clone();
    s.max = s.avg.clone();
    for i in 800..803 {
        s.avg[i] -= 0.05;
        s.min[i] -= 0.05;
    }
    let an = run(vec![s]);
    let a = anomalies_of(&an, "srv-1", "cpc");
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].kind, "dip");
    assert_eq!(a[0].start.timestamp(), T0 + 800 * 60);
    assert!(a[0].z < -10.0, "{a:#?}");
}

#[test]
fn single_bin_blip_below_persistence_threshold_is_ignored() {
    let mut s = day("srv-1", "cpu", T0, 40.0, 1.0, 9);
    s.avg[700] += 6.0; // about 6σ, one bin: below z_single
    let an = run(vec![s]);
    assert!(an.anomalies.is_empty(), "{:#?}", an.anomalies);
}

#[test]
fn level_shift_is_found_with_its_end() {
    let mut s = day("srv-1", "memory", T0, 50.0, 1.0, 11);
    for i in 500..800 {
        s.avg[i] += 15.0;
    }
    let an = run(vec![s]);
    let a = anomalies_of(&an, "srv-1", "memory");
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].kind, "level_shift");
    let st = (a[0].start.timestamp() - T0) / 60;
    let en = (a[0].end.timestamp() - T0) / 60;
    assert!((499..=502).contains(&st), "start {st}");
    assert!((795..=806).contains(&en), "end {en}");
    // compared with the 2L+1 = 45 bins the step statistic's median covers
    assert_eq!(a[0].baseline, "the level of the 45 minutes before it");
    assert_eq!(a[0].said["baseline_window"], 45.0);
}

#[test]
fn stuck_and_dropout_are_found() {
    let mut s = day("srv-2", "disk_io", T0, 30.0, 1.0, 13);
    for i in 200..240 {
        s.avg[i] = 31.25;
    }
    // remove 10 bins: a dropout
    without(&mut s, 900..910);
    let an = run(vec![s]);
    let a = anomalies_of(&an, "srv-2", "disk_io");
    let stuck: Vec<_> = a.iter().filter(|x| x.kind == "stuck").collect();
    let drop: Vec<_> = a.iter().filter(|x| x.kind == "dropout").collect();
    assert_eq!(stuck.len(), 1, "{a:#?}");
    assert_eq!(stuck[0].start.timestamp(), T0 + 200 * 60);
    assert_eq!(stuck[0].end.timestamp(), T0 + 240 * 60);
    assert_eq!(drop.len(), 1, "{a:#?}");
    assert_eq!(drop[0].start.timestamp(), T0 + 900 * 60);
    assert_eq!(drop[0].end.timestamp(), T0 + 910 * 60);
    assert_eq!(a.len(), 2, "{a:#?}");
}

#[test]
fn short_memory_ramp_is_a_leak() {
    let mut s = day("srv-4", "memory", T0, 50.0, 1.0, 21);
    for i in 700..740 {
        let base = s.avg[i];
        s.avg[i] = base + (97.0 - base) * (i - 699) as f64 / 40.0;
    }
    let an = run(vec![s]);
    let a = anomalies_of(&an, "srv-4", "memory");
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].kind, "leak");
    assert!(a[0].start.timestamp() <= T0 + 710 * 60, "{a:#?}");
    assert_eq!(a[0].end.timestamp(), T0 + 740 * 60);
    assert!(a[0].peak > 95.0);
}

#[test]
fn slow_leak_is_found_against_the_fleet() {
    let mut series: Vec<Series> = (1..=8)
        .map(|k| day(&format!("srv-{k}"), "memory", T0, 50.0, 1.0, 100 + k))
        .collect();
    for i in 600..1000 {
        series[2].avg[i] += (i - 600) as f64 * 0.08; // +32 over 400 minutes
    }
    for i in 1000..1440 {
        series[2].avg[i] += 32.0;
    }
    let ds = Dataset { width: 60, series };
    let p = Params {
        slow_leaks: true,
        ..Params::default()
    };
    let an = analyse(&ds, (T0, T0 + 86400), None, &p);
    let a = anomalies_of(&an, "srv-3", "memory");
    assert!(a.iter().any(|x| x.kind == "leak"), "{a:#?}");
    let leak = a.iter().find(|x| x.kind == "leak").unwrap();
    assert!(
        leak.start.timestamp() <= T0 + 660 * 60 && leak.end.timestamp() >= T0 + 960 * 60,
        "{leak:#?}"
    );
    let others: Vec<_> = an
        .anomalies
        .iter()
        .filter(|x| x.server != "srv-3")
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    // the leak also makes a significant upward trend and srv-3 memory rises
    let t = an.trends.iter().find(|t| t.server == "srv-3").unwrap();
    assert!(t.significant && t.slope_per_hour > 0.0, "{t:#?}");
}

#[test]
fn fleet_standout_and_ranking() {
    let mut series: Vec<Series> = (1..=8)
        .map(|k| {
            day(
                &format!("srv-{k}"),
                "cpu",
                T0,
                40.0 + k as f64 * 0.3,
                1.0,
                200 + k,
            )
        })
        .collect();
    series.push(day("srv-9", "cpu", T0, 80.0, 1.0, 300));
    let an = run(series);
    let c = &an.comparisons[0];
    assert_eq!(c.ranking[0].server, "srv-9");
    assert_eq!(c.standouts.len(), 1, "{c:#?}");
    assert_eq!(c.standouts[0].server, "srv-9");
    assert_eq!(c.standouts[0].direction, "above");
    // independent recomputation of the fleet median of server medians
    let mut meds: Vec<f64> = an.health.iter().map(|h| h.medians["cpu"]).collect();
    meds.sort_by(f64::total_cmp);
    assert!(
        (c.fleet_median - meds[4]).abs() < 0.02,
        "{} vs {}",
        c.fleet_median,
        meds[4]
    );
}

#[test]
fn forecast_reaches_threshold_only_with_a_trend() {
    let mut rng = Rng(5);
    let mut rising = Series::new("srv-1", "memory", 60);
    let mut flat = Series::new("srv-2", "memory", 60);
    for i in 0..1440i64 {
        let t = T0 + i * 60;
        for (s, v) in [
            (&mut rising, 40.0 + i as f64 * (1.0 / 60.0)),
            (&mut flat, 60.0),
        ] {
            let v = v + 0.5 * rng.normal();
            s.ts.push(t);
            s.count.push(12);
            s.avg.push(v);
            s.min.push(v);
            s.max.push(v);
        }
    }
    let an = run(vec![rising, flat]);
    let f1 = an.forecasts.iter().find(|f| f.server == "srv-1").unwrap();
    // 40 + 24 = 64 at the end; 1 per hour → 90 in about 26 hours
    let h = f1.hours_to_threshold.expect("rising memory has an ETA");
    assert!((h - 26.0).abs() < 1.5, "{h}");
    let p1 = &f1.points[0];
    assert!((p1.value - 65.0).abs() < 0.6, "{p1:?}");
    assert!(p1.lo < p1.value && p1.value < p1.hi);
    let t1 = an.trends.iter().find(|t| t.server == "srv-1").unwrap();
    assert!(
        (t1.slope_per_hour - 1.0).abs() < 0.05 && t1.ci_low < 1.0 && t1.ci_high > 1.0,
        "{t1:#?}"
    );
    let f2 = an.forecasts.iter().find(|f| f.server == "srv-2").unwrap();
    assert!(f2.hours_to_threshold.is_none());
    let t2 = an.trends.iter().find(|t| t.server == "srv-2").unwrap();
    assert!(!t2.material, "{t2:#?}");
}

#[test]
fn coincident_shifts_are_a_noisy_neighbour() {
    let mut series: Vec<Series> = (1..=4)
        .map(|k| day(&format!("srv-{k}"), "cpu", T0, 40.0, 1.0, 400 + k))
        .collect();
    for s in series.iter_mut().take(2) {
        for i in 300..310 {
            s.avg[i] += 25.0;
        }
    }
    for i in 800..810 {
        series[3].avg[i] += 25.0; // alone: a level shift
    }
    let an = run(series);
    let kinds: Vec<(&str, &str)> = an
        .anomalies
        .iter()
        .map(|a| (a.server.as_str(), a.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("srv-1", "noisy_neighbour"),
            ("srv-2", "noisy_neighbour"),
            ("srv-4", "level_shift")
        ]
    );
}

#[test]
fn degenerate_series_do_not_panic() {
    let mk = |name: &str, vals: &[f64]| {
        let mut s = Series::new(name, "cpu", 60);
        for (i, v) in vals.iter().enumerate() {
            s.ts.push(T0 + i as i64 * 60);
            s.count.push(1);
            s.avg.push(*v);
            s.min.push(*v);
            s.max.push(*v);
        }
        s
    };
    let flat = vec![42.0; 500];
    let nan = vec![f64::NAN; 200];
    let series = vec![
        mk("srv-1", &[5.0]),
        mk("srv-2", &[5.0, 6.0, 7.0]),
        mk("srv-3", &flat),
        mk("srv-4", &nan),
        mk(
            "srv-5",
            &(0..300)
                .map(|i| if i % 2 == 0 { 0.0 } else { 100.0 })
                .collect::<Vec<_>>(),
        ),
    ];
    let ds = Dataset { width: 60, series };
    for range in [(T0, T0 + 86400), (T0, T0 + 60), (T0 + 3600, T0 + 7200)] {
        let an = analyse(&ds, range, None, &Params::default());
        assert_eq!(an.health.len(), 5);
        // a flat series is stuck only through its identical values, never an excursion
        assert!(
            an.anomalies
                .iter()
                .all(|a| a.server != "srv-3" || a.kind == "stuck" || a.kind == "dropout"),
            "{:#?}",
            an.anomalies
        );
    }
    let empty = analyse(
        &Dataset {
            width: 60,
            series: vec![],
        },
        (T0, T0 + 3600),
        None,
        &Params::default(),
    );
    assert!(empty.anomalies.is_empty() && empty.health.is_empty() && empty.facts.is_empty());
}

#[test]
fn round_to_significant_digits() {
    assert_eq!(round_sig(0.000123456), 0.0001235);
    assert_eq!(round_sig(-1234.5678), -1235.0);
    // values: 2 decimals, 3 significant digits below 1 (never 0 for a small price)
    use series::rv;
    assert_eq!(rv(0.000983971), 0.000984);
    assert_eq!(rv(-0.0123456), -0.0123);
    assert_eq!(rv(0.295), 0.295);
    assert_eq!(rv(41.2345), 41.23);
    assert_eq!(rv(0.0), 0.0);
    assert!(rv(f64::NAN).is_nan());
}

#[test]
fn too_few_blocks_give_no_trend_rather_than_an_unbounded_interval() {
    // 70 minutes: 5 blocks of 15 minutes, too few for a 95% interval
    let mut s = day("srv-1", "cpu", T0, 40.0, 1.0, 3);
    s.ts.truncate(70);
    s.count.truncate(70);
    s.avg.truncate(70);
    s.min.truncate(70);
    s.max.truncate(70);
    let an = analyse(
        &Dataset {
            width: 60,
            series: vec![s],
        },
        (T0, T0 + 70 * 60),
        None,
        &Params::default(),
    );
    assert!(an.trends.is_empty(), "{:#?}", an.trends);
    for f in &an.forecasts {
        assert!(f
            .points
            .iter()
            .all(|p| p.lo.is_finite() && p.hi.is_finite()));
    }
    // a day has plenty: every trend's interval is finite
    let an = run(vec![day("srv-1", "cpu", T0, 40.0, 1.0, 3)]);
    assert_eq!(an.trends.len(), 1);
    assert!(an.trends[0].ci_low.is_finite() && an.trends[0].ci_high.is_finite());
}

#[test]
fn a_shift_against_a_seasonal_baseline_names_its_cycle() {
    use detect::baseline::{BaselineKind, Cycle};
    let s = day("srv-1", "cpu", T0, 40.0, 1.0, 3);
    let mut w = detect::Window::new(100, 200, "level_shift", detect::Basis::Before { bins: 45 });
    w.z = 9.0;
    w.peak_i = 150;
    w.typical = 40.0;
    for (baseline, words) in [
        (
            BaselineKind::Seasonal {
                cycle: Cycle::Week,
                days: 30.0,
            },
            ", the usual weekly profile removed",
        ),
        (
            BaselineKind::Seasonal {
                cycle: Cycle::Day,
                days: 5.0,
            },
            ", the usual daily profile removed",
        ),
        (BaselineKind::Rolling { bins: 91 }, ""),
    ] {
        let d = detect::Detected {
            windows: vec![],
            sigma: 1.0,
            baseline,
            level: 40.0,
        };
        let a = anomaly::explain(&s, &w, &d);
        assert_eq!(
            a.baseline,
            format!("the level of the 45 minutes before it{words}")
        );
    }
}

#[test]
fn a_relative_drop_states_its_fraction_and_a_band_by_factor() {
    use detect::baseline::BaselineKind;
    let mut s = day("srv-1", "requests", T0, 40.0, 1.0, 3);
    s.avg[150] = 0.4;
    let mut w = detect::Window::new(150, 151, "dip", detect::Basis::Relative);
    w.z = -30.0;
    w.peak_i = 150;
    w.typical = 40.0;
    // σ of the logarithm: a band of ×/÷ e^0.3
    w.sigma = Some(0.1);
    let d = detect::Detected {
        windows: vec![],
        sigma: 1.0,
        baseline: BaselineKind::Rolling { bins: 91 },
        level: 40.0,
    };
    let a = anomaly::explain(&s, &w, &d);
    assert_eq!(a.peak, 0.4);
    assert_eq!(a.band, [29.63, 53.99]);
    assert!(
        a.unusual.starts_with(
            "extreme: 1% of the expected 40, 30σ below it on a relative scale, for 1 minute"
        ),
        "{}",
        a.unusual
    );
    assert_eq!(
        a.baseline,
        "the rolling median of the surrounding 91 minutes, on a relative scale (this series' noise grows with its level)"
    );
    assert_eq!(a.said.get("percent_of_expected"), Some(&1.0));
    assert_eq!(a.said.get("sigmas"), Some(&30.0));
}

#[test]
fn an_unusual_day_says_how_far_its_bins_were_from_the_profile() {
    use detect::baseline::{BaselineKind, Cycle};
    let s = day("srv-1", "requests", T0, 40.0, 1.0, 3);
    let mut w = detect::Window::new(100, 700, "unusual_day", detect::Basis::Day { bins: 25 });
    w.z = 4.6;
    w.peak_i = 400;
    w.typical = 40.0;
    let d = detect::Detected {
        windows: vec![],
        sigma: 2.0,
        baseline: BaselineKind::Seasonal {
            cycle: Cycle::Week,
            days: 215.0,
        },
        level: 40.0,
    };
    let a = anomaly::explain(&s, &w, &d);
    assert_eq!(a.kind, "unusual_day");
    assert!(
        a.unusual.starts_with(
            "moderate: the day did not follow its usual profile: half its bins were 4.6σ or more from the expected level, for 10 hours;"
        ),
        "{}",
        a.unusual
    );
    assert!(
        a.baseline.ends_with(", over each 25 minutes around it"),
        "{}",
        a.baseline
    );
    assert_eq!(a.said.get("sigmas"), Some(&4.6));
    assert_eq!(a.said.get("day_window"), Some(&25.0));
    assert_eq!(a.band, [34.0, 46.0]);
    // longer than a day and a half (hourly bins, 47 of them): said as days
    let mut hourly = Series::new("srv-1", "requests", 3600);
    for i in 0..120 {
        hourly.ts.push(T0 + i * 3600);
        hourly.count.push(60);
        for v in [&mut hourly.avg, &mut hourly.min, &mut hourly.max] {
            v.push(40.0);
        }
    }
    let long = detect::Window::new(10, 57, "unusual_day", detect::Basis::Day { bins: 25 });
    let long = detect::Window {
        z: 4.6,
        peak_i: 30,
        typical: 40.0,
        ..long
    };
    let a = anomaly::explain(&hourly, &long, &d);
    assert!(
        a.unusual.starts_with(
            "moderate: the days did not follow their usual profile: in the day around the worst bin half the bins were 4.6σ or more from the expected level, for 47 hours;"
        ),
        "{}",
        a.unusual
    );
}

/// Results come back in the items' order whichever thread finishes first,
/// and a panic in any worker reaches the caller (no result is dropped).
#[test]
fn parallel_keeps_order_and_passes_panics_on() {
    let items: Vec<u64> = (0..200).collect();
    let out = super::parallel(&items, |&i| {
        if i % 7 == 0 {
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
        i * 2
    });
    assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<u64>>());
    for bad in [0, 150, 199] {
        let r = std::panic::catch_unwind(|| {
            super::parallel(&items, |&i| if i == bad { panic!("boom {i}") } else { i })
        });
        assert!(r.is_err(), "the panic at {bad} was lost");
    }
}
