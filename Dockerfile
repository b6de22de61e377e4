FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY fhir_profiles ./fhir_profiles
RUN pip install . && useradd --create-home --uid 10001 toh && mkdir -p /data && chown toh /data
USER toh
WORKDIR /data
# the embedded SQLite database (./toh-data/) lives here when TOH_DATABASE_URL is not set
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)" || exit 1
CMD ["toh", "serve", "--host", "0.0.0.0", "--port", "8080"]
