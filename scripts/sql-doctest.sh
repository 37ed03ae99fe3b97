#!/usr/bin/env bash
# Runs the SQL examples of a Markdown file (scripts/sql-doctest.py) against a
# fresh database of the embedded cluster: raw and analytics schemas in one
# database (scripts/db.sh create-db local), so the pipeline functions run too.
# The database is dropped afterwards unless it failed (then it is kept to look at).
#
#   scripts/sql-doctest.sh [--update] docs/sql-reference.md
set -euo pipefail
cd "$(dirname "$0")/.."
update=()
[ "${1:-}" = "--update" ] && { update=(--update); shift; }
doc="${1:?usage: scripts/sql-doctest.sh [--update] FILE.md}"
command -v psql >/dev/null || { echo "sql-doctest: psql not found" >&2; exit 1; }
command -v python3 >/dev/null || { echo "sql-doctest: python3 not found" >&2; exit 1; }

# The examples show native partitions (docs/operations.md covers TimescaleDB).
export METRICAGG_BINS_ENGINE="${METRICAGG_BINS_ENGINE:-native}"
db="doctest_$$"
url="$(bash scripts/db.sh create-db local "$db" | tail -1)"
[ -n "$url" ] || { echo "sql-doctest: could not create $db" >&2; exit 1; }
drop() { bash scripts/db.sh psql postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; }
if python3 scripts/sql-doctest.py "${update[@]}" "$url" "$doc"; then
    drop
else
    echo "sql-doctest: FAILED; database $db kept for inspection (drop it with: bash scripts/db.sh psql postgres -c 'DROP DATABASE $db')" >&2
    exit 1
fi
