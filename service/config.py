"""Typed settings, read from the environment once when the application is made."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from service.security.tokens import TokenSettings

DEFAULT_DATA_DIR = "toh-data"


def default_database_url(data_dir: str = DEFAULT_DATA_DIR) -> str:
    """The embedded SQLite database under ./toh-data/ (absolute, so workers agree)."""
    return f"sqlite:///{Path(data_dir).resolve() / 'toh.db'}"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured by."""

    database_url: str = field(default_factory=default_database_url)
    base_url: str | None = None          # public FHIR base; derived from the request if unset
    max_payload_bytes: int = 10 * 1024 * 1024
    default_page_size: int = 50
    max_page_size: int = 1000
    max_bundle_entries: int = 1000       # entries in one batch/transaction Bundle
    max_search_params: int = 64          # name=value pairs in one search
    max_search_values: int = 100         # comma-separated values of one search parameter
    max_chain_depth: int = 3             # links of one chained search parameter
    max_index_entries: int = 50_000      # estimated search index rows of one resource
    statement_timeout: float = 30.0      # seconds a PostgreSQL statement may run (0: no limit)
    worker_timeout: int = 60             # gunicorn's --timeout, seconds
    migrate_on_start: bool = True
    sql_echo: bool = False
    followup_plan: str = "https://fhir.toh-service.org/PlanDefinition/toh-follow-up-protocol"
    followup_lead_days: int = 7          # a follow-up Task becomes ready this many days early
    overdue_grace_days: int = 14         # days past a Task's window before follow-up-overdue
    scheduler: bool = True               # the sweep tick inside `toh serve` (TOH_SCHEDULER=off)
    sweep_interval_seconds: int = 60     # how often the tick runs the sweep
    data_dir: str = DEFAULT_DATA_DIR     # the generated secret is kept here
    jwt_secret: str | None = None        # HS256 shared secret; generated in data_dir when unset
    jwks_url: str | None = None          # an identity provider's JWKS (RS256/ES256)
    jwks_file: str | None = None
    jwt_issuer: str = "toh-service"
    jwt_audience: str = "toh-service"
    jwt_leeway_seconds: int = 60
    jwks_refresh_cooldown_seconds: int = 30   # an unknown kid refetches the JWKS at most this often
    token_endpoint: str | None = None    # advertised in metadata and smart-configuration
    authorization_endpoint: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read TOH_* variables; raises ValueError for a malformed value."""
        env = os.environ if env is None else env
        return cls(
            database_url=env.get("TOH_DATABASE_URL") or default_database_url(env.get("TOH_DATA_DIR", DEFAULT_DATA_DIR)),
            base_url=(env.get("TOH_BASE_URL") or None),
            max_payload_bytes=_int(env, "TOH_MAX_PAYLOAD_BYTES", cls.max_payload_bytes),
            default_page_size=_int(env, "TOH_DEFAULT_PAGE_SIZE", cls.default_page_size),
            max_page_size=_int(env, "TOH_MAX_PAGE_SIZE", cls.max_page_size),
            max_bundle_entries=_int(env, "TOH_MAX_BUNDLE_ENTRIES", cls.max_bundle_entries),
            max_search_params=_int(env, "TOH_SEARCH_MAX_PARAMS", cls.max_search_params),
            max_search_values=_int(env, "TOH_SEARCH_MAX_VALUES", cls.max_search_values),
            max_chain_depth=_int(env, "TOH_SEARCH_MAX_CHAIN_DEPTH", cls.max_chain_depth),
            max_index_entries=_int(env, "TOH_MAX_INDEX_ENTRIES", cls.max_index_entries),
            statement_timeout=_float(env, "TOH_STATEMENT_TIMEOUT", cls.statement_timeout),
            worker_timeout=_int(env, "TOH_WORKER_TIMEOUT", cls.worker_timeout),
            migrate_on_start=env.get("TOH_MIGRATE_ON_START", "1") not in ("0", "false", "no"),
            sql_echo=env.get("TOH_SQL_ECHO", "") in ("1", "true", "yes"),
            followup_plan=env.get("TOH_FOLLOWUP_PLAN") or cls.followup_plan,
            followup_lead_days=_int(env, "TOH_FOLLOWUP_LEAD_DAYS", cls.followup_lead_days),
            overdue_grace_days=_int(env, "TOH_OVERDUE_GRACE_DAYS", cls.overdue_grace_days),
            scheduler=env.get("TOH_SCHEDULER", "on").lower() not in ("0", "off", "false", "no"),
            sweep_interval_seconds=_int(env, "TOH_SWEEP_INTERVAL_SECONDS", cls.sweep_interval_seconds),
            data_dir=env.get("TOH_DATA_DIR") or DEFAULT_DATA_DIR,
            jwt_secret=env.get("TOH_JWT_SECRET") or None,
            jwks_url=env.get("TOH_JWKS_URL") or None,
            jwks_file=env.get("TOH_JWKS_FILE") or None,
            jwt_issuer=env.get("TOH_JWT_ISSUER") or cls.jwt_issuer,
            jwt_audience=env.get("TOH_JWT_AUDIENCE") or cls.jwt_audience,
            jwt_leeway_seconds=_int(env, "TOH_JWT_LEEWAY_SECONDS", cls.jwt_leeway_seconds),
            jwks_refresh_cooldown_seconds=_int(env, "TOH_JWKS_REFRESH_COOLDOWN", cls.jwks_refresh_cooldown_seconds),
            token_endpoint=env.get("TOH_TOKEN_ENDPOINT") or None,
            authorization_endpoint=env.get("TOH_AUTHORIZATION_ENDPOINT") or None,
        )

    def token_settings(self) -> TokenSettings:
        """What the token verifier needs: a configured secret must be strong; with neither a
        secret nor a JWKS, the secret kept in the data folder (made on first use).
        Raises WeakSecret for a weak configured secret."""
        from service.security.secret import check_strength, data_folder_secret
        from service.security.tokens import TokenSettings
        if self.jwt_secret:
            secret: str | None = check_strength(self.jwt_secret)
        elif self.jwks_url or self.jwks_file:
            secret = None
        else:
            secret = data_folder_secret(self.data_dir)
        return TokenSettings(issuer=self.jwt_issuer, audience=self.jwt_audience, secret=secret,
                             jwks_url=self.jwks_url, jwks_file=self.jwks_file,
                             leeway_seconds=self.jwt_leeway_seconds,
                             jwks_refresh_cooldown_seconds=self.jwks_refresh_cooldown_seconds)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with some fields replaced (used by create_app(config=...))."""
        return replace(self, **dict(overrides))
