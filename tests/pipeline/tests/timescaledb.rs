//! The analytics side on TimescaleDB (issue 11): bins in a compressed
//! hypertable, late data into compressed chunks, and the compression and
//! retention policies run by TimescaleDB's own background scheduler.
//! Run by `make test-timescaledb` (METRICAGG_BINS_ENGINE=timescaledb); these
//! tests fail, never skip, when bins are not a hypertable.

use std::time::{Duration, Instant};

use metricagg_pipeline_tests::*;
use tokio_postgres::Client;

async fn tsdb_pipeline() -> Pipeline {
    let p = Pipeline::new().await;
    assert_eq!(
        bins_engine(&p.analytics).await,
        "timescaledb",
        "these tests need bins in a hypertable: run them with METRICAGG_BINS_ENGINE=timescaledb (make test-timescaledb)"
    );
    p
}

/// (compressed chunks, total) of the bins hypertable.
async fn chunks(analytics: &Client) -> (i64, i64) {
    let r = analytics
        .query_one(
            "SELECT count(*) FILTER (WHERE is_compressed), count(*) FROM timescaledb_information.chunks
             WHERE hypertable_schema = 'metricagg' AND hypertable_name = 'bins'",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// Runs a TimescaleDB job in the background scheduler now (not through
/// run_job(), which takes another code path) and waits for it to succeed.
async fn run_in_background(analytics: &Client, proc_name: &str) {
    let job: i32 = analytics
        .query_one(
            "SELECT job_id FROM timescaledb_information.jobs
             WHERE hypertable_name = 'bins' AND proc_name = $1
                OR proc_schema = 'metricagg' AND proc_name = $1",
            &[&proc_name],
        )
        .await
        .unwrap_or_else(|e| panic!("no TimescaleDB job {proc_name}: {e}"))
        .get(0);
    let before = job_successes(analytics, job).await;
    analytics
        .execute("SELECT alter_job($1, next_start => now())", &[&job])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if job_successes(analytics, job).await > before {
            return;
        }
        if Instant::now() > deadline {
            let errors = texts(
                analytics,
                &format!("SELECT err_message FROM timescaledb_information.job_errors WHERE job_id = {job}"),
            )
            .await;
            panic!("TimescaleDB job {job} ({proc_name}) did not succeed within 90 s; errors: {errors:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn job_successes(analytics: &Client, job: i32) -> i64 {
    analytics
        .query_one(
            "SELECT coalesce((SELECT total_successes FROM timescaledb_information.job_stats WHERE job_id = $1), 0)",
            &[&job],
        )
        .await
        .unwrap()
        .get(0)
}

/// Late rows whose bins sit in an already compressed chunk are recomputed
/// and end equal to the oracle: INSERT ... ON CONFLICT DO UPDATE reaches the
/// compressed rows (TimescaleDB decompresses the affected batches).
#[tokio::test]
async fn late_rows_into_a_compressed_chunk_are_recomputed() {
    let p = tsdb_pipeline().await;
    insert_samples(&p.ingest, &[1, 2, 3], T0, 7200, 1).await;
    p.run_once().await;
    // The compression policy runs in the background scheduler and may have
    // compressed a chunk already: what matters is that all are compressed.
    p.analytics
        .batch_execute(
            "SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('metricagg.bins') c",
        )
        .await
        .unwrap();
    let (compressed, total) = chunks(&p.analytics).await;
    assert!(
        compressed == total && total > 0,
        "{compressed}/{total} compressed"
    );
    let v0 = count(&p.analytics, "SELECT version FROM metricagg.bins_version").await;
    // Late rows: server 2, spread over both hours (a different salt, so
    // every touched bin changes), plus a new server in the same chunk.
    insert_samples(&p.ingest, &[2], T0 + 30, 7000, 99).await;
    insert_samples(&p.ingest, &[4], T0, 600, 4).await;
    let summary = p.run_once().await;
    // Hours: srv-2's two and srv-4's one, four metrics each.
    assert!(summary.contains("1 hour=12"), "{summary}");
    assert!(
        count(&p.analytics, "SELECT version FROM metricagg.bins_version").await > v0,
        "bins_version not bumped"
    );
    assert_equals_oracle(&p, "after late rows into a compressed chunk").await;
    // The bins of server 2 really changed (counts doubled where rows were added).
    assert_eq!(
        count(
            &p.analytics,
            "SELECT sum(count)::bigint FROM metricagg.bins WHERE server_id = 'srv-2' AND width = '1 hour'"
        )
        .await,
        4 * (7200 + 7000)
    );
}

/// The compression policy (job_config.bins_compress_after) runs in the
/// background scheduler and compresses old chunks; the job keeps writing
/// into them and the bins stay equal to the oracle.
#[tokio::test]
async fn the_compression_policy_runs_in_the_background() {
    let p = tsdb_pipeline().await;
    let old: i64 = p
        .raw
        .query_one(
            "SELECT extract(epoch FROM date_trunc('day', now() - interval '20 days'))::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    insert_samples(&p.ingest, &[1, 2], old, 1800, 1).await;
    p.run_once().await;
    let policy = || async {
        let r = p
            .analytics
            .query_one(
                "SELECT job_id, config->>'compress_after' FROM timescaledb_information.jobs
                 WHERE hypertable_name = 'bins' AND proc_name = 'policy_compression'",
                &[],
            )
            .await
            .unwrap();
        (r.get::<_, i32>(0), r.get::<_, String>(1))
    };
    let (first, _) = policy().await;
    // Changing job_config re-creates the policy (a trigger on job_config).
    let set = "UPDATE metricagg.job_config SET bins_compress_after = '7 days'";
    p.analytics.batch_execute(set).await.unwrap();
    let (job, after) = policy().await;
    assert_eq!(after, "7 days");
    assert_ne!(job, first, "a new policy");
    // Re-applied unchanged (the trigger again, as sql/analytics.sql does on
    // an upgrade), the policy in force stays: a new one would start
    // compressing at once.
    p.analytics.batch_execute(set).await.unwrap();
    p.analytics
        .batch_execute("SELECT metricagg.apply_bins_policies()")
        .await
        .unwrap();
    assert_eq!(policy().await, (job, after));
    assert_eq!(chunks(&p.analytics).await.0, 0);
    run_in_background(&p.analytics, "policy_compression").await;
    let (compressed, total) = chunks(&p.analytics).await;
    assert!(
        compressed == total && total > 0,
        "{compressed}/{total} compressed"
    );
    insert_samples(&p.ingest, &[1], old + 60, 120, 7).await;
    p.run_once().await;
    assert_equals_oracle(&p, "after the compression policy").await;
}

/// The retention policy (job_config.bins_retention) is a TimescaleDB job:
/// run by the scheduler it drops the chunks older than the retention and
/// bumps bins_version (readers' caches notice), newer ones stay.
#[tokio::test]
async fn the_retention_policy_drops_old_chunks() {
    let p = tsdb_pipeline().await;
    let (old, recent): (i64, i64) = {
        let r = p
            .raw
            .query_one(
                "SELECT extract(epoch FROM date_trunc('day', now() - interval '40 days'))::bigint,
                        extract(epoch FROM date_trunc('day', now() - interval '2 days'))::bigint",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    insert_samples(&p.ingest, &[1], old, 600, 1).await;
    insert_samples(&p.ingest, &[1], recent, 600, 2).await;
    p.run_once().await;
    assert_eq!(chunks(&p.analytics).await.1, 2);
    p.analytics
        .batch_execute("UPDATE metricagg.job_config SET bins_retention = '30 days'")
        .await
        .unwrap();
    let v0 = count(&p.analytics, "SELECT version FROM metricagg.bins_version").await;
    run_in_background(&p.analytics, "bins_retention_job").await;
    assert_eq!(
        chunks(&p.analytics).await.1,
        1,
        "the old chunk was not dropped"
    );
    let v1 = count(&p.analytics, "SELECT version FROM metricagg.bins_version").await;
    assert!(v1 > v0, "retention did not bump bins_version");
    let left = count(
        &p.analytics,
        &format!("SELECT count(*) FROM metricagg.bins WHERE ts < to_timestamp({recent})"),
    )
    .await;
    assert_eq!(left, 0);
    assert!(
        count(&p.analytics, "SELECT count(*) FROM metricagg.bins").await > 0,
        "the recent chunk went too"
    );
}
