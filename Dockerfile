# syntax=docker/dockerfile:1
# The `orders` worker (examples/orders.rs) as a container for ECS/Fargate or any
# Docker host. With AWS_LAMBDA_RUNTIME_API unset it runs the long-poll consumer.
#
#   docker buildx build --platform linux/arm64 -t sqs-worker-orders .   # Graviton (template default)
#   docker build -t sqs-worker-orders .                                 # this machine's arch
#   docker run --rm -e SQS_QUEUE_URL=... -e AWS_REGION=... -p 9090:9090 sqs-worker-orders
#
# Metrics and health: http://<task>:9090/metrics and /healthz. The runtime image
# has no shell and no curl, so there is no HEALTHCHECK here (see template.yaml).

# Base images pinned by digest (a rebuilt tag cannot change what is built).
# The build image is the workspace's `rust-version` (Cargo.toml); the digests
# are the multi-platform index digests published for these tags, as found in
# public Dockerfiles: refresh both with
#   docker buildx imagetools inspect rust:1.94.1-slim-bookworm
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
ARG RUST_VERSION=1.94.1
ARG RUST_IMAGE=rust:1.94.1-slim-bookworm@sha256:cf9dd0ec73e75f827fe59123fff9dc65af1a1c8363c3c31ee8d7f8ad0b6a5fb2
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM ${RUST_IMAGE} AS build
ARG RUST_VERSION
# Build with the image's toolchain (the workspace's rust-version), not the one
# rust-toolchain.toml names for CI: rustup would download that one otherwise.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION}
# gcc and libc6-dev come with the image; cmake is aws-lc-sys's fallback builder.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and compiled dependencies between builds; the
# binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sqs-worker-orders \
 && install -D -m 0755 target/release/orders /out/orders

# glibc + libgcc + CA certificates, no shell, uid/gid 65532 ("nonroot").
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/orders /orders
USER nonroot:nonroot
ENV RUST_LOG=info \
    SQS_WORKER_LOG_FORMAT=json \
    SQS_WORKER_METRICS_ADDR=0.0.0.0:9090
EXPOSE 9090
# SIGTERM (Docker's default stop signal) starts the graceful shutdown; give the
# container more than SQS_WORKER_GRACE_SECONDS (30 s) to stop: docker stop -t 45.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/orders"]
