"""The staff pages through Flask's test client, on SQLite and PostgreSQL: sign-in and its
cookie, CSRF on every form, what a token's scopes let a page show, the one-click writes (a new
version, Provenance, AuditEvent) and their refusals, patient search and the patient page.
The browser itself is driven in tests/e2e/test_ui_browser.py."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest

from service.security.scopes import ROLES
from tests import ui_cohort
from tests.auth import bearer, make_token

FHIR = {"Content-Type": "application/fhir+json"}
STAFF = ROLES["staff"]


@pytest.fixture
def cohort(app: Any, clock: Any) -> Any:
    """The cohort of tests/ui_cohort.py, written over REST as of the test clock's day."""
    api = app.test_client()

    def send(method: str, path: str, body: dict[str, Any] | None) -> Any:
        response = api.open(f"/fhir/{path}" if path else "/fhir", method=method,
                            data=json.dumps(body) if body is not None else None, headers=FHIR)
        assert response.status_code < 300, response.get_data(as_text=True)[:2000]
        return response.get_json()

    ui_cohort.load(send, clock.now().date())
    return api


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "every form carries the CSRF token"
    return found.group(1)


def sign_in(app: Any, scopes: Any = STAFF, **claims: Any) -> Any:
    """A browser-like client (no bearer header) signed in with a token of these scopes."""
    ui = app.test_client(token=None)
    form = ui.get("/ui/login")
    token = make_token(scopes, sub=claims.pop("sub", "nurse-kim"), **claims)
    response = ui.post("/ui/login", data={"token": token, "csrf_token": csrf_of(form.get_data(as_text=True))})
    assert response.status_code == 302 and response.headers["Location"] == "/ui/worklist"
    return ui


def text_of(response: Any) -> str:
    """The page's text without tags or repeated spaces."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))


def rows(html: str, table_id: str) -> list[str]:
    """The text of each body row of the table with this id."""
    found = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', html, re.S)
    if not found:
        return []
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r)).strip() for r in re.findall(r"<tr.*?</tr>", found.group(1), re.S)]


def form_for(html: str, action: str) -> dict[str, str]:
    """The hidden fields of the form posting to action."""
    form = re.search(rf'<form[^>]*action="{re.escape(action)}".*?</form>', html, re.S)
    assert form, f"no form for {action}"
    return dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(0)))


def fhir(client: Any, path: str) -> Any:
    response = client.get(f"/fhir/{path}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def due_task(client: Any) -> dict[str, Any]:
    """ui-p1's knee review at 6 weeks, due today."""
    bundle = fhir(client, f"Task?patient=Patient/{ui_cohort.P1}&focus=Condition/ui-p1-knee&_count=50")
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["instantiatesUri"].endswith("#review-6w"))


# -- sign-in and the session cookie ----------------------------------------------------------------
def test_pages_ask_for_a_sign_in_first(app: Any) -> None:
    ui = app.test_client(token=None)
    response = ui.get("/ui/worklist")
    assert response.status_code == 302 and response.headers["Location"] == "/ui/login?next=/ui/worklist"
    assert ui.get("/ui/patients/ui-p1").headers["Location"] == "/ui/login?next=/ui/patients/ui-p1"


