"""The decisions of the three services, as pure functions of the patient's resources and a
clinical date (the request's clock): they run the rules (service.clinical.assess) and make
cards; nothing is stored.

    patient_view(resources, as_of, terminology, ctx)                  -> cards
    judge_orders(resources, drafts, selections, as_of, terminology, ctx) -> cards

Draft orders are judged as if written: each is added to the patient's resources (replacing a
stored version of the same Type/id) with status active, and authoredOn (or a CarePlan's
created) set to `as_of` when it has none; then the rules run. A card is given for each
finding a judged order is evidence of: a bisphosphonate while pregnant or breastfeeding, full
weight-bearing while oedema is active. order-select judges the selected orders (all drafts
when none is named), with every draft counted as written.
"""
from __future__ import annotations

import copy
from datetime import date
from typing import Any, Iterable, Mapping, Sequence

from service.clinical import Terminology, assess, codes
from service.fhir.canonical import TOH_CODES

from .cards import CardContext, flag_card, order_card

ORDER_CODES = (codes.BISPHOSPHONATE_IN_PREGNANCY, codes.FULL_WEIGHT_BEARING_ACTIVE_OEDEMA)
PROTECTED_WB = {"coding": [{"system": TOH_CODES, "code": "partial-weight-bearing",
                            "display": "Partial weight-bearing"}],
                "text": "Protected (partial) weight-bearing with crutches"}


def _ref(resource: Mapping[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def patient_view(resources: Iterable[dict[str, Any]], as_of: date, terminology: Terminology, ctx: CardContext,
                 *, base_urls: tuple[str, ...] = (),
                 history: Mapping[str, Sequence[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """One card per flag that holds on as_of, in the rules' order (by start, code)."""
    assessment = assess(resources, as_of, terminology, base_urls=base_urls, history=history)
    return [flag_card(finding, ctx) for finding in assessment.flags]


def as_written(draft: dict[str, Any], as_of: date, index: int) -> dict[str, Any]:
    """A copy of a draft order as if it were signed on as_of (see module docstring); an order
    without an id gets "draft-<index>"."""
    written = copy.deepcopy(draft)
    written.setdefault("id", f"draft-{index}")
    if written.get("status") in (None, "draft"):
        written["status"] = "active"
    if written.get("resourceType") == "CarePlan":
        if not written.get("created") and not (written.get("period") or {}).get("start"):
            written["created"] = as_of.isoformat()
    elif not written.get("authoredOn"):
        written["authoredOn"] = as_of.isoformat()
    return written


def _protected_instead(order: dict[str, Any]) -> dict[str, Any] | None:
    """The order rewritten to protected weight-bearing (the whole resource, for an update
    action), or None for an order of another type."""
    changed = copy.deepcopy(order)
    if changed.get("resourceType") == "ServiceRequest":
        changed["code"] = copy.deepcopy(PROTECTED_WB)
        changed.pop("orderDetail", None)
        changed.pop("note", None)
        return changed
    if changed.get("resourceType") == "CarePlan":
        for activity in changed.get("activity") or ():
            detail = activity.get("detail") if isinstance(activity, dict) else None
            if isinstance(detail, dict) and (detail.get("code") or detail.get("description")):
                detail["code"] = copy.deepcopy(PROTECTED_WB)
                detail.pop("description", None)
        return changed
    return None


def _suggestion(code: str, ref: str, draft: dict[str, Any]) -> dict[str, Any] | None:
    if code == codes.BISPHOSPHONATE_IN_PREGNANCY:
        return {"label": "Remove the bisphosphonate order (defer it until breastfeeding has ended)",
                "actions": [{"type": "delete", "description": f"Remove the draft order {ref}", "resourceId": ref}]}
    instead = _protected_instead(draft)
    if instead is None:
        return None
    return {"label": "Order protected weight-bearing with crutches instead",
            "actions": [{"type": "update", "description": f"Change {ref} to protected (partial) weight-bearing",
                         "resource": instead}]}


def judge_orders(resources: Iterable[dict[str, Any]], drafts: Sequence[dict[str, Any]], selections: Sequence[str],
                 as_of: date, terminology: Terminology, ctx: CardContext, *, base_urls: tuple[str, ...] = (),
                 history: Mapping[str, Sequence[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """The cards of the draft orders (see module docstring)."""
    written = [as_written(d, as_of, i) for i, d in enumerate(drafts)]
    by_ref = {_ref(w): (w, d) for w, d in zip(written, drafts)}
    judged = set(by_ref) & set(selections) if selections else set(by_ref)
    if not judged:
        return []
    patient = [r for r in resources if _ref(r) not in by_ref]
    assessment = assess(patient + [w for w, _ in by_ref.values()], as_of, terminology, base_urls=base_urls,
                        history=history)
    cards = []
    for finding in assessment.flags:
        if finding.code not in ORDER_CODES:
            continue
        orders = [ref for ref in finding.evidence if ref in judged]
        if not orders:
            continue
        cards.append(order_card(finding, ctx, _suggestion(finding.code, orders[0], by_ref[orders[0]][1])))
    return cards
