"""What a page may read, for the signed-in principal: the store's search and repository used
in-process, kept to what the token's scopes allow by the same AccessGuard the REST API applies
(service.security.guard). No Flask here.

    reader = Reader(uow, guard, search_engine, now)
    reader.can("s", "Task")                              -> bool
    reader.find("Flag", [("status", "active")])          -> Found(resources, truncated)
    reader.patients({"p1", "p2"})                        -> {"p1": {...Patient...}}
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.fhir.errors import NotFound
from service.fhir.search.query import CURSOR
from service.security import AccessGuard, Reach
from service.store import UnitOfWork
from service.store.search import SearchEngine

MAX_ROWS = 2000   # a page lists at most this many resources of one search (and says so)


@dataclass(frozen=True)
class Found:
    """The resources a search gave (JSON dicts, in the search's order); truncated when more
    matched than the page lists (MAX_ROWS)."""

    resources: list[dict[str, Any]]
    truncated: bool = False


@dataclass
class Reader:
    """One page's reads: a unit of work, the principal's guard, the search engine, the time."""

    uow: UnitOfWork
    guard: AccessGuard
    search: SearchEngine
    now: datetime

    def can(self, action: str, res_type: str) -> bool:
        """Whether the principal may do action (c r u d s) on res_type at all (never raises)."""
        return self.guard.reach(action, res_type) is not Reach.NONE

    def find(self, res_type: str, params: Sequence[tuple[str, str]], *, limit: int = MAX_ROWS) -> Found:
        """Every current res_type matching params (FHIR search parameters, as in a URL) that
        the principal may see, at most limit of them, paging through the store's search.

        A patient/ scope keeps the search to its patient's compartment. Raises Forbidden if the
        principal may not search res_type, BadRequest for an unknown or malformed parameter."""
        compartment = self.guard.search_compartment(res_type, None)
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            pairs = list(params) + [("_count", str(min(self.search.max_count, limit - len(found) + 1)))]
            if cursor is not None:
                pairs.append((CURSOR, cursor))
            query = self.search.parse(res_type, pairs, compartment=compartment)
            query.raise_if_strict(True)
            result = self.search.search(self.uow.conn, query, now=self.now)
            for match in result.matches:
                resource = json.loads(match.content)
                if self.guard.visible(res_type, resource):
                    found.append(resource)
            if len(found) > limit:
                return Found(found[:limit], truncated=True)
            if not result.next_cursor:
                return Found(found)
            cursor = result.next_cursor

    def read(self, res_type: str, res_id: str) -> dict[str, Any]:
        """The current res_type/res_id; raises NotFound (also when the principal may not see it,
        so a page does not tell what exists), Gone if deleted."""
        resource = self.uow.repo.read(res_type, res_id).resource()
        if not self.guard.visible(res_type, resource):
            raise NotFound(f"{res_type}/{res_id} is not known")
        return resource

    def patients(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The Patients with these ids that the principal may read, by id (others left out)."""
        wanted = sorted({i for i in ids if i})
        if not wanted or not self.can("r", "Patient"):
            return {}
        stored = self.uow.repo.read_many("Patient", wanted)
        resources = (s.resource() for s in stored)
        return {r["id"]: r for r in resources if self.guard.visible("Patient", r, "r")}


def patient_name(patient: dict[str, Any] | None, fallback: str = "") -> str:
    """"Given Family" from the Patient's official (else first) name, else its text, else fallback."""
    names = (patient or {}).get("name") or []
    if not names:
        return fallback
    name = next((n for n in names if n.get("use") == "official"), names[0])
    if name.get("text"):
        return str(name["text"])
    parts = [*(name.get("given") or []), name.get("family") or ""]
    text = " ".join(str(p) for p in parts if p).strip()
    return text or fallback


def local_id(reference: Any, res_type: str) -> str | None:
    """The id of a local `res_type/id` Reference (a dict with .reference), else None."""
    text = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(text, str):
        return None
    parts = text.split("/")
    if len(parts) >= 2 and parts[-2] == res_type and parts[-1]:
        return parts[-1]
    if len(parts) >= 4 and parts[-4] == res_type and parts[-2] == "_history":
        return parts[-3]
    return None

