"""The compose stack's smoke test (README, "Docker compose quick start"): build the images (the
base from Debian packages, scripts/docker_base.sh, kept between runs), start docker-compose.yml
on free ports (host networking, 127.0.0.1 only), create a Patient through one instance, read it
through the other, restart the whole stack, and read it back from both; the worker's metrics and
the mail catcher answer too.

It needs a running docker daemon; where there is none (or no docker-compose) the test says why
and skips. `.ci/run` installs docker.io, docker-compose and debootstrap and starts dockerd.
Timings of each step are printed (`pytest -s` shows them; the first base build takes minutes).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import smtplib
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests import auth
from tests.conftest import _free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
IMAGE = "toh:smoke"
PG_IMAGE = "toh-postgres:15"


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    started = time.monotonic()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"[{time.monotonic() - started:6.1f} s] {' '.join(args[:4])}", flush=True)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _docker_or_skip() -> None:
    why = None
    if shutil.which("docker") is None:
        why = "no docker CLI (apt-get install docker.io)"
    elif shutil.which("docker-compose") is None:
        why = "no docker-compose (apt-get install docker-compose)"
    else:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
        if info.returncode != 0:
            why = f"the docker daemon cannot be reached: {info.stderr.strip()[-300:]}"
        elif shutil.which("debootstrap") is None and subprocess.run(
                ["docker", "image", "inspect", "toh-base:bookworm"], capture_output=True).returncode != 0:
            why = "no debootstrap to build the base image (apt-get install debootstrap)"
    if why:
        print(f"SKIPPED the compose smoke test: {why}", file=sys.stderr, flush=True)
        pytest.skip(f"compose smoke test not run: {why}")


def _wait_ready(root: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{root}/readyz", timeout=5)
            if answer.status_code == 200:
                return
            last = answer.text
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = type(exc).__name__
        time.sleep(1)
    raise AssertionError(f"{root}/readyz not ready within {seconds} s: {last[-500:]}")


@dataclass
class Stack:
    ports: dict[str, str]
    env: dict[str, str]
    compose: list[str]

    def url(self, port: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    _docker_or_skip()
    base = _run(["bash", "scripts/docker_base.sh"]).strip()
    print(base, flush=True)
    if "built from" in base:     # the first run on this machine: say what it cost (shown under xdist too)
        warnings.warn(f"compose smoke test: {base} (kept for later runs)", stacklevel=1)
    wheels = ROOT / "docker" / "wheels"
    for old in wheels.glob("toh_service-*.whl"):
        old.unlink()                       # the service's own wheel is made afresh from this tree
    # The dependencies' wheels are kept between runs while pyproject.toml is unchanged; the
    # service's own wheel is always made afresh from this tree.
    stamp = wheels / f".deps-{hashlib.sha256((ROOT / 'pyproject.toml').read_bytes()).hexdigest()[:16]}"
    only_ours = ["--no-deps"] if stamp.exists() else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", *only_ours, "--wheel-dir", str(wheels),
          "--find-links", str(wheels), f"{ROOT}[mailcatcher]"])
    for old_stamp in wheels.glob(".deps-*"):
        old_stamp.unlink()
    stamp.touch()
    ports = {name: str(_free_port()) for name in ("TOH1_PORT", "TOH2_PORT", "TOH_PG_PORT",
                                                   "TOH_WORKER_METRICS_PORT", "TOH_MAIL_PORT")}
    env = dict(os.environ, **ports, TOH_JWT_SECRET=auth.TEST_SECRET, TOH_IMAGE=IMAGE, TOH_PG_IMAGE=PG_IMAGE,
               COMPOSE_PROJECT_NAME=f"tohsmoke{uuid.uuid4().hex[:8]}")
    compose = ["docker-compose", "-f", str(ROOT / "docker-compose.yml")]
    try:
        _run(compose + ["build"], env)
        _run(compose + ["up", "-d"], env)
        yield Stack(ports, env, compose)
    finally:
        logs = subprocess.run(compose + ["logs", "--no-color", "--tail", "40"], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        print(logs.stdout[-6000:], flush=True)
        subprocess.run(compose + ["down", "-v", "--timeout", "60"], cwd=ROOT, env=env, capture_output=True)


def test_a_patient_survives_a_restart_of_the_stack(stack: Stack) -> None:
    one, two = stack.url("TOH1_PORT"), stack.url("TOH2_PORT")
    started = time.monotonic()
    _wait_ready(one)
    _wait_ready(two)
    print(f"stack ready in {time.monotonic() - started:.1f} s", flush=True)

    patient = {"resourceType": "Patient", "gender": "female", "birthDate": "1984-02-29"}
    created = requests.post(f"{one}/fhir/Patient", json=patient,
                            headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    version = created.json()["meta"]["versionId"]
    seen = requests.get(f"{two}/fhir/Patient/{pid}", timeout=30)     # the other instance, one database
    assert seen.status_code == 200 and seen.json()["birthDate"] == "1984-02-29"

    metrics = requests.get(f"{stack.url('TOH_WORKER_METRICS_PORT')}/metrics", timeout=30)
    assert metrics.status_code == 200 and "toh_sweep_duration_seconds" in metrics.text
    with smtplib.SMTP("127.0.0.1", int(stack.ports["TOH_MAIL_PORT"]), timeout=10) as smtp:
        assert smtp.noop()[0] == 250

    _run(stack.compose + ["restart"], stack.env)
    _wait_ready(one)
    _wait_ready(two)
    for root in (one, two):
        back = requests.get(f"{root}/fhir/Patient/{pid}", timeout=30)
        assert back.status_code == 200, back.text
        assert back.json()["meta"]["versionId"] == version and back.json()["birthDate"] == "1984-02-29"
    served = requests.get(f"{one}/metrics", timeout=30).text
    assert 'toh_http_requests_total{interaction="read",status="200",type="Patient"}' in served
