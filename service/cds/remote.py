"""Reading the patient's resources from the EHR's FHIR server (CDS Hooks 2.0, "FHIR Resource
Access": the `fhirAuthorization` access token as a Bearer token on each request).

    fetch(fhir_server, access_token, templates, patient_id) -> resources, or raises
    PreconditionFailed (412: the data needed cannot be read, as the spec says)

Each template's search is sent with a timeout (connect 3 s, read 10 s); its `next` links are
followed (at most MAX_PAGES pages) only while they stay under `fhir_server`, so the token is
never sent elsewhere; redirects are not followed.
"""
from __future__ import annotations

from typing import Any, Iterable

import requests

from service.fhir.errors import PreconditionFailed

from .prefetch import bundle_resources, patients_resources
from .services import Template

TIMEOUT = (3.0, 10.0)
MAX_PAGES = 50


def fetch(fhir_server: str, access_token: str | None, templates: Iterable[Template], patient_id: str,
          session: requests.Session | None = None) -> list[dict[str, Any]]:
    """The patient's resources the templates' searches find on fhir_server (see module docstring)."""
    base = fhir_server.rstrip("/") + "/"
    headers = {"Accept": "application/fhir+json"}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    http = session or requests.Session()
    found: list[dict[str, Any]] = []
    try:
        for template in templates:
            url: str | None = base + template.for_patient(patient_id)
            for _ in range(MAX_PAGES):
                if url is None:
                    break
                bundle = _get(http, url, headers)
                found.extend(patients_resources(bundle_resources(bundle), patient_id))
                url = _next(bundle, base)
    finally:
        if session is None:
            http.close()
    return found


def _get(http: requests.Session, url: str, headers: dict[str, str]) -> dict[str, Any]:
    try:
        response = http.get(url, headers=headers, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        raise PreconditionFailed(f"The FHIR server could not be read ({type(exc).__name__})") from exc
    if response.status_code != 200:
        raise PreconditionFailed(f"The FHIR server answered {response.status_code} to a search the service needs")
    try:
        body = response.json()
    except ValueError as exc:
        raise PreconditionFailed("The FHIR server's answer is not JSON") from exc
    if not isinstance(body, dict):
        raise PreconditionFailed("The FHIR server's answer is not a FHIR resource")
    return body


def _next(bundle: dict[str, Any], base: str) -> str | None:
    for link in bundle.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"] if link["url"].startswith(base) else None
    return None
