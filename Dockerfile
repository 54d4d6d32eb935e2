# syntax=docker/dockerfile:1
# The `flotilla` binary in a small, non-root runtime image (docs/operations.md).
#
#   docker build -t flotilla:0.1.0 .
#   docker run --rm -p 7100:7100 -p 8100:8100 -v flotilla-data:/data flotilla:0.1.0 \
#       node --id 1 --data-dir /data --listen 0.0.0.0:7100 --api 0.0.0.0:8100 \
#       --initial-cluster 1=HOST:7100@HOST:8100     # HOST: this machine, as others reach it
#
# Needs BuildKit (the default builder since Docker 23): the cargo registry and the target
# dir live in cache mounts, so a rebuild after a source change recompiles only the
# workspace's own crates, without a dummy-project layer per workspace member.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p flotilla \
    && install -D -m 0755 target/release/flotilla /out/flotilla

# debian-slim rather than distroless: the same glibc the builder linked against, plus the
# few tools operators need around a database (`kubectl cp` needs tar to copy a snapshot
# out of a pod; a shell for `kubectl exec` when something is wrong). No compiler, no cargo.
FROM debian:bookworm-slim
# /data belongs to the runtime user, so a named Docker volume starts out writable
# (Kubernetes mounts a PersistentVolume there and sets its group through fsGroup).
RUN groupadd --gid 10001 flotilla \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data \
       --shell /usr/sbin/nologin flotilla \
    && install -d -o 10001 -g 10001 -m 0750 /data
COPY --from=builder /out/flotilla /usr/local/bin/flotilla
USER 10001:10001
VOLUME ["/data"]
# 7100: raft transport between peers; 8100: HTTP API (clients, probes, /metrics).
EXPOSE 7100 8100
ENTRYPOINT ["flotilla"]
CMD ["--help"]
