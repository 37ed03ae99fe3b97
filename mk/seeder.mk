# seeder (issue 4): synthetic, labelled server metrics bulk-loaded into the raw database.
#
#   make test-seeder    unit tests + real loads into scratch databases of the embedded cluster
#   make seed           a convenience load into metrics_raw (override SEED_ARGS)
#   make bench-seeder   generator alone vs seeder vs psql COPY of the same rows (5M rows)

TEST_TARGETS += test-seeder

SEED_ARGS ?= --servers 10 --duration 24h --interval 10s

.PHONY: test-seeder seed bench-seeder

# The database tests (feature db-tests) fail, never skip, without the cluster,
# so start it first. `make lint` builds without the feature: lint them here.
test-seeder:
	cargo clippy -p seeder --all-targets --features db-tests -- -D warnings
	bash scripts/db.sh start
	eval "$$(bash scripts/db.sh env)" && cargo test -p seeder --features db-tests

seed:
	bash scripts/db.sh start
	cargo build --release -p seeder
	@eval "$$(bash scripts/db.sh env)" && echo "+ seeder $(SEED_ARGS)" | sed -E "s#://([^:/@]+):[^@]*@#://\1:***@#" && ./target/release/seeder $(SEED_ARGS)

bench-seeder:
	bash bench/seeder.sh
