# Citus (issue 13): the raw side distributed over a local Citus cluster, a
# coordinator and two workers, each its own PostgreSQL instance under
# .metricagg/citus/ (scripts/citus.sh; the procedure is docs/citus.md).
#
#   make citus-start   start (and the first time create) the cluster: raw side distributed,
#                      analytics database and pg_cron in the coordinator's instance
#   make citus-stop    stop it (make citus-destroy removes it)
#   make citus-env     export lines for the database URLs of every role, as make db-env
#   make test-citus    the pipeline oracle tests against the Citus raw side
#   make bench-citus   single node vs Citus: full run, +1% rows, ingest through the coordinator
#
# METRICAGG_CITUS_PORT (default 5450) is the coordinator's port, the workers
# take the next two.

TEST_TARGETS += test-citus

CITUS_LIB := $(shell $(PG_CONFIG) --pkglibdir 2>/dev/null)/citus.so

.PHONY: citus-start citus-stop citus-destroy citus-env test-citus bench-citus

citus-start:
	bash scripts/citus.sh start
citus-stop:
	bash scripts/citus.sh stop
citus-destroy:
	bash scripts/citus.sh destroy
citus-env:
	@bash scripts/citus.sh env

# Runs when Citus is installed; REQUIRE_CITUS=1 (CI) makes its absence a
# failure. One test at a time: a test holds transactions open and stops a
# worker on purpose. Bins in native partitions (the coordinator does not
# preload TimescaleDB). The three servers are stopped afterwards.
test-citus:
	@if [ ! -f "$(CITUS_LIB)" ]; then \
	    echo "skipped: Citus is not installed"; \
	    if [ -n "$$REQUIRE_CITUS" ]; then echo "test-citus: REQUIRE_CITUS is set: failing" >&2; exit 1; fi; \
	else \
	    $(MAKE) --no-print-directory install-release && bash scripts/citus.sh start && \
	    eval "$$(bash scripts/citus.sh env)" && METRICAGG_BINS_ENGINE=native \
	    cargo test -p metricagg-pipeline-tests --test citus -- --test-threads=1; \
	    rc=$$?; bash scripts/citus.sh stop >/dev/null; exit $$rc; \
	fi

bench-citus:
	bash bench/citus.sh
