"""Alembic environment: runs on the connection Database.migrate() hands over."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from service.store.schema import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # the alembic command line
        url = config.get_main_option("sqlalchemy.url")
        if url is None:
            raise RuntimeError("the alembic configuration sets no sqlalchemy.url")
        engine = create_engine(url)
        with engine.begin() as conn:
            context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
