"""Settings: every one is read from its TOH_* variable, and README's table is generated from
them (so README lists exactly the settings the code reads); `toh serve` prints no secret and
no wildcard address; the Docker build context leaves out data and environments."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.cli import startup_message
from service.config import Settings, settings_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_is_the_generated_one() -> None:
    """Regenerate with: python -c 'from service.config import settings_table; print(settings_table())'."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- settings:begin -->\n(.*?)\n<!-- settings:end -->", readme, re.S)
    assert block is not None and block.group(1) == settings_table()


def test_every_toh_variable_the_code_reads_is_a_setting() -> None:
    documented = set(re.findall(r"`(TOH_[A-Z_]+)`", settings_table()))
    read = set()
    for path in (ROOT / "service").rglob("*.py"):
        read |= set(re.findall(r"[\"'](TOH_[A-Z_]+)[\"']", path.read_text(encoding="utf-8")))
    assert read <= documented, read - documented
    assert {"TOH_WORKERS", "TOH_HOST", "TOH_PORT", "TOH_THREADS", "TOH_DATA_DIR", "TOH_MIGRATE_ON_START",
            "TOH_SQL_ECHO"} <= documented


def test_settings_from_the_environment() -> None:
    s = Settings.from_env({"TOH_PORT": "9000", "TOH_WORKERS": "3", "TOH_THREADS": "8", "TOH_HOST": "0.0.0.0",
                           "TOH_DATA_DIR": "/srv/toh", "TOH_SQL_ECHO": "1", "TOH_MIGRATE_ON_START": "no"})
    assert (s.port, s.workers, s.threads, s.host) == (9000, 3, 8, "0.0.0.0")
    assert s.database_url == "sqlite:////srv/toh/toh.db" and s.sql_echo and not s.migrate_on_start
    with pytest.raises(ValueError, match="TOH_PORT"):
        Settings.from_env({"TOH_PORT": "eighty"})


def test_startup_message_masks_the_password_and_names_a_usable_address() -> None:
    settings = Settings(database_url="postgresql+psycopg://toh:secret@db:5432/toh")
    message = startup_message(settings, "0.0.0.0", 8080)
    assert "secret" not in message and "toh:***@db:5432/toh" in message
    assert "http://0.0.0.0" not in message and "http://127.0.0.1:8080/fhir" in message
    assert "http://h.example:9/fhir" in startup_message(settings, "h.example", 9)
    behind_proxy = settings.with_overrides({"base_url": "https://fhir.clinic.org/fhir"})
    assert "https://fhir.clinic.org/fhir" in startup_message(behind_proxy, "0.0.0.0", 8080)


def test_docker_build_context_and_data_volume() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", "toh-data", ".cache", ".git"} <= set(ignored)
    assert 'VOLUME ["/data"]' in (ROOT / "Dockerfile").read_text(encoding="utf-8")
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert compose.count("restart: unless-stopped") == 2
