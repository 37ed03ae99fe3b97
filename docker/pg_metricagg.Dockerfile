# syntax=docker/dockerfile:1
# A PostgreSQL 16 image with pg_metricagg, built from this repository
# (context: the repository root). BASE_IMAGE is the server image to extend:
#   raw-db        postgres:16-bookworm                    (+ pg_cron)
#   analytics-db  timescale/timescaledb-ha:pg16           (TimescaleDB and pg_cron included)
# The extension is compiled on the same base image it runs on, so the library
# links against exactly that image's C library and PostgreSQL headers.
ARG BASE_IMAGE=postgres:16-bookworm

# ---------------------------------------------------------------- build stage
FROM ${BASE_IMAGE} AS build
USER root
ARG RUST_VERSION=1.95.0
ARG PGRX_VERSION=0.18.1
ARG PG_MAJOR=16
ENV DEBIAN_FRONTEND=noninteractive \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential ca-certificates clang curl libclang-dev pkg-config \
        postgresql-server-dev-${PG_MAJOR} \
 && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
RUN cargo install cargo-pgrx --version =${PGRX_VERSION} --locked \
 && cargo pgrx init --pg${PG_MAJOR} /usr/lib/postgresql/${PG_MAJOR}/bin/pg_config
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY pg_metricagg pg_metricagg
COPY seeder seeder
COPY insights-api insights-api
COPY tests tests
# Only pg_metricagg is compiled; the other members are copied because the
# workspace manifest names them.
RUN cargo pgrx package -p pg_metricagg --no-default-features --features pg${PG_MAJOR} \
        --pg-config /usr/lib/postgresql/${PG_MAJOR}/bin/pg_config --out-dir /out

# ------------------------------------------------------------- raw database
FROM ${BASE_IMAGE} AS raw-db
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-16-cron \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /
COPY sql /metricagg/sql

# -------------------------------------------------------- analytics database
FROM ${BASE_IMAGE} AS analytics-db
COPY --from=build /out/ /
COPY sql /metricagg/sql
