"""Trusting CDS clients (CDS Hooks 2.0, "Trusting CDS Clients", https://cds-hooks.hl7.org/2.0/):
every call to a CDS service carries `Authorization: Bearer <JWT>` signed by the EHR.

A token is accepted when
- its header names an asymmetric algorithm: RS384 or ES384 (the spec's recommendation) or
  RS256; `none` and HMAC algorithms are refused (the spec forbids symmetric ones);
- its `iss` is one of the configured issuers (TOH_CDS_ISSUERS: issuer -> JWKS);
- its `kid` names a key of that issuer's JWKS: an https URL (PyJWKClient, cached, fetched
  again for an unknown kid at most every `refresh_cooldown` seconds) or a file (read once);
  a `jku` header is accepted only when it is that issuer's configured JWKS URL (the service
  never fetches a key set a token names, which would let anyone sign);
- that key is of the algorithm's kind (RSA for RS*, EC for ES*) and the signature verifies;
  `aud` is the URL of the service endpoint as called; `exp` (with `leeway` seconds), `iat` and
  `jti` are present and `exp` is in the future;
- its `jti` was not used before by that issuer (`replay(issuer, jti, exp)` records it and
  answers False for a second use; the service keeps them in the database, service.store.cds_jti).

Every refusal is InvalidToken, whose text says why without echoing the token.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.security.tokens import InvalidToken, why_refused

ALGORITHMS = ("RS384", "ES384", "RS256")
KEY_TYPES: dict[str, type] = {"RS": rsa.RSAPublicKey, "ES": ec.EllipticCurvePublicKey}   # alg family -> its key
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_CLAIM_LENGTH = 255   # iss and jti are stored (table cds_jti)

# (issuer, jti, exp as seconds since the epoch) -> True when the jti was not used before
ReplayCheck = Callable[[str, str, int], bool]


class CdsClientVerifier:
    """Verifies CDS clients' JWTs (see the module docstring); one per application, thread-safe."""

    def __init__(self, issuers: Mapping[str, str], replay: ReplayCheck, *, leeway_seconds: int = 60,
                 refresh_cooldown: float = 30) -> None:
        """issuers: {iss: JWKS}, a JWKS being an https URL (http only on loopback, for local
        sandboxes and tests) or a file path. Raises ValueError for a plain-http URL elsewhere
        or a JWKS file that cannot be read (so a bad configuration stops the start)."""
        self.leeway = leeway_seconds
        self._replay = replay
        self._urls: dict[str, str] = {}
        self._clients: dict[str, jwt.PyJWKClient] = {}
        self._files: dict[str, jwt.PyJWKSet] = {}
        for issuer, source in issuers.items():
            if source.startswith("http://") and urlsplit(source).hostname not in LOOPBACK:
                raise ValueError(f"TOH_CDS_ISSUERS: the JWKS of {issuer} must be an https URL (or a file): "
                                 f"keys fetched over plain http could be swapped on the way")
            if source.startswith(("https://", "http://")):
                self._urls[issuer] = source
                self._clients[issuer] = jwt.PyJWKClient(source, cache_keys=True, lifespan=300, timeout=5,
                                                        cooldown_duration=refresh_cooldown)
            else:
                self._files[issuer] = _load_jwks_file(issuer, source)

    @property
    def issuers(self) -> frozenset[str]:
        """The trusted issuers."""
        return frozenset(self._urls) | frozenset(self._files)

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a token fit for a call to `audience` (the endpoint's URL as called);
        raises InvalidToken otherwise (the jti is recorded only for a token that passes every
        other check)."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidToken("The token is not a well-formed JWT") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"Tokens signed with {alg!r} are not accepted; use {', '.join(ALGORITHMS)}")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in self.issuers:
            raise InvalidToken("The token comes from an issuer this service does not trust")
        key = self._key(issuer, header, token)
        if not _fits(alg, key):                    # e.g. ES384 naming an RSA key's kid
            raise InvalidToken(f"The token's key {header.get('kid')!r} is not a key for {alg}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], audience=audience, issuer=issuer, leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS})
        except jwt.PyJWTError as exc:
            raise InvalidToken(why_refused(exc, audience=f"names another aud than this endpoint ({audience})")) from exc
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_CLAIM_LENGTH or len(issuer) > MAX_CLAIM_LENGTH:
            raise InvalidToken(f"The token's jti must be a string of 1 to {MAX_CLAIM_LENGTH} characters")
        if not self._replay(issuer, jti, int(claims["exp"])):
            raise InvalidToken("The token's jti was used before (a replay)")
        return claims

    def _key(self, issuer: str, header: dict[str, Any], token: str) -> Any:
        kid = header.get("kid")
        jku = header.get("jku")
        if jku is not None and jku != self._urls.get(issuer):
            raise InvalidToken("The token's jku is not the key set configured for its issuer")
        if issuer in self._files:
            keys = [k for k in self._files[issuer].keys if kid is None or k.key_id == kid]
            if len(keys) != 1:
                raise InvalidToken(f"No key {kid!r} in the issuer's JWKS")
            return keys[0].key   # the raw key: the token's alg decides (a JWK without alg is RS256 to PyJWK)
        try:
            return self._clients[issuer].get_signing_key_from_jwt(token).key
        except (jwt.PyJWKClientError, jwt.PyJWTError) as exc:
            raise InvalidToken(f"No key {kid!r} in the issuer's JWKS") from exc


def _load_jwks_file(issuer: str, path: str) -> jwt.PyJWKSet:
    try:
        return jwt.PyJWKSet.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise ValueError(f"TOH_CDS_ISSUERS: the JWKS of {issuer} ({path}) is not a readable JWKS: {exc}") from exc


def _fits(alg: str, key: Any) -> bool:
    """Whether `key` is of the kind `alg` verifies with (RSA for RS*, EC for ES*); PyJWT would
    raise TypeError rather than refuse the token otherwise."""
    return isinstance(key, KEY_TYPES[alg[:2]])
