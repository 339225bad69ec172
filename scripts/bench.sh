#!/usr/bin/env bash
# Benchmark on a fresh system: builds release, starts `jobstream dev` on a free port with a
# temporary data dir, runs `jobstream bench`, stops everything. Extra arguments go to bench.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nats-server.sh
cargo build --release -p jobstream
data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
./target/release/jobstream dev --port "$port" --data-dir "$data" >"$data/dev.out" 2>"$data/dev.log" &
dev=$!
trap 'kill -TERM $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 150); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 $dev 2>/dev/null || { cat "$data/dev.log" >&2; exit 1; }
  sleep 0.2
done
./target/release/jobstream bench --url "http://127.0.0.1:$port" --jwt-secret-file "$data/jwt-secret" "$@"
