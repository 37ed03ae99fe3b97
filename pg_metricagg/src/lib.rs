//! `pg_metricagg`: UTC time binning and exact, parallel-safe percentile
//! aggregates for server metrics, as a PostgreSQL extension.
//!
//! The decisions live in `metricagg-core` (binning, bin lookup and merging,
//! percentiles, every binary format); this crate converts datums, manages
//! PostgreSQL memory, and reports errors. SQL declarations are hand-written
//! in `sql/metricagg.sql`; upgrades in `sql/pg_metricagg--A--B.sql`.

use pgrx::prelude::*;

mod agg;
mod binned;
mod binning;
mod bytea;
mod fmgr;
mod pack;
mod rollup;

::pgrx::pg_module_magic!();

extension_sql_file!(
    "../sql/metricagg.sql",
    name = "metricagg_core_sql",
    bootstrap
);

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Used by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "max_parallel_workers_per_gather = 2",
            "max_worker_processes = 8",
        ]
    }
}
