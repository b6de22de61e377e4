"""The staff pages in a real headless browser: Debian's chromium driven by Playwright, against
a real `toh serve` (two gunicorn workers, PostgreSQL), with the cohort of tests/ui_cohort.py
written over REST like an EHR writes it.

Screenshots of the login page, the worklist and a timeline are kept as test artefacts in the
test's tmp folder (printed), and copied to $TOH_UI_SCREENSHOTS when it is set (that is how
docs/ui-*.png are made: `TOH_UI_SCREENSHOTS=docs python -m pytest tests/e2e/test_ui_browser.py`).
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from service.security.scopes import ROLES
from tests import ui_cohort
from tests.auth import make_token
from tests.conftest import LiveServer
from tests.databases import empty_tables

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def server(pg_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """`toh serve` over an empty PostgreSQL database, without the sweep tick (which would
    change the Tasks under the test's feet; the sweep has its own tests)."""
    empty_tables(pg_database_url)
    monkeypatch.setenv("TOH_SCHEDULER", "off")
    live = LiveServer(pg_database_url, tmp_path)
    yield live
    live.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless chromium (Debian's: Playwright's own browser download does not work here)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def artefacts(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "artefacts"
    folder.mkdir()
    yield folder
    print(f"\nscreenshots kept in {folder}")
    wanted = os.environ.get("TOH_UI_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        for shot in folder.glob("*.png"):
            shutil.copy(shot, Path(wanted) / shot.name)


def api(server: LiveServer, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A FHIR request with the suite's EHR token (tests/auth.py adds it towards loopback)."""
    response = requests.request(method, f"{server.base}/{path}" if path else server.base, json=body,
                                headers=FHIR, timeout=60)
    assert response.status_code < 300, response.text[:2000]
    return response.json()


def titles(page: Any, selector: str) -> list[str]:
    """The text of the SVG <title> elements selector finds (not rendered, so not inner text)."""
    return page.locator(selector).evaluate_all("nodes => nodes.map(n => n.textContent)")


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def test_sign_in_complete_a_follow_up_read_a_timeline_and_sign_out(server: LiveServer, browser: Any,
                                                                    artefacts: Path) -> None:
    today = datetime.now(timezone.utc).date()
    ui_cohort.load(lambda method, path, body: api(server, method, path, body), today)
    root = f"http://127.0.0.1:{server.port}"
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()

    # Not signed in: the worklist sends the browser to the sign-in form.
    page.goto(f"{root}/ui/worklist")
    assert page.url.startswith(f"{root}/ui/login")
    page.screenshot(path=str(artefacts / "ui-login.png"))
    page.fill("#token", "not-a-token")
    page.click("button:text('Sign in')")
    assert "cannot be accepted" in page.inner_text("[role=alert]")

    page.fill("#token", make_token(ROLES["staff"], sub="nurse-kim"))
    page.click("button:text('Sign in')")
    assert page.url == f"{root}/ui/worklist"
    assert "nurse-kim" in page.inner_text("header")
    cookie = next(c for c in context.cookies() if c["name"] == "toh_ui_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/ui"
    assert not cookie["secure"]   # plain http on loopback; https makes it Secure (integration tests)

    # The worklist: the knee's 6-week review is due today, the hip's 12-month one overdue.
    due = page.locator("#due-now-table tr", has_text="Review at 6 weeks")
    assert due.count() == 1 and "Thomas Becker" in due.inner_text()
    overdue = page.locator("#overdue-table tbody tr").all_inner_texts()
    assert [("Review at 12 months" in r, "Review at 6 weeks" in r) for r in overdue] == [(True, False), (False, True)]
    assert "Review at 3 months" in page.inner_text("#upcoming-table")
    flags = page.locator("#flags-table tbody tr").all_inner_texts()
    assert "AVN features" in flags[0] and "Insufficiency fracture" in flags[1]
    page.screenshot(path=str(artefacts / "ui-worklist.png"), full_page=True)

    # CSRF: the same POST without the form's token is refused and changes nothing.
    task_id = due.get_attribute("data-task")
    before = api(server, "GET", f"Task/{task_id}")
    refused = page.request.post(f"{root}/ui/tasks/{task_id}/complete", form={"version": before["meta"]["versionId"]})
    assert refused.status == 400 and "CSRF" in refused.text()
    assert api(server, "GET", f"Task/{task_id}")["meta"]["versionId"] == before["meta"]["versionId"]

    # Complete it with one click: a new version of the Task, with its Provenance and AuditEvent.
    due.locator("button", has_text="Complete").click()
    assert "Follow-up completed" in page.inner_text("[role=status]")
    assert page.locator("#due-now-table tr", has_text="Review at 6 weeks").count() == 0
    after = api(server, "GET", f"Task/{task_id}")
    assert after["status"] == "completed"
    assert int(after["meta"]["versionId"]) == int(before["meta"]["versionId"]) + 1
    provenance = matches(api(server, "GET", f"Provenance?target=Task/{task_id}"))
    assert any(p["agent"][0]["who"]["display"] == "nurse-kim" for p in provenance)
    audit = matches(api(server, "GET", f"AuditEvent?entity=Task/{task_id}&subtype=update"))
    assert [a["agent"][0]["who"]["display"] for a in audit] == ["nurse-kim"]

    # Acknowledge the most urgent flag: the Flag gets a new version with the tag.
    avn = page.locator("#flags-table tbody tr").first
    flag_id = avn.get_attribute("data-flag")
    avn.locator("button", has_text="Acknowledge").click()
    flag = api(server, "GET", f"Flag/{flag_id}")
    assert flag["meta"]["versionId"] == "2" and flag["status"] == "active"
    assert [t["code"] for t in flag["meta"]["tag"]] == ["acknowledged"]
    assert "Acknowledged by nurse-kim" in page.locator(f"tr[data-flag='{flag_id}']").inner_text()

    # The timeline: each episode and flag of the assessment is drawn, with its title.
    page.click("#overdue-table a:text('Thomas Becker')")
    assert page.url == f"{root}/ui/patients/{ui_cohort.P1}"
    assessment = api(server, "GET", f"Patient/{ui_cohort.P1}/$toh-assessment")
    episodes = [e for e in assessment["parameter"] if e["name"] == "episode"]
    flag_texts = [next(p["valueString"] for p in f["part"] if p["name"] == "text")
                  for f in assessment["parameter"] if f["name"] == "flag"]
    assert len(episodes) == 2 and len(flag_texts) == 3
    bars = titles(page, "svg#timeline g.episode > title")
    assert sorted(re.sub(r":.*", "", t) for t in bars) == ["Episode left hip", "Episode right knee"]
    drawn_flags = titles(page, "svg#timeline g.mark-flag > title")
    assert len(drawn_flags) == 3 and all(any(text in t for t in drawn_flags) for text in flag_texts)
    assert page.locator("svg#timeline g.mark-avn").count() == 1
    assert page.locator("svg#timeline g.mark-pain").count() == 24
    assert page.locator("svg#timeline g.mark-done").count() == 5     # 4 hip reviews and the knee's today
    assert {t.split(" months")[0] for t in titles(page, "svg#timeline g.milestone > title")} == {"12", "24"}
    marks = page.locator("svg#timeline g[role=img]")
    assert marks.count() == len(titles(page, "svg#timeline g[role=img] > title"))   # every mark has its title
    page.screenshot(path=str(artefacts / "ui-timeline.png"), full_page=True)

    # Search, then sign out: the pages ask for the token again.
    page.goto(f"{root}/ui/patients?q=Rossi")
    assert page.locator("#patients-table tbody tr").all_inner_texts()[0].startswith("Maria Rossi")
    page.click("button:text('Sign out')")
    assert page.url.startswith(f"{root}/ui/login") and "signed out" in page.inner_text("[role=status]")
    page.goto(f"{root}/ui/worklist")
    assert page.url.startswith(f"{root}/ui/login")
    context.close()
