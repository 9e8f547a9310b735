#!/usr/bin/env bash
# Checks the TypeScript events reader (src/events.ts) against a running
# orderflow: places one paid and one declined order with the TypeScript client,
# then reads ORDERS and PAYMENTS with the reader and expects each order's three
# events, decoded, all with the one trace id the order service started.
# Env: NATS_URL, ORDER_ADDR, and the NATS credentials the reader takes
# (NATS_USER, NATS_PASSWORD_FILE, ...). Run by scripts/examples.sh, which
# gives it the least-privilege user events-reader of deploy/nats/auth.conf.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

: "${NATS_URL:?NATS_URL must be set (scripts/examples.sh sets it)}"
: "${ORDER_ADDR:?ORDER_ADDR (host:port of order-service) must be set}"
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found; install Node.js 20 or later" >&2; exit 1; }
done

fail() {
  echo "typescript events check: FAIL: $*" >&2
  exit 1
}

# npm keeps a copy of the lockfile it installed in node_modules/.package-lock.json.
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --silent
fi
npx --no-install tsc

run_id="$(date +%s)-$$-$RANDOM"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# place NAME UNITS STATUS: one order through the client; sets ORDER_ID.
place() {
  local name=$1 units=$2 status=$3 final
  node dist/client.js --order-addr "$ORDER_ADDR" --customer c-ts-events \
    --request-id "ts-events-$name-$run_id" --units "$units" >"$work/$name.out" ||
    { cat "$work/$name.out"; fail "client.js exited non-zero for the $name order"; }
  final=$(tail -n 1 "$work/$name.out")
  [[ $final =~ ^final:\ ([0-9a-fA-F-]+)\ $status$ ]] ||
    fail "client.js's last line for the $name order is '$final', expected 'final: <order_id> $status'"
  ORDER_ID=${BASH_REMATCH[1]}
}
place paid 12 ORDER_STATUS_CONFIRMED
paid=$ORDER_ID
place declined 20000 ORDER_STATUS_PAYMENT_FAILED
declined=$ORDER_ID

echo "--- events.js"
node dist/events.js --nats-url "$NATS_URL" --timeout 20 >"$work/events.out" ||
  { cat "$work/events.out"; fail "events.js exited non-zero"; }
grep -E "$paid|$declined" "$work/events.out" || true

# expect ORDER TYPE...: one decoded line per type for that order, each with a
# 32-hex trace id, the same for all of them (the trace crosses both services).
expect() {
  local order=$1 type line trace="" stream
  shift
  for type in "$@"; do
    stream=ORDERS
    [[ $type == orderflow.payment.* ]] && stream=PAYMENTS
    line=$(grep -m 1 -E "^$stream [^ ]+ ${type//./\\.} trace=[0-9a-f]{32} .*order_id=$order( |$)" "$work/events.out") ||
      fail "events.js printed no decoded $type line for order $order with a 32-hex trace id"
    [[ $line =~ trace=([0-9a-f]{32}) ]]
    if [[ -z $trace ]]; then
      trace=${BASH_REMATCH[1]}
    elif [[ ${BASH_REMATCH[1]} != "$trace" ]]; then
      fail "the $type event of order $order has trace ${BASH_REMATCH[1]}, its other events $trace"
    fi
  done
}
expect "$paid" orderflow.order.v1.OrderCreated orderflow.payment.v1.PaymentAuthorized orderflow.order.v1.OrderConfirmed
expect "$declined" orderflow.order.v1.OrderCreated orderflow.payment.v1.PaymentDeclined orderflow.order.v1.OrderPaymentFailed
# The summary is decoded from the body: status and amount are fields of it.
grep -qE "^PAYMENTS [^ ]+ orderflow\.payment\.v1\.PaymentDeclined .*order_id=$declined .*status=PAYMENT_STATUS_DECLINED amount=20000EUR" "$work/events.out" ||
  fail "the PaymentDeclined event of order $declined is not decoded with status and amount"
echo "typescript events check: OK"
