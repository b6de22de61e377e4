"""Answering a CDS Hooks call: find the patient's resources, run the decision, give the cards.

    answer_hook(service, hook, sources, today) -> {"cards": [...]}

Where the resources come from (CDS Hooks 2.0, "Prefetch Template" and "FHIR Resource
Access"): the prefetch keys the EHR sent; the keys it did not send are read from `fhirServer`:
in-process from this service's own store when `fhirServer` is this server (one read-only unit
of work, rolled back: nothing is written; the `fhirAuthorization` token must be one this
server accepts and its scopes must reach the patient's data, exactly as over HTTP), else over HTTP with the `fhirAuthorization` token
(service.cds.remote). Without prefetch and without a `fhirServer`, or when the data may not
be read: PreconditionFailed (412).
Earlier versions (the rules date a recurrence or a stopped order from them) are read only
from this store.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from service.cds import CardContext, CdsService, HookRequest, Template, judge_orders, patient_view, read_prefetch
from service.cds import remote
from service.clinical import Terminology
from service.fhir.errors import Forbidden, Gone, NotFound, PreconditionFailed
from service.store import Database
from service.workflows.clinical_watch import clinical_resources, earlier_versions

if TYPE_CHECKING:
    from service.security import AccessGuard

Fetch = Callable[[str, "str | None", Sequence[Template], str], list[dict[str, Any]]]


@dataclass(frozen=True)
class Sources:
    """Where data may be read: this store, the URLs under which this server is its own
    fhirServer, the rules' terminology, the access guard of a fhirAuthorization token for this
    store (raises PreconditionFailed when the token is not accepted), and how another server
    is read (remote.fetch)."""

    database: Database
    terminology: Terminology
    own_urls: tuple[str, ...]
    guard_for: Callable[[str | None], AccessGuard]
    fetch: Fetch = field(default=remote.fetch)

    def is_this_server(self, url: str) -> bool:
        """Whether a fhirServer URL is this server's FHIR base."""
        return url.rstrip("/") in {u.rstrip("/") for u in self.own_urls}


@dataclass
class PatientData:
    """The patient's resources for the rules, their earlier versions and the base URLs under
    which absolute references are local."""

    resources: list[dict[str, Any]]
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    base_urls: tuple[str, ...] = ()


def _types(templates: Sequence[Template]) -> set[str]:
    return {t for template in templates for t in template.types}


def patient_data(hook: HookRequest, sources: Sources) -> PatientData:
    """The patient's resources (see module docstring); raises PreconditionFailed."""
    resources, missing = read_prefetch(hook.prefetch, hook.patient_id)
    server = hook.fhir_server
    base_urls = (server.rstrip("/"),) if server else ()
    if not missing:
        return PatientData(resources, base_urls=base_urls)
    if server is None:
        raise PreconditionFailed("The request has no fhirServer to read what it did not prefetch: "
                                 + ", ".join(t.key for t in missing))
    if not sources.is_this_server(server):
        return PatientData(resources + sources.fetch(server, hook.access_token, missing, hook.patient_id),
                           base_urls=base_urls)
    wanted = _types(missing)
    local_bases = tuple(u.rstrip("/") for u in sources.own_urls)
    guard = sources.guard_for(hook.access_token)
    with sources.database.unit_of_work(write=False) as uow:
        try:
            for res_type in sorted(wanted - {"Medication"}):   # outside the Patient compartment: below
                guard.require("r", res_type)
            guard.check("r", "Patient", uow.repo.read("Patient", hook.patient_id).resource)
        except (NotFound, Gone):
            return PatientData(resources, base_urls=local_bases)     # no such patient here: no data
        except Forbidden as exc:
            raise PreconditionFailed(f"The fhirAuthorization token may not read the patient's data: "
                                     f"{exc.diagnostics}") from exc
        stored = [r for r in clinical_resources(uow.repo, hook.patient_id, local_bases)
                  if r.get("resourceType") in wanted and guard.visible(str(r.get("resourceType")), r)]
        history = earlier_versions(uow.repo, stored)
    return PatientData(resources + stored, history, local_bases)


def answer_hook(service: CdsService, hook: HookRequest, sources: Sources, today: date,
                timeline_url: str) -> dict[str, Any]:
    """The response to a hook call: {"cards": [...]} (possibly empty). Raises
    PreconditionFailed when the data cannot be read."""
    data = patient_data(hook, sources)
    ctx = CardContext(hook.hook_instance, service.id, hook.patient_id, timeline_url)
    history: Mapping[str, Sequence[dict[str, Any]]] = data.history
    if hook.hook == "patient-view":
        cards = patient_view(data.resources, today, sources.terminology, ctx, base_urls=data.base_urls,
                             history=history)
    else:
        cards = judge_orders(data.resources, hook.draft_orders, hook.selections, today, sources.terminology, ctx,
                             base_urls=data.base_urls, history=history)
    return {"cards": cards}
