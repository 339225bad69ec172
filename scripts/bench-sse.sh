#!/usr/bin/env bash
# SSE scale measurement on a fresh system: raises `ulimit -n`, starts `jobstream dev` on a
# free port with a temporary data dir, runs `jobstream bench-sse --pid <dev pid>` (memory per
# connection from /proc, events/s delivered while echo jobs run, both against a baseline from
# the same run), stops everything. PROFILE=debug skips the release build. Extra arguments go
# to bench-sse, e.g. `scripts/bench-sse.sh --connections 5000 --jobs 200`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nats-server.sh
profile="${PROFILE:-release}"
if [ "$profile" = release ]; then cargo build --release -p jobstream; else cargo build -p jobstream; fi
bin="./target/$profile/jobstream"
# Every SSE connection is a file descriptor on both ends (the API and this client).
ulimit -n "$(ulimit -Hn)"
echo "ulimit -n: $(ulimit -n)"
data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
RUST_LOG=warn "$bin" dev --port "$port" --data-dir "$data" >"$data/dev.out" 2>"$data/dev.log" &
dev=$!
trap 'kill -TERM $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 150); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 $dev 2>/dev/null || { cat "$data/dev.log" >&2; exit 1; }
  sleep 0.2
done
"$bin" bench-sse --url "http://127.0.0.1:$port" --jwt-secret-file "$data/jwt-secret" --pid "$dev" "$@"
