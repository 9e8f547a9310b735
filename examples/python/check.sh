#!/usr/bin/env bash
# End-to-end check of the Python examples against running orderflow services.
# Run by scripts/examples.sh, which sets NATS_URL, ORDER_ADDR and PAYMENT_ADDR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

: "${NATS_URL:?NATS_URL must be set (scripts/examples.sh sets it)}"
: "${ORDER_ADDR:?ORDER_ADDR must be set (scripts/examples.sh sets it)}"

fail() {
  echo "python example check: FAIL: $*" >&2
  exit 1
}

# A venv of our own (reused between runs), with the pinned requirements.
if [[ ! -x .venv/bin/python ]]; then
  "${PYTHON:-python3}" -m venv .venv || fail "cannot create a venv (on Debian: apt-get install python3-venv)"
fi
py=$PWD/.venv/bin/python
"$py" -m pip install --quiet --disable-pip-version-check -r requirements.txt
PYTHON=$py ./generate.sh >/dev/null

run_id="$(date +%s)-$$-$RANDOM"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# order_client NAME UNITS EXPECTED_STATUS: places an order, checks its final status,
# and sets ORDER_ID and TRACE_ID.
order_client() {
  local name=$1 units=$2 expected=$3 out="$work/$1.out"
  echo "--- client.py: $name order (unit price $units EUR)"
  if ! "$py" client.py --order-addr "$ORDER_ADDR" --customer "py-check-$run_id" \
      --request-id "py-check-$name-$run_id" --units "$units" --timeout 30 >"$out"; then
    cat "$out"
    fail "client.py exited non-zero for the $name order"
  fi
  cat "$out"
  local final
  final=$(tail -n 1 "$out")
  [[ $final =~ ^final:\ ([0-9a-fA-F-]+)\ $expected$ ]] ||
    fail "client.py's last line for the $name order is '$final', expected 'final: <order_id> $expected'"
  ORDER_ID=${BASH_REMATCH[1]}
  TRACE_ID=$(sed -n 's/^trace: \([0-9a-f]\{32\}\)$/\1/p' "$out")
  [[ -n $TRACE_ID ]] || fail "client.py printed no 'trace: <32 hex>' line"
}

order_client ok 12 ORDER_STATUS_CONFIRMED
ok_order=$ORDER_ID ok_trace=$TRACE_ID
order_client declined 20000 ORDER_STATUS_PAYMENT_FAILED
declined_order=$ORDER_ID declined_trace=$TRACE_ID

echo "--- events.py"
"$py" events.py --nats-url "$NATS_URL" --timeout 20 >"$work/events.out" ||
  { cat "$work/events.out"; fail "events.py exited non-zero"; }
grep -E "$ok_order|$declined_order" "$work/events.out" || true

# expect_event TYPE ORDER_ID TRACE_ID: one line of that type for that order,
# carrying a 32-hex trace id (the client's: the services keep the caller's trace).
expect_event() {
  local type=$1 order=$2 trace=$3
  local stream=ORDERS
  [[ $type == orderflow.payment.* ]] && stream=PAYMENTS
  local pattern="^$stream [^ ]+ ${type//./\\.} trace=[0-9a-f]{32} .*order_id=$order( |$)"
  local line
  line=$(grep -m 1 -E "$pattern" "$work/events.out") ||
    fail "events.py printed no $type line for order $order with a 32-hex trace id"
  [[ $line == *" trace=$trace "* ]] ||
    fail "the $type event of order $order has not the client's trace id $trace: $line"
}
expect_event orderflow.order.v1.OrderCreated "$ok_order" "$ok_trace"
expect_event orderflow.payment.v1.PaymentAuthorized "$ok_order" "$ok_trace"
expect_event orderflow.order.v1.OrderConfirmed "$ok_order" "$ok_trace"
expect_event orderflow.order.v1.OrderCreated "$declined_order" "$declined_trace"
expect_event orderflow.payment.v1.PaymentDeclined "$declined_order" "$declined_trace"
expect_event orderflow.order.v1.OrderPaymentFailed "$declined_order" "$declined_trace"

echo "python example check: OK"
