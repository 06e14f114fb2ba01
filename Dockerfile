# syntax=docker/dockerfile:1
# The Clary AI exporter (clary-exporter) as a container image.
#   docker build -t clary-exporter:0.1.0 .
#   docker run --rm -p 127.0.0.1:25279:25279 -e CLARY_DEMO=true clary-exporter:0.1.0
# Configuration is by CLARY_* environment variables or flags (see README).
# docker-compose.yml builds this image and runs it in demo mode.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the project and its runtime dependencies into a venv -----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/clary
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
COPY dashboards ./dashboards
COPY alerts ./alerts
# Runtime only: the package and its dependencies (bcrypt among them, for
# --web.config.file). No test tools, no gunicorn (that belongs to the
# services that use library mode).
RUN /opt/clary/bin/pip install .

# --- runtime ----------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="clary-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Clary AI: usage, performance, license and feedback metrics per tier, plus system and GPU metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Clary AI" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

RUN groupadd --system --gid 10001 clary \
 && useradd --system --uid 10001 --gid clary --no-create-home --home-dir /var/lib/clary-exporter \
      --shell /usr/sbin/nologin clary \
 && mkdir -p /var/lib/clary-exporter \
 && chown clary:clary /var/lib/clary-exporter
COPY --from=build /opt/clary /opt/clary

ENV PATH=/opt/clary/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CLARY_LISTEN_ADDRESS=0.0.0.0:25279 \
    CLARY_DATA_DIR=/var/lib/clary-exporter \
    CLARY_LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/clary-exporter
VOLUME ["/var/lib/clary-exporter"]
EXPOSE 25279
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "exporter.server.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["clary-exporter"]
