# syntax=docker/dockerfile:1
# Grafana Loki with a static busybox beside it, only so that compose can run a healthcheck:
# Loki 3 images are distroless (no shell, no HTTP client).
FROM busybox:1.36.1-musl AS busybox

FROM grafana/loki:3.3.2
COPY --from=busybox /bin/busybox /busybox
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=6 \
  CMD ["/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3100/ready"]
