//! Database access: the pool and every query the service runs (no SQL lives
//! anywhere else). All reads, on `metricagg.bins` in the analytics database,
//! with the read-only api role.
//!
//! A request takes one connection from the pool ([`connect`]) and passes it
//! to every query it makes, then drops it before the analysis and the
//! narrative; [`fetch_bins`] may borrow a second one, only if it is free at
//! once. Values are read with `try_get`: a value this build cannot
//! convert is an error (a 500 at worst), never a panic. Bin timestamps of
//! `/servers` and `/periods` are read as [`PgTime`], which holds any
//! PostgreSQL timestamp, including years past what chrono can represent.

use std::error::Error as StdError;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts};
use serde::{Serialize, Serializer};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{NoTls, Row};

use metricagg_core::bin::{
    civil_from_days, Interval, Width, PG_EPOCH_UNIX_SECS, USECS_PER_DAY, USECS_PER_SEC,
};
use metricagg_core::codec::pack_bins;

use crate::error::ApiError;

/// The one pooled connection of a request.
///
/// Queries run through [`Conn::run`], which marks the connection busy until
/// the answer is in. A request dropped at its deadline in the middle of a
/// query leaves it busy: the connection is then taken out of the pool (it
/// would make the next request wait behind the old query) and the query is
/// canceled on the server.
pub struct Conn {
    obj: Option<Object>,
    busy: AtomicBool,
}

impl Conn {
    /// Runs one query (a future on this connection), marking it busy.
    pub async fn run<T>(
        &self,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, tokio_postgres::Error> {
        self.busy.store(true, AtomicOrdering::Relaxed);
        let r = query.await;
        self.busy.store(false, AtomicOrdering::Relaxed);
        r
    }
}

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::ClientWrapper;
    fn deref(&self) -> &deadpool_postgres::ClientWrapper {
        self.obj.as_ref().expect("present until drop")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.busy.load(AtomicOrdering::Relaxed) {
            return;
        }
        let Some(obj) = self.obj.take() else { return };
        let client = Object::take(obj);
        let cancel = client.cancel_token();
        tracing::warn!("a request ended during a query: canceling it, closing its connection");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = cancel.cancel_query(NoTls).await {
                    tracing::warn!(error = %e, "could not cancel the abandoned query");
                }
                drop(client);
            });
        }
    }
}

/// The pool. Every connection runs with `statement_timeout` and read-only
/// transactions, whatever the role's own settings.
pub fn make_pool(
    url: &str,
    max_size: usize,
    timeout: Duration,
    statement_timeout: Duration,
) -> Result<Pool, String> {
    let mut pg =
        tokio_postgres::Config::from_str(url).map_err(|e| format!("invalid database URL: {e}"))?;
    pg.connect_timeout(timeout);
    pg.application_name("insights-api");
    pg.options(format!(
        "-c statement_timeout={} -c default_transaction_read_only=on -c TimeZone=UTC",
        statement_timeout.as_millis()
    ));
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| format!("cannot build the pool: {e}"))
}

/// The one connection of a request.
pub async fn connect(pool: &Pool) -> Result<Conn, ApiError> {
    Ok(Conn {
        obj: Some(pool.get().await?),
        busy: AtomicBool::new(false),
    })
}

/// Column `idx` of `row`, converted; a failure is an internal error naming
/// the column.
fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, ApiError> {
    row.try_get(idx).map_err(|e| {
        let name = row.columns().get(idx).map_or("?", |c| c.name());
        let cause = e.source().map(|s| s.to_string()).unwrap_or_default();
        ApiError::Internal(format!("cannot read column {idx} ({name}): {e} {cause}"))
    })
}

/// A bin width sent to PostgreSQL as an `interval` (months, or microseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgWidth(pub Width);

impl PgWidth {
    /// A fixed width of `secs` seconds (validated by the caller).
    pub fn secs(secs: i64) -> PgWidth {
        PgWidth(Width::from_secs(secs).unwrap_or(Width::Micros(USECS_PER_SEC)))
    }
}

