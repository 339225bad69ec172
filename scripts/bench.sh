#!/usr/bin/env bash
# Benchmark on a fresh release build. `jobstream bench` is self-contained: it starts its
# own nats-server (the built-in nats.conf) and jobstream's api, worker and projector as
# separate processes on a temporary data dir, runs the raw JetStream loop and then the
# full system against that same server, prints both with their ratio, and stops
# everything (also on error or Ctrl-C). Arguments go to `jobstream bench`, e.g.
#   scripts/bench.sh --jobs 5000 --concurrency 32
#   scripts/bench.sh --jobs 5000 --concurrency 32 --durability default
#   scripts/bench.sh --rate 500 --duration 20s
#   scripts/bench.sh --jobs 20000 --batch 100 --concurrency 4
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nats-server.sh
cargo build --release -p jobstream
exec ./target/release/jobstream bench "$@"
