#!/usr/bin/env bash
# Builds the TypeScript example and runs it against a running orderflow:
# one order that is paid (ORDER_STATUS_CONFIRMED) and one above the simulated
# gateway's decline limit (ORDER_STATUS_PAYMENT_FAILED).
# Env: ORDER_ADDR (host:port of order-service). Run by scripts/examples.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

: "${ORDER_ADDR:?ORDER_ADDR (host:port of order-service) must be set}"
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found; install Node.js 20 or later" >&2; exit 1; }
done

# npm keeps a copy of the lockfile it installed in node_modules/.package-lock.json.
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --silent
fi
npx --no-install tsc

run_id="$(date +%s)-$$-$RANDOM"

# Runs the client and checks its last line: expect <name> <units> <status>.
expect() {
  local name=$1 units=$2 status=$3 output
  echo "--- $name order (unit price $units EUR), expecting $status"
  output=$(node dist/client.js --order-addr "$ORDER_ADDR" --customer c-ts \
    --request-id "ts-$name-$run_id" --units "$units")
  echo "$output"
  if ! tail -n 1 <<<"$output" | grep -Eq "^final: [^ ]+ $status\$"; then
    echo "error: expected the final line to report $status" >&2
    exit 1
  fi
}

expect normal 12 ORDER_STATUS_CONFIRMED
expect declined 20000 ORDER_STATUS_PAYMENT_FAILED
echo "typescript example: ok"
