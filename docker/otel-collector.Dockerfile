# syntax=docker/dockerfile:1
# The OpenTelemetry Collector (contrib) with a static busybox beside it, only so that compose can
# run a healthcheck: the upstream image has no shell and no HTTP client.
FROM busybox:1.36.1-musl AS busybox

FROM otel/opentelemetry-collector-contrib:0.114.0
COPY --from=busybox /bin/busybox /busybox
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:13133/"]
