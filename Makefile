# metricagg: one entry point for building, testing, benchmarking and running.
#
#   make deps             install apt packages and cargo-pgrx 0.18.1 (idempotent)
#   make demo             the whole system on this machine, seeded (make stop ends it)
#   make test             the full suite (what CI runs)
#   make db-start         start the embedded PostgreSQL cluster (db-stop, db-status, db-destroy)
#   make db-env           export lines for the database URLs of every role
#   make install-release  build and install the release extension
#   make seed             load synthetic metrics into the embedded cluster
#   make api              run insights-api in the foreground (api role)
#   make bench-aggregate  pg_metricagg vs PostgreSQL's aggregates (prints ratios)
#   make bench-pipeline   the job vs direct aggregation, incremental runs, trigger cost
#   make bench-vs-caggs   the job vs TimescaleDB continuous aggregates (full, late data, reads)
#   make soak             live ingest and loop mode under faults for SOAK_MINUTES, then the oracle
#   make bench-seeder     seeder vs psql COPY
#   make bench-api        /insights latency under load
#   make eval-insights    anomaly detection scored against the seeder's labels
#
# Components add their own targets in mk/*.mk and append to TEST_TARGETS.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PG_MAJOR ?= 15
PG_CONFIG ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
export PG_MAJOR PG_CONFIG

# Test stages, in order. mk/*.mk files append theirs.
TEST_TARGETS := lint test-core test-pg test-pipeline test-timescaledb

-include mk/*.mk

.PHONY: help deps lint fmt test test-core test-pg test-pipeline install-release \
        db-start db-stop db-status db-destroy db-env bench-aggregate bench-pipeline bench-vs-caggs soak test-timescaledb

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

deps:
	bash scripts/install-deps.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p pg_metricagg --all-targets --features pg_test -- -D warnings

test-core:
	cargo test -p metricagg-core

# pgrx tests: a throwaway cluster run as the postgres OS user (never root).
test-pg:
	bash scripts/pgrx-test.sh

# The pipeline against the real embedded cluster (two databases, FDW, pg_cron).
# One test at a time: the job's horizon is the raw cluster's snapshot xmin, so
# a test holding a transaction open on purpose delays every other test's runs.
# The release extension is installed first: test-pg leaves a debug build.
# This pass keeps bins in native partitions; test-timescaledb runs the same
# suite again with bins in a TimescaleDB hypertable.
# tests/faults.rs starts two clusters of its own (.metricagg/faults-*, ports
# 5471-5472) to kill; they are stopped afterwards.
test-pipeline: install-release db-start
	eval "$$(bash scripts/db.sh env)" && METRICAGG_BINS_ENGINE=native \
	    cargo test -p metricagg-pipeline-tests --test pipeline --test hardening --test faults -- --test-threads=1; \
	rc=$$?; for c in faults-raw faults-an; do \
	    [ -d .metricagg/$$c ] && METRICAGG_HOME=$$PWD/.metricagg/$$c bash scripts/db.sh stop 2>/dev/null; done; exit $$rc

# The analytics side on TimescaleDB: the pipeline suite and the API tests
# again with bins in a hypertable, and the TimescaleDB-specific tests
# (compressed chunks, policies). Runs when TimescaleDB is installed;
# REQUIRE_TIMESCALEDB=1 (CI) makes its absence a failure.
TSDB_LIB := $(shell $(PG_CONFIG) --pkglibdir 2>/dev/null)/timescaledb.so
test-timescaledb: install-release
	@if [ ! -f "$(TSDB_LIB)" ]; then \
	    echo "skipped: TimescaleDB is not installed"; \
	    if [ -n "$$REQUIRE_TIMESCALEDB" ]; then echo "test-timescaledb: REQUIRE_TIMESCALEDB is set: failing" >&2; exit 1; fi; \
	else \
	    bash scripts/db.sh start && eval "$$(bash scripts/db.sh env)" && export METRICAGG_BINS_ENGINE=timescaledb && \
	    cargo test -p metricagg-pipeline-tests --test pipeline --test hardening --test timescaledb -- --test-threads=1 && \
	    cargo test -p insights-api --test api; \
	fi

test: $(TEST_TARGETS)
	@echo "make test: all stages passed ($(TEST_TARGETS))"

# Release build of the extension, installed into the system PostgreSQL.
# METRICAGG_NO_INSTALL=1 skips it (another checkout installs; see scripts/db.sh).
install-release:
	@if [ -n "$$METRICAGG_NO_INSTALL" ]; then echo "install-release: skipped (METRICAGG_NO_INSTALL)"; else bash scripts/install-extension.sh; fi

db-start:
	bash scripts/db.sh start
db-stop:
	bash scripts/db.sh stop
db-status:
	bash scripts/db.sh status
db-destroy:
	bash scripts/db.sh destroy
db-env:
	@bash scripts/db.sh env

bench-aggregate:
	bash bench/aggregate.sh

bench-pipeline:
	bash bench/pipeline.sh

# The job vs TimescaleDB continuous aggregates on the same rows (needs TimescaleDB).
bench-vs-caggs:
	bash bench/vs-caggs.sh

# Live ingest + loop mode + late rows, poison and killed runs, then the
# oracle (SOAK_SERVERS, SOAK_MINUTES). Not part of make test.
soak:
	bash scripts/soak.sh
