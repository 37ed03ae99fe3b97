#!/usr/bin/env bash
# Installs everything metricagg needs on a fresh Debian 12 machine with Rust.
# Idempotent: every step is skipped when its result is already present.
# Run as root (CI) or through sudo.
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
say "dependencies ready"
