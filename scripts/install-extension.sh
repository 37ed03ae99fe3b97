#!/usr/bin/env bash
# Builds the release extension and installs it into the system PostgreSQL.
#
# `cargo pgrx install` overwrites the installed library in place; a backend
# that has the old library mapped and is running code from it then crashes
# with SIGSEGV. This packages first (cargo pgrx package) and installs each
# file under a temporary name and renames it into place: a new inode, so
# running backends keep the old library, new ones load the new one.
# (Each file is copied next to its destination, then renamed over it.)
set -euo pipefail
cd "$(dirname "$0")/.."
PG_MAJOR="${PG_MAJOR:-15}"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config}"
cargo pgrx package -p pg_metricagg --pg-config "$PG_CONFIG" >&2
pkg="target/release/pg_metricagg-pg${PG_MAJOR}"
[ -d "$pkg" ] || { echo "install-extension: no package at $pkg" >&2; exit 1; }
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
(cd "$pkg" && find . -type f) | while read -r f; do
    dest="/${f#./}"
    "${sudo[@]}" install -D -m 644 "$pkg/$f" "$dest.tmp.$$"
    "${sudo[@]}" mv -f "$dest.tmp.$$" "$dest"
done
echo "install-extension: installed $(cd "$pkg" && find . -type f | wc -l) files from $pkg" >&2
