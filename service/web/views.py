"""The staff pages under /ui: thin Flask views over service.web's plain functions.

    GET  /ui/login, POST /ui/login (field `token`)   sign in;  POST /ui/logout  sign out
    GET  /ui/login/oidc, GET /ui/oidc/callback        sign in through the OpenID Connect provider
                                                      (404 when TOH_OIDC_ISSUER is not set)
    GET  /ui/worklist                                 what to do today
    POST /ui/tasks/<id>/complete                      complete a follow-up (a Task update)
    POST /ui/flags/<id>/acknowledge                   acknowledge a flag (a Flag update)
    GET  /ui/patients?q=...                           find a patient
    GET  /ui/patients/<id>                            the patient's timeline

Every POST must carry the session's CSRF token (Flask-WTF; 400 without it). Pages read with
the signed-in principal through the same guard as the REST API, and each page view and write is
recorded as an AuditEvent like the REST interaction it stands for (a write's in its own
transaction; a read's before the page is sent). Every sign-in attempt, with a token or through
the provider, accepted or refused, is recorded as a "Login" AuditEvent (subtype `login`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from service.api.audit import audit_row, request_id
from service.api.context import FHIR_PREFIX, services
from service.audit.events import Interaction, event_json, sign_in_event
from service.fhir.errors import FhirError
from service.fhir.resources import check_id, new_id
from service.security import InvalidToken, Principal
from service.security.oidc import OidcClient, ProviderUnavailable, SignInRefused
from service.store import UnitOfWork
from service.web import actions, session as ui_session
from service.web.patient import patient_page
from service.web.patients import find_patients
from service.web.reading import Reader, local_id
from service.web.timeline import AHEAD_DAYS, SHAPES
from service.web.worklist import worklist

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
csrf = CSRFProtect()
OPEN_ENDPOINTS = frozenset({"ui.login", "ui.oidc_login", "ui.oidc_callback", "ui.static"})
OIDC_KEY = "oidc"     # the session's pending OpenID Connect sign-in (state, nonce, PKCE verifier, next)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


# -- the session, CSRF and headers of every page ------------------------------------------------
@bp.before_request
def _session() -> ResponseReturnValue | None:
    """Check the CSRF token of every POST, find who is signed in, and send anyone who is not to
    the login page (with `next` set to where they were going)."""
    if request.method == "POST":
        csrf.protect()    # raises CSRFError (400)
    svc = services()
    found = ui_session.signed_in(svc.verifier, svc.search.compartment_owners, svc.search.compartment_types())
    g.ui_principal, g.ui_guard = found if found is not None else (None, None)
    if found is None and request.endpoint not in OPEN_ENDPOINTS:
        target = request.full_path if request.method == "GET" else url_for("ui.worklist")
        return redirect(url_for("ui.login", next=target.rstrip("?")))
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.app_context_processor
def _context() -> dict[str, Any]:
    principal: Principal | None = g.get("ui_principal")
    return {"principal": principal}


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> tuple[str, int]:
    return render_template("error.html", status=400, title="The form could not be accepted",
                           message=f"{exc.description} Reload the page and try again."), 400


@bp.errorhandler(FhirError)
def _fhir_error(exc: FhirError) -> tuple[str, int]:
    return render_template("error.html", status=exc.status, title=_STATUS_TITLES.get(exc.status, "Error"),
                           message=exc.diagnostics), exc.status


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    status = exc.code or 500
    return render_template("error.html", status=status, title=exc.name, message=exc.description or ""), status


_STATUS_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Already done",
                  410: "Deleted", 412: "Changed meanwhile", 503: "Try again"}


# -- helpers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def reading(write: bool = False) -> Iterator[Reader]:
    """A unit of work for this page, as the signed-in principal (rolled back unless committed)."""
    svc = services()
    with svc.database.unit_of_work(write=write) as uow:
        uow.principal = g.ui_principal
        yield Reader(uow, g.ui_guard, svc.search, svc.clock.now())


def _interaction(subtype: str, status: int, *, entity: str | None = None, patient: str | None = None,
                 query: str | None = None, types: tuple[str, ...] = ()) -> Interaction:
    settings = services().settings
    return Interaction(subtype=subtype, status=status, principal=g.get("ui_principal"),
                       address=request.remote_addr, entity=entity, query=query, patient=patient,
                       request_id=request_id(),
                       source=settings.base_url or request.host_url.rstrip("/") + FHIR_PREFIX,
                       extra_entities=types)


def _audit_read(what: Interaction) -> None:
    """Record a page's read, durable before the page is sent."""
    services().database.append_audit([audit_row(what)])


