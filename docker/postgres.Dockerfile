# PostgreSQL 15 from Debian's packages on the same base as the service (no registry needed).
# Build with --network host (apt fetches from deb.debian.org). Data in /var/lib/postgresql/data
# (a named volume in docker-compose.yml); the server listens on PGPORT (default 5432).
ARG BASE_IMAGE=toh-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /var/lib/postgresql/data /run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
COPY docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data PGPORT=5432
USER postgres
VOLUME ["/var/lib/postgresql/data"]
HEALTHCHECK --interval=5s --timeout=5s --retries=30 CMD ["sh", "-c", "pg_isready -h 127.0.0.1 -p \"$PGPORT\""]
STOPSIGNAL SIGINT
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
