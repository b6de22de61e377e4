"""Cards from the rules' findings (CDS Hooks 2.0, "Card Attributes"): pure.

A card: `uuid` (stable for one hook call and one finding, so feedback can name it),
`summary` (< 140 characters), `indicator` info | warning | critical, `detail` (Markdown: the
flag's sentence, the advice of the clinical texts, the evidence), `source` {label, url, topic},
`links` (the patient's timeline page), and for an order: `suggestions` with `actions`,
`selectionBehavior` "at-most-one" and `overrideReasons` (Codings with a display).

Indicators: critical for AVN features, insufficiency fracture, a bisphosphonate in pregnancy or
breastfeeding and full weight-bearing on active oedema (harm that can be done now); warning
for migration, recurrence and failure to resolve; info for delayed resolution.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from service.clinical import FlagFinding
from service.clinical import codes
from service.fhir.canonical import IG, TOH_CODES

SOURCE_LABEL = "TOH service: transient osteoporosis of the hip"
OVERRIDE_SYSTEM = f"{IG}/CodeSystem/toh-cds-override-reason"
_NAMESPACE = uuid.UUID("8f1f6c3e-2a0b-4d7e-9c55-1d2b3e4f5a60")
MAX_SUMMARY = 139

INDICATORS = {
    codes.AVN_FEATURES: "critical", codes.INSUFFICIENCY_FRACTURE: "critical",
    codes.BISPHOSPHONATE_IN_PREGNANCY: "critical", codes.FULL_WEIGHT_BEARING_ACTIVE_OEDEMA: "critical",
    codes.MIGRATION: "warning", codes.RECURRENCE: "warning", codes.FAILURE_TO_RESOLVE: "warning",
    codes.DELAYED_RESOLUTION: "info",
}

# What the clinical texts advise (shared/clinical/TOH.md and the seeds it distils).
ADVICE = {
    codes.MIGRATION: "Regional migratory osteoporosis: manage the new joint the same conservative way "
                     "(protected weight-bearing, analgesia, time) and image it with MRI.",
    codes.RECURRENCE: "Recurrence in the same joint occurs; manage it conservatively again and confirm "
                      "resolution on follow-up MRI.",
    codes.DELAYED_RESOLUTION: "TOH is expected to resolve within 6-12 months; keep following up until the "
                              "oedema has resolved on MRI.",
    codes.FAILURE_TO_RESOLVE: "Still unresolved at 24 months, the upper bound of the course: review the "
                              "diagnosis (AVN, neoplasm) and consider core decompression.",
    codes.AVN_FEATURES: "AVN is focal and segmental (double-line sign, crescent sign) and can progress to "
                        "collapse, while TOH is diffuse and reversible: mislabelling one as the other changes "
                        "management entirely. Review the diagnosis and the weight-bearing instructions.",
    codes.INSUFFICIENCY_FRACTURE: "A subchondral insufficiency fracture through the weakened bone is the "
                                  "complication to prevent: keep protected weight-bearing with crutches and review.",
    codes.BISPHOSPHONATE_IN_PREGNANCY: "Bisphosphonates are avoided in pregnancy and breastfeeding. In pregnancy: "
                                       "rest, analgesia and protected weight-bearing, with bisphosphonates deferred "
                                       "until after delivery and the end of breastfeeding; coordinate with obstetrics.",
    codes.FULL_WEIGHT_BEARING_ACTIVE_OEDEMA: "Allowing full weight-bearing through an oedematous, demineralised "
                                             "femoral head is a classic pitfall: it risks a subchondral "
                                             "insufficiency fracture and collapse. Advise protected (reduced) "
                                             "weight-bearing with crutches until symptoms settle and the oedema "
                                             "resolves.",
}

ORDER_SUMMARIES = {
    codes.BISPHOSPHONATE_IN_PREGNANCY: "Bisphosphonate ordered while the patient is pregnant or breastfeeding: "
                                       "avoid it, defer until breastfeeding ends",
    codes.FULL_WEIGHT_BEARING_ACTIVE_OEDEMA: "Full weight-bearing ordered while bone marrow oedema is active: "
                                             "risk of insufficiency fracture",
}

_SPECIALIST = ("specialist-advised", "Advised by the treating specialist")
_INFORMED = ("benefit-outweighs-risk", "Benefit outweighs the risk; patient informed")
OVERRIDE_REASONS = {
    codes.BISPHOSPHONATE_IN_PREGNANCY: (("status-out-of-date", "No longer pregnant or breastfeeding "
                                         "(record not up to date)"), _SPECIALIST, _INFORMED),
    codes.FULL_WEIGHT_BEARING_ACTIVE_OEDEMA: (("oedema-resolved", "Oedema has resolved (imaging not yet "
                                               "recorded)"), _SPECIALIST, _INFORMED),
}


@dataclass(frozen=True)
class CardContext:
    """What every card of one hook call shares: the call, the service, the patient and the
    absolute URL of the patient's timeline page."""

    hook_instance: str
    service_id: str
    patient_id: str
    timeline_url: str


def card_uuid(ctx: CardContext, key: str) -> str:
    """A stable uuid for one finding in one hook call (the same call asked again: the same uuid)."""
    return str(uuid.uuid5(_NAMESPACE, f"{ctx.service_id}|{ctx.hook_instance}|{key}"))


def shorten(text: str, limit: int = MAX_SUMMARY) -> str:
    """text cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "\u2026"


def _detail(finding: FlagFinding) -> str:
    evidence = ", ".join(f"`{ref}`" for ref in finding.evidence)
    return (f"{finding.text}.\n\n**Advice** (clinical texts on TOH): {ADVICE.get(finding.code, '')}\n\n"
            f"Evidence: {evidence}")


def flag_card(finding: FlagFinding, ctx: CardContext, summary: str | None = None) -> dict[str, Any]:
    """The card of one finding (see module docstring), without suggestions."""
    display = codes.FLAG_DISPLAY.get(finding.code, finding.code)
    first_clause = finding.text.split(": ")[0]
    return {
        "uuid": card_uuid(ctx, finding.key),
        "summary": shorten(summary or f"{display}: {first_clause}"),
        "indicator": INDICATORS.get(finding.code, "info"),
        "detail": _detail(finding),
        "source": {"label": SOURCE_LABEL, "url": IG,
                   "topic": {"system": TOH_CODES, "code": finding.code, "display": display}},
        "links": [{"label": "TOH timeline of the patient", "url": ctx.timeline_url, "type": "absolute"}],
    }


def order_card(finding: FlagFinding, ctx: CardContext, suggestion: dict[str, Any] | None) -> dict[str, Any]:
    """The card of a finding a draft order causes: the flag's card with the order's summary,
    a suggestion (when one applies) and the override reasons."""
    card = flag_card(finding, ctx, ORDER_SUMMARIES.get(finding.code))
    if suggestion is not None:
        suggestion = {**suggestion, "uuid": card_uuid(ctx, finding.key + "|suggestion"), "isRecommended": True}
        card["suggestions"] = [suggestion]
        card["selectionBehavior"] = "at-most-one"
    card["overrideReasons"] = [{"system": OVERRIDE_SYSTEM, "code": code, "display": display}
                               for code, display in OVERRIDE_REASONS.get(finding.code, ())]
    return card