impl ToSql for PgWidth {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        // interval: i64 microseconds, i32 days, i32 months
        let (micros, months) = match self.0 {
            Width::Micros(us) => (us, 0),
            Width::Months(m) => (0, m),
        };
        out.extend_from_slice(&micros.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&months.to_be_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

/// An `interval` read from PostgreSQL, as its three stored fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgInterval(pub Interval);

impl<'a> FromSql<'a> for PgInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let raw: [u8; 16] = raw.try_into().map_err(|_| "an interval is 16 bytes")?;
        let (micros, rest) = raw.split_at(8);
        let (days, months) = rest.split_at(4);
        Ok(PgInterval(Interval {
            micros: i64::from_be_bytes(micros.try_into()?),
            days: i32::from_be_bytes(days.try_into()?),
            months: i32::from_be_bytes(months.try_into()?),
        }))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// A `timestamptz` as PostgreSQL holds it: any value, `±infinity` included.
/// Serialized as RFC 3339 in UTC (`2025-11-15T10:00:00Z`), with a signed
/// six-digit year past 9999, or `infinity`/`-infinity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PgTime {
    NegInfinity,
    /// Microseconds since 2000-01-01 UTC, as PostgreSQL stores them.
    At(i64),
    Infinity,
}

impl PgTime {
    /// `self + secs`, saturating at the ends.
    pub fn plus_secs(self, secs: i64) -> PgTime {
        match self {
            PgTime::At(us) => PgTime::At(us.saturating_add(secs.saturating_mul(1_000_000))),
            other => other,
        }
    }
}

impl<'a> FromSql<'a> for PgTime {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let b: [u8; 8] = raw.try_into().map_err(|_| "a timestamp is 8 bytes")?;
        Ok(match i64::from_be_bytes(b) {
            i64::MAX => PgTime::Infinity,
            i64::MIN => PgTime::NegInfinity,
            us => PgTime::At(us),
        })
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

impl std::fmt::Display for PgTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = match *self {
            PgTime::Infinity => return f.write_str("infinity"),
            PgTime::NegInfinity => return f.write_str("-infinity"),
            PgTime::At(us) => us,
        };
        // Unix seconds fit an i64 for every PostgreSQL timestamp.
        let secs = us.div_euclid(USECS_PER_SEC) + PG_EPOCH_UNIX_SECS;
        let frac = us.rem_euclid(USECS_PER_SEC);
        if let Some(t) = DateTime::<Utc>::from_timestamp(secs, (frac * 1000) as u32) {
            if (1..=9999).contains(&chrono::Datelike::year(&t)) {
                return f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            }
        }
        // Past 9999 (PostgreSQL reaches 294276 AD, chrono stops at 262143).
        let (y, m, d) = civil_from_days(us.div_euclid(USECS_PER_DAY));
        let tod = secs.rem_euclid(86_400);
        let sign = if y < 0 { '-' } else { '+' };
        write!(
            f,
            "{sign}{:06}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            y.abs(),
            tod / 3600,
            tod / 60 % 60,
            tod % 60
        )?;
        if frac != 0 {
            write!(f, ".{frac:06}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for PgTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The database answers a trivial query.
pub async fn ping(c: &Conn) -> Result<(), ApiError> {
    c.run(c.simple_query("SELECT 1")).await?;
    Ok(())
}

/// The job's health (`metricagg.job_health`), as /health shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobHealth {
    /// The job's last run, whether or not it found work.
    pub last_run_at: Option<PgTime>,
    /// The last run that consumed changes or wrote bins.
    pub last_work_at: Option<PgTime>,
    /// Change-log entries set aside (metricagg.quarantine) and not released.
    pub quarantined: i64,
    pub last_quarantined_at: Option<PgTime>,
    /// `timescaledb` or `native`.
    pub bins_engine: Option<String>,
}

/// `None` when the analytics schema predates `metricagg.job_health`.
pub async fn job_health(c: &Conn) -> Result<Option<JobHealth>, ApiError> {
    let r = c
        .run(c.query_opt(
            "SELECT last_run_at, last_work_at, quarantined, last_quarantined_at, bins_engine
               FROM metricagg.job_health",
            &[],
        ))
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    r.map(|r| {
        Ok(JobHealth {
            last_run_at: col(&r, 0)?,
            last_work_at: col(&r, 1)?,
            quarantined: col(&r, 2)?,
            last_quarantined_at: col(&r, 3)?,
            bins_engine: col(&r, 4)?,
        })
    })
    .transpose()
}

/// The fixed bin widths the job stores (`metricagg.job_config.widths`), in
/// seconds, finest first. Month widths (calendar bins) are left out: the
/// API's aggregation and analysis need fixed ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredWidths(Vec<i64>);

impl StoredWidths {
    /// From the configured widths; an error when none is fixed.
    pub fn new(widths: impl IntoIterator<Item = Width>) -> Result<StoredWidths, ApiError> {
        let mut secs: Vec<i64> = widths.into_iter().filter_map(Width::as_secs).collect();
        secs.sort_unstable();
        secs.dedup();
        if secs.is_empty() {
            return Err(ApiError::Internal(
                "metricagg.job_config.widths holds no fixed width of whole seconds".into(),
            ));
        }
        Ok(StoredWidths(secs))
    }

    pub fn finest(&self) -> i64 {
        self.0[0]
    }

    pub fn all(&self) -> &[i64] {
        &self.0
    }

    /// The stored width to aggregate a requested width from: the largest
    /// stored width that divides it; `None` when none does.
    pub fn source_for(&self, width: i64) -> Option<i64> {
        self.0.iter().rev().copied().find(|s| width % s == 0)
    }

    /// [`StoredWidths::source_for`], or a 400 naming the stored widths.
    pub fn source(&self, width: i64) -> Result<i64, ApiError> {
        self.source_for(width).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`width` {} is not a multiple of a stored width ({})",
                crate::params::width_name(width),
                self.names()
            ))
        })
    }

    /// The names of the stored widths: `1 minute, 1 hour`.
    pub fn names(&self) -> String {
        self.0
            .iter()
            .map(|&w| crate::params::width_name(w))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a request reads before its bins: the bins version (bumped by every
/// statement that changes bins) and the stored widths.
#[derive(Clone, Debug)]
pub struct Meta {
    pub version: i64,
    pub widths: StoredWidths,
    /// The bins are a TimescaleDB hypertable (`metricagg.bins_engine()`):
    /// [`fetch_plan`] may split the fetch in two there.
    pub hypertable: bool,
}

pub async fn meta(c: &Conn) -> Result<Meta, ApiError> {
    let stmt = c
        .run(c.prepare_cached(
            "SELECT (SELECT version FROM metricagg.bins_version), (SELECT widths FROM metricagg.job_config),
                    metricagg.bins_engine() = 'timescaledb'",
        ))
        .await?;
    let r = c.run(c.query_one(&stmt, &[])).await?;
    let version: Option<i64> = col(&r, 0)?;
    let widths: Option<Vec<PgInterval>> = col(&r, 1)?;
    let hypertable: Option<bool> = col(&r, 2)?;
    let widths = widths
        .unwrap_or_default()
        .into_iter()
        .filter_map(|PgInterval(i)| i.width().ok());
    Ok(Meta {
        version: version.unwrap_or(0),
        widths: StoredWidths::new(widths)?,
        hypertable: hypertable.unwrap_or(false),
    })
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ServerInfo {
    pub server_id: String,
    pub metrics: Vec<String>,
    pub first_bin: PgTime,
    pub last_bin: PgTime,
    pub bins: i64,
}

/// Natural order: srv-2 before srv-10.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> (&str, u64) {
        let prefix = s.trim_end_matches(|c: char| c.is_ascii_digit());
        (prefix, s[prefix.len()..].parse().unwrap_or(0))
    }
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

/// Servers with bins of `width` (the finest stored width).
pub async fn servers(c: &Conn, width: i64) -> Result<Vec<ServerInfo>, ApiError> {
    let rows = c
        .run(c.query(
            "SELECT server_id, array_agg(DISTINCT metric_type ORDER BY metric_type), min(ts), max(ts), count(*)
               FROM metricagg.bins WHERE width = $1
              GROUP BY server_id",
            &[&PgWidth::secs(width)],
        ))
        .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(ServerInfo {
                server_id: col(r, 0)?,
                metrics: col(r, 1)?,
                first_bin: col(r, 2)?,
                last_bin: col(r, 3)?,
                bins: col(r, 4)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    out.sort_by(|a, b| natural_cmp(&a.server_id, &b.server_id));
    Ok(out)
}

/// 404 unless the server and the metric named have bins.
pub async fn check_server_metric(
    c: &Conn,
    server: Option<&str>,
    metric: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(s) = server {
        if !server_exists(c, s).await? {
            return Err(ApiError::NotFound(format!(
                "unknown server `{s}`; see /servers"
            )));
        }
    }
    if let Some(m) = metric {
        if !metric_exists(c, m).await? {
            return Err(ApiError::NotFound(format!(
                "unknown metric `{m}`; see /servers for the metrics of each server"
            )));
        }
    }
    Ok(())
}

pub async fn server_exists(c: &Conn, server: &str) -> Result<bool, ApiError> {
    let r = c
        .run(c.query_opt(
            "SELECT 1 FROM metricagg.bins WHERE server_id = $1 LIMIT 1",
            &[&server],
        ))
        .await?;
    Ok(r.is_some())
}

pub async fn metric_exists(c: &Conn, metric: &str) -> Result<bool, ApiError> {
    let r = c
        .run(c.query_opt(
            "SELECT 1 FROM metricagg.bins WHERE metric_type = $1 LIMIT 1",
            &[&metric],
        ))
        .await?;
    Ok(r.is_some())
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Period {
    pub start: PgTime,
    /// Exclusive: the end of the last bin.
    pub end: PgTime,
    pub servers: Vec<String>,
    /// Distinct bin start times in the period.
    pub timestamps: i64,
    /// Stored bins (rows) in the period, all servers and metrics.
    pub bins: i64,
}

/// Contiguous periods with data at `width`; a gap longer than `gap_bins`
/// bins splits a period. Bins at ±infinity (which no job writes) are left out.
pub async fn periods(c: &Conn, width: i64, gap_bins: i64) -> Result<Vec<Period>, ApiError> {
    let gap = PgWidth::secs(width.saturating_mul(gap_bins.max(0).saturating_add(1)));
    let rows = c
        .run(c.query(
            "WITH d AS (
                 SELECT ts, count(*) AS n, array_agg(DISTINCT server_id) AS srv
                   FROM metricagg.bins WHERE width = $1 AND isfinite(ts) GROUP BY ts),
             g AS (
                 SELECT ts, n, srv, CASE WHEN ts - lag(ts) OVER (ORDER BY ts) > $2
                                         THEN 1 ELSE 0 END AS brk
                   FROM d),
             p AS (SELECT ts, n, srv, sum(brk) OVER (ORDER BY ts) AS pid FROM g)
             SELECT min(ts), max(ts), count(*), sum(n)::bigint,
                    (SELECT array_agg(DISTINCT s) FROM p p2, unnest(p2.srv) s WHERE p2.pid = p.pid)
               FROM p GROUP BY pid ORDER BY pid",
            &[&PgWidth::secs(width), &gap],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            let mut servers: Vec<String> = col(r, 4)?;
            servers.sort_by(|a, b| natural_cmp(a, b));
            let last: PgTime = col(r, 1)?;
            Ok(Period {
                start: col(r, 0)?,
                end: last.plus_secs(width),
                timestamps: col(r, 2)?,
                bins: col(r, 3)?,
                servers,
            })
        })
        .collect()
}

#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct Point {
    pub ts: DateTime<Utc>,
    pub count: i64,
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Exact p80 when the bin is a stored width; `None` otherwise (p80s are
    /// never averaged).
    pub p80: Option<f64>,
}

/// One series at `width`, aggregated from `source` (a stored width dividing
/// `width`): count-weighted avg, min of mins, max of maxes; p80 only when the
/// width is itself stored.
pub async fn series(
    c: &Conn,
    server: &str,
    metric: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    width: i64,
    source: i64,
) -> Result<Vec<Point>, ApiError> {
    let rows = c
        .run(c.query(
            "SELECT metricagg_bin(ts, $5) AS b,
                    sum(count)::bigint,
                    sum(avg * count) FILTER (WHERE avg IS NOT NULL)
                      / nullif(sum(count) FILTER (WHERE avg IS NOT NULL), 0)::float8,
                    min(min), max(max),
                    CASE WHEN $5 = $6 THEN max(p80) END
               FROM metricagg.bins
              WHERE server_id = $1 AND metric_type = $2 AND width = $6
                AND ts >= $3 AND ts < $4
              GROUP BY b ORDER BY b",
            &[
                &server,
                &metric,
                &start,
                &end,
                &PgWidth::secs(width),
                &PgWidth::secs(source),
            ],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Point {
                ts: col(r, 0)?,
                count: col(r, 1)?,
                avg: col(r, 2)?,
                min: col(r, 3)?,
                max: col(r, 4)?,
                p80: col(r, 5)?,
            })
        })
        .collect()
}

/// One server's count-weighted average of `metric` per bin of `width` (from
/// `source` bins) in [start, end): (server, bin start, average).
pub async fn fleet(
    c: &Conn,
    metric: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    width: i64,
    source: i64,
) -> Result<Vec<(String, DateTime<Utc>, Option<f64>)>, ApiError> {
    let rows = c
        .run(c.query(
            "SELECT server_id, metricagg_bin(ts, $4),
                    sum(avg * count) FILTER (WHERE avg IS NOT NULL)
                      / nullif(sum(count) FILTER (WHERE avg IS NOT NULL), 0)::float8
               FROM metricagg.bins
              WHERE metric_type = $1 AND width = $5 AND ts >= $2 AND ts < $3
              GROUP BY 1, 2",
            &[
                &metric,
                &start,
                &end,
                &PgWidth::secs(width),
                &PgWidth::secs(source),
            ],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)))
        .collect()
}

/// Bins of every series in [start, end) at `width`, for analysis.
///
/// One row per series, hash-grouped, no ORDER BY (sorting 288k rows on text
/// keys costs the server more than the scan). Each series' bins come as one
/// `metricagg_pack_bins` bytea: one transition call per row on the server and
/// 40 bytes per bin on the wire, decoded here without a per-bin allocation.
///
/// With [`Fetch::Split`] ([`fetch_plan`]: a TimescaleDB hypertable whose
/// chunks in the range are mostly compressed), when the pool has a second
/// connection free at once, the servers are split in two halves
/// by a hash of their name, fetched concurrently on the request's connection
/// and the second one, each without parallel workers: two backends each
/// decompress and aggregate whole series (the hash of a `segmentby` column
/// filters compressed segments before decompression), instead of one leader
/// combining its workers' partial states through the tuple queue. Measured
/// in docs/performance.md: the fetch of the benchmark's compressed day 184 →
/// 56-98 ms. Over plain rows (native partitions, a hypertable's chunks not
/// compressed yet: the last days) each half scans every row, slower than one
/// parallel query (uncompressed day: 180-190 ms against 120), so they keep
/// one query. Without a free connection, one query: a request never waits
/// for a second connection.
pub async fn fetch_bins(
    pool: &Pool,
    c: &Conn,
    plan: Fetch,
    width: i64,
    range: (DateTime<Utc>, DateTime<Utc>),
    metric: Option<&str>,
) -> Result<crate::analysis::Dataset, ApiError> {
    let now = Timeouts {
        wait: Some(Duration::ZERO),
        ..pool.timeouts()
    };
    let second = if plan == Fetch::Split {
        pool.timeout_get(&now).await.ok()
    } else {
        None
    };
    let mut series = match second {
        Some(obj) => {
            let c2 = Conn {
                obj: Some(obj),
                busy: AtomicBool::new(false),
            };
            let (a, b) = tokio::try_join!(
                fetch_part(c, width, range, metric, Some(0)),
                fetch_part(&c2, width, range, metric, Some(1)),
            )?;
            let mut all = a;
            all.extend(b);
            all
        }
        None => fetch_part(c, width, range, metric, None).await?,
    };
    series.sort_by(|a, b| natural_cmp(&a.server, &b.server).then_with(|| a.metric.cmp(&b.metric)));
    Ok(crate::analysis::Dataset { width, series })
}

/// How [`fetch_bins`] reads the bins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// One query, in parallel workers where PostgreSQL plans them.
    One,
    /// Two concurrent halves by server when a second connection is free.
    Split,
}

/// [`Fetch::Split`] for a hypertable whose compressed chunks cover at least
/// half of the range (each half then decompresses only its servers'
/// segments), else [`Fetch::One`]. The plan is only a matter of speed: when
/// TimescaleDB cannot say (a view changed in another version, a privilege
/// revoked), one query, with a warning in the log.
pub async fn fetch_plan(
    c: &Conn,
    hypertable: bool,
    range: (DateTime<Utc>, DateTime<Utc>),
) -> Fetch {
    if !hypertable {
        return Fetch::One;
    }
    match compressed_share(c, range).await {
        Ok(share) if share >= 0.5 => Fetch::Split,
        Ok(_) => Fetch::One,
        Err(e) => {
            tracing::warn!("fetching in one query: cannot tell which chunks are compressed: {e}");
            Fetch::One
        }
    }
}

/// The share of `[start, end)` that the bins hypertable's compressed chunks
/// cover, of the time its chunks cover (0 when none does). TimescaleDB only:
/// [`fetch_bins`] asks it before choosing how to fetch.
pub async fn compressed_share(
    c: &Conn,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
) -> Result<f64, ApiError> {
    let stmt = c
        .run(c.prepare_cached(
            "SELECT coalesce(sum(extract(epoch FROM least(range_end, $2) - greatest(range_start, $1)))
                               FILTER (WHERE is_compressed)
                             / nullif(sum(extract(epoch FROM least(range_end, $2) - greatest(range_start, $1))), 0),
                             0)::float8
               FROM timescaledb_information.chunks
              WHERE hypertable_schema = 'metricagg' AND hypertable_name = 'bins'
                AND range_start < $2 AND range_end > $1",
        ))
        .await?;
    let r = c.run(c.query_one(&stmt, &[&start, &end])).await?;
    col(&r, 0)
}

