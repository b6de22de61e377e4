#!/bin/sh
# First start: make the cluster (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB; scram-sha-256
# for every TCP connection; the socket, inside the container only, trusts), then run the server in the foreground on 127.0.0.1:PGPORT
# (host networking: only local processes reach it; set PG_LISTEN to widen).
set -eu
: "${POSTGRES_USER:=toh}" "${POSTGRES_DB:=toh}" "${PG_LISTEN:=127.0.0.1}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "POSTGRES_PASSWORD must be set" >&2; exit 1; }
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
         --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA"
  rm -f "$pwfile"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p $PGPORT" -w start
  createdb -p "$PGPORT" -h /run/postgresql --username="$POSTGRES_USER" "$POSTGRES_DB"
  pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec postgres -D "$PGDATA" -c listen_addresses="$PG_LISTEN" -p "$PGPORT" -c unix_socket_directories=/run/postgresql
