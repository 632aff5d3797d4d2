# Multi-stage build: static binaries on a small base, run as a non-root user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/worker ./cmd/worker \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/enqueue ./cmd/enqueue

# Alpine rather than distroless: its busybox wget serves the healthchecks.
FROM alpine:3.22
RUN adduser -D -H -u 10001 purgeq
COPY --from=build /out/worker /out/enqueue /usr/local/bin/
USER 10001
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/worker"]
