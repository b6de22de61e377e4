"""Database helpers shared by the fixtures."""
from __future__ import annotations

from sqlalchemy import create_engine, inspect, text


def empty_tables(url: str) -> None:
    """Delete every row of every table but alembic's, keeping the schema."""
    engine = create_engine(url)
    with engine.begin() as conn:
        names = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
        if names:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " RESTART IDENTITY"))
    engine.dispose()
