#!/usr/bin/env bash
# Called by scripts/test.sh (the demo does not need a browser).
set -euo pipefail
# Headless Chromium and its driver for the explain report's browser tests (Debian packages;
# checked on every run, installed only when missing; without apt-get those tests skip).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  APT=()
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    APT=(apt-get)
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    APT=(sudo -n apt-get)
  fi
  if [ "${#APT[@]}" -gt 0 ]; then
    echo "ragfocus: installing chromium and chromium-driver (apt-get)" >&2
    { "${APT[@]}" update -qq && DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq chromium chromium-driver >/dev/null; } \
      || echo "ragfocus: could not install chromium; the browser tests will be skipped" >&2
  else
    echo "ragfocus: apt-get is not usable here (not root, no passwordless sudo); the browser tests will be skipped" >&2
  fi
fi
