"""Bearer tokens: verification of JWTs with PyJWT, and the tokens `toh token` issues.

A token is accepted when its signature verifies, it has not expired (with a small leeway), is
not used before `nbf`, and names the configured issuer and audience. Keys:

- HS256 with the shared secret (a single site; `toh token` signs with it);
- RS256 / ES256 against a JWKS, fetched from a URL (cached; fetched again for an unknown
  `kid`) or read from a file: how a hospital's identity provider is plugged in.

The algorithm decides the key: an HS256 token is checked only against the secret and an
RS256/ES256 token only against the JWKS, so a token signed with a public key as an HMAC
secret (key confusion) or with `alg: none` is refused. Errors are InvalidToken, whose text
is fit for RFC 6750's error_description.
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

ASYMMETRIC = ("RS256", "ES256")
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
VERIFIED_CACHE_SIZE = 4096      # tokens whose verification is remembered (least recently used go)
VERIFIED_CACHE_SECONDS = 60.0   # how long a verification is remembered at most


class InvalidToken(Exception):
    """A token that cannot be accepted; str() says why (no secrets, no token content)."""


def why_refused(exc: jwt.PyJWTError, what: str = "The token", *, audience: str = "is meant for another audience",
                issuer: str = "comes from an issuer this service does not trust") -> str:
    """What PyJWT's refusal means, in words fit for a client or a login page (RFC 6750's
    error_description): e.g. "The token has expired". what names the token; audience and
    issuer say what a wrong `aud` / `iss` means where it is checked. Used by every JWT check
    of the service (bearer tokens, CDS clients' tokens, OpenID Connect ID tokens)."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return f"{what} has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return f"{what} is not valid yet"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"{what} {audience}"
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"{what} {issuer}"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"{what} lacks the {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidSignatureError):
        return f"{what}'s signature does not verify"
    return f"{what} is not valid ({type(exc).__name__})"


@dataclass(frozen=True)
class TokenSettings:
    """Where keys come from and what a token must name."""

    issuer: str
    audience: str
    secret: str | None = None
    jwks_url: str | None = None
    jwks_file: str | None = None
    leeway_seconds: int = 60
    jwks_refresh_cooldown_seconds: float = 30   # an unknown kid fetches the JWKS again at most this often


class TokenVerifier:
    """Verifies bearer tokens (see module docstring); one per application, thread-safe."""

    def __init__(self, settings: TokenSettings) -> None:
        self.settings = settings
        self._jwks_client = (jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=5,
                                            cooldown_duration=settings.jwks_refresh_cooldown_seconds)
                             if settings.jwks_url else None)
        self._jwks_file = _load_jwks_file(settings.jwks_file) if settings.jwks_file else None
        # token -> (claims, remembered until (epoch seconds)): a client sends the same token
        # with every request, and checking its signature again is most of what auth costs.
        self._verified: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms this verifier has keys for."""
        asymmetric = ASYMMETRIC if (self._jwks_client or self._jwks_file) else ()
        return (("HS256",) if self.settings.secret else ()) + asymmetric

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token (a new dict each call); raises InvalidToken otherwise.

        A token verified here is remembered for VERIFIED_CACHE_SECONDS at most, and never past
        its `exp` (with the leeway): the same token again skips the signature check, and is
        refused once it expires. A key withdrawn from the JWKS stops its tokens within that time."""
        now = time.time()
        with self._lock:
            remembered = self._verified.get(token)
            if remembered is not None:
                claims, until = remembered
                if now < until:
                    self._verified.move_to_end(token)
                    return dict(claims)
                del self._verified[token]
        claims = self._verify(token)
        until = min(now + VERIFIED_CACHE_SECONDS, float(claims["exp"]) + self.settings.leeway_seconds)
        if "nbf" in claims and now < float(claims["nbf"]):   # valid only through the leeway: not remembered
            return claims
        with self._lock:
            self._verified[token] = (dict(claims), until)
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("The token is not a well-formed JWT") from exc
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise InvalidToken(f"Tokens signed with {alg!r} are not accepted here")
        key: Any = self.settings.secret if alg == "HS256" else self._public_key(token, header)
        try:
            return jwt.decode(token, key, algorithms=[alg], audience=self.settings.audience,
                              issuer=self.settings.issuer, leeway=self.settings.leeway_seconds,
                              options={"require": REQUIRED_CLAIMS})
        except jwt.PyJWTError as exc:
            raise InvalidToken(why_refused(exc)) from exc

    def _public_key(self, token: str, header: dict[str, Any]) -> Any:
        kid = header.get("kid")
        if self._jwks_file is not None:
            keys = [k for k in self._jwks_file.keys if kid is None or k.key_id == kid]
            if len(keys) != 1:
                raise InvalidToken(f"No key {kid!r} in the configured JWKS")
            return keys[0]
        assert self._jwks_client is not None
        try:
            return self._jwks_client.get_signing_key_from_jwt(token)
        except (jwt.PyJWKClientError, jwt.PyJWTError) as exc:
            raise InvalidToken(f"No key {kid!r} in the identity provider's JWKS") from exc


def _load_jwks_file(path: str) -> jwt.PyJWKSet:
    try:
        return jwt.PyJWKSet.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise ValueError(f"TOH_JWKS_FILE {path} is not a readable JWKS: {exc}") from exc


def issue_token(settings: TokenSettings, *, subject: str, scopes: Iterable[str], ttl_seconds: int,
                patient: str | None = None, client_id: str = "toh-cli", now: float | None = None,
                extra: dict[str, Any] | None = None) -> str:
    """An HS256 token signed with the shared secret; raises ValueError when there is none."""
    if not settings.secret:
        raise ValueError("No shared secret is configured (the identity provider issues tokens)")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"iss": settings.issuer, "aud": settings.audience, "sub": subject,
                              "client_id": client_id, "scope": " ".join(scopes), "iat": issued,
                              "nbf": issued, "exp": issued + ttl_seconds}
    if patient:
        claims["patient"] = patient
    claims.update(extra or {})
    return jwt.encode(claims, settings.secret, algorithm="HS256")
