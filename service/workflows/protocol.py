"""The follow-up protocol as data: what a PlanDefinition (R4 clinical reasoning) asks for one
TOH episode, as of a date. Pure: no store, no clock.

How the guide's PlanDefinition is read (fhir_profiles/PlanDefinition/, its description):
- every timingDuration / timingRange of an action is an offset from the episode's onset; an
  action with neither, but with a relatedAction and offsetDuration, is timed from that action;
- a timed action becomes a follow-up (a Task) whose due window is [onset + low, onset + high]
  (timingDuration: one day, onset + duration); an untimed one is a CarePlan activity started
  when the plan is applied;
- `condition` of kind applicability (text/fhirpath, `%condition` bound to the TOH Condition)
  decides whether an action applies. An action with a relatedAction "after-start" / "after" /
  "after-end" is decided on the day that related action starts (or ends): before that day it
  is `deferred`, so "unresolved at 12 months" is asked at 12 months, not at diagnosis.
  https://hl7.org/fhir/R4/plandefinition.html#PlanDefinition.action.condition
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from dateutil.relativedelta import relativedelta

# UCUM time units (and their common unit texts) -> relativedelta keyword and factor.
_UNITS: dict[str, tuple[str, int]] = {
    "a": ("years", 1), "year": ("years", 1), "years": ("years", 1),
    "mo": ("months", 1), "month": ("months", 1), "months": ("months", 1),
    "wk": ("weeks", 1), "week": ("weeks", 1), "weeks": ("weeks", 1),
    "d": ("days", 1), "day": ("days", 1), "days": ("days", 1),
}
_AFTER = {"after-start": "start", "after": "end", "after-end": "end"}


class ProtocolError(ValueError):
    """The PlanDefinition cannot be applied (an unreadable timing or expression)."""


@dataclass(frozen=True)
class FollowUp:
    """A timed action: one Task due in [start, end] (dates, inclusive)."""

    action_id: str
    title: str
    code: dict[str, Any] | None
    start: date
    end: date


@dataclass(frozen=True)
class Activity:
    """An untimed action: a CarePlan activity from the day the plan is applied."""

    action_id: str
    title: str
    code: dict[str, Any] | None


@dataclass(frozen=True)
class Deferred:
    """An action whose applicability is decided on `decide_on` (a later date)."""

    action_id: str
    decide_on: date


@dataclass(frozen=True)
class Actions:
    """What the protocol asks for one episode as of a date."""

    follow_ups: tuple[FollowUp, ...] = ()
    activities: tuple[Activity, ...] = ()
    deferred: tuple[Deferred, ...] = ()
    not_applicable: tuple[str, ...] = field(default_factory=tuple)

    def next_decision(self) -> date | None:
        """The first day a deferred action is decided, or None."""
        return min((d.decide_on for d in self.deferred), default=None)


def add_duration(day: date, quantity: Any) -> date:
    """day + a Duration/Quantity of time (UCUM a, mo, wk, d). Raises ProtocolError otherwise."""
    if not isinstance(quantity, dict) or not isinstance(quantity.get("value"), (int, float)):
        raise ProtocolError(f"not a duration: {quantity!r}")
    unit = str(quantity.get("code") or quantity.get("unit") or "").lower()
    if unit not in _UNITS:
        raise ProtocolError(f"unsupported time unit {unit!r} (use a, mo, wk or d)")
    keyword, factor = _UNITS[unit]
    value = quantity["value"] * factor
    if keyword in ("years", "months") and value != int(value):
        raise ProtocolError(f"a fractional {keyword} offset is ambiguous: {quantity!r}")
    delta = relativedelta(**{keyword: int(value)}) if keyword in ("years", "months") else \
        timedelta(**{keyword: value})
    return day + delta


@lru_cache(maxsize=256)
def _compiled(expression: str) -> Any:
    from fhirpathpy import compile as fhirpath_compile
    from fhirpathpy.models import models
    try:
        return fhirpath_compile(expression, models["r4"])
    except Exception as exc:  # fhirpathpy raises several exception types on bad syntax
        raise ProtocolError(f"cannot compile FHIRPath {expression!r}: {exc}") from exc


def applies(action: dict[str, Any], condition: dict[str, Any], results: dict[str, Any] | None = None) -> bool:
    """Whether every applicability condition of action holds for the TOH Condition (FHIRPath,
    `%condition`); an expression in another language raises ProtocolError. results: where to
    keep each expression's result for this same condition (plan_actions: several actions of the
    protocol ask the same question)."""
    for item in action.get("condition") or ():
        if item.get("kind") != "applicability":
            continue
        expression = item.get("expression") or {}
        if expression.get("language") not in ("text/fhirpath", None):
            raise ProtocolError(f"action {action.get('id')}: expression language "
                                f"{expression.get('language')!r} is not supported (text/fhirpath)")
        text = expression.get("expression")
        if not isinstance(text, str):
            raise ProtocolError(f"action {action.get('id')}: applicability condition without an expression")
        result = results.get(text) if results is not None else None
        if result is None:
            try:
                result = _compiled(text)(condition, {"condition": condition})
            except Exception as exc:
                raise ProtocolError(f"action {action.get('id')}: {text!r} failed: {exc}") from exc
            if results is not None:
                results[text] = result
        if not (result and all(v is True for v in result)):
            return False
    return True


def _leaves(actions: list[dict[str, Any]], inherited: tuple[dict[str, Any], ...] = ()
            ) -> list[tuple[dict[str, Any], tuple[dict[str, Any], ...]]]:
    """Leaf actions in document order, each with the group actions above it."""
    out: list[tuple[dict[str, Any], tuple[dict[str, Any], ...]]] = []
    for action in actions:
        children = action.get("action") or []
        if children:
            out.extend(_leaves(children, inherited + (action,)))
        else:
            out.append((action, inherited))
    return out


def _window(action: dict[str, Any], onset: date, by_id: dict[str, dict[str, Any]],
            seen: frozenset[str] = frozenset()) -> tuple[date, date] | None:
    """The due window of an action from the onset, or None if it is untimed."""
    if "timingDuration" in action:
        day = add_duration(onset, action["timingDuration"])
        return day, day
    if "timingRange" in action:
        timing = action["timingRange"]
        return add_duration(onset, timing.get("low")), add_duration(onset, timing.get("high"))
    for related in action.get("relatedAction") or ():
        target = by_id.get(related.get("actionId", ""))
        if target is None or related.get("actionId") in seen or "offsetDuration" not in related:
            continue
        base = _window(target, onset, by_id, seen | {related["actionId"]})
        if base is not None and related.get("relationship") in _AFTER:
            anchor = base[0] if _AFTER[related["relationship"]] == "start" else base[1]
            day = add_duration(anchor, related["offsetDuration"])
            return day, day
    return None


def _decided_on(action: dict[str, Any], onset: date, by_id: dict[str, dict[str, Any]]) -> date | None:
    """The day the action's applicability is decided: the start (or end) of the action it
    follows; None when it is decided when the plan is applied."""
    days = []
    for related in action.get("relatedAction") or ():
        target = by_id.get(related.get("actionId", ""))
        side = _AFTER.get(related.get("relationship", ""))
        if target is None or side is None:
            continue
        window = _window(target, onset, by_id)
        if window is not None:
            days.append(window[0] if side == "start" else window[1])
    return max(days) if days else None


def plan_actions(plan_definition: dict[str, Any], condition: dict[str, Any], onset: date,
                 as_of: date) -> Actions:
    """What plan_definition asks for the episode of `condition` (onset `onset`) as of `as_of`:
    follow-ups (Tasks) and activities whose applicability holds now, actions deferred to a later
    decision day, and the ids of actions that do not apply. Raises ProtocolError for a timing
    unit or an expression it cannot read."""
    leaves = _leaves(list(plan_definition.get("action") or []))
    by_id = {a["id"]: a for a, _ in leaves if isinstance(a.get("id"), str)}
    follow_ups: list[FollowUp] = []
    activities: list[Activity] = []
    deferred: list[Deferred] = []
    skipped: list[str] = []
    results: dict[str, Any] = {}   # one condition: each expression evaluated once (actions share them)
    for index, (action, groups) in enumerate(leaves):
        action_id = str(action.get("id") or f"action-{index + 1}")
        decide_on = _decided_on(action, onset, by_id)
        if decide_on is not None and decide_on > as_of:
            deferred.append(Deferred(action_id, decide_on))
            continue
        if not all(applies(a, condition, results) for a in (*groups, action)):
            skipped.append(action_id)
            continue
        codes = action.get("code") or []
        code = codes[0] if codes else None
        title = str(action.get("title") or action.get("description") or action_id)
        window = _window(action, onset, by_id)
        if window is None:
            activities.append(Activity(action_id, title, code))
        else:
            follow_ups.append(FollowUp(action_id, title, code, window[0], window[1]))
    return Actions(tuple(follow_ups), tuple(activities), tuple(deferred), tuple(skipped))
