"""reconcile_flags(): which Flags to create, update, make inactive or leave. Pure, no I/O.

A rule-raised Flag carries its finding's key as identifier (system FLAG_KEY_SYSTEM); Flags
without one (written by people or other systems) are never touched. The store should make
(patient, key) unique so two workers racing can never both create the same Flag.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date
from typing import Any, Iterable

from service.fhir.canonical import EXT_FLAG_DETAIL, FLAG_KEY_SYSTEM

from .dates import parse_date
from .fhir_output import flag_coding
from .model import FlagFinding


@dataclass(frozen=True)
class FlagChanges:
    """create: findings with no stored Flag (write flag_resource(finding, patient) for each).
    update: stored Flags (copies, id kept) to write back because their sentence, evidence or
    start changed, or because an inactive one holds again (made active, period.end removed).
    deactivate: stored Flags (copies) made inactive with period.end = as_of, because their
    situation no longer holds, or because they duplicate another Flag with the same key.
    keep: stored Flags left as they are (still holding and unchanged, or entered-in-error:
    a clinician's retraction is respected and not re-raised)."""

    create: tuple[FlagFinding, ...] = ()
    update: tuple[dict[str, Any], ...] = ()
    deactivate: tuple[dict[str, Any], ...] = ()
    keep: tuple[dict[str, Any], ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing needs writing."""
        return not (self.create or self.update or self.deactivate)


def flag_key(flag: dict[str, Any]) -> str | None:
    """The rule key stored in a Flag's identifier, or None for a Flag the rules did not raise."""
    for ident in flag.get("identifier") or ():
        if ident.get("system") == FLAG_KEY_SYSTEM and ident.get("value"):
            return str(ident["value"])
    return None


def _evidence(flag: dict[str, Any]) -> list[str]:
    return [e.get("valueReference", {}).get("reference", "") for e in flag.get("extension") or ()
            if e.get("url") == EXT_FLAG_DETAIL]


def _refresh(stored: dict[str, Any], finding: FlagFinding) -> dict[str, Any] | None:
    """A copy of `stored` brought in line with `finding`, or None if already in line."""
    period = stored.get("period") or {}
    current = (stored.get("status"), (stored.get("code") or {}).get("text"),
               _evidence(stored), period.get("start"), "end" in period)
    wanted = ("active", finding.text, list(finding.evidence), finding.start.isoformat(), False)
    if current == wanted:
        return None
    flag = copy.deepcopy(stored)
    flag["status"] = "active"
    flag["code"] = {"coding": [flag_coding(finding)], "text": finding.text}
    others = [e for e in flag.get("extension") or () if e.get("url") != EXT_FLAG_DETAIL]
    flag["extension"] = others + [{"url": EXT_FLAG_DETAIL, "valueReference": {"reference": r}}
                                  for r in finding.evidence]
    flag["period"] = {"start": finding.start.isoformat()}
    return flag


def _deactivated(stored: dict[str, Any], as_of: date) -> dict[str, Any]:
    flag = copy.deepcopy(stored)
    flag["status"] = "inactive"
    period = dict(flag.get("period") or {})
    start = parse_date(period.get("start"))
    end = max(as_of, start) if start else as_of    # period.end may not precede period.start
    period["end"] = end.isoformat()
    flag["period"] = period
    return flag


def reconcile_flags(findings: Iterable[FlagFinding], stored_flags: Iterable[dict[str, Any]],
                    as_of: date) -> FlagChanges:
    """Match the findings that hold on `as_of` with a patient's stored Flags by key. Re-running
    over the same data after applying the changes yields FlagChanges.empty."""
    wanted: dict[str, FlagFinding] = {}
    for found in findings:
        wanted.setdefault(found.key, found)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for flag in stored_flags:
        key = flag_key(flag)
        if key is not None:
            by_key.setdefault(key, []).append(flag)

    create: list[FlagFinding] = []
    update: list[dict[str, Any]] = []
    deactivate: list[dict[str, Any]] = []
    keep: list[dict[str, Any]] = []
    for key, flags in sorted(by_key.items()):
        flags.sort(key=lambda f: (f.get("status") != "active", (f.get("period") or {}).get("start", ""),
                                  str(f.get("id", ""))))
        if any(f.get("status") == "entered-in-error" for f in flags):
            keep.extend(flags)
            continue
        finding = wanted.get(key)
        first, rest = flags[0], flags[1:]
        if finding is None:
            deactivate.extend(_deactivated(f, as_of) for f in flags if f.get("status") == "active")
            keep.extend(f for f in flags if f.get("status") != "active")
            continue
        refreshed = _refresh(first, finding)
        if refreshed is None:
            keep.append(first)
        else:
            update.append(refreshed)
        deactivate.extend(_deactivated(f, as_of) for f in rest if f.get("status") == "active")
        keep.extend(f for f in rest if f.get("status") != "active")
    for key in sorted(wanted):
        if key not in by_key:
            create.append(wanted[key])
    return FlagChanges(tuple(create), tuple(update), tuple(deactivate), tuple(keep))
