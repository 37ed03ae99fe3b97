//! Running a plan: offline (file or dry run) or into PostgreSQL, in backfill
//! or live mode.
//!
//! Database loads are a pipeline: one generator thread encodes batches of
//! whole timestamps (every server and metric) in binary COPY format; N tasks,
//! each with its own connection, take batches from a bounded queue and load
//! each with one `COPY … FROM STDIN (FORMAT binary)` in its own transaction;
//! the coordinator tracks which timestamp ranges have committed, writes the
//! anomaly labels once the data under them has committed, and reports.

use crate::anomaly::Label;
use crate::cli::{DbUrl, Mode, Plan, Target};
use crate::encode::{CopyEncoder, StreamHash, HEADER, TRAILER};
use crate::gen::{GenConfig, Generator};
use crate::ranges::RangeSet;
use crate::timefmt::{format_duration, format_ts, now_us, to_datetime, MICROS_PER_DAY};
use bytes::Bytes;
use futures_util::SinkExt;
use indicatif::{HumanCount, ProgressBar, ProgressState, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::{Client, NoTls, Statement};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_OVERLAP: u8 = 3;
pub const EXIT_INTERRUPTED: u8 = 130;

const COPY_SQL: &str =
    "COPY metricagg.samples (server_id, metric_type, ts, value) FROM STDIN (FORMAT binary)";
/// Size of the CopyData messages a batch is cut into.
const CHUNK: usize = 1 << 20;

/// What a run did; printed as one line on stdout.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub rows: u64,
    pub seconds: f64,
    pub seed: u64,
    pub labels: u64,
    pub batches: u64,
    /// Hash of every generated row, when the run completed.
    pub hash: Option<u64>,
}

impl Summary {
    pub fn line(&self) -> String {
        let rate = if self.seconds > 0.0 {
            self.rows as f64 / self.seconds
        } else {
            0.0
        };
        let mut s = format!(
            "rows={} seconds={:.3} rows_per_s={:.0} seed={} labels={} batches={}",
            self.rows, self.seconds, rate, self.seed, self.labels, self.batches
        );
        if let Some(h) = self.hash {
            s.push_str(&format!(" hash={h:016x}"));
        }
        s
    }
}

/// A failed run: exit code, message, and what was done before it failed.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    pub summary: Option<Summary>,
}

impl Failure {
    fn db(message: String) -> Failure {
        Failure {
            code: EXIT_FAILURE,
            message,
            summary: None,
        }
    }
}

fn info(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("seeder: {msg}");
    }
}

/// `{rate}` in progress templates: whole rows per second.
fn rate_key(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{} rows/s", HumanCount(state.per_sec() as u64));
}

fn progress(plan: &Plan) -> ProgressBar {
    if plan.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match plan.gen.full_rows() {
        Some(total) => {
            let pb = ProgressBar::new(total);
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows  {rate}  ETA {eta}",
                )
                .expect("valid template")
                .with_key("rate", rate_key),
            );
            pb
        }
        None => {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {human_pos} rows  {per_sec}  {msg}",
                )
                .expect("valid template"),
            );
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        }
    }
}

fn describe_plan(plan: &Plan) -> String {
    let g = &plan.gen;
    let range = match plan.end_us() {
        Some(end) => format!("[{}, {})", format_ts(g.start_us), format_ts(end)),
        None => format!("from {} until Ctrl-C", format_ts(g.start_us)),
    };
    let target = match &plan.target {
        Target::Database(u) => format!("{} over {} connection(s)", u.describe(), plan.connections),
        Target::File(p) => format!("file {}", p.display()),
        Target::DryRun => "nowhere (dry run)".into(),
    };
    let names = g
        .metrics
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(",");
    let rows = g
        .full_rows()
        .map(|r| format!(", up to {r} rows"))
        .unwrap_or_default();
    format!(
        "seed={}{} mode={:?} servers={} metrics={} interval={} range={}{} → {}",
        g.seed,
        if plan.seed_given { "" } else { " (drawn)" },
        plan.mode,
        g.servers.len(),
        names,
        format_duration(g.interval_us),
        range,
        rows,
        target
    )
    .replace("mode=Backfill", "mode=backfill")
    .replace("mode=Live", "mode=live")
}

