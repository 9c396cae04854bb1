# syntax=docker/dockerfile:1
#
# Varve's container image: a static binary on distroless, running as
# non-root. Build from the repository root:
#
#   docker build -t varve:dev .
#   docker run --rm -p 7700:7700 varve:dev dev --listen 0.0.0.0:7700 --data-dir /tmp/varve
#
# The default command is `varve serve`; configure it with VARVE_* variables
# (VARVE_ROLES, VARVE_ETCD_ENDPOINTS, VARVE_BUCKET, ...), as the ECS module in
# terraform/modules/varve-service does.

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
# Set by BuildKit from --platform (cross-compiles without emulation).
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH GOFLAGS=-buildvcs=false \
    go build -trimpath -ldflags="-s -w" -o /out/varve ./cmd/varve

# distroless/static: CA certificates and tzdata, no shell, no libc.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/varve /usr/local/bin/varve
# 65532 is distroless's "nonroot" user.
USER 65532:65532
# Listen on every interface inside the container (the binary's default is
# loopback); logs as JSON for log collectors.
ENV VARVE_LISTEN=0.0.0.0:7700 \
    VARVE_LOG_FORMAT=json
EXPOSE 7700
# SIGTERM starts Varve's drain: stop accepting, flush, commit, answer, exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/varve"]
CMD ["serve"]
