#!/usr/bin/env bash
# Rehearses CI the way a brand-new machine runs it: a fresh clone of a
# commit, with its own empty cargo home (registry, git checkouts, installed
# tools such as cargo-deny), an empty Python environment for pip, an empty npm
# cache, and a HOME of its own for tool caches (buf, the examples' installs),
# then `CI=true bash .ci/run` inside it, with no standard input. The Rust
# toolchain, Python, Node and the machine's own configuration (~/.npmrc,
# ~/.gitconfig, PIP_* variables) stay, as they do on a new machine.
#
# A cache on a developer's machine can hide a missing install step (cargo
# deny once passed only because the registry cache held crates a new machine
# never fetched); run this before pushing a change to .ci/run, to the scripts
# it calls, or to dependencies. Only committed work is rehearsed.
#
# Usage: scripts/ci-clean-room.sh [--keep] [COMMIT]   (default: HEAD)
#   --keep   keep the clean room (clone, caches, build) afterwards; by
#            default it is deleted and only the log is kept.
set -euo pipefail

keep=false
ref=HEAD
for arg in "$@"; do
  case "$arg" in
    --keep) keep=true ;;
    -h | --help)
      sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*)
      echo "error: unknown option $arg (see --help)" >&2
      exit 2
      ;;
    *) ref=$arg ;;
  esac
done

repo=$(git -C "$(dirname "${BASH_SOURCE[0]}")/.." rev-parse --show-toplevel)
if ! commit=$(git -C "$repo" rev-parse --verify --quiet "$ref^{commit}"); then
  echo "error: $ref names no commit of $repo" >&2
  exit 2
fi
if [[ -n "$(git -C "$repo" status --porcelain)" ]]; then
  echo "note: the work tree has uncommitted changes; the clean room tests commit ${commit:0:12} only" >&2
fi

room=$(mktemp -d "${TMPDIR:-/tmp}/orderflow-clean-room.XXXXXX")
log="${TMPDIR:-/tmp}/orderflow-clean-room-${commit:0:12}-$(date +%Y%m%dT%H%M%S).log"
cleanup() {
  if [[ $keep == true ]]; then
    echo "clean room kept at $room"
  else
    rm -rf "$room"
  fi
}
trap cleanup EXIT

# The toolchain stays: the directory of the real cargo, rustc, rustfmt and
# clippy (rustup's toolchain, not ~/.cargo/bin, which also holds whatever
# `cargo install` put there), with rustup's home where it is.
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
# What a new machine has too; without one of them .ci/run cannot run here.
for tool in cargo node npm python3 git; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool is not on PATH; a CI machine has Rust, Node with npm, Python 3 and git" >&2
    exit 1
  fi
done
cargo_path=$(rustup which cargo 2>/dev/null || command -v cargo)
toolchain_bin=$(dirname "$cargo_path")
node_bin=$(dirname "$(command -v node)")
python=$(command -v python3)

# The machine's configuration (not its caches) comes along into the new HOME.
mkdir -p "$room/home/.config"
for file in .npmrc .gitconfig; do
  [[ -f "$HOME/$file" ]] && cp "$HOME/$file" "$room/home/$file"
done
[[ -d "$HOME/.config/pip" ]] && cp -r "$HOME/.config/pip" "$room/home/.config/pip"

# An empty Python environment: what pip installs goes into it, and packages
# installed into the machine's Python before do not count.
"$python" -m venv "$room/python"

echo "clean room: $room (log: $log)"
git clone --quiet --no-local "$repo" "$room/orderflow"
git -C "$room/orderflow" checkout --quiet --detach "$commit"
echo "commit: $(git -C "$room/orderflow" log -1 --format='%h %s')"

clean_path="$room/python/bin:$toolchain_bin:$node_bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A tool CI installs must not be found before CI installs it.
leaked=()
for tool in nats-server grpcurl buf cargo-deny; do
  if found=$(PATH=$clean_path command -v "$tool"); then
    leaked+=("$tool at $found")
  fi
done
if [[ ${#leaked[@]} -gt 0 ]]; then
  echo "error: the clean PATH already finds what CI must install: ${leaked[*]}" >&2
  exit 1
fi

started=$SECONDS
status=0
(
  cd "$room/orderflow"
  # The machine's environment stays (certificates, proxies, pip's settings:
  # a new machine has them too); only what points at caches, at tools found
  # before, or at a developer's own set-up is replaced or dropped.
  env \
    -u CARGO_TARGET_DIR -u ORDERFLOW_TEST_NATS_URL -u ORDERFLOW_TOOLS_DIR \
    -u XDG_CACHE_HOME -u VIRTUAL_ENV -u npm_config_prefix -u PYTHONPATH \
    PATH="$clean_path" \
    HOME="$room/home" \
    CARGO_HOME="$room/cargo" \
    RUSTUP_HOME="$RUSTUP_HOME" \
    PYTHONUSERBASE="$room/python-user" \
    npm_config_cache="$room/home/.npm" \
    CI=true \
    bash .ci/run </dev/null
) 2>&1 | tee "$log" || status=$?

echo
echo "clean room: .ci/run exited $status after $((SECONDS - started)) s (the stage times are above; log: $log)"
exit "$status"
