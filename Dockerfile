# One image, every process: `jobstream api|worker|projector|migrate`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p jobstream

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 jobstream
COPY --from=build /src/target/release/jobstream /usr/local/bin/jobstream
USER jobstream
ENTRYPOINT ["jobstream"]
