# Images of chat-node and the operator, from this workspace (BuildKit: Docker 23+ uses it by
# default, Docker 20.10 with DOCKER_BUILDKIT=1):
#
#   docker build --target chat-node -t parley/chat-node:0.1.0 .
#   docker build --target operator  -t parley/operator:0.1.0 .
#
# Both run as the non-root user 65532 on a read-only root filesystem, as the operator's
# StatefulSet/Deployment and the Helm chart set them up; they write only to /tmp and to
# mounted volumes (/var/lib/parley is one, for an embedded chat-node).
#
# Build arguments (the defaults are the internet build above):
#   BINARIES      build: compile a release build in the rust:bookworm stage below.
#                 host-binaries: take bin/chat-node and bin/parley-operator from the build
#                 context, built beforehand on a Debian 12 (bookworm) host. `dev/images build`
#                 does this, offline, with a context holding only those two files.
#   RUNTIME_BASE  the image the final stages start from (Debian 12). `dev/images` passes a
#                 base it makes itself with debootstrap (parley/debian:bookworm), which already
#                 has ca-certificates, so the runtime stage installs nothing.
ARG BINARIES=build
ARG RUNTIME_BASE=debian:bookworm-slim

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

FROM scratch AS host-binaries
COPY bin/chat-node bin/parley-operator /out/

# The binaries of the final stages: the `build` stage or the `host-binaries` stage. BuildKit
# builds only the one chosen.
FROM ${BINARIES} AS binaries

FROM ${RUNTIME_BASE} AS runtime
# The binaries need libc, libgcc_s and zlib (librdkafka is linked in statically) and the CA
# certificates; apt-get runs only when the base lacks them (debian:bookworm-slim lacks
# ca-certificates; dev/images's base has both and no network).
RUN if ! dpkg -s ca-certificates zlib1g >/dev/null 2>&1; then \
        apt-get update \
     && apt-get install -y --no-install-recommends ca-certificates zlib1g \
     && rm -rf /var/lib/apt/lists/*; \
    fi \
 && install -d -o 65532 -g 65532 /var/lib/parley

FROM runtime AS operator
COPY --from=binaries /out/parley-operator /usr/local/bin/parley-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/parley-operator"]

FROM runtime AS chat-node
COPY --from=binaries /out/chat-node /usr/local/bin/chat-node
# Embedded mode keeps its data here; in Kubernetes the operator sets distributed mode.
ENV PARLEY_DATA_DIR=/var/lib/parley PARLEY_LISTEN=0.0.0.0:8080
VOLUME ["/var/lib/parley"]
EXPOSE 8080 9180
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/chat-node"]
