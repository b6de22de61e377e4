"""`toh demo` against a real `toh serve` (SQLite and PostgreSQL): it loads its cohort over
REST, runs the sweep, and the FHIR API then shows a follow-up due today, an overdue one (its
Flag), a migration, a failure to resolve and an AVN finding, each for the patient the demo
names; a second run loads nothing twice."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from service.fhir.canonical import TOH_CODES

pytestmark = pytest.mark.slow


def run_demo(base: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    toh = Path(sys.executable).with_name("toh")
    command = [str(toh)] if toh.exists() else [sys.executable, "-m", "service.cli"]
    env = dict(os.environ, TOH_DATABASE_URL=database_url)   # TOH_JWT_SECRET: the suite's, as the server's
    return subprocess.run(command + ["demo", "--url", base, "--wait", "60"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def patient_of(output: str, label: str) -> str:
    match = re.search(rf"^  {re.escape(label)} .*/ui/patients/([A-Za-z0-9.-]+)  \[shown\]$", output, re.M)
    assert match, output
    return match.group(1)


def active_flags(base: str, patient_id: str) -> set[str]:
    bundle = requests.get(f"{base}/Flag", params={"patient": f"Patient/{patient_id}", "status": "active"},
                          timeout=30).json()
    return {c["code"] for e in bundle.get("entry", ()) for c in e["resource"]["code"]["coding"]
            if c["system"] == TOH_CODES}


def test_toh_demo_shows_each_worklist_state_over_fhir(live_server, database_url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    done = run_demo(base, database_url, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"{base[:-5]}/ui/worklist" in out and f"{base[:-5]}/ui/login" in out and "toh token --role staff" in out
    assert len(re.findall(r"/ui/patients/\S+", out)) == 12
    today = datetime.now(timezone.utc).date().isoformat()

    due = patient_of(out, "follow-up due today")
    tasks = requests.get(f"{base}/Task", params={"patient": f"Patient/{due}", "status": "ready"}, timeout=30).json()
    windows = [e["resource"]["restriction"]["period"] for e in tasks.get("entry", ())]
    assert {"start": today, "end": today} in windows

    overdue = patient_of(out, "overdue follow-up")
    assert "follow-up-overdue" in active_flags(base, overdue)
    flag = requests.get(f"{base}/Flag", params={"patient": f"Patient/{overdue}", "code": f"{TOH_CODES}|follow-up-overdue"},
                        timeout=30).json()["entry"][0]["resource"]
    assert flag["period"]["start"] < today
    assert "migration" in active_flags(base, patient_of(out, "migration to another joint"))
    assert {"delayed-resolution", "failure-to-resolve"} <= active_flags(base, patient_of(out, "failure to resolve at 24 months"))
    assert "avn-features" in active_flags(base, patient_of(out, "AVN features on MRI"))
    assert "bisphosphonate-in-pregnancy" in active_flags(base, patient_of(out, "bisphosphonate in pregnancy"))

    patients = requests.get(f"{base}/Patient", params={"_summary": "count"}, timeout=30).json()["total"]
    again = run_demo(base, database_url, tmp_path)
    assert again.returncode == 0 and "Already loaded today" in again.stdout, again.stdout + again.stderr
    assert patient_of(again.stdout, "overdue follow-up") == overdue
    assert requests.get(f"{base}/Patient", params={"_summary": "count"}, timeout=30).json()["total"] == patients


def test_toh_demo_says_how_to_get_a_token_when_refused(live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    toh = Path(sys.executable).with_name("toh")
    command = [str(toh)] if toh.exists() else [sys.executable, "-m", "service.cli"]
    done = subprocess.run(command + ["demo", "--url", live_server.base, "--token", "not-a-token", "--no-sweep"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "401" in done.stderr and "--token" in done.stderr
    assert requests.get(f"{live_server.base}/Patient", params={"_summary": "count"}, timeout=30).json()["total"] == 0
