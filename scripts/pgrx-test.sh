#!/usr/bin/env bash
# Runs the extension's #[pg_test]s with `cargo pgrx test`.
#
# PostgreSQL refuses to run as root, so as root the throwaway test cluster
# is initialised and run as the `postgres` OS user (--runas), in a data
# directory under the project's git-ignored .metricagg/ that it owns.
# Note: this installs a debug build of the extension into the system
# PostgreSQL; `make install-release` puts the release build back.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_MAJOR="${PG_MAJOR:-15}"
args=(test "pg${PG_MAJOR}" -p pg_metricagg)
if [ "$(id -u)" -eq 0 ]; then
    pgdata="$PWD/.metricagg/pgrx-test-data"
    mkdir -p "$PWD/.metricagg"
    rm -rf "$pgdata"
    install -d -o postgres -g postgres -m 700 "$pgdata"
    # The postgres user must be able to reach the data directory.
    chmod o+x "$PWD" "$PWD/.metricagg"
    args+=(--runas postgres --pgdata "$pgdata")
fi
exec cargo pgrx "${args[@]}" "$@"
