//! Database access: the pool and every query the service runs. All reads, on
//! `metricagg.bins` in the analytics database, with the read-only api role.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::error::ApiError;

/// Widths the pipeline stores by default, finest first (seconds).
pub const STORED_WIDTHS: [i64; 2] = [60, 3600];

/// Origin of fixed-width bins: Monday 2000-01-03 00:00 UTC, as `metricagg_bin`
/// and TimescaleDB's `time_bucket`.
pub const BIN_ORIGIN_EPOCH: i64 = 946_857_600;

pub fn make_pool(url: &str, max_size: usize, timeout: Duration) -> Result<Pool, String> {
    let mut pg =
        tokio_postgres::Config::from_str(url).map_err(|e| format!("invalid database URL: {e}"))?;
    pg.connect_timeout(timeout);
    pg.application_name("insights-api");
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

/// The database answers a trivial query.
pub async fn ping(pool: &Pool) -> Result<(), ApiError> {
    let c = pool.get().await?;
    c.simple_query("SELECT 1").await?;
    Ok(())
}

/// `metricagg.bins_version`: bumped by every statement that changes bins.
/// `None` when the analytics schema predates it (no caching then).
pub async fn bins_version(pool: &Pool) -> Result<Option<i64>, ApiError> {
    let c = pool.get().await?;
    let stmt = c
        .prepare_cached("SELECT version FROM metricagg.bins_version")
        .await;
    let stmt = match stmt {
        Ok(stmt) => stmt,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    Ok(c.query_opt(&stmt, &[]).await?.map(|r| r.get(0)))
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ServerInfo {
    pub server_id: String,
    pub metrics: Vec<String>,
    pub first_bin: DateTime<Utc>,
    pub last_bin: DateTime<Utc>,
    pub bins: i64,
}

/// Natural order: srv-2 before srv-10.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> (String, u64) {
        let digits: String = s
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let prefix = s[..s.len() - digits.len()].to_string();
        (prefix, digits.parse().unwrap_or(0))
    }
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

pub async fn servers(pool: &Pool) -> Result<Vec<ServerInfo>, ApiError> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT server_id, array_agg(DISTINCT metric_type ORDER BY metric_type), min(ts), max(ts), count(*)
               FROM metricagg.bins WHERE width = $1::bigint * interval '1 second'
              GROUP BY server_id",
            &[&STORED_WIDTHS[0]],
        )
        .await?;
    let mut out: Vec<ServerInfo> = rows
        .iter()
        .map(|r| ServerInfo {
            server_id: r.get(0),
            metrics: r.get(1),
            first_bin: r.get(2),
            last_bin: r.get(3),
            bins: r.get(4),
        })
        .collect();
    out.sort_by(|a, b| natural_cmp(&a.server_id, &b.server_id));
    Ok(out)
}

pub async fn server_exists(pool: &Pool, server: &str) -> Result<bool, ApiError> {
    let c = pool.get().await?;
    let r = c
        .query_opt(
            "SELECT 1 FROM metricagg.bins WHERE server_id = $1 LIMIT 1",
            &[&server],
        )
        .await?;
    Ok(r.is_some())
}

pub async fn metric_exists(pool: &Pool, metric: &str) -> Result<bool, ApiError> {
    let c = pool.get().await?;
    let r = c
        .query_opt(
            "SELECT 1 FROM metricagg.bins WHERE metric_type = $1 LIMIT 1",
            &[&metric],
        )
        .await?;
    Ok(r.is_some())
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Period {
    pub start: DateTime<Utc>,
    /// Exclusive: the end of the last bin.
    pub end: DateTime<Utc>,
    pub servers: Vec<String>,
    /// Distinct bin start times in the period.
    pub timestamps: i64,
    /// Stored bins (rows) in the period, all servers and metrics.
    pub bins: i64,
}

/// Contiguous periods with data at the finest stored width; a gap longer than
/// `gap_bins` bins splits a period.
pub async fn periods(pool: &Pool, gap_bins: i64) -> Result<Vec<Period>, ApiError> {
    let width = STORED_WIDTHS[0];
    let c = pool.get().await?;
    let rows = c
        .query(
            "WITH d AS (
                 SELECT ts, count(*) AS n, array_agg(DISTINCT server_id) AS srv
                   FROM metricagg.bins WHERE width = $1::bigint * interval '1 second' GROUP BY ts),
             g AS (
                 SELECT ts, n, srv, CASE WHEN ts - lag(ts) OVER (ORDER BY ts)
                          > ($2::bigint + 1) * $1::bigint * interval '1 second' THEN 1 ELSE 0 END AS brk
                   FROM d),
             p AS (SELECT ts, n, srv, sum(brk) OVER (ORDER BY ts) AS pid FROM g)
             SELECT min(ts), max(ts) + $1::bigint * interval '1 second', count(*), sum(n)::bigint,
                    (SELECT array_agg(DISTINCT s) FROM p p2, unnest(p2.srv) s WHERE p2.pid = p.pid)
               FROM p GROUP BY pid ORDER BY pid",
            &[&width, &gap_bins.max(0)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut servers: Vec<String> = r.get(4);
            servers.sort_by(|a, b| natural_cmp(a, b));
            Period {
                start: r.get(0),
                end: r.get(1),
                timestamps: r.get(2),
                bins: r.get(3),
                servers,
            }
        })
        .collect())
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

