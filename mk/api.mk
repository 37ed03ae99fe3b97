# insights-api (issue 5): grounded insights over the bins, narrated by an
# OpenAI-compatible LLM or the local narrator.
#
#   make test-api       unit tests + API/LLM tests against scratch databases of the embedded cluster
#   make test-api-fuzz  the HTTP API fuzzed from its /openapi.json with schemathesis (fixed seed)
#   make api            the service in the foreground (api role, embedded cluster, 127.0.0.1:3000)
#   make eval-insights  seed a labelled day, run the pipeline, score /insights against the labels
#   make eval-nab       NAB's labelled real series through the pipeline, /insights scored the NAB way next to a 3-sigma peer
#   make bench-api      /insights latency over 24 h x 50 servers x 4 metrics (mock mode)

TEST_TARGETS += test-api test-api-fuzz

.PHONY: test-api test-api-fuzz api eval-insights eval-nab bench-api

# schemathesis from PyPI, pinned, in a private venv (never the system Python).
SCHEMATHESIS_VERSION := 4.32.5
FUZZ_VENV := .metricagg/venv-fuzz

# The database tests fail, never skip, without the cluster: start it first.
# Bins in native partitions here; test-timescaledb runs tests/api.rs on a hypertable.
test-api:
	bash scripts/db.sh start
	METRICAGG_BINS_ENGINE=native cargo test -p insights-api

$(FUZZ_VENV)/bin/schemathesis:
	python3 -m venv $(FUZZ_VENV)
	$(FUZZ_VENV)/bin/pip install -q schemathesis==$(SCHEMATHESIS_VERSION)

test-api-fuzz: $(FUZZ_VENV)/bin/schemathesis
	SCHEMATHESIS=$(FUZZ_VENV)/bin/schemathesis bash scripts/fuzz-api.sh

api:
	bash scripts/db.sh start
	eval "$$(bash scripts/db.sh env)" && cargo run --release -p insights-api --bin insights-api

eval-insights:
	bash bench/api_eval.sh

# NAB_DIR (../shared/data/nab-dev), NAB_REUSE=1, NAB_VERBOSE=1: see bench/nab.sh.
eval-nab:
	bash bench/nab.sh

bench-api:
	bash bench/api.sh