def test_sign_in_sets_an_http_only_same_site_cookie_and_secure_over_https(app: Any) -> None:
    ui = app.test_client(token=None)
    page = ui.get("/ui/login")
    assert page.status_code == 200 and 'name="token"' in page.get_data(as_text=True)
    response = ui.post("/ui/login", data={"token": make_token(STAFF), "csrf_token": csrf_of(page.get_data(as_text=True))})
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("toh_ui_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/ui" in cookie and "Secure" not in cookie
    assert page.headers["Cache-Control"] == "no-store" and "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]

    secure = app.test_client(token=None)
    https = {"wsgi.url_scheme": "https"}
    page = secure.get("/ui/login", base_url="https://toh.test")
    response = secure.post("/ui/login", base_url="https://toh.test", environ_overrides=https,
                           headers={"Referer": "https://toh.test/ui/login"},
                           data={"token": make_token(STAFF), "csrf_token": csrf_of(page.get_data(as_text=True))})
    assert response.status_code == 302 and "Secure" in response.headers["Set-Cookie"]
    proxied = app.test_client(token=None).get("/ui/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in proxied.headers["Set-Cookie"]


def test_a_token_that_cannot_be_accepted_starts_no_session(app: Any) -> None:
    ui = app.test_client(token=None)
    csrf = csrf_of(ui.get("/ui/login").get_data(as_text=True))
    for token in ("not-a-token", make_token(STAFF, ttl=-3600), make_token(STAFF, secret="another-secret-" * 4)):
        response = ui.post("/ui/login", data={"token": token, "csrf_token": csrf})
        assert response.status_code == 401 and "cannot be accepted" in text_of(response)
        assert ui.get("/ui/worklist").status_code == 302


def test_an_expired_token_ends_the_session(app: Any) -> None:
    ui = sign_in(app)
    assert ui.get("/ui/worklist").status_code == 200
    with ui.session_transaction("/ui/worklist") as session:   # as if the session's token were past its exp and leeway
        session["token"] = make_token(STAFF, ttl=-3600)
    assert ui.get("/ui/worklist").headers["Location"].startswith("/ui/login")
    with ui.session_transaction("/ui/worklist") as session:
        assert "token" not in session            # the session was ended, not kept


def test_sign_out_ends_the_session(app: Any) -> None:
    ui = sign_in(app)
    page = ui.get("/ui/worklist").get_data(as_text=True)
    response = ui.post("/ui/logout", data=form_for(page, "/ui/logout"))
    assert response.status_code == 302 and response.headers["Location"] == "/ui/login"
    assert ui.get("/ui/worklist").status_code == 302


def test_after_sign_in_only_local_pages(app: Any) -> None:
    ui = app.test_client(token=None)
    csrf = csrf_of(ui.get("/ui/login").get_data(as_text=True))
    for target, expected in (("https://evil.example/ui/x", "/ui/worklist"), ("//evil.example/ui/", "/ui/worklist"),
                             ("/fhir/Patient", "/ui/worklist"), ("/ui/patients/ui-p2", "/ui/patients/ui-p2")):
        response = ui.post("/ui/login", data={"token": make_token(STAFF), "csrf_token": csrf, "next": target})
        assert response.headers["Location"] == expected
        csrf = csrf_of(ui.get("/ui/login").get_data(as_text=True))


# -- CSRF ------------------------------------------------------------------------------------------------
def test_every_form_needs_its_csrf_token(app: Any, cohort: Any) -> None:
    ui = app.test_client(token=None)
    assert ui.post("/ui/login", data={"token": make_token(STAFF)}).status_code == 400
    assert ui.get("/ui/worklist").status_code == 302          # no session was started
    ui = sign_in(app)
    task = due_task(cohort)
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": csrf_of(app.test_client(token=None).get("/ui/login")
                                                                       .get_data(as_text=True))}):
        refused = ui.post(f"/ui/tasks/{task['id']}/complete", data={**data, "version": task["meta"]["versionId"]})
        assert refused.status_code == 400 and "could not be accepted" in text_of(refused)
    assert due_task(cohort)["meta"]["versionId"] == task["meta"]["versionId"]
    assert ui.post("/ui/logout").status_code == 400


def test_the_api_takes_bearer_tokens_without_csrf(app: Any, cohort: Any) -> None:
    """CSRF protects the pages' forms only: a FHIR POST with a bearer token is not asked for one."""
    response = cohort.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient"}), headers=FHIR)
    assert response.status_code == 201


