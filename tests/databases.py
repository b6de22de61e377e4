"""Database helpers shared by the fixtures."""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, inspect, text

PG_ADMIN_URL = os.environ.get("TOH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def empty_tables(url: str) -> None:
    """Delete every row of every table but alembic's, keeping the schema."""
    engine = create_engine(url)
    with engine.begin() as conn:
        names = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
        if names:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " RESTART IDENTITY"))
    engine.dispose()


@contextlib.contextmanager
def scratch_postgres(prefix: str = "toh_scratch", admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """A new PostgreSQL database with no tables at all on the server of admin_url, dropped
    afterwards (WITH FORCE: connections left open do not keep it); yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
