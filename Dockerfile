# syntax=docker/dockerfile:1

# Build stage: compiles the `chat` binary from the whole workspace.
FROM rust:1-bookworm AS builder
WORKDIR /app
COPY . .
# The registry cache mount only speeds up rebuilds; target/ stays in the layer
# so the runtime stage can copy the binary out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked -p chat

# Runtime stage: the binary, CA roots for TLS, and curl for health checks.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin chat \
    && mkdir -p /app/data \
    && chown -R chat:chat /app
COPY --from=builder /app/target/release/chat /usr/local/bin/chat

USER chat
WORKDIR /app
ENV BIND_ADDR=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/app/data
EXPOSE 3000
ENTRYPOINT []
CMD ["chat", "serve"]