/// One series at `width`, aggregated from `source` (a stored width dividing
/// `width`): count-weighted avg, min of mins, max of maxes; p80 only when the
/// width is itself stored.
pub async fn series(
    pool: &Pool,
    server: &str,
    metric: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    width: i64,
    source: i64,
) -> Result<Vec<Point>, ApiError> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT date_bin($5::bigint * interval '1 second', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS b,
                    sum(count)::bigint,
                    sum(avg * count) FILTER (WHERE avg IS NOT NULL)
                      / nullif(sum(count) FILTER (WHERE avg IS NOT NULL), 0)::float8,
                    min(min), max(max),
                    CASE WHEN $5::bigint = $6::bigint THEN max(p80) END
               FROM metricagg.bins
              WHERE server_id = $1 AND metric_type = $2 AND width = $6::bigint * interval '1 second'
                AND ts >= $3 AND ts < $4
              GROUP BY b ORDER BY b",
            &[&server, &metric, &start, &end, &width, &source],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Point {
            ts: r.get(0),
            count: r.get(1),
            avg: r.get(2),
            min: r.get(3),
            max: r.get(4),
            p80: r.get(5),
        })
        .collect())
}

/// Bins of every series in [start, end) at `width`, for analysis. Ranges of
/// two hours or more are fetched as two halves over two connections at once
/// (each backend aggregates half the rows), then joined and ordered here.
pub async fn fetch_bins(
    pool: &Pool,
    width: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    metric: Option<&str>,
) -> Result<crate::analysis::Dataset, ApiError> {
    let parts = if (end - start).num_seconds() >= 2 * 3600 {
        let mid = ts_of(floor_to_bin(
            (start.timestamp() + end.timestamp()) / 2,
            width,
        ));
        let (a, b) = tokio::join!(
            fetch_part(pool, width, start, mid, metric),
            fetch_part(pool, width, mid, end, metric)
        );
        let mut a = a?;
        a.extend(b?);
        a
    } else {
        fetch_part(pool, width, start, end, metric).await?
    };
    let mut ds = crate::analysis::Dataset {
        width,
        series: Vec::new(),
    };
    let mut index: std::collections::HashMap<(String, String), usize> =
        std::collections::HashMap::new();
    for p in parts {
        match index.get(&(p.server.clone(), p.metric.clone())) {
            Some(&k) => {
                let s = &mut ds.series[k];
                s.ts.extend(p.ts);
                s.count.extend(p.count);
                s.avg.extend(p.avg);
                s.min.extend(p.min);
                s.max.extend(p.max);
            }
            None => {
                index.insert((p.server.clone(), p.metric.clone()), ds.series.len());
                ds.series.push(p);
            }
        }
    }
    for s in &mut ds.series {
        if !s.ts.windows(2).all(|w| w[0] < w[1]) {
            let mut order: Vec<usize> = (0..s.ts.len()).collect();
            order.sort_by_key(|&i| s.ts[i]);
            s.ts = order.iter().map(|&i| s.ts[i]).collect();
            s.count = order.iter().map(|&i| s.count[i]).collect();
            s.avg = order.iter().map(|&i| s.avg[i]).collect();
            s.min = order.iter().map(|&i| s.min[i]).collect();
            s.max = order.iter().map(|&i| s.max[i]).collect();
        }
    }
    ds.series
        .sort_by(|a, b| natural_cmp(&a.server, &b.server).then_with(|| a.metric.cmp(&b.metric)));
    Ok(ds)
}

fn ts_of(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

/// One row per series, hash-grouped, no ORDER BY (sorting 288k rows on text
/// keys costs the server more than the scan). Each series' bins come as one
/// `metricagg_pack_bins` bytea: one transition call per row on the server and
/// 40 bytes per bin on the wire, decoded here without a per-bin allocation.
async fn fetch_part(
    pool: &Pool,
    width: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    metric: Option<&str>,
) -> Result<Vec<crate::analysis::Series>, ApiError> {
    let c = pool.get().await?;
    let stmt = c
        .prepare_cached(
            "SELECT server_id, metric_type,
                    metricagg_pack_bins(ts, count, avg, coalesce(min, avg), coalesce(max, avg))
               FROM metricagg.bins
              WHERE width = $1::bigint * interval '1 second' AND ts >= $2 AND ts < $3
                AND ($4::text IS NULL OR metric_type = $4)
                AND count > 0 AND avg IS NOT NULL
              GROUP BY server_id, metric_type",
        )
        .await?;
    let rows = c.query(&stmt, &[&width, &start, &end, &metric]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut s = crate::analysis::Series::new(r.get(0), r.get(1), width);
        let packed: &[u8] = r.get(2);
        unpack_into(packed, &mut s).map_err(|e| {
            ApiError::Internal(format!(
                "metricagg_pack_bins returned {e} for {} {}",
                s.server, s.metric
            ))
        })?;
        out.push(s);
    }
    Ok(out)
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
