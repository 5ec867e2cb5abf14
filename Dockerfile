# Images of chat-node and the operator, from this workspace:
#
#   docker build --target chat-node -t parley/chat-node:0.1.0 .
#   docker build --target operator  -t parley/operator:0.1.0 .
#
# Both run as the non-root user 65532 on a read-only root filesystem, as the operator's
# StatefulSet/Deployment and the Helm chart set them up. (Not built in this repository's CI:
# the test machine has no container engine. See docs/operations.md.)

FROM rust:1.95-bookworm AS build
# librdkafka is compiled by rdkafka-sys with its own configure script.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config python3 zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chat-node -p operator \
 && install -D target/release/chat-node /out/chat-node \
 && install -D target/release/parley-operator /out/parley-operator

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 65532 -g 65532 /var/lib/parley

FROM runtime AS operator
COPY --from=build /out/parley-operator /usr/local/bin/parley-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/parley-operator"]

FROM runtime AS chat-node
COPY --from=build /out/chat-node /usr/local/bin/chat-node
# Embedded mode keeps its data here; in Kubernetes the operator sets distributed mode.
ENV PARLEY_DATA_DIR=/var/lib/parley PARLEY_LISTEN=0.0.0.0:8080
EXPOSE 8080 9180
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/chat-node"]
