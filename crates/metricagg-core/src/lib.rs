//! Pure logic behind the `pg_metricagg` PostgreSQL extension.
//!
//! Nothing here links against PostgreSQL: the extension converts datums and
//! memory, this crate does the arithmetic. `cargo test` runs it anywhere.

pub mod bin;
pub mod percentile;
pub mod stats;

#[cfg(test)]
pub(crate) mod testing;
