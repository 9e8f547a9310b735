#!/usr/bin/env bash
# Runs the client examples and the README's grpcurl cookbook against the real
# services: starts a throwaway nats-server and both service binaries on free
# loopback ports, runs every check given (default: all of them), and stops
# everything. NATS runs as deployed: the users and permissions of
# deploy/nats/auth.conf with fresh passwords, each service logged in as its
# own user. Each check is a script that reads
#   NATS_URL, ORDER_ADDR (host:port of order-service), PAYMENT_ADDR,
#   NATS_USER and NATS_PASSWORD_FILE (auth.conf's read-only events-reader,
#   for the event readers)
# from the environment and exits non-zero on failure.
#
# Usage: scripts/examples.sh [check ...]   (after `cargo build --workspace --bins`)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The closing "examples:" line is printed on every exit, early ones included:
# a check that never ran counts as failed, so scripts/test.sh's total can
# never read "0 failed" after this script failed.
passed=0
reported=false
work=""
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n "$work" ]] && rm -rf "$work"
  if [[ $reported == false ]]; then
    echo "examples: $passed passed, $((${#checks[@]} - passed)) failed (stopped early, exit status $status)"
  fi
}
trap cleanup EXIT

# Every check CI runs. A fixed list, so a check that goes missing fails the
# run instead of silently dropping out of it.
all_checks=(scripts/check-cookbook.py examples/python/check.sh examples/typescript/check.sh
  examples/typescript/events-check.sh)
wanted=("$@")
if [[ ${#wanted[@]} -eq 0 ]]; then
  wanted=("${all_checks[@]}")
fi
checks=()
for check in "${wanted[@]}"; do
  # Run as a path, never looked up on PATH.
  [[ "$check" == */* ]] || check="./$check"
  checks+=("$check")
done
for check in "${checks[@]}"; do
  if [[ ! -x "$check" ]]; then
    echo "error: example check $check is missing or not executable" >&2
    exit 1
  fi
done

target=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d)
for binary in order-service payment-service; do
  if [[ ! -x "$target/$binary" ]]; then
    echo "error: $target/$binary is missing; run \`cargo build --workspace --bins\` first" >&2
    exit 1
  fi
done

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A fresh password per NATS user, in files only this user can read (the
# services read theirs through NATS_PASSWORD_FILE, as in a deployment).
mkdir -m 700 "$work/secrets"
for user in order-service payment-service ops events-reader; do
  python3 -c 'import secrets; print(secrets.token_hex(16))' >"$work/secrets/$user"
done
password() { cat "$work/secrets/$1"; }
nats_port=$(free_port)
cp deploy/nats/auth.conf "$work/auth.conf"
cat >"$work/nats.conf" <<EOF
listen: 127.0.0.1:$nats_port
jetstream { store_dir: "$work/nats" }
include auth.conf
EOF
ORDER_SERVICE_NATS_PASSWORD=$(password order-service) \
PAYMENT_SERVICE_NATS_PASSWORD=$(password payment-service) \
OPS_NATS_PASSWORD=$(password ops) \
EVENTS_READER_NATS_PASSWORD=$(password events-reader) \
  nats-server -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
pids+=($!)
export NATS_URL="nats://127.0.0.1:$nats_port"
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null; then break; fi
  sleep 0.1
done

ORDER_ADDR="127.0.0.1:$(free_port)"
PAYMENT_ADDR="127.0.0.1:$(free_port)"
export ORDER_ADDR PAYMENT_ADDR
for service in order-service payment-service; do
  addr=$ORDER_ADDR
  [[ $service == payment-service ]] && addr=$PAYMENT_ADDR
  GRPC_ADDR=$addr NATS_USER=$service NATS_PASSWORD_FILE="$work/secrets/$service" RUST_LOG=warn \
    "$target/$service" >"$work/$service.log" 2>&1 &
  pids+=($!)
done
# The checks read events as the read-only user, never as a service.
export NATS_USER=events-reader NATS_PASSWORD_FILE="$work/secrets/events-reader"

# Ready when both answer the overall health check with SERVING.
ready() {
  python3 - "$1" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=0.2).close()
except OSError:
    sys.exit(1)
PY
}
for addr in "$ORDER_ADDR" "$PAYMENT_ADDR"; do
  for attempt in $(seq 200); do
    if ready "$addr"; then break; fi
    if [[ $attempt -eq 200 ]]; then
      echo "error: no service listens on $addr; its log:" >&2
      tail -20 "$work"/*.log >&2
      exit 1
    fi
    sleep 0.05
  done
done

failed=0
for check in "${checks[@]}"; do
  echo "==> example check: $check"
  if "$check"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $check" >&2
  fi
done
reported=true
echo "examples: $passed passed, $failed failed"
# Everything above ran with exactly the permissions of auth.conf: a refused
# subject is a missing permission, even where a check got by without it.
if grep -F "Permissions Violation" "$work/nats.log" >&2; then
  echo "error: nats-server logged the permission violations above: auth.conf lacks a permission the examples use" >&2
  exit 1
fi
[[ $failed -eq 0 ]]