/// The series of [`fetch_bins`]: of the servers whose name hashes to `half`
/// (0 or 1), serially in a read-only transaction; of all, with the server's
/// parallel plan, for `None`.
pub async fn fetch_part(
    c: &Conn,
    width: i64,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    metric: Option<&str>,
    half: Option<i32>,
) -> Result<Vec<crate::analysis::Series>, ApiError> {
    let stmt = c
        .run(c.prepare_cached(
            "SELECT server_id, metric_type,
                    metricagg_pack_bins(ts, count, avg, coalesce(min, avg), coalesce(max, avg))
               FROM metricagg.bins
              WHERE width = $1 AND ts >= $2 AND ts < $3
                AND ($4::text IS NULL OR metric_type = $4)
                AND ($5::int IS NULL OR (hashtext(server_id) & 1) = $5)
                AND count > 0 AND avg IS NOT NULL
              GROUP BY server_id, metric_type",
        ))
        .await?;
    let params: [&(dyn ToSql + Sync); 5] = [&PgWidth::secs(width), &start, &end, &metric, &half];
    let rows = if half.is_some() {
        c.run(c.batch_execute("BEGIN READ ONLY; SET LOCAL max_parallel_workers_per_gather = 0"))
            .await?;
        let rows = c.run(c.query(&stmt, &params)).await;
        // a failed query leaves the transaction aborted: end it either way
        c.run(c.batch_execute(if rows.is_ok() { "COMMIT" } else { "ROLLBACK" }))
            .await?;
        rows?
    } else {
        c.run(c.query(&stmt, &params)).await?
    };
    let mut series = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut s = crate::analysis::Series::new(col(r, 0)?, col(r, 1)?, width);
        let packed: &[u8] = col(r, 2)?;
        let bins = pack_bins::decode(packed).map_err(|e| {
            ApiError::Internal(format!(
                "metricagg_pack_bins returned {e} for {} {}",
                s.server, s.metric
            ))
        })?;
        s.ts.reserve(bins.len());
        s.count.reserve(bins.len());
        s.avg.reserve(bins.len());
        s.min.reserve(bins.len());
        s.max.reserve(bins.len());
        for b in bins.iter() {
            s.ts.push(b.unix_secs());
            s.count.push(b.count);
            s.avg.push(b.avg);
            s.min.push(b.min);
            s.max.push(b.max);
        }
        series.push(s);
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["srv-10", "srv-2", "srv-1", "db-3"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["db-3", "srv-1", "srv-2", "srv-10"]);
    }

    #[test]
    fn pg_times_print_beyond_chrono() {
        let unix = |secs: i64, us: i64| PgTime::At((secs - PG_EPOCH_UNIX_SECS) * 1_000_000 + us);
        assert_eq!(unix(1_763_200_800, 0).to_string(), "2025-11-15T10:00:00Z");
        assert_eq!(
            unix(1_763_200_800, 250_000).to_string(),
            "2025-11-15T10:00:00.250Z"
        );
        assert_eq!(unix(0, 0).to_string(), "1970-01-01T00:00:00Z");
        // PostgreSQL's largest timestamptz (END_TIMESTAMP - 1 µs)
        let raw = (9_223_371_331_200_000_000i64 - 1).to_be_bytes();
        let pg_max = PgTime::from_sql(&Type::TIMESTAMPTZ, &raw).unwrap();
        assert_eq!(pg_max.to_string(), "+294276-12-31T23:59:59.999999Z");
        // 2000-03-01 plus 675 Gregorian cycles of 400 years (146,097 days
        // each): 272000-03-01, past chrono's last year
        let t = unix(951_868_800 + 675 * 146_097 * 86_400, 0);
        assert_eq!(t.to_string(), "+272000-03-01T00:00:00Z");
        // the fallback agrees with chrono where both work
        for secs in [
            -62_135_596_800i64,
            253_402_300_799,
            951_782_400,
            4_107_542_399,
        ] {
            let c = DateTime::<Utc>::from_timestamp(secs, 0).unwrap();
            assert_eq!(
                unix(secs, 0).to_string(),
                c.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
        }
        assert_eq!(PgTime::Infinity.to_string(), "infinity");
        assert_eq!(PgTime::NegInfinity.to_string(), "-infinity");
        assert_eq!(PgTime::At(0).plus_secs(60), PgTime::At(60_000_000));
        assert_eq!(PgTime::Infinity.plus_secs(60), PgTime::Infinity);
        assert!(PgTime::from_sql(&Type::TIMESTAMPTZ, &[0; 7]).is_err());
    }

    #[test]
    fn stored_widths() {
        let w = |s: &[i64]| StoredWidths::new(s.iter().map(|&x| Width::from_secs(x).unwrap()));
        let sw = w(&[3600, 60, 60]).unwrap();
        assert_eq!(sw.all(), [60, 3600]);
        assert_eq!(sw.finest(), 60);
        assert_eq!(sw.source_for(300), Some(60));
        assert_eq!(sw.source_for(3600), Some(3600));
        assert_eq!(sw.source_for(7200), Some(3600));
        assert_eq!(sw.source_for(5400), Some(60));
        assert_eq!(sw.names(), "1 minute, 1 hour");
        let coarse = w(&[300, 86_400]).unwrap();
        assert_eq!(coarse.source_for(60), None, "finer than every stored width");
        assert_eq!(coarse.source_for(600), Some(300));
        // month widths are left out; none fixed is an error
        let months = [Width::Months(1), Width::from_secs(60).unwrap()];
        assert_eq!(StoredWidths::new(months).unwrap().all(), [60]);
        assert!(StoredWidths::new([Width::Months(1)]).is_err());
    }

    #[test]
    fn intervals_both_ways() {
        let mut buf = BytesMut::new();
        PgWidth::secs(90).to_sql(&Type::INTERVAL, &mut buf).unwrap();
        let back = PgInterval::from_sql(&Type::INTERVAL, &buf).unwrap();
        assert_eq!(back.0.width().unwrap(), Width::from_secs(90).unwrap());
        let mut buf = BytesMut::new();
        PgWidth(Width::Months(3))
            .to_sql(&Type::INTERVAL, &mut buf)
            .unwrap();
        let back = PgInterval::from_sql(&Type::INTERVAL, &buf).unwrap();
        assert_eq!(back.0.width().unwrap(), Width::Months(3));
        assert!(PgInterval::from_sql(&Type::INTERVAL, &buf[..15]).is_err());
    }
}
