"""Access control: bearer-token verification (PyJWT), SMART scopes, roles, the principal and
the guard the API applies. No web framework here; service.api.auth applies it per request."""
from __future__ import annotations

from service.security.guard import AccessGuard
from service.security.principal import SERVICE, Principal, Reach
from service.security.scopes import ROLES, Scope, parse_scopes
from service.security.tokens import InvalidToken, TokenSettings, TokenVerifier, issue_token

__all__ = ["ROLES", "SERVICE", "AccessGuard", "InvalidToken", "Principal", "Reach", "Scope", "TokenSettings",
           "TokenVerifier", "issue_token", "parse_scopes"]
