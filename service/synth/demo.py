"""`toh demo`: a small cohort, dated relative to today, loaded into a running service over REST.

The first patients are made to show each state of the clinic's worklist (DEMO_ROLES), the rest
are drawn like `toh synth` patients with `as_of` today:
- due:        onset 6 weeks ago, so the service's 6-week review (a one-day window) is due today;
- overdue:    onset 4 months ago. The 3-month review fell before the service knew the patient
              (the service plans no window already past, service/workflows/care_plans.py), so
              the demo books it the way a clinic's EHR would: a follow-up Task (profile
              toh-followup-task) based on the service's CarePlan, due a month ago. The sweep
              makes it ready, then, 14 days past its window, raises `follow-up-overdue`;
- migration:  a woman after delivery, left hip 5 months ago, right knee 3 weeks ago;
- failure to resolve: a man whose right hip is unresolved 25 months after onset;
- AVN:        a follow-up MRI 10 days ago with a focal subchondral lesion and double-line sign;
- bisphosphonate in pregnancy: zoledronic acid ordered 5 days ago at 33 weeks.
Ready and overdue come from the sweep (`toh serve` runs it every TOH_SWEEP_INTERVAL_SECONDS;
`toh demo` also runs one itself when it can reach the service's database, as `toh sweep`
does). Then the states are read back over the FHIR API.

HTTP with `requests` (this is a client of the service, like an EHR); no Flask, no database.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import requests

from service.fhir.canonical import SD_TOH_FOLLOWUP_TASK, TOH_CODES

from .bundle import MRN_SYSTEM, course_bundle
from .course import Bisphosphonate, Course, Episode, draw_course, pain_scores, plus_months, rng_uuid

FHIR_JSON = "application/fhir+json"
TIMEOUT = 30.0


@dataclass
class DemoPatient:
    """One demo patient: `role` (a key of DEMO_ROLES, or "cohort"), its course and, once
    loaded, the server's Patient id."""

    role: str
    course: Course
    patient_id: str | None = None
    condition_id: str | None = None


# role -> (what the worklist shows, how to read it back: ("flag", code) or ("task", status))
DEMO_ROLES: dict[str, tuple[str, tuple[str, str]]] = {
    "due": ("follow-up due today", ("task", "ready")),
    "overdue": ("overdue follow-up", ("flag", "follow-up-overdue")),
    "migration": ("migration to another joint", ("flag", "migration")),
    "failure-to-resolve": ("failure to resolve at 24 months", ("flag", "failure-to-resolve")),
    "avn": ("AVN features on MRI", ("flag", "avn-features")),
    "bisphosphonate-in-pregnancy": ("bisphosphonate in pregnancy", ("flag", "bisphosphonate-in-pregnancy")),
}


def _years(n: int) -> timedelta:
    return timedelta(days=round(365.25 * n))


def _hip(kind: str, side: str, onset: date, diagnosed_after: int, resolved: date | None = None,
         avn_on: date | None = None, joint: str = "hip") -> Episode:
    return Episode(kind=kind, joint=joint, side=side, onset=onset, diagnosed=onset + timedelta(days=diagnosed_after),
                   radiograph=onset + timedelta(days=35), resolved=resolved, avn_on=avn_on)


