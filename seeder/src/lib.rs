//! seeder: realistic, labelled synthetic server metrics for metricagg,
//! bulk-loaded into the raw database with binary COPY.
//!
//! The generator ([`gen`], [`model`], [`anomaly`]) is pure and deterministic;
//! [`run`] drives it into PostgreSQL, a file, or nowhere.

pub mod anomaly;
pub mod cli;
pub mod encode;
pub mod gen;
pub mod model;
pub mod ranges;
pub mod rng;
pub mod run;
pub mod timefmt;
