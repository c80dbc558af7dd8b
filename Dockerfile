# Multi-stage: build static binaries, run them as a non-root user on a
# minimal base with CA certificates (the broker calls Trackunit over TLS).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/ ./cmd/irisx-broker ./cmd/trackunit-sim

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/irisx-broker /out/trackunit-sim /usr/local/bin/
USER nonroot:nonroot
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/irisx-broker"]
CMD ["serve"]
