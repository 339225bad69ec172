#!/usr/bin/env bash
# The whole test suite (what `make test` and CI run): installs the pinned nats-server and Python test tools,
# makes sure PostgreSQL is up, then runs every test on SQLite and on PostgreSQL.
# Each PostgreSQL test creates its own database on TEST_DATABASE_URL's server and drops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nats-server.sh
# A server older than jobstream supports: the tests check that it is refused.
NATS_SERVER_VERSION=2.12.8 NATS_SERVER_DEST=.tools/nats-server-old scripts/install-nats-server.sh
# aiosmtpd (a real SMTP server) and nats-py (the Python example worker), pinned, into .tools/python.
scripts/install-python-tools.sh

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  if command -v pg_lsclusters >/dev/null 2>&1; then
    # Start any local cluster that is down (CI machines may have stopped it).
    pg_lsclusters --no-header | while read -r ver name _port status _rest; do
      if [ "$status" != "online" ]; then
        echo "starting PostgreSQL cluster $ver/$name" >&2
        pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start || true
      fi
    done
  fi
  for _ in $(seq 1 50); do
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
      export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
      break
    fi
    sleep 0.2
  done
fi
if [ -n "${TEST_DATABASE_URL:-}" ]; then
  echo "PostgreSQL tests on ${TEST_DATABASE_URL%%\?*}" >&2
elif [ -n "${CI:-}" ]; then
  echo "error: PostgreSQL is not reachable on 127.0.0.1:5432 and TEST_DATABASE_URL is unset; CI must test it" >&2
  exit 1
else
  echo "warning: no PostgreSQL found; only the SQLite variants will run (set TEST_DATABASE_URL)" >&2
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
