# syntax=docker/dockerfile:1
# The Rust services of this repository (context: the repository root):
#   docker build -f docker/app.Dockerfile --build-arg BIN=seeder .
#   docker build -f docker/app.Dockerfile --build-arg BIN=insights-api .
ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
ARG BIN
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY pg_metricagg pg_metricagg
COPY seeder seeder
COPY insights-api insights-api
# the dashboard page, embedded in insights-api at build time
COPY dashboard/src dashboard/src
COPY tests tests
RUN test -n "${BIN}" && cargo build --release --locked -p "${BIN}" --bin "${BIN}" \
 && cp "target/release/${BIN}" /app

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home metricagg
COPY --from=build /app /usr/local/bin/app
USER metricagg
ENTRYPOINT ["/usr/local/bin/app"]
