#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (Playwright cannot download its own browser
# here). Install it when missing; needs root (CI runs as root) or passwordless sudo.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
echo "==> installing Debian chromium + chromium-driver for the browser tests"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "error: chromium is not installed and this user cannot install it." >&2
    echo "       Run: sudo apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null
