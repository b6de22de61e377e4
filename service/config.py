"""Typed settings, read from the environment once when the application is made.

Every setting is a field of Settings whose metadata names its environment variable (and its
`toh serve` option, if any) and says what it does; `from_env` reads them all that way, and
`settings_table()` renders them for README.md (tests/unit/test_config.py keeps the two equal),
so the documentation cannot drift from what the code reads.
"""
from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from service.security.oidc import OidcSettings
    from service.security.tokens import TokenSettings

DEFAULT_DATA_DIR = "toh-data"
FHIR_PREFIX = "/fhir"                        # where the FHIR API is mounted under the service's root
PATIENT_PAGE = "{root}/ui/patients/{id}"     # a patient's staff page (service/web): the timeline
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def default_database_url(data_dir: str = DEFAULT_DATA_DIR) -> str:
    """The embedded SQLite database under ./toh-data/ (absolute, so workers agree)."""
    return f"sqlite:///{Path(data_dir).resolve() / 'toh.db'}"


def site_root(fhir_base: str) -> str:
    """The service's root URL (no trailing slash) from its FHIR base URL:
    'https://h/toh/fhir/' -> 'https://h/toh'. A base not ending in /fhir is returned as is."""
    return fhir_base.rstrip("/").removesuffix(FHIR_PREFIX)


