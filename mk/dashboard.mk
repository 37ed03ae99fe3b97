# The dashboard (issue 7): a page at / of insights-api, drawn with uPlot,
# tested in Debian's headless Chromium through playwright-core.
#
#   make dashboard-assets  npm ci in dashboard/, copy the pinned uPlot build into insights-api/assets/vendor/uplot/
#   make test-dashboard    check that copy against the lockfile, then the page in headless Chromium
#                          against the real app and scratch databases with known anomalies
#                          (screenshots in target/dashboard.png and target/dashboard-fleet.png)

TEST_TARGETS += test-dashboard

.PHONY: dashboard-assets dashboard-node-modules test-dashboard

# playwright-core downloads no browser; the test uses /usr/bin/chromium.
dashboard-node-modules:
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error

dashboard-assets: dashboard-node-modules
	cd dashboard && node scripts/vendor.mjs

test-dashboard: dashboard-node-modules
	cd dashboard && node scripts/vendor.mjs --check
	@command -v chromium >/dev/null || { echo "test-dashboard: chromium is missing: bash scripts/install-deps.sh" >&2; exit 1; }
	bash scripts/db.sh start
	cargo test -p insights-api --test dashboard -- --include-ignored --nocapture
