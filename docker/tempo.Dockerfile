# syntax=docker/dockerfile:1
# Grafana Tempo with a static busybox beside it, only so that compose can run a healthcheck:
# recent Tempo images are distroless (no shell, no HTTP client).
FROM busybox:1.36.1-musl AS busybox

FROM grafana/tempo:2.6.1
COPY --from=busybox /bin/busybox /busybox
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=6 \
  CMD ["/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3200/ready"]
