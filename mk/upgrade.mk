# pg_metricagg upgrades (issue 14).
#
#   make test-upgrade   the previous release (pg_metricagg 0.1.0 and its sql/ schemas) with data,
#                       upgraded in place, compared with a fresh install: objects, privileges, bins

TEST_TARGETS += test-upgrade

.PHONY: test-upgrade

# install-release installs the released install scripts too (pg_metricagg/sql/released/).
test-upgrade: install-release db-start
	bash scripts/test-upgrade.sh
