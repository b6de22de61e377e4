# The TOH service image: `toh serve` (the default command), `toh worker`, `toh migrate`, and the
# development mail catcher (aiosmtpd). Build it with scripts/docker_base.sh first (the base image
# comes from Debian packages; no registry is needed) and then:
#
#   pip wheel --wheel-dir docker/wheels ".[mailcatcher]"     # optional: build offline from these
#   docker build --network host -t toh:latest .
#
# Pinned base: toh-base:bookworm is Debian 12 made by debootstrap (scripts/docker_base.sh), with
# Debian's own python3 3.11; BASE_IMAGE may name a digest-pinned image instead
# (e.g. debian:bookworm-20250520-slim@sha256:... with python3 python3-venv installed).
ARG BASE_IMAGE=toh-base:bookworm

# --- build stage: a virtual environment with the service and its dependencies --------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/toh
COPY docker/wheels/ /wheels/
COPY pyproject.toml README.md /src/
COPY service /src/service
COPY fhir_profiles /src/fhir_profiles
# Wheels prepared next to the Dockerfile are used offline; without them pip fetches from PyPI.
RUN if ! ls /wheels/toh_service-*.whl >/dev/null 2>&1; then \
        /opt/toh/bin/pip wheel --wheel-dir /wheels "/src[mailcatcher]"; fi \
 && /opt/toh/bin/pip install --no-index --find-links /wheels "toh-service[mailcatcher]" \
 && /opt/toh/bin/python -m compileall -q /opt/toh/lib

# --- runtime stage: the base, the environment, an unprivileged user -------------------------
FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home --shell /usr/sbin/nologin toh
COPY --from=build /opt/toh /opt/toh
ENV PATH=/opt/toh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TOH_HOST=0.0.0.0 \
    TOH_PORT=8080 \
    TOH_DATA_DIR=/data/toh-data \
    TOH_METRICS_DIR=/tmp/toh-metrics
USER toh:toh
WORKDIR /data
# the embedded SQLite database (when TOH_DATABASE_URL is not set) and the signing secret
VOLUME ["/data"]
EXPOSE 8080
# Liveness (GET /healthz on TOH_PORT): the process answers. Readiness is /readyz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TOH_PORT', '8080'), timeout=4)"]
# gunicorn's master stops on SIGTERM gracefully (service/gunicorn_config.py: graceful_timeout 30 s)
STOPSIGNAL SIGTERM
CMD ["toh", "serve"]
