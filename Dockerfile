# ratecast container image. Build: docker build -t ratecast .
# Multi-arch (amd64 + arm64/Graviton) and build args: docs/container.md.
#
# The builder runs on the build machine's own platform and cross-compiles to TARGETARCH: an arm64
# image built on an amd64 runner (or the reverse) needs no CPU emulation, which would make the
# fat-LTO release build many times slower. The runtime stage has no RUN, so it needs none either.
ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
# glibc without OpenSSL (TLS is rustls); libgcc_s, the one other library the binary needs, comes
# from the builder. distroless cc would add libssl3, libstdc++ and libgomp: ~9 MB of dead weight.
ARG RUNTIME_IMAGE=gcr.io/distroless/base-nossl-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS builder
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# Rust target, GNU triple and, only when cross-compiling, the C cross toolchain (ring builds C
# and assembly). Versions are not pinned: they follow the base image's Debian release and its
# security updates.
# hadolint ignore=DL3008
RUN case "$TARGETARCH" in \
      amd64) gnu=x86_64-linux-gnu; cross=x86-64 ;; \
      arm64) gnu=aarch64-linux-gnu; cross=aarch64 ;; \
      *) echo "unsupported TARGETARCH=$TARGETARCH" >&2; exit 1 ;; \
    esac \
 && echo "$gnu" > /target-gnu \
 && echo "${gnu%%-*}-unknown-linux-gnu" > /rust-target \
 && rustup target add "$(cat /rust-target)" \
 && if ! command -v "$gnu-gcc" >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends "gcc-$cross-linux-gnu" "libc6-dev-$TARGETARCH-cross" \
      && rm -rf /var/lib/apt/lists/*; \
    fi
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc

# Dependencies only: this layer is rebuilt when a manifest or Cargo.lock changes, not on source
# edits. Stub crate roots; the bench/test/example targets, whose files are not here, are cut from
# the top-level manifest (they do not change what the dependencies build).
COPY Cargo.toml Cargo.lock ./
COPY crates/ratecast-protocol/Cargo.toml crates/ratecast-protocol/
COPY crates/ratecast-server/Cargo.toml crates/ratecast-server/
COPY crates/ratecast-client/Cargo.toml crates/ratecast-client/
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && for crate in crates/*/; do mkdir -p "$crate/src" && touch "$crate/src/lib.rs"; done \
 && awk '/^\[/ { skip = /^\[\[(bench|test|example)\]\]/ } !skip' Cargo.toml > /tmp/Cargo.toml \
 && mv /tmp/Cargo.toml Cargo.toml \
 && cargo build --release --locked --target "$(cat /rust-target)" \
 && rm -rf src crates/*/src Cargo.toml

# The web page is compiled into the binary (the demo seed lives in the server crate).
COPY web ./web
# The real manifest declares the benches and examples: cargo wants their files even when it only
# builds the binary.
COPY Cargo.toml ./
COPY benches ./benches
COPY examples ./examples
COPY crates ./crates
COPY src ./src
# touch: the copied sources may be older than the stubs the dependency layer compiled.
# The runtime base has glibc only: fail here, not at start-up, if the binary needs anything else.
RUN find src crates -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --target "$(cat /rust-target)" \
 && bin="target/$(cat /rust-target)/release/ratecast" \
 && extra=$(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' \
      | grep -vxE 'lib(c|m|dl|rt|pthread)\.so\.[0-9]+|ld-linux[-a-z0-9_]*\.so\.[0-9]+|libgcc_s\.so\.1' || true) \
 && if [ -n "$extra" ]; then echo "unexpected shared libraries: $extra" >&2; exit 1; fi \
 && install -D -m 0755 "$bin" /rootfs/usr/local/bin/ratecast \
 && gnu=$(cat /target-gnu) \
 && install -D -m 0644 "$("$gnu-gcc" -print-file-name=libgcc_s.so.1)" "/rootfs/usr/lib/$gnu/libgcc_s.so.1"

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/heycard/ratecast
LABEL org.opencontainers.image.title="ratecast" \
      org.opencontainers.image.description="Live crypto exchange rates over WebSocket" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# The binary (web assets embedded) and libgcc_s; CA certificates and glibc are the base image's.
COPY --from=builder /rootfs/ /
USER 65532:65532
EXPOSE 8080 9090
# SIGTERM starts the drain: readiness 503, WebSockets closed with 1001, exit 0 within the grace.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/ratecast", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/ratecast"]
CMD ["serve"]