def test_the_session_belongs_to_the_pages_only(app: Any) -> None:
    """The session cookie's path is /ui: outside it a request has the null session (nothing to
    sign in to, nothing saved), even if a client sends the cookie anyway; the pages keep theirs."""
    from flask import request

    ui = sign_in(app)
    cookie = ui.get_cookie("toh_ui_session", path="/ui")
    assert cookie is not None
    for path, kept in (("/fhir/metadata", False), ("/healthz", False), ("/ui", True), ("/ui/worklist", True),
                       ("/uix", False)):
        with app.test_request_context(path, headers={"Cookie": f"toh_ui_session={cookie.value}"}):
            opened = app.session_interface.open_session(app, request)
            assert app.session_interface.is_null_session(opened) is not kept, path
            if kept:
                assert "token" in opened, path
    answer = ui.get("/fhir/metadata", headers={"Cookie": f"toh_ui_session={cookie.value}"})
    assert answer.status_code == 200 and "Set-Cookie" not in answer.headers
    assert ui.get("/ui/worklist").status_code == 200     # still signed in


# -- the worklist and what a token's scopes let it show ---------------------------------------------------
def test_the_worklist_of_the_day(app: Any, cohort: Any) -> None:
    page = sign_in(app).get("/ui/worklist").get_data(as_text=True)
    assert [r.split(" Complete")[0] for r in rows(page, "due-now-table")] == [
        "Thomas Becker Review at 6 weeks 2026-01-05 requested",
        "Thomas Becker Repeat MRI to confirm resolution 2024-08-05 to 2026-02-05 requested"]
    assert [r.split(" requested")[0] for r in rows(page, "overdue-table")] == [
        "Thomas Becker Review at 12 months 2025-02-04 335 days overdue",
        "Maria Rossi Review at 6 weeks 2025-11-28 38 days overdue"]
    assert [r.split(" requested")[0] for r in rows(page, "upcoming-table")] == ["Maria Rossi Review at 3 months 2026-01-17"]
    flags = [r.split(" 20")[0] for r in rows(page, "flags-table")]
    assert flags == ["URGENT AVN features on MRI Thomas Becker", "URGENT Insufficiency fracture Jan Novak",
                     "Migration to another joint Thomas Becker", "Delayed resolution Thomas Becker"]
    assert f'href="/ui/patients/{ui_cohort.P2}"' in page


def test_a_token_without_task_scope_sees_no_follow_ups(app: Any, cohort: Any) -> None:
    ui = sign_in(app, ("user/Patient.rs", "user/Flag.rs"))
    response = ui.get("/ui/worklist")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert rows(page, "due-now-table") == rows(page, "overdue-table") == rows(page, "upcoming-table") == []
    assert "do not allow reading Tasks" in text_of(response)
    assert len(rows(page, "flags-table")) == 4 and "Acknowledge" not in page   # no Flag.u: no button
    refused = ui.post(f"/ui/tasks/{due_task(cohort)['id']}/complete", data=form_for(page, "/ui/logout"))
    assert refused.status_code in (403, 404)


def test_a_token_without_flag_scope_sees_no_flags_and_without_patient_scope_no_names(app: Any, cohort: Any) -> None:
    response = sign_in(app, ("user/Task.rs",)).get("/ui/worklist")
    page = response.get_data(as_text=True)
    assert rows(page, "flags-table") == [] and "do not allow reading Flags" in text_of(response)
    assert rows(page, "overdue-table")[0].startswith("Patient/ui-p1 Review at 12 months")
    assert "Complete" not in page


def test_a_patient_context_token_sees_its_patient_only(app: Any, cohort: Any) -> None:
    """patient/ scopes reach the Patient compartment of the token's patient, which (in R4's
    CompartmentDefinition) holds Flags but not Tasks, as in the REST API."""
    ui = sign_in(app, ("patient/*.rs",), patient=ui_cohort.P3)
    response = ui.get("/ui/worklist")
    page = response.get_data(as_text=True)
    assert [r.split(" 20")[0] for r in rows(page, "flags-table")] == ["URGENT Insufficiency fracture Jan Novak"]
    assert rows(page, "overdue-table") == [] and "do not allow reading Tasks" in text_of(response)
    assert ui.get(f"/ui/patients/{ui_cohort.P3}").status_code == 200
    assert ui.get(f"/ui/patients/{ui_cohort.P1}").status_code == 404
    assert "Thomas" not in ui.get("/ui/patients?q=Becker").get_data(as_text=True)


