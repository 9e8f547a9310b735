#!/usr/bin/env bash
# Supply-chain checks with cargo-deny, by deny.toml: licenses (permissive
# only), bans (no OpenSSL, no wildcard versions; duplicate versions shown),
# sources (crates.io only). Advisories are checked too when a RustSec
# advisory database is already on the machine — CI machines cannot reach
# GitHub to fetch one — at $ADVISORY_DBS, or cargo-deny's default
# $CARGO_HOME/advisory-dbs (filled by `cargo deny fetch` where GitHub is
# reachable). Installs the pinned cargo-deny on first use. Run by .ci/run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/install-tools.sh
source scripts/install-tools.sh
ensure_cargo_deny

checks=(bans licenses sources)
dbs="${ADVISORY_DBS:-${CARGO_HOME:-$HOME/.cargo}/advisory-dbs}"
if [[ -d "$dbs" ]] && [[ -n "$(ls -A "$dbs")" ]]; then
  checks+=(advisories)
else
  echo "supply chain: no advisory database at $dbs; advisories not checked (see deny.toml)"
fi

# cargo-deny reads `cargo metadata`, which needs the source of every package
# in Cargo.lock for every target platform, while a build downloads only what
# this host compiles: fetch them all first (a no-op when the cache has them),
# so the offline check passes on a machine whose registry cache is empty.
cargo fetch --locked --quiet
cargo deny --log-level warn --offline check "${checks[@]}"
