//! Pure logic behind the `pg_metricagg` PostgreSQL extension, and the
//! contracts its clients share with it.
//!
//! Nothing here links against PostgreSQL: the extension converts datums and
//! manages memory, this crate decides. `cargo test` runs it anywhere.
//!
//! * [`bin`]: the bin contract: widths, the origin and epochs, `metricagg_bin`.
//! * [`grid`]: a group's bins: lookup of a row's bin, merging two groups.
//! * [`codec`]: every packed or serialized format, encoder and checked decoder.
//! * [`percentile`], [`stats`]: exact `percentile_cont` and the per-bin statistics.
//! * [`series`]: the (server, metric) key of `metricagg_rollup`.

pub mod bin;
pub mod codec;
pub mod grid;
pub mod percentile;
pub mod series;
pub mod stats;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
