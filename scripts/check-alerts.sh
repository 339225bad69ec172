#!/usr/bin/env bash
# The alert rules load and each alert's unit tests pass (promtool, from the Debian package
# `prometheus`). Without promtool this fails under CI and only warns locally.
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
if ! command -v promtool >/dev/null 2>&1; then
  if [ -n "${CI:-}" ]; then
    echo "error: promtool not found (apt-get install prometheus); CI must check the alert rules" >&2
    exit 1
  fi
  echo "warning: promtool not found (apt-get install prometheus): alert rules not checked" >&2
  exit 0
fi
promtool check rules alerts.yml
promtool test rules alerts_test.yml
