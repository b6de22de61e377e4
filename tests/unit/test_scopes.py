"""SMART scopes (App Launch 2.0, scopes-and-launch-context): v2 letters, v1 read/write, contexts."""
from __future__ import annotations

import pytest

from service.security import Principal, Reach, parse_scopes
from service.security.scopes import Scope


@pytest.mark.parametrize("text, expected", [
    ("user/CarePlan.rs", Scope("user", "CarePlan", "rs")),
    ("system/Task.u", Scope("system", "Task", "u")),
    ("patient/*.cruds", Scope("patient", "*", "cruds")),
    ("user/*.read", Scope("user", "*", "rs")),           # v1 read = v2 rs
    ("patient/Observation.write", Scope("patient", "Observation", "cud")),  # v1 write = cud
    ("user/Observation.*", Scope("user", "Observation", "cruds")),
])
def test_scope_forms(text: str, expected: Scope) -> None:
    assert parse_scopes(text) == (expected,)


@pytest.mark.parametrize("text", ["openid", "launch", "fhirUser", "user/CarePlan.sr", "user/CarePlan.",
                                  "admin/*.read", "user/carePlan.read", "user/CarePlan.x"])
def test_what_is_not_a_resource_scope_grants_nothing(text: str) -> None:
    assert parse_scopes(text) == ()


def principal(scope: str, patient: str | None = None) -> Principal:
    claims: dict[str, object] = {"sub": "a", "scope": scope}
    if patient:
        claims["patient"] = patient
    return Principal.from_claims(claims)


def test_reach_by_context() -> None:
    assert principal("user/CarePlan.rs").reach("r", "CarePlan") is Reach.ALL
    assert principal("user/CarePlan.rs").reach("u", "CarePlan") is Reach.NONE
    assert principal("user/CarePlan.rs").reach("r", "Task") is Reach.NONE
    assert principal("patient/*.rs", "p1").reach("s", "Observation") is Reach.PATIENT
    assert principal("patient/*.rs").reach("s", "Observation") is Reach.NONE   # no launch patient
    # a user/ scope for the type lifts the patient limit
    assert principal("patient/*.rs user/Observation.r", "p1").reach("r", "Observation") is Reach.ALL


def test_wildcards_do_not_reach_the_audit_trail() -> None:
    assert principal("system/*.cruds").reach("r", "AuditEvent") is Reach.NONE
    assert principal("user/AuditEvent.rs").reach("s", "AuditEvent") is Reach.ALL
