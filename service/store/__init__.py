"""Persistence: tables, migrations, the unit of work and the resource repository."""
from __future__ import annotations

from service.store.db import TRANSIENT_ERRORS, Database, SchemaTooNew, UnitOfWork, is_too_costly, known_revisions
from service.store.followup import DueItem, FollowUps
from service.store.repository import Change, Repository, StoredResource, WriteHook

__all__ = ["TRANSIENT_ERRORS", "Change", "Database", "DueItem", "FollowUps", "Repository", "SchemaTooNew",
           "StoredResource", "UnitOfWork", "WriteHook", "is_too_costly", "known_revisions"]
