"""The clinic's worklist: what to do today, read for the signed-in principal. No Flask here.

    worklist(reader, is_follow_up, today) -> Worklist

- follow-ups (Tasks coded from the guide's follow-up codes, with a due window in
  restriction.period, found by the guide's search parameter `restriction-period`, so the page
  reads the Tasks due by the horizon, not every open one) that are still open (requested,
  received, accepted, ready, in-progress):
  due now (today falls in the window), overdue (the window ended before today; oldest first),
  and upcoming (the window opens within the next UPCOMING_DAYS days; soonest first);
- active Flags (Flag?status=active), the most urgent first: AVN features and insufficiency
  fracture, then the other safety flags, then course flags; unacknowledged before
  acknowledged, older before newer.
What the principal's scopes do not allow is left out and said (`notes`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from service.clinical.dates import parse_date
from service.fhir.canonical import TOH_CODES
from service.web.acknowledgement import acknowledged_by
from service.web.reading import Reader, local_id, patient_name
from service.workflows.care_plans import OPEN_TASK, task_window

UPCOMING_DAYS = 14
# Flag codes (TOH CodeSystem), most urgent first; anything else after them.
URGENCY = ("avn-features", "insufficiency-fracture", "full-weight-bearing-active-oedema",
           "bisphosphonate-in-pregnancy", "failure-to-resolve", "migration", "recurrence",
           "delayed-resolution", "follow-up-overdue")


@dataclass(frozen=True)
class FollowUpRow:
    """One open follow-up Task: window in clinical dates, days past its end (overdue > 0)."""

    task_id: str
    version: str
    patient_id: str | None
    patient: str
    title: str
    status: str
    window_start: date
    window_end: date
    days_overdue: int


@dataclass(frozen=True)
class FlagRow:
    """One active Flag: its TOH code (or ""), display, sentence, clinical start date, urgency
    rank (0 most urgent) and, once acknowledged, who and when (the tag's text)."""

    flag_id: str
    version: str
    patient_id: str | None
    patient: str
    code: str
    display: str
    text: str
    start: date | None
    urgency: int
    acknowledged: str | None


@dataclass(frozen=True)
class Worklist:
    """The worklist of one day (see module docstring)."""

    today: date
    due_now: list[FollowUpRow] = field(default_factory=list)
    overdue: list[FollowUpRow] = field(default_factory=list)
    upcoming: list[FollowUpRow] = field(default_factory=list)
    flags: list[FlagRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    can_complete: bool = False
    can_acknowledge: bool = False


def urgency(code: str) -> int:
    """The rank of a flag code in URGENCY (0 most urgent; unknown codes last)."""
    return URGENCY.index(code) if code in URGENCY else len(URGENCY)


def worklist(reader: Reader, is_follow_up: Callable[[dict[str, Any]], bool], today: date) -> Worklist:
    """The worklist on `today` (a clinical date, from the service's clock). is_follow_up tells
    the guide's follow-up Tasks from other Tasks (CarePlanner.is_follow_up). Raises what the
    store raises (a database that is down)."""
    notes: list[str] = []
    tasks: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    if reader.can("s", "Task"):
        horizon = today + timedelta(days=UPCOMING_DAYS)   # windows that open by then (the guide's parameter)
        found = reader.find("Task", [("status", ",".join(sorted(OPEN_TASK))),
                                     ("restriction-period", f"le{horizon.isoformat()}")])
        tasks = [t for t in found.resources if is_follow_up(t)]
        if found.truncated:
            notes.append(f"Only the first {len(found.resources)} open Tasks are considered.")
    else:
        notes.append("Your sign-in's scopes do not allow reading Tasks, so no follow-ups are listed.")
    if reader.can("s", "Flag"):
        found = reader.find("Flag", [("status", "active")])
        flags = found.resources
        if found.truncated:
            notes.append(f"Only the first {len(flags)} active Flags are listed.")
    else:
        notes.append("Your sign-in's scopes do not allow reading Flags, so no flags are listed.")
    patient_ids = {local_id(t.get("for"), "Patient") for t in tasks} | {local_id(f.get("subject"), "Patient")
                                                                          for f in flags}
    patients = reader.patients(i for i in patient_ids if i)
    if (tasks or flags) and not reader.can("r", "Patient"):
        notes.append("Your sign-in's scopes do not allow reading Patients, so patients are shown by id.")

    def who(pid: str | None) -> str:
        return patient_name(patients.get(pid or ""), fallback=f"Patient/{pid}" if pid else "(no patient)")

    listed = Worklist(today=today, notes=notes, can_complete=reader.can("u", "Task"),
                      can_acknowledge=reader.can("u", "Flag"))
    for task in tasks:
        window = task_window(task)
        assert window is not None   # is_follow_up() checked it
        pid = local_id(task.get("for"), "Patient")
        row = FollowUpRow(task_id=str(task["id"]), version=str((task.get("meta") or {}).get("versionId", "")),
                          patient_id=pid, patient=who(pid), title=_title(task), status=str(task.get("status")),
                          window_start=window[0], window_end=window[1], days_overdue=(today - window[1]).days)
        if window[1] < today:
            listed.overdue.append(row)
        elif window[0] <= today:
            listed.due_now.append(row)
        elif window[0] <= today + timedelta(days=UPCOMING_DAYS):
            listed.upcoming.append(row)
    listed.overdue.sort(key=lambda r: (r.window_end, r.window_start, r.patient, r.task_id))
    listed.due_now.sort(key=lambda r: (r.window_end, r.patient, r.task_id))
    listed.upcoming.sort(key=lambda r: (r.window_start, r.patient, r.task_id))
    for flag in flags:
        pid = local_id(flag.get("subject"), "Patient")
        coding: dict[str, Any] = next((c for c in (flag.get("code") or {}).get("coding") or () if c.get("system") == TOH_CODES), {})
        code = str(coding.get("code") or "")
        text = str((flag.get("code") or {}).get("text") or coding.get("display") or "")
        listed.flags.append(FlagRow(
            flag_id=str(flag["id"]), version=str((flag.get("meta") or {}).get("versionId", "")), patient_id=pid,
            patient=who(pid), code=code, display=str(coding.get("display") or code or "Flag"), text=text,
            start=parse_date((flag.get("period") or {}).get("start")), urgency=urgency(code),
            acknowledged=acknowledged_by(flag)))
    listed.flags.sort(key=lambda r: (r.acknowledged is not None, r.urgency, r.start or date.max, r.patient,
                                     r.flag_id))
    return listed


def _title(task: dict[str, Any]) -> str:
    if task.get("description"):
        return str(task["description"])
    code = task.get("code") or {}
    coding = (code.get("coding") or [{}])[0]
    return str(code.get("text") or coding.get("display") or coding.get("code") or "Follow-up")