pub async fn run(plan: Plan) -> Result<Summary, Failure> {
    info(plan.quiet, &describe_plan(&plan));
    match &plan.target {
        Target::Database(url) => {
            let url = url.clone();
            run_db(plan, *url).await
        }
        _ => run_offline(&plan),
    }
}

/// File output or dry run: the generator alone, on this thread.
pub fn run_offline(plan: &Plan) -> Result<Summary, Failure> {
    let t0 = Instant::now();
    let io = |e: std::io::Error| Failure::db(format!("cannot write the output: {e}"));
    let mut out = match &plan.target {
        Target::File(p) => {
            let f = std::fs::File::create(p)
                .map_err(|e| Failure::db(format!("cannot create {}: {e}", p.display())))?;
            Some(std::io::BufWriter::with_capacity(CHUNK, f))
        }
        _ => None,
    };
    let mut g = Generator::new(plan.gen.clone());
    let mut enc = CopyEncoder::new(&plan.gen.servers);
    let mut hash = StreamHash::default();
    let pb = progress(plan);
    if let Some(w) = out.as_mut() {
        w.write_all(HEADER).map_err(io)?;
    }
    let steps = plan.batch_steps();
    let mut batches = 0;
    while !g.is_done() {
        enc.clear();
        g.generate(steps, &mut enc);
        hash.update(&enc.buf);
        if let Some(w) = out.as_mut() {
            w.write_all(&enc.buf).map_err(io)?;
        }
        pb.inc(enc.rows());
        batches += 1;
    }
    if let Some(mut w) = out {
        w.write_all(TRAILER).map_err(io)?;
        w.flush().map_err(io)?;
    }
    pb.finish_and_clear();
    Ok(Summary {
        rows: g.rows(),
        seconds: t0.elapsed().as_secs_f64(),
        seed: plan.gen.seed,
        labels: g.take_labels().len() as u64,
        batches,
        hash: Some(hash.finish()),
    })
}

/// Readable text of a tokio-postgres error: the server's message, detail and
/// hint, or the chain of causes (connection refused, timeout, …).
pub fn explain(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(&format!(": {t}"));
        }
        src = c.source();
    }
    s
}

async fn connect(url: &DbUrl) -> Result<Client, String> {
    let mut cfg = url.config.clone();
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(10));
    }
    cfg.application_name("seeder");
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| {
        format!(
            "cannot connect to PostgreSQL as {}: {}. Is the cluster running (make db-start) and the URL right?",
            url.describe(),
            explain(&e)
        )
    })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

struct Batch {
    k0: u64,
    k1: u64,
    rows: u64,
    data: Bytes,
}

enum Msg {
    Started {
        worker: usize,
        k0: u64,
        k1: u64,
    },
    Committed {
        worker: usize,
        k0: u64,
        k1: u64,
        rows: u64,
    },
    Failed {
        worker: usize,
        k0: u64,
        k1: u64,
        error: String,
        in_doubt: bool,
    },
    Exit,
}

/// Loads one batch in its own transaction. On error, says whether the COMMIT
/// itself failed (the outcome is then unknown to us).
async fn copy_batch(
    client: &mut Client,
    stmt: &Statement,
    b: &Batch,
) -> Result<(), (String, bool)> {
    let early = |e: tokio_postgres::Error| (explain(&e), false);
    let tx = client.transaction().await.map_err(early)?;
    let sink = tx.copy_in::<_, Bytes>(stmt).await.map_err(early)?;
    let mut sink = std::pin::pin!(sink);
    let mut off = 0;
    while off < b.data.len() {
        let end = (off + CHUNK).min(b.data.len());
        sink.feed(b.data.slice(off..end)).await.map_err(early)?;
        off = end;
    }
    let n = sink.as_mut().finish().await.map_err(early)?;
    if n != b.rows {
        return Err((format!("COPY loaded {n} rows, expected {}", b.rows), false));
    }
    tx.commit().await.map_err(|e| (explain(&e), true))
}

