"""The TOH implementation guide inside the store: its resources are served like any other
(read, search, history) but read-only to clients, and every written resource that claims
one of its profiles is validated against it."""
from __future__ import annotations

from typing import Any

from collections.abc import Mapping

from service.clinical import Terminology
from service.clinical.anatomy import read_site
from service.fhir.errors import Unprocessable
from service.fhir.profiles import Conformance, has_errors
from service.store import Database

BODYSITE_SIDE = "toh-bodysite-1"


def profile_validator(conformance: Conformance) -> Any:
    """A store validator that rejects a resource failing a profile of the guide it claims (422).

    A claim of a profile the guide does not hold (US Core, say) is not an error: EHRs send
    such resources, and they are still checked against R4.
    """

    def validate(resource: dict[str, Any]) -> None:
        if not (resource.get("meta") or {}).get("profile"):
            return
        issues = conformance.validate(resource, unknown_profile="warning")
        if has_errors(issues):
            errors = [i for i in issues if i.severity in ("error", "fatal")]
            raise Unprocessable(errors[0].diagnostics, issues=issues)

    return validate


def side_as_the_rules_read_it(conformance: Conformance, terminology: Terminology) -> None:
    """Make the invariant toh-bodysite-1 ("the side of the body site should be given") hold
    exactly when the clinical rules can read a side from that bodySite (service.clinical.anatomy:
    laterality extension or coding, a coding's display such as "Left hip", bodySite.text), so
    $validate never warns about a side the assessment reads."""

    def states_a_side(body_site: object, _resource: Mapping[str, object]) -> bool:
        if not isinstance(body_site, dict):
            return True
        return bool(read_site({"bodySite": [body_site]}, terminology).sides)

    conformance.implement(BODYSITE_SIDE, states_a_side)


def guide_keys(conformance: Conformance) -> frozenset[tuple[str, str]]:
    """(type, id) of every resource the guide holds."""
    return frozenset((r["resourceType"], r["id"]) for r in conformance.resources)


def install_guide(database: Database, conformance: Conformance) -> int:
    """Store the guide's resources where they differ from what is stored; returns how many
    were written. Safe when several processes start at once (they take turns)."""
    written = 0
    with database.unit_of_work() as uow:
        uow.record_provenance = False   # the guide's provenance is fhir_profiles/ in version control
        uow.repo.lock("toh-install-guide")
        for resource in conformance.resources:
            found = uow.repo.current(resource["resourceType"], resource["id"])
            if found is not None and not found[1].deleted and _same(found[1].resource(), resource):
                continue
            uow.repo.update(resource["resourceType"], resource["id"], resource, system=True)
            written += 1
        uow.commit()
    return written


def _same(stored: dict[str, Any], resource: dict[str, Any]) -> bool:
    """Whether a stored resource is the guide's, ignoring what the server adds to meta."""
    def content(r: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (r.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        return {**{k: v for k, v in r.items() if k != "meta"}, **({"meta": meta} if meta else {})}
    return content(stored) == content(resource)
