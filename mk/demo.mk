# Demo, docker-compose and docs checks (issue 6).
#
#   make demo             the whole pipeline on the embedded cluster, insights-api in the background
#   make stop             stop what make demo started (API, loop mode, cluster)
#   make test-compose     validate docker-compose.yml (compose-spec schema) and every path it names
#   make test-docker-init run the compose init scripts against two local servers, check the pipeline across them
#   make test-sql-doctest run the SQL examples of docs/sql-reference.md and compare their output
#   make test-demo        make demo twice on a small cluster of its own, the second after raw retention

TEST_TARGETS += test-compose test-docker-init test-sql-doctest test-demo test-db-port

# check-jsonschema from PyPI, in a private venv (never the system Python).
VENV := .metricagg/venv

.PHONY: demo stop test-compose test-demo-files test-docker-init test-sql-doctest test-demo test-db-port

demo:
	bash scripts/demo.sh start

stop:
	bash scripts/demo.sh stop

$(VENV)/bin/check-jsonschema:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q check-jsonschema

test-compose: $(VENV)/bin/check-jsonschema
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(VENV)/bin/python scripts/check-compose.py docker-compose.yml
	$(VENV)/bin/python scripts/check-compose.py --self-test docker-compose.yml

test-demo-files: test-compose

# The images cannot be built here (no Docker engine); their init scripts can
# be run. Needs the release extension installed (make install-release).
test-docker-init: install-release
	bash scripts/test-docker-init.sh

test-sql-doctest:
	bash scripts/db.sh start
	bash scripts/sql-doctest.sh docs/sql-reference.md

test-demo: install-release
	bash scripts/test-demo-retention.sh

# scripts/db.sh moves a cluster to METRICAGG_PORT and refuses another port
# while it runs (own cluster, ports 5477 and 5478).
test-db-port: install-release
	bash scripts/test-db-port.sh
