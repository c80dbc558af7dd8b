# syntax=docker/dockerfile:1
# Static binaries on distroless, as the numeric non-root user 65532.
#   docker build -t irisx-broker .                  the production image: the broker alone
#   docker build --target dev -t irisx-broker-dev .  the broker plus the Trackunit simulator (compose, tests)
#   docker build --target simulator .               the simulator alone
# Labels: --build-arg VERSION=v1.2.3 --build-arg REVISION=$(git rev-parse HEAD)
# (.git is not in the build context, so the binary gets them through -ldflags).

# Any Go 1.2x builder works: GOTOOLCHAIN=auto fetches the go.mod toolchain
# when the image's Go is older (the official images set GOTOOLCHAIN=local).
ARG GO_IMAGE=golang:1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
ENV GOTOOLCHAIN=auto CGO_ENABLED=0
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
RUN go build -trimpath -ldflags="-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
      -o /out/irisx-broker ./cmd/irisx-broker \
 && go build -trimpath -ldflags="-s -w" -o /out/trackunit-sim ./cmd/trackunit-sim

FROM ${BASE_IMAGE} AS simulator
COPY --from=build /out/trackunit-sim /usr/local/bin/trackunit-sim
USER 65532:65532
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/trackunit-sim"]
CMD ["serve", "--addr", ":8090"]

FROM ${BASE_IMAGE} AS broker
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/irisx-broker/irisx-broker
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="irisx-broker" \
      org.opencontainers.image.description="The IrisX token broker: Trackunit install callbacks and IRIS API access tokens" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="${LICENSES}"
COPY --from=build /out/irisx-broker /usr/local/bin/irisx-broker
# Numeric, so the kubelet can verify runAsNonRoot without a passwd lookup.
USER 65532:65532
EXPOSE 8080 8081
# distroless has no shell or curl: the binary checks its own /readyz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/irisx-broker", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/irisx-broker"]
CMD ["serve"]

# The broker image plus the simulator binary, for docker compose: one build
# serves both compose services. Never deploy this target.
FROM broker AS dev
COPY --from=build /out/trackunit-sim /usr/local/bin/trackunit-sim

# The default target is the production image.
FROM broker