async fn worker(
    id: usize,
    mut client: Client,
    stmt: Statement,
    rx: Arc<Mutex<mpsc::Receiver<Batch>>>,
    tx: mpsc::UnboundedSender<Msg>,
    abandon: Arc<AtomicBool>,
) {
    loop {
        if abandon.load(Ordering::SeqCst) {
            break;
        }
        let next = rx.lock().await.recv().await;
        let Some(b) = next else { break };
        if abandon.load(Ordering::SeqCst) {
            break;
        }
        let _ = tx.send(Msg::Started {
            worker: id,
            k0: b.k0,
            k1: b.k1,
        });
        match copy_batch(&mut client, &stmt, &b).await {
            Ok(()) => {
                let _ = tx.send(Msg::Committed {
                    worker: id,
                    k0: b.k0,
                    k1: b.k1,
                    rows: b.rows,
                });
            }
            Err((error, in_doubt)) => {
                let _ = tx.send(Msg::Failed {
                    worker: id,
                    k0: b.k0,
                    k1: b.k1,
                    error,
                    in_doubt,
                });
                break;
            }
        }
    }
    drop(rx);
    let _ = tx.send(Msg::Exit);
}

/// The generator thread: encodes batches and queues them; labels go to the
/// coordinator before the batch that starts them.
fn generate_batches(
    plan_gen: GenConfig,
    mode: Mode,
    batch_steps: u64,
    batch_rows: u64,
    btx: mpsc::Sender<Batch>,
    ltx: mpsc::UnboundedSender<Vec<Label>>,
    stop: Arc<AtomicBool>,
) -> Option<u64> {
    let cfg = plan_gen.clone();
    let mut g = Generator::new(plan_gen);
    let mut enc = CopyEncoder::new(&cfg.servers);
    let mut hash = StreamHash::default();
    let cap = (batch_rows as usize).saturating_mul(48).min(256 << 20);
    let mut send = |g: &mut Generator, enc: &mut CopyEncoder, k0: u64| -> bool {
        hash.update(&enc.buf[HEADER.len()..]);
        let rows = enc.rows();
        let data = Bytes::from(enc.finish());
        let labels = g.take_labels();
        if !labels.is_empty() {
            let _ = ltx.send(labels);
        }
        btx.blocking_send(Batch {
            k0,
            k1: g.next_index(),
            rows,
            data,
        })
        .is_ok()
    };
    match mode {
        Mode::Backfill => {
            while !g.is_done() && !stop.load(Ordering::SeqCst) {
                let k0 = g.next_index();
                enc.begin(cap);
                g.generate(batch_steps, &mut enc);
                if !send(&mut g, &mut enc, k0) {
                    return None;
                }
            }
        }
        Mode::Live => {
            let mut last_flush = Instant::now();
            let mut k0 = g.next_index();
            enc.begin(1 << 16);
            loop {
                let stopping = stop.load(Ordering::SeqCst);
                let wait = cfg.ts(g.next_index()) - now_us();
                let due = !stopping && wait <= 0;
                if due {
                    g.generate(1, &mut enc);
                }
                let pending = g.next_index() > k0;
                if pending
                    && (stopping
                        || enc.rows() >= batch_rows
                        || last_flush.elapsed() >= Duration::from_secs(1))
                {
                    if !send(&mut g, &mut enc, k0) {
                        return None;
                    }
                    k0 = g.next_index();
                    enc.begin(1 << 16);
                    last_flush = Instant::now();
                }
                if stopping {
                    return None;
                }
                if !due {
                    std::thread::sleep(Duration::from_micros(wait.clamp(1, 100_000) as u64));
                }
            }
        }
    }
    g.is_done().then(|| hash.finish())
}

