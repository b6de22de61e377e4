"""What a clinician did with a card, as the EHR reports it (CDS Hooks 2.0, "Feedback").

    parse_feedback(body) -> [Feedback, ...], or raises BadRequest

The body is {"feedback": [...]}; each item names the `card` (its uuid), the `outcome`
(accepted | overridden), for accepted the `acceptedSuggestions` ([{"id": uuid}], required),
for overridden an optional `overrideReason` {reason: Coding, userComment}, and the
`outcomeTimestamp` (an ISO 8601 instant).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.fhir.errors import BadRequest

OUTCOMES = ("accepted", "overridden")
MAX_ITEMS = 100
MAX_TEXT = 2000


@dataclass(frozen=True)
class Feedback:
    """One item of feedback."""

    card: str
    outcome: str
    outcome_timestamp: str
    accepted_suggestions: tuple[str, ...] = ()
    reason: dict[str, Any] | None = None          # the override reason's Coding
    user_comment: str | None = None


def _bad(text: str, where: str) -> BadRequest:
    return BadRequest(text, expression=[where])


def parse_feedback(body: Any) -> list[Feedback]:
    """The items of a feedback body (see module docstring); raises BadRequest naming the field."""
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise BadRequest("A feedback body is {\"feedback\": [...]} with at least one item")
    if len(items) > MAX_ITEMS:
        raise BadRequest(f"At most {MAX_ITEMS} feedback items at once")
    return [_item(item, f"feedback[{i}]") for i, item in enumerate(items)]


def _item(item: Any, where: str) -> Feedback:
    if not isinstance(item, dict):
        raise _bad("a feedback item is an object", where)
    card, outcome, stamp = item.get("card"), item.get("outcome"), item.get("outcomeTimestamp")
    if not isinstance(card, str) or not card or len(card) > 64:
        raise _bad("card must be the card's uuid", f"{where}.card")
    if outcome not in OUTCOMES:
        raise _bad(f"outcome must be one of {', '.join(OUTCOMES)}", f"{where}.outcome")
    if not isinstance(stamp, str) or not _instant(stamp):
        raise _bad("outcomeTimestamp must be an ISO 8601 instant", f"{where}.outcomeTimestamp")
    accepted: tuple[str, ...] = ()
    if outcome == "accepted":
        chosen = item.get("acceptedSuggestions")
        if not isinstance(chosen, list) or not chosen or not all(
                isinstance(s, dict) and isinstance(s.get("id"), str) and 0 < len(s["id"]) <= 64 for s in chosen):
            raise _bad("an accepted outcome needs acceptedSuggestions [{\"id\": uuid}]",
                       f"{where}.acceptedSuggestions")
        accepted = tuple(s["id"] for s in chosen)
    reason, comment = None, None
    override = item.get("overrideReason")
    if override is not None:
        if not isinstance(override, dict):
            raise _bad("overrideReason is an object", f"{where}.overrideReason")
        reason = override.get("reason")
        comment = override.get("userComment")
        if reason is not None and not (isinstance(reason, dict) and all(
                isinstance(reason.get(k, ""), str) and len(reason.get(k, "")) <= 500 for k in ("system", "code", "display"))):
            raise _bad("overrideReason.reason is a Coding", f"{where}.overrideReason.reason")
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_TEXT):
            raise _bad(f"overrideReason.userComment is a string of at most {MAX_TEXT} characters",
                       f"{where}.overrideReason.userComment")
    return Feedback(card, outcome, stamp, accepted,
                    {k: reason[k] for k in ("system", "code", "display") if k in reason} if reason else None,
                    comment)


def _instant(text: str) -> bool:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False
