# syntax=docker/dockerfile:1
# The redis-orchestrator image used by deploy/multisite:
#   docker build -t redis-orchestrator:0.1.0 .

# Build stage: the release binary from the locked dependency set. The cache mounts keep the
# crate registry and compiled dependencies between builds.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# build.rs sets the link options (stripping, the profile-driven function order in
# symbol-order.txt); bench/ is a member of the workspace, so cargo needs its manifest.
COPY Cargo.toml Cargo.lock build.rs symbol-order.txt ./
COPY src ./src
COPY bench ./bench
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin redis-orchestrator \
    && cp target/release/redis-orchestrator /usr/local/bin/redis-orchestrator

# Runtime stage: glibc and libgcc only (the binary links them dynamically), no shell, no
# package manager. Built on Debian 12 above, so the C libraries match.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/redis-orchestrator /usr/local/bin/redis-orchestrator
# Numeric, so Kubernetes can verify runAsNonRoot; the manifests run as the same user.
USER 65532:65532
# 7000: Raft and peer reports; 8080: the HTTP API and probes.
EXPOSE 7000 8080
ENTRYPOINT ["/usr/local/bin/redis-orchestrator"]