# -- the one-click writes -----------------------------------------------------------------------------------
def test_completing_a_follow_up_is_a_fhir_update_with_provenance_and_audit(app: Any, cohort: Any, clock: Any) -> None:
    ui = sign_in(app)
    page = ui.get("/ui/worklist").get_data(as_text=True)
    task = due_task(cohort)
    action = f"/ui/tasks/{task['id']}/complete"
    response = ui.post(action, data=form_for(page, action))
    assert response.status_code == 302 and response.headers["Location"] == "/ui/worklist"
    after = fhir(cohort, f"Task/{task['id']}")
    assert after["status"] == "completed" and int(after["meta"]["versionId"]) == int(task["meta"]["versionId"]) + 1
    assert after["executionPeriod"]["end"] == after["lastModified"] == "2026-01-05T09:00:00.000Z"
    history = fhir(cohort, f"Task/{task['id']}/_history")
    assert [e["resource"]["status"] for e in history["entry"]] == ["completed", task["status"]]
    provenance = [e["resource"] for e in fhir(cohort, f"Provenance?target=Task/{task['id']}")["entry"]]
    mine = [p for p in provenance if p["agent"][0]["who"]["display"] == "nurse-kim"]
    assert [t["reference"] for t in mine[0]["target"]] == [f"Task/{task['id']}/_history/{after['meta']['versionId']}"]
    events = [e["resource"] for e in fhir(cohort, f"AuditEvent?entity=Task/{task['id']}&subtype=update")["entry"]]
    assert len(events) == 1 and events[0]["agent"][0]["who"]["display"] == "nurse-kim" and events[0]["action"] == "U"
    assert "Review at 6 weeks" not in "".join(rows(ui.get("/ui/worklist").get_data(as_text=True), "due-now-table"))
    again = ui.post(action, data={**form_for(page, action), "version": after["meta"]["versionId"]})
    assert again.status_code == 409 and "already completed" in text_of(again)


def test_a_follow_up_changed_meanwhile_is_not_overwritten(app: Any, cohort: Any) -> None:
    ui = sign_in(app)
    page = ui.get("/ui/worklist").get_data(as_text=True)
    task = due_task(cohort)
    changed = dict(task, priority="urgent")
    assert cohort.put(f"/fhir/Task/{task['id']}", data=json.dumps(changed), headers=FHIR).status_code == 200
    action = f"/ui/tasks/{task['id']}/complete"
    refused = ui.post(action, data=form_for(page, action))
    assert refused.status_code == 412 and "changed since the page was shown" in text_of(refused)
    assert fhir(cohort, f"Task/{task['id']}")["status"] == task["status"]


def test_acknowledging_a_flag_tags_a_new_version(app: Any, cohort: Any) -> None:
    ui = sign_in(app)
    page = ui.get("/ui/worklist").get_data(as_text=True)
    flag_id = re.search(r'data-flag="([^"]+)"', page).group(1)   # the most urgent: AVN features
    action = f"/ui/flags/{flag_id}/acknowledge"
    assert ui.post(action, data=form_for(page, action)).status_code == 302
    flag = fhir(cohort, f"Flag/{flag_id}")
    assert flag["meta"]["versionId"] == "2" and flag["status"] == "active"
    assert flag["meta"]["tag"] == [{"system": "https://fhir.toh-service.org/CodeSystem/toh-workflow-tags",
                                    "code": "acknowledged", "display": "Acknowledged by nurse-kim on 2026-01-05"}]
    events = fhir(cohort, f"AuditEvent?entity=Flag/{flag_id}&subtype=update")["entry"]
    assert len(events) == 1
    listed = rows(ui.get("/ui/worklist").get_data(as_text=True), "flags-table")
    assert listed[-1].startswith("URGENT AVN features") and "Acknowledged by nurse-kim" in listed[-1]
    again = ui.post(action, data={**form_for(page, action), "version": "2"})
    assert again.status_code == 409