def _safe_next(target: str | None, default: str) -> str:
    """A local /ui path to go to after a form (never another site)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or target.startswith("//"):
        return default
    return target


def _write(uow: UnitOfWork, what: Interaction) -> None:
    """Commit a page's write with its AuditEvent (they land together or not at all)."""
    uow.audit_events.append(audit_row(what))
    uow.commit()


# -- sign-in ---------------------------------------------------------------------------------
@bp.get("/")
def index() -> ResponseReturnValue:
    """/ui: the worklist."""
    return redirect(url_for("ui.worklist"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """The sign-in form (and the provider's button when one is configured); POST verifies the
    `token` field and starts the session. A token that cannot be accepted gives the form again
    with why (401). Each POST is audited (_audit_sign_in)."""
    target = _safe_next(request.values.get("next"), url_for("ui.worklist"))
    if request.method == "GET":
        return _login_page(target, None, 200)
    try:
        principal = ui_session.sign_in(services().verifier, request.form.get("token", ""))
    except InvalidToken as exc:
        _audit_sign_in("token", 401, None, str(exc))
        return _login_page(target, f"This token cannot be accepted: {exc}", 401)
    _audit_sign_in("token", 200, principal)
    return redirect(target)


@bp.get("/login/oidc")
def oidc_login() -> ResponseReturnValue:
    """Start signing in through the OpenID Connect provider: keep a fresh state, nonce and PKCE
    verifier in the session and send the browser to the provider's authorization endpoint.
    404 without a provider; the login page with why (502) when the provider cannot be reached."""
    oidc = _oidc()
    target = _safe_next(request.args.get("next"), url_for("ui.worklist"))
    redirect_uri = services().settings.oidc_redirect_uri or url_for(
        "ui.oidc_callback", _external=True,
        _scheme="https" if ui_session.is_https(request, services().settings) else request.scheme)
    try:
        start = oidc.start(redirect_uri)
    except ProviderUnavailable as exc:
        _audit_sign_in(_oidc_method(oidc), 502, None, str(exc))
        return _login_page(target, str(exc), 502)
    session[OIDC_KEY] = {**start.pending, "next": target}
    return redirect(start.url)


@bp.get("/oidc/callback")
def oidc_callback() -> ResponseReturnValue:
    """Where the provider sends the browser back: check state, exchange the code, validate the
    ID token, verify the access token as the REST API would and start the session with it, as
    the token form does; then go where the user was going. A refusal gives the login page with
    why (401; 502 when the provider failed) and signs nobody in. 404 without a provider."""
    oidc = _oidc()
    pending = session.pop(OIDC_KEY, None)
    target = _safe_next(pending.get("next") if isinstance(pending, dict) else None, url_for("ui.worklist"))
    verifier = services().verifier
    try:
        signed = oidc.finish(pending, request.args.to_dict())
        try:
            principal = Principal.from_claims(verifier.verify(signed.access_token))
        except InvalidToken as exc:
            raise SignInRefused(f"The identity provider's access token cannot be accepted here: {exc}") from exc
        if principal.subject != str(signed.id_claims["sub"]):
            raise SignInRefused("The identity provider's access token names another user than its ID token")
        principal = ui_session.sign_in(verifier, signed.access_token)
    except SignInRefused as exc:
        status = 502 if isinstance(exc, ProviderUnavailable) else 401
        _audit_sign_in(_oidc_method(oidc), status, None, str(exc))
        return _login_page(target, str(exc), status)
    _audit_sign_in(_oidc_method(oidc), 200, principal)
    return redirect(target)


def _oidc() -> OidcClient:
    """The OpenID Connect client; aborts with 404 when no provider is configured."""
    client: OidcClient | None = current_app.extensions.get("toh_oidc")
    if client is None:
        abort(404)
    return client


def _oidc_method(client: OidcClient) -> str:
    return f"oidc {client.settings.issuer}"


def _login_page(target: str, error: str | None, status: int) -> ResponseReturnValue:
    """The login page, with the provider's button when one is configured and why the last
    attempt failed."""
    client: OidcClient | None = current_app.extensions.get("toh_oidc")
    page = render_template("login.html", next=target, error=error,
                           provider=client.settings.name if client is not None else None)
    if status == 401:
        return page, status, {"WWW-Authenticate": 'Bearer realm="toh"'}
    return page, status


def _audit_sign_in(method: str, status: int, principal: Principal | None, description: str | None = None) -> None:
    """Record one sign-in attempt (service.audit.events.sign_in_event), durable before the
    answer is sent."""
    svc = services()
    now, event_id = svc.clock.now(), new_id()
    event = sign_in_event(event_id, now, status=status, method=method, principal=principal,
                          address=request.remote_addr, description=description, request_id=request_id(),
                          source=svc.settings.base_url or request.host_url.rstrip("/") + FHIR_PREFIX)
    svc.database.append_audit([{
        "id": event_id, "recorded": now, "action": "E", "subtype": "login", "outcome": event["outcome"],
        "agent": principal.subject[:255] if principal else None,
        "agent_ref": principal.fhir_user[:255] if principal and principal.fhir_user else None,
        "entity": None, "patient": None, "content": event_json(event)}])


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session and go back to the sign-in form."""
    ui_session.sign_out()
    flash("You are signed out.")
    return redirect(url_for("ui.login"))


# -- pages -----------------------------------------------------------------------------------
@bp.get("/worklist", endpoint="worklist")
def worklist_page() -> str:
    """Follow-ups due now, overdue and upcoming, and the active flags by urgency."""
    planner = services().planner
    with reading() as reader:
        listed = worklist(reader, planner.is_follow_up, reader.now.date())
    _audit_read(_interaction("search-type", 200, query="ui/worklist", types=("Task", "Flag")))
    return render_template("worklist.html", worklist=listed)


@bp.post("/tasks/<task_id>/complete")
def complete_task(task_id: str) -> ResponseReturnValue:
    """Complete a follow-up: a new version of the Task with status completed (Provenance and
    AuditEvent recorded). Raises (as error pages) what actions.complete_follow_up raises."""
    check_id(task_id)
    with reading(write=True) as reader:
        stored = actions.complete_follow_up(reader.uow, reader.guard, task_id,
                                            expected_version=request.form.get("version"), now=reader.now)
        patient = _subject(stored.resource(), "for")
        _write(reader.uow, _interaction("update", 200, entity=f"Task/{task_id}/_history/{stored.version}",
                                        patient=patient))
    flash(f"Follow-up completed ({stored.resource().get('description') or 'Task/' + task_id}).")
    return redirect(_safe_next(request.form.get("next"), url_for("ui.worklist")))


@bp.post("/flags/<flag_id>/acknowledge")
def acknowledge_flag(flag_id: str) -> ResponseReturnValue:
    """Acknowledge an active flag: a new version of the Flag carrying the acknowledgement tag
    (Provenance and AuditEvent recorded). Raises (as error pages) what actions.acknowledge_flag
    raises."""
    check_id(flag_id)
    with reading(write=True) as reader:
        stored = actions.acknowledge_flag(reader.uow, reader.guard, flag_id,
                                          expected_version=request.form.get("version"), now=reader.now)
        patient = _subject(stored.resource(), "subject")
        _write(reader.uow, _interaction("update", 200, entity=f"Flag/{flag_id}/_history/{stored.version}",
                                        patient=patient))
    flash("Flag acknowledged.")
    return redirect(_safe_next(request.form.get("next"), url_for("ui.worklist")))


@bp.get("/patients")
def patients() -> str:
    """Search patients by name, identifier or birth date (`q`)."""
    text = request.args.get("q", "")[:200]
    with reading() as reader:
        found = find_patients(reader, text)
    if text.strip():
        _audit_read(_interaction("search-type", 200, query=f"ui/patients?q={text}", types=("Patient",)))
    return render_template("patients.html", search=found)


@bp.get("/patients/<patient_id>")
def patient(patient_id: str) -> str:
    """The patient's timeline, episodes, flags and follow-ups."""
    check_id(patient_id)
    svc = services()
    with reading() as reader:
        page = patient_page(reader, svc.clinical, svc.planner.is_follow_up, patient_id, reader.now.date())
    _audit_read(_interaction("read", 200, entity=f"Patient/{patient_id}", patient=patient_id))
    return render_template("patient.html", page=page, shapes=SHAPES, ahead=AHEAD_DAYS)


def _subject(resource: dict[str, Any], element: str) -> str | None:
    return local_id(resource.get(element), "Patient")
