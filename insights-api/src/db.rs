//! Database access: the pool and every query the service runs (no SQL lives
//! anywhere else). All reads, on `metricagg.bins` in the analytics database,
//! with the read-only api role.
//!
//! A request takes one connection from the pool ([`connect`]) and passes it
//! to every query it makes, then drops it before the analysis and the
//! narrative. Values are read with `try_get`: a value this build cannot
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
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use serde::{Serialize, Serializer};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{NoTls, Row};

use crate::error::ApiError;

/// Widths the pipeline stores by default, finest first (seconds).
pub const STORED_WIDTHS: [i64; 2] = [60, 3600];

/// Origin of fixed-width bins: Monday 2000-01-03 00:00 UTC, as `metricagg_bin`
/// and TimescaleDB's `time_bucket`.
pub const BIN_ORIGIN_EPOCH: i64 = 946_857_600;

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

/// A bin width or other fixed interval, sent to PostgreSQL as an `interval`
/// (whole seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secs(pub i64);

impl ToSql for Secs {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        // interval: i64 microseconds, i32 days, i32 months
        let micros = self
            .0
            .checked_mul(1_000_000)
            .ok_or("interval out of range")?;
        out.extend_from_slice(&micros.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

/// Seconds from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_SECS: i64 = 946_684_800;

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
        let secs = us.div_euclid(1_000_000) + PG_EPOCH_SECS;
        let frac = us.rem_euclid(1_000_000);
        if let Some(t) = DateTime::<Utc>::from_timestamp(secs, (frac * 1000) as u32) {
            if (1..=9999).contains(&chrono::Datelike::year(&t)) {
                return f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            }
        }
        // Past 9999 (PostgreSQL reaches 294276 AD, chrono stops at 262143):
        // the civil date from the day number (H. Hinnant's civil_from_days).
        let days = secs.div_euclid(86_400);
        let tod = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
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

/// `metricagg.bins_version`: bumped by every statement that changes bins.
/// `None` when the analytics schema predates it (no caching then).
pub async fn bins_version(c: &Conn) -> Result<Option<i64>, ApiError> {
    let stmt = c
        .run(c.prepare_cached("SELECT version FROM metricagg.bins_version"))
        .await;
    let stmt = match stmt {
        Ok(stmt) => stmt,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    match c.run(c.query_opt(&stmt, &[])).await? {
        Some(r) => Ok(Some(col(&r, 0)?)),
        None => Ok(None),
    }
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

/// Servers with bins of the finest stored width.
pub async fn servers(c: &Conn) -> Result<Vec<ServerInfo>, ApiError> {
    let rows = c
        .run(c.query(
            "SELECT server_id, array_agg(DISTINCT metric_type ORDER BY metric_type), min(ts), max(ts), count(*)
               FROM metricagg.bins WHERE width = $1
              GROUP BY server_id",
            &[&Secs(STORED_WIDTHS[0])],
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
    let gap = Secs(width.saturating_mul(gap_bins.max(0).saturating_add(1)));
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
            &[&Secs(width), &gap],
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

/// The stored width to aggregate from for a requested width: the largest
/// stored width that divides it.
pub fn source_width(width: i64) -> i64 {
    STORED_WIDTHS
        .iter()
        .rev()
        .copied()
        .find(|s| width % s == 0)
        .unwrap_or(STORED_WIDTHS[0])
}

/// Floors `t` to a multiple of `width` from the bin origin.
pub fn floor_to_bin(t: i64, width: i64) -> i64 {
    BIN_ORIGIN_EPOCH + (t - BIN_ORIGIN_EPOCH).div_euclid(width) * width
}

/// The bin origin as a time (a parameter of the `date_bin` calls).
fn origin() -> DateTime<Utc> {
    crate::params::utc(BIN_ORIGIN_EPOCH)
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
            "SELECT date_bin($5, ts, $7) AS b,
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
                &Secs(width),
                &Secs(source),
                &origin(),
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
            "SELECT server_id, date_bin($4, ts, $6),
                    sum(avg * count) FILTER (WHERE avg IS NOT NULL)
                      / nullif(sum(count) FILTER (WHERE avg IS NOT NULL), 0)::float8
               FROM metricagg.bins
              WHERE metric_type = $1 AND width = $5 AND ts >= $2 AND ts < $3
              GROUP BY 1, 2",
            &[
                &metric,
                &start,
                &end,
                &Secs(width),
                &Secs(source),
                &origin(),
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
pub async fn fetch_bins(
    c: &Conn,
    width: i64,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    metric: Option<&str>,
) -> Result<crate::analysis::Dataset, ApiError> {
    let stmt = c
        .run(c.prepare_cached(
            "SELECT server_id, metric_type,
                    metricagg_pack_bins(ts, count, avg, coalesce(min, avg), coalesce(max, avg))
               FROM metricagg.bins
              WHERE width = $1 AND ts >= $2 AND ts < $3
                AND ($4::text IS NULL OR metric_type = $4)
                AND count > 0 AND avg IS NOT NULL
              GROUP BY server_id, metric_type",
        ))
        .await?;
    let rows = c
        .run(c.query(&stmt, &[&Secs(width), &start, &end, &metric]))
        .await?;
    let mut series = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut s = crate::analysis::Series::new(col(r, 0)?, col(r, 1)?, width);
        let packed: &[u8] = col(r, 2)?;
        unpack_into(packed, &mut s).map_err(|e| {
            ApiError::Internal(format!(
                "metricagg_pack_bins returned {e} for {} {}",
                s.server, s.metric
            ))
        })?;
        series.push(s);
    }
    series.sort_by(|a, b| natural_cmp(&a.server, &b.server).then_with(|| a.metric.cmp(&b.metric)));
    Ok(crate::analysis::Dataset { width, series })
}

/// Decodes a `metricagg_pack_bins` result (see its `COMMENT`): a header
/// `u32 version = 1, u32 n`, then `n` records of `i64 ts` (µs since the Unix
/// epoch), `i64 count`, `f64 avg, min, max`, little-endian, ordered by ts.
pub fn unpack_into(bytes: &[u8], s: &mut crate::analysis::Series) -> Result<(), String> {
    const RECORD: usize = 40;
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if bytes.len() < 8 {
        return Err(format!("{} bytes, shorter than its header", bytes.len()));
    }
    if word(0) != 1 {
        return Err(format!(
            "unknown version {} (upgrade insights-api)",
            word(0)
        ));
    }
    let n = word(4) as usize;
    if bytes.len() != 8 + n * RECORD {
        return Err(format!("{} bytes for {n} bins", bytes.len()));
    }
    s.ts.reserve(n);
    s.count.reserve(n);
    s.avg.reserve(n);
    s.min.reserve(n);
    s.max.reserve(n);
    for rec in bytes[8..].chunks_exact(RECORD) {
        let f = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rec[at..at + 8]);
            b
        };
        s.ts.push(i64::from_le_bytes(f(0)).div_euclid(1_000_000));
        s.count.push(i64::from_le_bytes(f(8)));
        s.avg.push(f64::from_le_bytes(f(16)));
        s.min.push(f64::from_le_bytes(f(24)));
        s.max.push(f64::from_le_bytes(f(32)));
    }
    Ok(())
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
        let unix = |secs: i64, us: i64| PgTime::At((secs - PG_EPOCH_SECS) * 1_000_000 + us);
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
    fn unpack_decodes_records_and_rejects_bad_lengths() {
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        for (ts, count, avg) in [
            (-1_500_000i64, 60i64, 1.5f64),
            (1_763_200_800_000_000, 7, -2.0),
        ] {
            b.extend_from_slice(&ts.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            for v in [avg, avg - 1.0, avg + 1.0] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut s = crate::analysis::Series::new("a", "cpu", 60);
        unpack_into(&b, &mut s).unwrap();
        assert_eq!(s.ts, [-2, 1_763_200_800]); // floors, as DateTime::timestamp
        assert_eq!(s.count, [60, 7]);
        assert_eq!(s.avg, [1.5, -2.0]);
        assert_eq!(s.min, [0.5, -3.0]);
        assert_eq!(s.max, [2.5, -1.0]);

        let mut s = crate::analysis::Series::new("a", "cpu", 60);
        assert!(unpack_into(&b[..b.len() - 1], &mut s)
            .unwrap_err()
            .contains("bytes for 2 bins"));
        assert!(unpack_into(&b[..5], &mut s)
            .unwrap_err()
            .contains("shorter than its header"));
        b[0] = 2;
        assert!(unpack_into(&b, &mut s)
            .unwrap_err()
            .contains("unknown version 2"));
    }

    #[test]
    fn widths_and_floors() {
        assert_eq!(source_width(300), 60);
        assert_eq!(source_width(3600), 3600);
        assert_eq!(source_width(7200), 3600);
        assert_eq!(source_width(5400), 60);
        // 2000-01-03 is a Monday: weekly bins start on Mondays.
        let t = 1_763_200_800; // 2025-11-15T10:00:00Z, a Saturday
        let w = floor_to_bin(t, 7 * 86400);
        assert_eq!(w, 1_762_732_800); // 2025-11-10T00:00:00Z, a Monday
        assert_eq!(floor_to_bin(t + 59, 60), t);
    }
}