def test_an_acknowledgement_outlives_a_re_evaluation(app: Any, cohort: Any, clock: Any) -> None:
    ui = sign_in(app)
    page = ui.get("/ui/worklist").get_data(as_text=True)
    flag_id = re.search(r'data-flag="([^"]+)"', page).group(1)
    action = f"/ui/flags/{flag_id}/acknowledge"
    ui.post(action, data=form_for(page, action))
    clock.advance(timedelta(days=1))   # a new MRI re-assesses the patient and rewrites its Flags
    mri = ui_cohort._mri("ui-p1-mri-5", ui_cohort.P1, ui_cohort.HIP, ui_cohort.LEFT, "left hip",
                         clock.now().date(), bone_marrow_oedema_diffuse=True, double_line_sign=True)
    assert cohort.put("/fhir/Observation/ui-p1-mri-5", data=json.dumps(mri), headers=FHIR).status_code == 201
    flag = fhir(cohort, f"Flag/{flag_id}")
    assert int(flag["meta"]["versionId"]) > 2 and flag["meta"]["tag"][0]["code"] == "acknowledged"


# -- patients -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("query, found", [
    ("Becker", ["Thomas Becker"]), ("ros", ["Maria Rossi"]), ("MRN-1003", ["Jan Novak"]),
    (f"{ui_cohort.MRN}|MRN-1002", ["Maria Rossi"]), ("nobody", [])])
def test_patient_search(app: Any, cohort: Any, query: str, found: list[str]) -> None:
    page = sign_in(app).get("/ui/patients", query_string={"q": query}).get_data(as_text=True)
    assert [r.split(" 19")[0].split(" 20")[0] for r in rows(page, "patients-table")] == found


def test_patient_search_by_birth_date(app: Any, cohort: Any) -> None:
    born = fhir(cohort, f"Patient/{ui_cohort.P3}")["birthDate"]
    page = sign_in(app).get(f"/ui/patients?q={born}").get_data(as_text=True)
    assert [r.split(" ")[0:2] for r in rows(page, "patients-table")] == [["Jan", "Novak"]]


def test_the_patient_page_shows_the_assessment(app: Any, cohort: Any) -> None:
    ui = sign_in(app)
    response = ui.get(f"/ui/patients/{ui_cohort.P3}")
    page = response.get_data(as_text=True)
    assessment = fhir(cohort, f"Patient/{ui_cohort.P3}/$toh-assessment")
    texts = [p["valueString"] for f in assessment["parameter"] if f["name"] == "flag" for p in f["part"]
             if p["name"] == "text"]
    assert rows(page, "episodes-table")[0].startswith("left hip 2024-12-01 resolved 2025-08-08")
    assert [r.split(" ", 1)[1] for r in rows(page, "flags-table")] == [
        f"Insufficiency fracture 2025-03-11 left hip {texts[0]} Observation/ui-p3-mri-2"]
    assert page.count('class="episode resolved"') == 1 and page.count('class="mark mark-fracture"') == 1
    assert page.count('class="mark mark-oedema-absent"') == 1 and ">Timeline of Jan Novak" in page
    events = fhir(cohort, f"AuditEvent?patient={ui_cohort.P3}&subtype=read&agent=nurse-kim")["entry"]
    assert len(events) == 1 and events[0]["resource"]["entity"][0]["what"]["reference"] == f"Patient/{ui_cohort.P3}"
    assert ui.get("/ui/patients/nobody").status_code == 404
    assert ui.get("/ui/patients/bad$id").status_code == 400


def test_a_token_without_clinical_scopes_sees_no_course(app: Any, cohort: Any) -> None:
    response = sign_in(app, ("user/Patient.rs",)).get(f"/ui/patients/{ui_cohort.P1}")
    assert response.status_code == 200 and "<svg" not in response.get_data(as_text=True)
    assert "do not allow reading Condition, Observation, MedicationRequest, CarePlan" in text_of(response)


def test_pages_do_not_answer_to_a_bearer_token_alone(app: Any) -> None:
    """The pages go by their session cookie: a bearer header (which a cross-site form cannot
    send anyway) does not sign anyone in."""
    response = app.test_client(token=None).get("/ui/worklist", headers=bearer())
    assert response.status_code == 302
