# syntax=docker/dockerfile:1
#
# promoter: multi-stage build.
#   chef     - Rust toolchain + cargo-chef
#   planner  - computes the dependency recipe (changes only when Cargo.toml/Cargo.lock change)
#   builder  - builds the dependencies from the recipe (cached layer), then the release binary
#   final    - distroless, non-root: only the binary, glibc/libgcc and CA certificates
#
# Build:  docker build -t promoter .
# Run:    docker run --rm -p 8080:8080 promoter            # = promoter serve
#         docker run --rm promoter promote --help

ARG RUST_VERSION=1.91

FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Dependency layer: rebuilt only when the recipe (dependency graph) changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin promoter \
    && install -D -m 0755 target/release/promoter /out/promoter

# cc-debian12 carries glibc, libgcc and /etc/ssl/certs/ca-certificates.crt (rustls reads the
# system roots); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
#checkov:skip=CKV_DOCKER_2:Cloud Run ignores Docker HEALTHCHECK and distroless has no shell; the startup and liveness probes on GET /healthz are declared in infra/modules/promoter (google_cloud_run_v2_service)
COPY --from=builder /out/promoter /promoter
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/promoter"]
CMD ["serve"]
