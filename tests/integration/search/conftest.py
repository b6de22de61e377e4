"""Fixtures for the search tests: `clinic` (the clinic data, stored once per module on SQLite
and on PostgreSQL) and `fresh` (an empty store per test, for tests that write)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from search_clinic import CLINIC, Clinic, open_clinic  # type: ignore[import-not-found]

from tests.databases import empty_tables


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def clinic(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    """The clinic data, loaded once per module and backend (tests must not write)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('search') / 'toh.db'}"
    else:
        url = request.getfixturevalue("pg_database_url")
        empty_tables(url)
    c = open_clinic(url)
    for resource in CLINIC:
        c.clock.advance(timedelta(hours=1))
        c.store(resource)
    yield c
    c.database.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Clinic]:
    """An empty store for tests that write (paging while writing)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'toh.db'}"
    else:
        url = request.getfixturevalue("pg_database_url")
        empty_tables(url)
    c = open_clinic(url)
    yield c
    c.database.dispose()