def _env(name: str, doc: str, *, option: str | None = None, default: str | None = None) -> dict[str, Any]:
    """Field metadata: the environment variable, what it does, the `toh serve` option and the
    default as documented (when it is not the field's default value)."""
    return {"env": name, "doc": doc, "option": option, "default": default}


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured by."""

    database_url: str = field(default_factory=default_database_url, metadata=_env(
        "TOH_DATABASE_URL", "SQLAlchemy URL of the database, e.g. `postgresql+psycopg://user@db:5432/toh`",
        option="--database-url", default="SQLite in `$TOH_DATA_DIR/toh.db`"))
    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata=_env(
        "TOH_DATA_DIR", "folder of the embedded SQLite database (when TOH_DATABASE_URL is not set), "
        "the signing secret and export files"))
    export_dir: str | None = field(default=None, metadata=_env(
        "TOH_EXPORT_DIR", "folder of Bulk Data export files (one sub-folder per job); with several hosts, a "
        "folder they all mount", default="`$TOH_DATA_DIR/exports`"))
    export_expiry_hours: float = field(default=24.0, metadata=_env(
        "TOH_EXPORT_EXPIRY_HOURS", "hours a completed export's files are kept; the tick then deletes them"))
    base_url: str | None = field(default=None, metadata=_env(
        "TOH_BASE_URL", "public FHIR base URL clients use (links, absolute references to this server); "
        "set it behind a proxy or in a container", default="`http://HOST:PORT/fhir` under `toh serve` "
        "with a non-wildcard host, else taken from each request"))
    host: str = field(default="127.0.0.1", metadata=_env(
        "TOH_HOST", "interface `toh serve` listens on (`0.0.0.0`: all)", option="--host"))
    port: int = field(default=8080, metadata=_env("TOH_PORT", "port `toh serve` listens on", option="--port"))
    workers: int = field(default=2, metadata=_env(
        "TOH_WORKERS", "gunicorn worker processes of `toh serve`", option="--workers"))
    threads: int = field(default=4, metadata=_env(
        "TOH_THREADS", "threads per worker of `toh serve`", option="--threads"))
    max_payload_bytes: int = field(default=10 * 1024 * 1024, metadata=_env(
        "TOH_MAX_PAYLOAD_BYTES", "largest request body accepted (413 beyond)"))
    default_page_size: int = field(default=50, metadata=_env(
        "TOH_DEFAULT_PAGE_SIZE", "search results per page without `_count`"))
    max_page_size: int = field(default=1000, metadata=_env(
        "TOH_MAX_PAGE_SIZE", "largest `_count` applied (a larger one is capped)"))
    max_bundle_entries: int = field(default=1000, metadata=_env(
        "TOH_MAX_BUNDLE_ENTRIES", "entries in one batch or transaction Bundle (413 beyond)"))
    max_search_params: int = field(default=64, metadata=_env(
        "TOH_SEARCH_MAX_PARAMS", "name=value pairs in one search (400 beyond)"))
    max_search_values: int = field(default=100, metadata=_env(
        "TOH_SEARCH_MAX_VALUES", "comma-separated values of one search parameter (400 beyond)"))
    max_chain_depth: int = field(default=3, metadata=_env(
        "TOH_SEARCH_MAX_CHAIN_DEPTH", "links of one chained search parameter (400 beyond)"))
    max_index_entries: int = field(default=50_000, metadata=_env(
        "TOH_MAX_INDEX_ENTRIES", "estimated search index rows of one resource (422 beyond)"))
    audit_fsync: bool = field(default=False, metadata=_env(
        "TOH_AUDIT_FSYNC", "`1`: a read's, search's or refusal's AuditEvent is flushed to disk before the "
        "answer; `0`: committed (PostgreSQL) or appended to the audit journal (SQLite) before the answer "
        "(kept through a SIGKILL of the service) without waiting for the disk, so a power loss or a "
        "database-server crash may lose the last moment's read events (a write's AuditEvent always "
        "commits durably with the write)"))
    statement_timeout: float = field(default=30.0, metadata=_env(
        "TOH_STATEMENT_TIMEOUT", "seconds a PostgreSQL statement may run (`0`: no limit)"))
    worker_timeout: int = field(default=60, metadata=_env(
        "TOH_WORKER_TIMEOUT", "gunicorn's worker timeout of `toh serve`, seconds", option="--timeout"))
    graceful_timeout: int = field(default=30, metadata=_env(
        "TOH_GRACEFUL_TIMEOUT", "seconds `toh serve` lets requests in flight (and a sweep's item in hand) "
        "finish after SIGTERM before stopping its workers"))
    migrate_on_start: bool = field(default=True, metadata=_env(
        "TOH_MIGRATE_ON_START", "create or upgrade the schema and install the guide when the app starts "
        "(`0` to leave it to `toh migrate`)"))
    sql_echo: bool = field(default=False, metadata=_env("TOH_SQL_ECHO", "log every SQL statement (`1`)"))
    log_format: str = field(default="json", metadata=_env(
        "TOH_LOG_FORMAT", "`json` (one JSON object per line, with the request id) or `text`"))
    log_level: str = field(default="INFO", metadata=_env("TOH_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR"))
    metrics_dir: str | None = field(default=None, metadata=_env(
        "TOH_METRICS_DIR", "folder of prometheus-client's multiprocess files under `toh serve` (emptied at "
        "start; one per instance)", default="a new temporary folder"))
    metrics_port: int = field(default=0, metadata=_env(
        "TOH_METRICS_PORT", "port on which `toh worker` serves its own `/metrics` (`0`: none); `toh serve` "
        "serves them at `/metrics` on its own port"))
    followup_plan: str = field(default="https://fhir.toh-service.org/PlanDefinition/toh-follow-up-protocol",
                               metadata=_env("TOH_FOLLOWUP_PLAN", "canonical URL of the follow-up PlanDefinition"))
    followup_lead_days: int = field(default=7, metadata=_env(
        "TOH_FOLLOWUP_LEAD_DAYS", "a follow-up Task becomes ready this many days early"))
    overdue_grace_days: int = field(default=14, metadata=_env(
        "TOH_OVERDUE_GRACE_DAYS", "days past a Task's window before the follow-up-overdue flag"))
    scheduler: bool = field(default=True, metadata=_env(
        "TOH_SCHEDULER", "run the sweep tick inside `toh serve` (`off` to leave it to `toh worker`)"))
    sweep_interval_seconds: int = field(default=60, metadata=_env(
        "TOH_SWEEP_INTERVAL_SECONDS", "how often the tick runs the sweep"))
    delivery_interval_seconds: int = field(default=2, metadata=_env(
        "TOH_DELIVERY_INTERVAL_SECONDS", "how often the tick delivers due notifications (the outbox)"))
    webhook_allowlist: str = field(default="", metadata=_env(
        "TOH_WEBHOOK_ALLOWLIST", "hosts and CIDRs a rest-hook may reach although private, loopback or "
        "link-local (comma-separated, e.g. `hooks.clinic.local,10.2.0.0/16`)", default="(none)"))
    webhook_allow_http: bool = field(default=False, metadata=_env(
        "TOH_WEBHOOK_ALLOW_HTTP", "allow plain http rest-hook endpoints (`1`); https only by default"))
    webhook_connect_timeout: float = field(default=3.0, metadata=_env(
        "TOH_WEBHOOK_CONNECT_TIMEOUT", "seconds to connect to a rest-hook endpoint"))
    webhook_read_timeout: float = field(default=10.0, metadata=_env(
        "TOH_WEBHOOK_READ_TIMEOUT", "seconds a rest-hook endpoint has to answer"))
    webhook_max_response_bytes: int = field(default=65536, metadata=_env(
        "TOH_WEBHOOK_MAX_RESPONSE_BYTES", "bytes of a rest-hook endpoint's answer read (the rest is dropped)"))
    smtp_host: str | None = field(default=None, metadata=_env(
        "TOH_SMTP_HOST", "SMTP server email notifications are sent through"))
    smtp_port: int = field(default=25, metadata=_env("TOH_SMTP_PORT", "port of the SMTP server"))
    smtp_from: str = field(default="toh-service@localhost", metadata=_env(
        "TOH_SMTP_FROM", "sender address of email notifications"))
    smtp_user: str | None = field(default=None, metadata=_env("TOH_SMTP_USER", "SMTP user name (to log in)"))
    smtp_password: str | None = field(default=None, metadata=_env("TOH_SMTP_PASSWORD", "SMTP password"))
    smtp_starttls: bool = field(default=False, metadata=_env(
        "TOH_SMTP_STARTTLS", "upgrade the SMTP connection with STARTTLS (`1`)"))
    email_patient_name: bool = field(default=False, metadata=_env(
        "TOH_EMAIL_PATIENT_NAME", "put the patient's name in email notifications (`1`); by default only "
        "the patient's id and a link"))
    patient_link: str = field(default=PATIENT_PAGE, metadata=_env(
        "TOH_PATIENT_LINK", "link to a patient's page in email notifications, by default the staff page "
        "(`{root}`: the service's root URL, TOH_BASE_URL without `/fhir`; `{base}`: the FHIR base URL; "
        "`{id}`: the Patient id)"))
    jwt_secret: str | None = field(default=None, metadata=_env(
        "TOH_JWT_SECRET", "HS256 secret bearer tokens are signed with (32+ random characters; a weak one "
        "stops the start)", default="made once in `$TOH_DATA_DIR/jwt-secret` (mode 0600)"))
    jwks_url: str | None = field(default=None, metadata=_env(
        "TOH_JWKS_URL", "an identity provider's JWKS for RS256/ES256 tokens (cached; fetched again for an unknown kid)"))
    jwks_file: str | None = field(default=None, metadata=_env("TOH_JWKS_FILE", "a JWKS file for RS256/ES256 tokens"))
    jwt_issuer: str = field(default="toh-service", metadata=_env("TOH_JWT_ISSUER", "the `iss` tokens must name"))
    jwt_audience: str = field(default="toh-service", metadata=_env("TOH_JWT_AUDIENCE", "the `aud` tokens must name"))
    jwt_leeway_seconds: int = field(default=60, metadata=_env(
        "TOH_JWT_LEEWAY_SECONDS", "clock skew tolerated on `exp` and `nbf`, seconds"))
    jwks_refresh_cooldown_seconds: int = field(default=30, metadata=_env(
        "TOH_JWKS_REFRESH_COOLDOWN", "an unknown kid fetches the JWKS again at most this often, seconds"))
    ui_secret: str | None = field(default=None, metadata=_env(
        "TOH_UI_SECRET", "key the /ui session cookie and its CSRF tokens are signed with (32+ random characters; "
        "the same on every host)", default="derived from the token secret; with a JWKS only, made once in "
        "`$TOH_DATA_DIR/ui-secret`"))
    token_endpoint: str | None = field(default=None, metadata=_env(
        "TOH_TOKEN_ENDPOINT", "OAuth token endpoint advertised in metadata and the SMART configuration"))
    authorization_endpoint: str | None = field(default=None, metadata=_env(
        "TOH_AUTHORIZATION_ENDPOINT", "OAuth authorization endpoint advertised likewise"))
    oidc_issuer: str | None = field(default=None, metadata=_env(
        "TOH_OIDC_ISSUER", "an OpenID Connect provider staff sign in through at `/ui/login` (its issuer URL; "
        "discovery at `{issuer}/.well-known/openid-configuration`; https, http only on loopback). Its access "
        "token becomes the session's bearer token: set TOH_JWT_ISSUER, TOH_JWKS_URL and TOH_JWT_AUDIENCE to "
        "what it issues", default="(none: token sign-in only)"))
    oidc_client_id: str | None = field(default=None, metadata=_env(
        "TOH_OIDC_CLIENT_ID", "this service's client id at the OpenID Connect provider"))
    oidc_client_secret: str | None = field(default=None, metadata=_env(
        "TOH_OIDC_CLIENT_SECRET", "its client secret (client_secret_basic, or _post when the provider offers only "
        "that)", default="(none: a public client, PKCE only)"))
    oidc_scopes: str = field(default="openid profile fhirUser user/*.rs user/Task.u user/Flag.u "
                                     "user/Subscription.cruds", metadata=_env(
        "TOH_OIDC_SCOPES", "scopes asked of the provider (space-separated, with `openid`); the default asks for "
        "the staff role's SMART scopes, which the access token must carry"))
    oidc_redirect_uri: str | None = field(default=None, metadata=_env(
        "TOH_OIDC_REDIRECT_URI", "the callback registered at the provider", default="`/ui/oidc/callback` on the "
        "host and scheme the browser used"))
    oidc_provider_name: str = field(default="the identity provider", metadata=_env(
        "TOH_OIDC_PROVIDER_NAME", "the provider's name on the button \"Sign in with ...\""))
    cds_issuers: str | None = field(default=None, metadata=_env(
        "TOH_CDS_ISSUERS", "EHRs trusted to call the CDS Hooks services: comma-separated `issuer=JWKS` pairs, "
        "JWKS an https URL (fetched and cached) or a file path", default="(none: every hook call is refused)"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the TOH_* variables of the fields; raises ValueError for a malformed value."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.metadata["env"], str(f.type), raw)
        if "database_url" not in values:
            values["database_url"] = default_database_url(values.get("data_dir", DEFAULT_DATA_DIR))
        return cls(**values)

    @property
    def export_folder(self) -> Path:
        """Where Bulk Data export files go: TOH_EXPORT_DIR, else exports/ in the data folder."""
        return Path(self.export_dir) if self.export_dir else Path(self.data_dir).resolve() / "exports"

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

    def oidc_settings(self) -> OidcSettings | None:
        """The OpenID Connect sign-in's settings, or None when TOH_OIDC_ISSUER is not set.
        Raises ValueError for an issuer that is not https (nor http on loopback), a missing
        client id, or scopes without `openid`."""
        from service.security.oidc import OidcSettings
        if not self.oidc_issuer:
            return None
        return OidcSettings(issuer=self.oidc_issuer, client_id=self.oidc_client_id or "",
                            client_secret=self.oidc_client_secret or None, scopes=self.oidc_scopes,
                            name=self.oidc_provider_name, leeway_seconds=self.jwt_leeway_seconds)

    def cds_issuer_map(self) -> dict[str, str]:
        """TOH_CDS_ISSUERS as {issuer: JWKS URL or file path} (empty when unset). Each pair is split
        at its first "=", so a JWKS URL may carry a query. Raises ValueError for a pair without
        an issuer or a JWKS, or an issuer named twice."""
        found: dict[str, str] = {}
        for pair in (self.cds_issuers or "").split(","):
            if not pair.strip():
                continue
            issuer, _, jwks = (part.strip() for part in pair.partition("="))
            if not issuer or not jwks:
                raise ValueError(f"TOH_CDS_ISSUERS: {pair.strip()!r} is not issuer=JWKS")
            if issuer in found:
                raise ValueError(f"TOH_CDS_ISSUERS names {issuer!r} twice")
            found[issuer] = jwks
        return found

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with some fields replaced (used by create_app(config=...))."""
        return replace(self, **dict(overrides))


def _parse(name: str, type_name: str, raw: str) -> Any:
    if type_name == "float":
        try:
            return float(raw)
        except ValueError as exc:
            raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if type_name == "int":
        try:
            return int(raw)
        except ValueError as exc:
            raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if type_name == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {raw!r}")
    return raw


def settings_table() -> str:
    """The Markdown table of every setting (README.md, section "Settings")."""
    rows = ["| Environment | `toh serve` option | Default | What it does |", "|---|---|---|---|"]
    for f in fields(Settings):
        meta = f.metadata
        if meta["default"] is not None:
            default = meta["default"]
        elif f.default is MISSING or f.default is None:
            default = "(none)"
        elif isinstance(f.default, bool):
            default = "`1`" if f.default else "`0`"
        else:
            default = f"`{f.default}`"
        option = f"`{meta['option']}`" if meta["option"] else ""
        rows.append(f"| `{meta['env']}` | {option} | {default} | {meta['doc']} |")
    rows.append("| | `--access-log` | off | log every request to stderr |")
    return "\n".join(rows)