async fn write_labels(client: &Client, cfg: &GenConfig, labels: &[Label]) -> Result<u64, String> {
    if labels.is_empty() {
        return Ok(0);
    }
    let server: Vec<&str> = labels
        .iter()
        .map(|l| cfg.servers[l.server].as_str())
        .collect();
    let metric: Vec<&str> = labels.iter().map(|l| l.metric.name()).collect();
    let kind: Vec<&str> = labels.iter().map(|l| l.kind.name()).collect();
    let start: Vec<_> = labels
        .iter()
        .map(|l| to_datetime(cfg.ts(l.start)))
        .collect();
    let end: Vec<_> = labels.iter().map(|l| to_datetime(cfg.ts(l.end))).collect();
    let mag: Vec<Option<f64>> = labels.iter().map(|l| l.magnitude).collect();
    let seed: Vec<i64> = vec![cfg.seed as i64; labels.len()];
    client
        .execute(
            "INSERT INTO metricagg.anomaly_labels \
               (server_id, metric_type, kind, start_ts, end_ts, magnitude, seed) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], \
               $4::timestamptz[], $5::timestamptz[], $6::float8[], $7::int8[])",
            &[&server, &metric, &kind, &start, &end, &mag, &seed],
        )
        .await
        .map_err(|e| format!("cannot write anomaly labels: {}", explain(&e)))
}

fn ts_range(cfg: &GenConfig, (a, b): (u64, u64)) -> String {
    format!("[{}, {})", format_ts(cfg.ts(a)), format_ts(cfg.ts(b)))
}

