#!/usr/bin/env bash
# Installs everything metricagg needs on a fresh Debian 12 machine with Rust.
# Idempotent: every step is skipped when its result is already present.
# Run as root (CI) or through sudo.
#
# Optional engines, built from a release tarball when its path is given (no
# registry reachable here carries them for PostgreSQL 15; with distribution
# packages installed instead, leave these unset):
#   TIMESCALEDB_SOURCE=path/to/timescaledb-2.28.3.tar.gz   analytics side (hypertables)
#   CITUS_SOURCE=path/to/citus-13.2.2.tar.gz               raw side scale-out
#     (CITUS_PATCH=path/to/citus-13.2.2-pg15.20.patch, default: beside the tarball)
# Each is skipped when that version is already installed; a tarball whose
# sha256 differs from the release's is refused.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
PGRX_VERSION="0.18.1"
PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_packages=(
    "postgresql-${PG_MAJOR}"
    "postgresql-server-dev-${PG_MAJOR}"
    "postgresql-${PG_MAJOR}-cron"
    "postgresql-${PG_MAJOR}-tdigest"
    clang libclang-dev pkg-config sudo make
    # the dashboard's browser test (make test-dashboard): Debian's Chromium, a font for its text
    chromium fonts-dejavu-core
)
[ -n "${TIMESCALEDB_SOURCE:-}" ] && apt_packages+=(cmake libssl-dev)
[ -n "${CITUS_SOURCE:-}" ] && apt_packages+=(liblz4-dev libzstd-dev libkrb5-dev)
# Node.js and npm for the dashboard's test tools: the machine's own when it has
# them (playwright-core needs Node 20+), else Debian's.
command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_packages+=(npm)

missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "apt: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    say "apt: all packages present"
fi

node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
[ "$node_major" -ge 20 ] || say "warning: Node.js ${node_major} is older than 20, which playwright-core (make test-dashboard) needs"

# Debian's postgresql package creates and starts a cluster on 5432; we never use it.
# Leave it alone: our clusters are private and on their own port.

if cargo pgrx --version 2>/dev/null | grep -q "${PGRX_VERSION}"; then
    say "cargo-pgrx ${PGRX_VERSION} already installed"
else
    say "cargo-pgrx: installing ${PGRX_VERSION} (several minutes on two cores)"
    cargo install cargo-pgrx --version "=${PGRX_VERSION}" --locked
fi

pgrx_home="${PGRX_HOME:-$HOME/.pgrx}"
if [ -f "${pgrx_home}/config.toml" ] && grep -q "pg${PG_MAJOR}" "${pgrx_home}/config.toml"; then
    say "cargo pgrx init: already done for pg${PG_MAJOR}"
else
    say "cargo pgrx init --pg${PG_MAJOR} ${PG_CONFIG}"
    cargo pgrx init "--pg${PG_MAJOR}" "${PG_CONFIG}"
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${METRICAGG_BUILD_DIR:-$ROOT/.metricagg/build}"
PKGLIB="$("$PG_CONFIG" --pkglibdir)"
SHAREEXT="$("$PG_CONFIG" --sharedir)/extension"

# check_tarball PATH EXPECTED_NAME SHA256: the release we know, unchanged.
check_tarball() {
    [ -f "$1" ] || { say "error: $1 does not exist"; exit 1; }
    [ "$(basename "$1")" = "$2" ] || { say "error: expected $2, got $(basename "$1")"; exit 1; }
    echo "$3  $1" | sha256sum -c --quiet - || { say "error: $1 is not the released $2 (sha256 differs)"; exit 1; }
}

# unpack PATH: a fresh copy under $BUILD (the tarball's folder may be read-only).
unpack() {
    local dir
    dir="$BUILD/$(basename "$1" .tar.gz)"
    rm -rf "$dir"
    mkdir -p "$BUILD"
    tar -xzf "$1" -C "$BUILD"
    printf '%s' "$dir"
}

TIMESCALEDB_VERSION=2.28.3
# Our fixes to the release, applied when building from source (patches/):
# PostgreSQL 15.20 refuses to drop a portal that was never started, which
# TimescaleDB 2.28.3's job runner does, so every background job (compression
# and retention policies included) fails. A marker beside the install records
# which patches it was built with.
TSDB_PATCHES=("$ROOT"/patches/timescaledb-"${TIMESCALEDB_VERSION}"-*.patch)
TSDB_MARKER="$SHAREEXT/timescaledb--${TIMESCALEDB_VERSION}.metricagg-patches"
tsdb_patch_sums() { cat "${TSDB_PATCHES[@]}" | sha256sum | cut -c1-64; }
if [ -n "${TIMESCALEDB_SOURCE:-}" ]; then
    if [ -f "$PKGLIB/timescaledb-${TIMESCALEDB_VERSION}.so" ] && [ -f "$SHAREEXT/timescaledb--${TIMESCALEDB_VERSION}.sql" ] \
        && [ "$(cat "$TSDB_MARKER" 2>/dev/null)" = "$(tsdb_patch_sums)" ]; then
        say "TimescaleDB ${TIMESCALEDB_VERSION} already installed (with patches/)"
    else
        check_tarball "$TIMESCALEDB_SOURCE" "timescaledb-${TIMESCALEDB_VERSION}.tar.gz" \
            ec2f7de0ba53a473c01e0a57e09053898c6b1f7487228caff0f1d31c8cb2dedb
        say "TimescaleDB ${TIMESCALEDB_VERSION}: building from source with ${#TSDB_PATCHES[@]} patch(es) (about 6 minutes on two cores)"
        src="$(unpack "$TIMESCALEDB_SOURCE")"
        for p in "${TSDB_PATCHES[@]}"; do (cd "$src" && patch -s -p1 <"$p"); done
        (cd "$src" && ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
             -DCMAKE_BUILD_TYPE=Release -DPG_CONFIG="$PG_CONFIG" >/dev/null \
         && make -C build -j"$(nproc)" >/dev/null && as_root make -C build install >/dev/null)
        tsdb_patch_sums | as_root tee "$TSDB_MARKER" >/dev/null
        rm -rf "$src"
        say "TimescaleDB ${TIMESCALEDB_VERSION} installed"
    fi
fi

CITUS_VERSION=13.2.2
if [ -n "${CITUS_SOURCE:-}" ]; then
    if [ -f "$PKGLIB/citus.so" ] && grep -q "^default_version = '13.2-1'" "$SHAREEXT/citus.control" 2>/dev/null; then
        say "Citus ${CITUS_VERSION} already installed"
    else
        check_tarball "$CITUS_SOURCE" "citus-${CITUS_VERSION}.tar.gz" \
            dd2453caec20a830e5e63f1def5c5a98cb6f57ae510407cdcd800916fcdab430
        say "Citus ${CITUS_VERSION}: building from source (a few minutes on two cores)"
        src="$(unpack "$CITUS_SOURCE")"
        patch_file="${CITUS_PATCH:-$(dirname "$CITUS_SOURCE")/citus-${CITUS_VERSION}-pg15.20.patch}"
        # PostgreSQL 15.20 exports have_createdb_privilege(), which Citus 13.2.2 also defines.
        if [ -f "$patch_file" ]; then
            (cd "$src" && patch -s -p1 <"$patch_file")
        fi
        (cd "$src" && ./configure --without-libcurl PG_CONFIG="$PG_CONFIG" >/dev/null \
         && make -j"$(nproc)" >/dev/null && as_root make install >/dev/null)
        rm -rf "$src"
        say "Citus ${CITUS_VERSION} installed"
    fi
fi
say "dependencies ready"
