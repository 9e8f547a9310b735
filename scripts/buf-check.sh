#!/usr/bin/env bash
# Checks the protobuf contract in proto/ with the pinned buf CLI:
#   1. `buf lint` (rules in buf.yaml: STANDARD);
#   2. `buf breaking` against the proto/ of the previous commit (rules in
#      buf.yaml: FILE), so a change that would break generated clients or
#      event consumers (a renamed, renumbered, retyped or removed field,
#      message, enum value or RPC) fails here. Additive changes pass.
# The working tree is what is checked, so uncommitted edits count.
#
# Usage: scripts/buf-check.sh
#   BUF_AGAINST_REF  the commit to compare with (default HEAD~1). Breaking is
#                    skipped, with a message, when that commit is unknown (no
#                    parent, or a shallow clone) or has no proto/ directory.
# buf is installed by npm into ~/.cache/orderflow-tools (scripts/install-tools.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/install-tools.sh
source scripts/install-tools.sh
ensure_buf
echo "buf $("$BUF" --version) at $BUF"

echo "==> buf lint"
if ! "$BUF" lint; then
  echo "error: buf lint found the problems above in proto/ (rules: buf.yaml); fix them" >&2
  exit 1
fi

against=${BUF_AGAINST_REF:-HEAD~1}
echo "==> buf breaking proto --against '.git#ref=$against,subdir=proto'"
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "skipped: not a git work tree, so there is no previous commit to compare with"
elif ! commit=$(git rev-parse --verify --quiet "$against^{commit}"); then
  if [[ "$(git rev-parse --is-shallow-repository 2>/dev/null)" == true ]]; then
    echo "skipped: $against is not in this shallow clone (fetch more history to check it)"
  else
    echo "skipped: $against does not exist (the first commit has no parent)"
  fi
elif ! git cat-file -e "$commit:proto" 2>/dev/null; then
  echo "skipped: $against ($(git rev-parse --short "$commit")) has no proto/ directory"
else
  # buf reads the old files straight from the repository's .git, so the
  # comparison needs neither a network nor a clean work tree.
  if ! "$BUF" breaking proto --against ".git#ref=$commit,subdir=proto"; then
    echo "error: proto/ breaks the contract of $against ($(git rev-parse --short "$commit")), see above." \
      "Published clients and event consumers rely on it: add new fields, messages or" \
      "event types instead of changing or removing old ones (docs/events.md)" >&2
    exit 1
  fi
  echo "no breaking change since $against ($(git rev-parse --short "$commit"))"
fi
echo "buf: ok"
