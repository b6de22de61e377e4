"""Fixtures for the search tests: `clinic` (the clinic data, stored once per module on SQLite
and on PostgreSQL), `module_store` (an empty store per module, for a module's own data) and
`fresh` (an empty store per test, for tests that write)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from search_clinic import CLINIC, Clinic, open_clinic  # type: ignore[import-not-found]

from tests.databases import empty_tables


def _empty_store(request: pytest.FixtureRequest, folder: Path) -> str:
    """The URL of an empty database: a new SQLite file in folder, or the session's PostgreSQL emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{folder / 'toh.db'}"
    url: str = request.getfixturevalue("pg_database_url")
    empty_tables(url)
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def clinic(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    """The clinic data, loaded once per module and backend (tests must not write)."""
    c = open_clinic(_empty_store(request, tmp_path_factory.mktemp("search")))
    for resource in CLINIC:
        c.clock.advance(timedelta(hours=1))
        c.store(resource)
    yield c
    c.database.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    """An empty store per module and backend, for a module that loads its own data once."""
    c = open_clinic(_empty_store(request, tmp_path_factory.mktemp("search")))
    yield c
    c.database.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Clinic]:
    """An empty store for tests that write (paging while writing)."""
    c = open_clinic(_empty_store(request, tmp_path))
    yield c
    c.database.dispose()
