#!/usr/bin/env bash
# Installs headless Chromium and chromedriver from the OS packages, for the
# web console's browser tests (tests/console.rs). nats/install.sh calls it.
#
# Idempotent and quiet when both are already there. Installs with apt-get
# (Debian: chromium, chromium-driver) as root, or through sudo when it asks
# for no password; otherwise it says what to run and returns 0, so
# installing nats-server still succeeds (the browser tests then fail,
# saying what is missing). Prints nothing on stdout.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi

packages="chromium chromium-driver"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: the web console's browser tests need chromium and chromedriver; install them with your package manager" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "note: the web console's browser tests need chromium and chromedriver: sudo apt-get install -y $packages" >&2
  exit 0
fi

echo "installing $packages from the OS packages (for the web console's browser tests)" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >&2
# shellcheck disable=SC2086
"${as_root[@]}" apt-get install -y -qq --no-install-recommends $packages >/dev/null
echo "installed $(chromium --version 2>/dev/null | head -1)" >&2