def demo_courses(today: date, patients: int = 12, seed: int = 1) -> list[DemoPatient]:
    """The demo cohort as of `today`: the special patients first (as many as `patients` allows),
    then drawn ones. Record numbers are DEMO-<today>-<n>, so a second run the same day finds them."""
    t = today
    tag = t.strftime("%Y%m%d")
    rng = random.Random(f"toh-demo:{seed}:{tag}")

    def course(index: int, sex: str, group: str, given: str, family: str, age: int,
               episodes: list[Episode], **rest: Any) -> Course:
        made = tuple(episodes)
        return Course(seed=seed, index=index, as_of=t, patient_uuid=rng_uuid(rng), sex=sex, group=group,
                      given=given, family=family, birth_date=t - _years(age) - timedelta(days=rng.randint(0, 300)),
                      episodes=made, pain=pain_scores(rng, made, t), mrn_prefix=f"DEMO-{tag}", **rest)

    due_onset = t - timedelta(weeks=6)
    overdue_onset = plus_months(t, -4)
    specials = [
        DemoPatient("due", course(0, "male", "man", "Daniel", "Okafor", 47,
                                  [_hip("first", "right", due_onset, 8)])),
        DemoPatient("overdue", course(1, "male", "man", "Stefan", "Weber", 51,
                                      [_hip("first", "left", overdue_onset, 12)])),
        DemoPatient("migration", course(2, "female", "postpartum", "Claire", "Dubois", 33,
                                        [_hip("first", "left", plus_months(t, -5), 9),
                                         _hip("migration", "right", t - timedelta(weeks=3), 11, joint="knee")],
                                        delivery=plus_months(t, -5) - timedelta(days=20))),
        DemoPatient("failure-to-resolve", course(3, "male", "man", "Hamid", "Haddad", 53,
                                                 [_hip("first", "right", plus_months(t, -25), 14)])),
        DemoPatient("avn", course(4, "male", "man", "Marco", "Rossi", 44,
                                  [_hip("first", "left", plus_months(t, -3), 10, avn_on=t - timedelta(days=10))])),
        DemoPatient("bisphosphonate-in-pregnancy", course(
            5, "female", "pregnant", "Priya", "Patel", 31, [_hip("first", "left", t - timedelta(days=20), 6)],
            delivery=t + timedelta(weeks=6),
            bisphosphonate=Bisphosphonate("zoledronic acid", t - timedelta(days=5), t + timedelta(days=85)))),
    ]
    chosen = specials[:patients]
    for index in range(len(chosen), patients):
        drawn = draw_course(seed, 1000 + index, as_of=t, migration_share=0.15)
        chosen.append(DemoPatient("cohort", replace(drawn, index=index, mrn_prefix=f"DEMO-{tag}")))
    return chosen


class DemoError(RuntimeError):
    """The service refused the demo or could not be reached (the message says what to do)."""


def _check(response: requests.Response, what: str) -> dict[str, Any]:
    if response.status_code == 401:
        raise DemoError(f"{what}: 401, the service did not accept the token. Run `toh demo` in the folder "
                        "where `toh serve` runs (it signs with ./toh-data/jwt-secret or TOH_JWT_SECRET), "
                        "or give --token with an ehr token")
    if response.status_code >= 400:
        raise DemoError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    body: dict[str, Any] = response.json()
    return body


def _location_id(entry: dict[str, Any], res_type: str) -> str:
    location = entry["response"]["location"]
    return str(location.split(f"{res_type}/", 1)[1].split("/", 1)[0])


def booked_review(patient: DemoPatient, careplan_id: str) -> dict[str, Any]:
    """The 3-month review as the clinic's EHR booked it (a follow-up Task, profile
    toh-followup-task): due on onset + 3 months, still requested."""
    onset = patient.course.episodes[0].onset
    due = plus_months(onset, 3).isoformat()
    return {"resourceType": "Task", "meta": {"profile": [SD_TOH_FOLLOWUP_TASK]}, "status": "requested",
            "intent": "order", "description": "Review at 3 months (booked by the clinic)",
            "code": {"coding": [{"system": TOH_CODES, "code": "follow-up-review", "display": "TOH follow-up review"}]},
            "basedOn": [{"reference": f"CarePlan/{careplan_id}"}],
            "focus": {"reference": f"Condition/{patient.condition_id}"},
            "for": {"reference": f"Patient/{patient.patient_id}"},
            "authoredOn": f"{(onset + timedelta(days=12)).isoformat()}T10:00:00Z",
            "restriction": {"period": {"start": due, "end": due}}}


