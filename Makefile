# The two commands of the README: `make run` and `make test`.
.PHONY: run test lint alerts bench nats-server

## Start the whole system in one process (nats-server child, api, worker, projector, SQLite in ./data).
run: nats-server
	cargo run -p jobstream -- dev

## Run every test (SQLite and PostgreSQL, real nats-server).
test:
	scripts/test.sh

## Formatting, clippy and the API docs, warnings are errors.
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet

## The Prometheus alert rules load and pass their unit tests (promtool).
alerts:
	scripts/check-alerts.sh

## jobstream against the raw JetStream loop, one self-contained run on a fresh release build
## (BENCH_ARGS="--jobs 5000 --concurrency 32", add "--durability default", "--rate 500", "--batch 100").
bench:
	scripts/bench.sh $(BENCH_ARGS)

## Install the pinned nats-server into .tools/ (project-local).
nats-server:
	scripts/install-nats-server.sh

.PHONY: bench-sse
## SSE scale on a fresh release build: memory per connection, events/s (BENCH_SSE_ARGS="--connections 5000 --jobs 200").
bench-sse:
	scripts/bench-sse.sh $(BENCH_SSE_ARGS)