async fn run_db(plan: Plan, url: DbUrl) -> Result<Summary, Failure> {
    let cfg = plan.gen.clone();
    let quiet = plan.quiet;
    let ctl = connect(&url).await.map_err(Failure::db)?;
    let servers: Vec<&str> = cfg.servers.iter().map(String::as_str).collect();
    let start = cfg.start_us;
    // Backfill checks its range; live mode everything from now on.
    let (check_end, mut ensured_until) = match plan.end_us() {
        Some(end) => (end, end),
        None => (start + 3650 * MICROS_PER_DAY, start + 2 * MICROS_PER_DAY),
    };
    let contract = |what: &str, e: tokio_postgres::Error| {
        Failure::db(format!(
            "{what} failed: {}. Is the raw schema installed (make db-start)?",
            explain(&e)
        ))
    };
    // Claim the servers and range before loading (metricagg.claim_load):
    // atomically, no other live load overlaps and no sample exists there
    // yet, so two seeders of the same range at once cannot both load. The
    // claim lasts as long as this control connection.
    if let Err(e) = ctl
        .execute(
            "SELECT metricagg.claim_load($3::text[], $1, $2)",
            &[&to_datetime(start), &to_datetime(check_end), &servers],
        )
        .await
    {
        let refused = e.code().is_some_and(|c| {
            *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                || *c == tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE
                || *c == tokio_postgres::error::SqlState::CHECK_VIOLATION
        });
        if !refused {
            return Err(contract("metricagg.claim_load", e));
        }
        return Err(Failure {
            code: EXIT_OVERLAP,
            message: format!(
                "refusing to load [{}, {}) for these servers: {}",
                format_ts(start),
                format_ts(check_end),
                explain(&e)
            ),
            summary: None,
        });
    }
    ctl.execute(
        "SELECT metricagg.ensure_partitions($1, $2)",
        &[&to_datetime(start), &to_datetime(ensured_until)],
    )
    .await
    .map_err(|e| contract("metricagg.ensure_partitions", e))?;

    let (btx, brx) = mpsc::channel::<Batch>(plan.connections + 1);
    let brx = Arc::new(Mutex::new(brx));
    let (rtx, mut rrx) = mpsc::unbounded_channel::<Msg>();
    let (ltx, mut lrx) = mpsc::unbounded_channel::<Vec<Label>>();
    let stop = Arc::new(AtomicBool::new(false));
    let abandon = Arc::new(AtomicBool::new(false));
    for id in 0..plan.connections {
        let client = connect(&url).await.map_err(Failure::db)?;
        let stmt = client
            .prepare(COPY_SQL)
            .await
            .map_err(|e| contract("preparing COPY into metricagg.samples", e))?;
        tokio::spawn(worker(
            id,
            client,
            stmt,
            brx.clone(),
            rtx.clone(),
            abandon.clone(),
        ));
    }
    drop(brx);
    drop(rtx);
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Failure::db(format!("cannot handle Ctrl-C: {e}")))?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::db(format!("cannot handle SIGTERM: {e}")))?;

    let t0 = Instant::now();
    let gen = {
        let (cfg, mode, steps, rows, stop) = (
            cfg.clone(),
            plan.mode,
            plan.batch_steps(),
            plan.batch_rows,
            stop.clone(),
        );
        std::thread::spawn(move || generate_batches(cfg, mode, steps, rows, btx, ltx, stop))
    };

    let pb = progress(&plan);
    let mut committed = RangeSet::default();
    let mut in_flight: HashMap<usize, (u64, u64)> = HashMap::new();
    let mut in_doubt: Vec<(u64, u64)> = Vec::new();
    let mut pending: Vec<Label> = Vec::new();
    let mut summary = Summary {
        seed: cfg.seed,
        ..Summary::default()
    };
    let mut failure: Option<String> = None;
    let mut interrupted = false;
    let mut workers = plan.connections;
    let mut last_commit = t0;

    while workers > 0 {
        let signalled = tokio::select! {
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            msg = rrx.recv() => {
                let Some(msg) = msg else {
                    failure.get_or_insert("a loading task stopped unexpectedly".into());
                    break;
                };
                match msg {
                    Msg::Started { worker, k0, k1 } => {
                        in_flight.insert(worker, (k0, k1));
                    }
                    Msg::Committed { worker, k0, k1, rows } => {
                        in_flight.remove(&worker);
                        committed.insert(k0, k1);
                        summary.rows += rows;
                        summary.batches += 1;
                        last_commit = Instant::now();
                        pb.inc(rows);
                        while let Ok(l) = lrx.try_recv() {
                            pending.extend(l);
                        }
                        // Labels whose whole window has committed.
                        let frontier = committed.prefix_end();
                        let (ready, rest): (Vec<Label>, Vec<Label>) =
                            pending.drain(..).partition(|l| l.end <= frontier);
                        pending = rest;
                        match write_labels(&ctl, &cfg, &ready).await {
                            Ok(n) => summary.labels += n,
                            Err(e) => {
                                pending.extend(ready);
                                failure.get_or_insert(e);
                                stop.store(true, Ordering::SeqCst);
                                abandon.store(true, Ordering::SeqCst);
                            }
                        }
                        if plan.mode == Mode::Live && cfg.ts(k1) + MICROS_PER_DAY > ensured_until {
                            let next = ensured_until + 2 * MICROS_PER_DAY;
                            if let Err(e) = ctl
                                .execute(
                                    "SELECT metricagg.ensure_partitions($1, $2)",
                                    &[&to_datetime(ensured_until), &to_datetime(next)],
                                )
                                .await
                            {
                                failure.get_or_insert(format!("metricagg.ensure_partitions failed: {}", explain(&e)));
                                stop.store(true, Ordering::SeqCst);
                            }
                            ensured_until = next;
                        }
                        if plan.mode == Mode::Live {
                            pb.set_message(format!("up to {}", format_ts(cfg.ts(k1))));
                        }
                    }
                    Msg::Failed { worker, k0, k1, error, in_doubt: doubt } => {
                        in_flight.remove(&worker);
                        if doubt {
                            in_doubt.push((k0, k1));
                        }
                        failure.get_or_insert(format!(
                            "loading {} failed: {error}",
                            ts_range(&cfg, (k0, k1))
                        ));
                        stop.store(true, Ordering::SeqCst);
                        abandon.store(true, Ordering::SeqCst);
                    }
                    Msg::Exit => workers -= 1,
                }
                false
            }
        };
        if signalled {
            if interrupted || plan.mode == Mode::Live && stop.load(Ordering::SeqCst) {
                // Second Ctrl-C: leave now; open transactions roll back.
                pb.finish_and_clear();
                in_doubt.extend(in_flight.values().copied());
                summary.seconds = t0.elapsed().as_secs_f64();
                return Err(Failure {
                    code: EXIT_INTERRUPTED,
                    message: report(&cfg, &committed, &in_doubt, "aborted by a second Ctrl-C"),
                    summary: Some(summary),
                });
            }
            stop.store(true, Ordering::SeqCst);
            if plan.mode == Mode::Backfill {
                interrupted = true;
                abandon.store(true, Ordering::SeqCst);
                pb.suspend(|| info(quiet, "interrupted: letting the batches in flight commit (Ctrl-C again to abort them)"));
            } else {
                pb.suspend(|| info(quiet, "stopping: flushing the samples made so far"));
            }
        }
    }
    pb.finish_and_clear();
    let hash = tokio::task::spawn_blocking(move || gen.join().ok().flatten())
        .await
        .ok()
        .flatten();
    while let Ok(l) = lrx.try_recv() {
        pending.extend(l);
    }
    // Labels not yet written: those whose window has fully committed by now,
    // and the committed parts of the others (interrupted runs).
    let mut rest = Vec::new();
    for l in pending {
        for (a, b) in committed.intersect(l.start, l.end) {
            rest.push(Label {
                start: a,
                end: b,
                ..l.clone()
            });
        }
    }
    match write_labels(&ctl, &cfg, &rest).await {
        Ok(n) => summary.labels += n,
        Err(e) => {
            failure.get_or_insert(e);
        }
    }
    summary.seconds = (last_commit - t0).as_secs_f64();
    if plan.mode == Mode::Backfill && failure.is_none() && !interrupted {
        match hash {
            Some(h) => summary.hash = Some(h),
            None => {
                failure = Some("the generator stopped before the end of the range".into());
            }
        }
    }
    if let Some(err) = failure {
        return Err(Failure {
            code: EXIT_FAILURE,
            message: format!(
                "{err}\n{}",
                report(&cfg, &committed, &in_doubt, "stopped by the error above")
            ),
            summary: Some(summary),
        });
    }
    if interrupted {
        return Err(Failure {
            code: EXIT_INTERRUPTED,
            message: report(&cfg, &committed, &in_doubt, "interrupted"),
            summary: Some(summary),
        });
    }
    if plan.mode == Mode::Live {
        info(
            quiet,
            &format!("live run committed {}", describe_ranges(&cfg, &committed)),
        );
    }
    Ok(summary)
}

fn describe_ranges(cfg: &GenConfig, set: &RangeSet) -> String {
    if set.is_empty() {
        return "nothing".into();
    }
    set.ranges()
        .into_iter()
        .map(|r| ts_range(cfg, r))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The exact account of an incomplete load.
pub fn report(cfg: &GenConfig, committed: &RangeSet, in_doubt: &[(u64, u64)], why: &str) -> String {
    let mut s = format!(
        "{why}. Timestamps committed, for every server and metric of this run ({} of {} timestamps):",
        committed.total(),
        cfg.steps.map_or("∞".to_string(), |n| n.to_string())
    );
    if committed.is_empty() {
        s.push_str("\n  none");
    }
    for r in committed.ranges() {
        s.push_str(&format!("\n  committed {}", ts_range(cfg, r)));
    }
    for &r in in_doubt {
        s.push_str(&format!(
            "\n  in doubt {} (its COMMIT was sent, the answer lost; count its rows to know)",
            ts_range(cfg, r)
        ));
    }
    s.push_str(
        "\nNothing else of this run was written; anomaly labels were written for the committed \
         ranges only. Load what is missing with --start/--end (the overlap check refuses \
         anything already there).",
    );
    s
}