@dataclass
class DemoClient:
    """The FHIR base URL and bearer token the demo uses, over one requests Session."""

    base: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON}

    def get(self, path: str, **params: str) -> dict[str, Any]:
        """GET base/path; raises DemoError on a refusal."""
        return _check(self.session.get(f"{self.base}/{path}", params=params, headers=self._headers(),
                                       timeout=TIMEOUT), f"GET {path}")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a resource or Bundle; raises DemoError on a refusal."""
        url = f"{self.base}/{path}" if path else self.base
        return _check(self.session.post(url, json=body, headers=self._headers(), timeout=TIMEOUT),
                      f"POST {path or 'transaction'}")

    def search_ids(self, path: str, **params: str) -> list[str]:
        """The ids of the first page of a search."""
        return [e["resource"]["id"] for e in self.get(path, **params).get("entry", ())
                if e.get("search", {}).get("mode", "match") == "match"]


def load(client: DemoClient, patients: list[DemoPatient]) -> bool:
    """Post each patient's transaction Bundle and book the overdue patient's missed review.
    Returns False (and loads nothing) if the cohort of the day is already there."""
    first = patients[0].course
    if client.search_ids("Patient", identifier=f"{MRN_SYSTEM}|{first.mrn}"):
        for patient in patients:
            ids = client.search_ids("Patient", identifier=f"{MRN_SYSTEM}|{patient.course.mrn}")
            patient.patient_id = ids[0] if ids else None
        return False
    for patient in patients:
        bundle = course_bundle(patient.course)
        response = client.post("", bundle)
        entries = response["entry"]
        patient.patient_id = _location_id(entries[0], "Patient")
        toh = next(i for i, e in enumerate(bundle["entry"])
                   if (e["resource"].get("meta") or {}).get("profile") and e["resource"]["resourceType"] == "Condition")
        patient.condition_id = _location_id(entries[toh], "Condition")
        if patient.role == "overdue":
            plans = client.search_ids("CarePlan", subject=f"Patient/{patient.patient_id}", status="active")
            if not plans:
                raise DemoError(f"the service made no CarePlan for Patient/{patient.patient_id}")
            client.post("Task", booked_review(patient, plans[0]))
    return True


def state_of(client: DemoClient, patient: DemoPatient, today: date) -> bool:
    """Whether the patient's worklist state (DEMO_ROLES) is visible over the FHIR API."""
    if patient.role not in DEMO_ROLES or patient.patient_id is None:
        return True
    kind, value = DEMO_ROLES[patient.role][1]
    subject = f"Patient/{patient.patient_id}"
    if kind == "flag":
        return bool(client.search_ids("Flag", patient=subject, status="active", code=f"{TOH_CODES}|{value}"))
    day = today.isoformat()
    tasks = client.get("Task", patient=subject, status=value, _count="100").get("entry", ())
    return any((e["resource"].get("restriction", {}).get("period", {}).get("start", "") <= day
                <= e["resource"].get("restriction", {}).get("period", {}).get("end", "")) for e in tasks)


def wait_for_states(client: DemoClient, patients: list[DemoPatient], today: date, seconds: float,
                    sweep: Callable[[], None] | None = None, poll: float = 2.0) -> dict[str, bool]:
    """Run `sweep` once (if given), then read the states back until all hold or `seconds`
    pass; returns role -> seen."""
    if sweep is not None:
        sweep()
    deadline = time.monotonic() + seconds
    seen: dict[str, bool] = {}
    while True:
        seen = {p.role: state_of(client, p, today) for p in patients if p.role in DEMO_ROLES}
        if all(seen.values()) or time.monotonic() >= deadline:
            return seen
        time.sleep(poll)


def _describe(course: Course) -> str:
    """A drawn patient in a few words: the latest episode's site and state on as_of."""
    latest = max(course.episodes, key=lambda e: e.onset)
    state = "active" if latest.active_on(course.as_of) else "resolved"
    return f"{latest.side} {latest.joint}, {state}"


def summary(base: str, patients: list[DemoPatient], seen: dict[str, bool], loaded: bool) -> list[str]:
    """What `toh demo` prints: where to look and how to sign in."""
    site = base[:-len("/fhir")] if base.endswith("/fhir") else base
    lines = [("Loaded" if loaded else "Already loaded today:") + f" {len(patients)} demo patients into {base}", ""]
    lines.append("Sign in: run `toh token --role staff` where the service runs, and paste the token at")
    lines.append(f"  {site}/ui/login")
    lines.append(f"Worklist: {site}/ui/worklist")
    lines.append("Patients (timeline):")
    for patient in patients:
        c = patient.course
        role = DEMO_ROLES[patient.role][0] if patient.role in DEMO_ROLES else _describe(c)
        state = "" if patient.role not in seen else ("  [shown]" if seen[patient.role] else "  [not yet: sweep pending]")
        name = f"{c.given} {c.family}"
        lines.append(f"  {role:<34} {name:<18} {site}/ui/patients/{patient.patient_id}{state}")
    lines.append(f"FHIR: {base}  (e.g. {base}/Flag?status=active, {base}/Task?status=ready)")
    return lines
