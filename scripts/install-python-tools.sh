#!/usr/bin/env bash
# Installs the pinned Python tools the tests use into .tools/python (project-local, never
# system-wide): aiosmtpd (a real SMTP server for the e-mail tests) and nats-py (for the
# Python wire-protocol worker in examples/python-worker). Tests find them via PYTHONPATH.
# Idempotent: does nothing when the pinned versions are there.
set -euo pipefail
AIOSMTPD_VERSION="${AIOSMTPD_VERSION:-1.4.6}"
NATS_PY_VERSION="${NATS_PY_VERSION:-2.16.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/python"
stamp="$dest/.installed-aiosmtpd-${AIOSMTPD_VERSION}-nats-py-${NATS_PY_VERSION}"
if [ -f "$stamp" ]; then
  exit 0
fi
command -v python3 >/dev/null || { echo "install-python-tools: python3 with pip is needed" >&2; exit 1; }
echo "installing aiosmtpd ${AIOSMTPD_VERSION} and nats-py ${NATS_PY_VERSION} into ${dest}" >&2
rm -rf "$dest"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  --target "$dest" "aiosmtpd==${AIOSMTPD_VERSION}" "nats-py==${NATS_PY_VERSION}"
PYTHONPATH="$dest" python3 -c 'import aiosmtpd, nats; print("aiosmtpd", aiosmtpd.__version__, "nats-py", nats.__version__ if hasattr(nats, "__version__") else "ok")' >&2
touch "$stamp"
