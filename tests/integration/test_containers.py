"""docker-compose.yml, the Dockerfile and Settings agree (README, "Docker compose quick start"):

- every variable given to a container of the service's image is a setting (service/config.py),
  and parses as one;
- every container uses host networking and its own port; the instances' database URL names the
  database container's port; the Dockerfile's EXPOSE, its TOH_PORT and the settings' default port
  are one; its HEALTHCHECK asks /healthz on TOH_PORT;
- the image runs as an unprivileged user from the pinned base, and containers are given longer to
  stop than gunicorn's graceful timeout.

Reading only: nothing is built or run here (tests/e2e/test_compose_stack.py does that).
"""
from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {f.metadata["env"]: f for f in fields(Settings)}
_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
TOH_SERVICES = ("toh1", "toh2", "worker", "mail")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, with `env` as the environment."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "-":
            return rest
        raise KeyError(f"{name} is required: {rest}")

    return _VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return interpolate(raw, {"TOH_JWT_SECRET": "x" * 40})


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def _port(url: str) -> int:
    port = urlsplit(url.replace("postgresql+psycopg", "postgresql")).port
    assert port is not None, url
    return port


def test_the_secret_is_required(compose: dict[str, Any]) -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    with pytest.raises(KeyError, match="TOH_JWT_SECRET"):
        interpolate(raw, {})


def test_every_variable_of_a_service_container_is_a_setting(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(TOH_SERVICES) <= set(services)
    for name in TOH_SERVICES:
        env = _env(services[name])
        unknown = set(env) - set(SETTINGS)
        assert not unknown, f"{name} sets {sorted(unknown)}, which service/config.py does not read"
        settings = Settings.from_env(env)     # and each parses (raises ValueError otherwise)
        for variable, text in env.items():
            assert str(getattr(settings, SETTINGS[variable].name)).lower() in (text.lower(), "true", "false")


def test_every_container_has_host_networking_and_its_own_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {s.get("network_mode") for s in services.values()} == {"host"}
    db_port = int(services["db"]["environment"]["PGPORT"])
    ports = {"db": db_port}
    for name in ("toh1", "toh2"):
        env = _env(services[name])
        ports[name] = int(env["TOH_PORT"])
        assert env["TOH_HOST"] == "127.0.0.1"
        assert _port(env["TOH_DATABASE_URL"]) == db_port
    ports["worker"] = int(_env(services["worker"])["TOH_METRICS_PORT"])
    mail = " ".join(services["mail"]["command"])
    ports["mail"] = int(re.search(r"-l 127\.0\.0\.1:(\d+)", mail).group(1))   # type: ignore[union-attr]
    assert len(set(ports.values())) == len(ports), ports
    assert _port(_env(services["worker"])["TOH_DATABASE_URL"]) == db_port
    # the named volume holds the database
    assert services["db"]["volumes"] == ["pgdata:/var/lib/postgresql/data"] and "pgdata" in compose["volumes"]


def test_two_instances_a_worker_and_a_mail_catcher(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["toh1"].get("command") is None and services["toh2"].get("command") is None   # toh serve
    assert services["worker"]["command"] == ["toh", "worker"]
    assert _env(services["worker"])["TOH_SCHEDULER"] == "on"
    assert {_env(services[n])["TOH_SCHEDULER"] for n in ("toh1", "toh2")} == {"off"}
    assert "aiosmtpd" in services["mail"]["command"]


def test_email_goes_to_the_mail_catcher(compose: dict[str, Any]) -> None:
    """Every toh container sends email to the `mail` service's listening address (host networking:
    127.0.0.1), with TOH_MAIL_PORT moving both; the worker, which delivers, links to an instance."""
    services = compose["services"]
    for mail_port in (None, "2626"):
        env = {"TOH_JWT_SECRET": "x" * 40} | ({"TOH_MAIL_PORT": mail_port} if mail_port else {})
        moved = interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()), env)["services"]
        listen = re.search(r"-l (\S+):(\d+)", " ".join(moved["mail"]["command"]))
        assert listen is not None
        for name in ("toh1", "toh2", "worker"):
            settings = Settings.from_env(_env(moved[name]))
            expected = ("127.0.0.1", mail_port or "2525")
            assert (settings.smtp_host, str(settings.smtp_port)) == listen.groups() == expected
            assert settings.smtp_from
    worker = Settings.from_env(_env(services["worker"]))
    assert worker.scheduler and worker.base_url == f"http://127.0.0.1:{_env(services['toh1'])['TOH_PORT']}/fhir"


def test_the_dockerfile_agrees_with_the_settings(dockerfile: str) -> None:
    env = dict(re.findall(r"\b(TOH_[A-Z_]+)=(\S+)", dockerfile))
    assert env and set(env) <= set(SETTINGS), set(env) - set(SETTINGS)
    exposed = re.findall(r"^EXPOSE (\d+)$", dockerfile, re.M)
    assert exposed == [env["TOH_PORT"]] == [str(Settings().port)]
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz' % os.environ.get\('TOH_PORT'", dockerfile, re.M)
    assert Settings.from_env(env).host == "0.0.0.0"


def test_the_image_is_multi_stage_pinned_and_unprivileged(dockerfile: str) -> None:
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert re.search(r"^ARG BASE_IMAGE=toh-base:bookworm$", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "COPY --from=build /opt/toh /opt/toh" in dockerfile


def test_containers_get_longer_to_stop_than_gunicorns_graceful_timeout(compose: dict[str, Any]) -> None:
    for name in ("toh1", "toh2", "worker"):
        grace = compose["services"][name]["stop_grace_period"]
        settings = Settings.from_env(_env(compose["services"][name]))
        assert int(grace.rstrip("s")) > settings.graceful_timeout
