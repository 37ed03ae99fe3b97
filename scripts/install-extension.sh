#!/usr/bin/env bash
# Builds the release extension and installs it into the PostgreSQL that
# PG_CONFIG names (default: Debian's PostgreSQL $PG_MAJOR).
#
# `cargo pgrx install` overwrites the installed library in place; a backend
# that has the old library mapped and is running code from it then crashes
# with SIGSEGV. This packages first (cargo pgrx package) and installs each
# file under a temporary name and renames it into place: a new inode, so
# running backends keep the old library, new ones load the new one.
# (Each file is copied next to its destination, then renamed over it.)
#
# Besides the current version's script and the upgrade scripts, the install
# scripts of released versions are installed (pg_metricagg/sql/released/).
# The package directory is emptied first, and every file must land in
# PG_CONFIG's library or extension directory: a package left over from a
# build for another installation is never installed by accident.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_MAJOR="${PG_MAJOR:-15}"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config}"
libdir="$("$PG_CONFIG" --pkglibdir)"
extdir="$("$PG_CONFIG" --sharedir)/extension"
pkg="target/release/pg_metricagg-pg${PG_MAJOR}"
rm -rf "$pkg"
cargo pgrx package -p pg_metricagg --pg-config "$PG_CONFIG" >&2
[ -d "$pkg" ] || { echo "install-extension: no package at $pkg" >&2; exit 1; }
# The install scripts of released versions (CREATE EXTENSION ... VERSION,
# make test-upgrade); pgrx packages only the current one and the upgrades.
cp pg_metricagg/sql/released/pg_metricagg--*.sql "$pkg$extdir/"
files="$(cd "$pkg" && find . -type f | sed 's#^\./#/#')"
while read -r dest; do
    case "$(dirname "$dest")" in
        "$libdir" | "$extdir") ;;
        *) echo "install-extension: $dest is outside $libdir and $extdir; nothing installed" >&2; exit 1 ;;
    esac
done <<<"$files"
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
while read -r dest; do
    "${sudo[@]}" install -D -m 644 "$pkg$dest" "$dest.tmp.$$"
    "${sudo[@]}" mv -f "$dest.tmp.$$" "$dest"
done <<<"$files"
echo "install-extension: installed $(wc -l <<<"$files") files into $libdir and $extdir" >&2
