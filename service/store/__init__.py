"""Persistence: tables, migrations, the unit of work and the resource repository."""
from __future__ import annotations

from service.store.db import TRANSIENT_ERRORS, Database, UnitOfWork, is_too_costly
from service.store.followup import DueItem, FollowUps
from service.store.repository import Change, Repository, StoredResource, WriteHook

__all__ = ["TRANSIENT_ERRORS", "Change", "Database", "DueItem", "FollowUps", "Repository", "StoredResource",
           "UnitOfWork", "WriteHook", "is_too_costly"]
