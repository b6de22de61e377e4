"""Where keys come from: an identity provider's JWKS (URL on loopback, or a file), the secret
kept in the data folder, and `toh token`."""
from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service import create_app
from service.cli import main as toh
from service.config import Settings
from service.security import Principal, TokenVerifier
from service.security.secret import WeakSecret

ISSUER = "https://idp.hospital.example/realms/toh"
AUDIENCE = "https://toh.hospital.example/fhir"


def jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
    return {**public, "kid": kid, "alg": alg, "use": "sig"}


def idp_token(key: Any, kid: str, alg: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "dr-who", "azp": "ehr-app", "scope": "user/*.rs",
            "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


class JwksServer:
    """A JWKS served from loopback, whose keys the test can rotate; counts the fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def idp_app(database_url: str, **config: Any) -> Any:
    app = create_app({"database_url": database_url, "jwt_secret": None, "jwt_issuer": ISSUER,
                      "jwt_audience": AUDIENCE, **config})
    return app


def get(app: Any, token: str) -> int:
    return int(app.test_client(token=None).get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
               .status_code)


def test_rs256_from_a_jwks_url_with_key_rotation(database_url: str, jwks: JwksServer) -> None:
    first, second = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    jwks.keys = [jwk(first, "k1", "RS256")]
    app = idp_app(database_url, jwks_url=jwks.url, jwks_refresh_cooldown_seconds=0)
    try:
        assert get(app, idp_token(first, "k1", "RS256")) == 200
        assert get(app, idp_token(first, "k1", "RS256")) == 200
        assert jwks.fetches == 1                              # cached
        jwks.keys = [jwk(second, "k2", "RS256")]              # the provider rotates its key
        assert get(app, idp_token(second, "k2", "RS256")) == 200   # unknown kid: fetched again
        assert get(app, idp_token(second, "k9", "RS256")) == 401   # a kid the provider does not have
        # an HS256 token is not accepted when only the provider's keys are configured
        assert get(app, jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": time.time() + 60},
                                   "a-secret-that-is-long-enough-but-not-configured", algorithm="HS256")) == 401
    finally:
        app.extensions["toh"].database.dispose()


def test_es256_from_a_jwks_file(database_url: str, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(key, "es-1", "ES256")]}))
    app = idp_app(database_url, jwks_file=str(path))
    try:
        assert get(app, idp_token(key, "es-1", "ES256")) == 200
        assert get(app, idp_token(other, "es-1", "ES256")) == 401      # signed by someone else
        assert get(app, idp_token(key, "es-1", "ES256", aud="https://elsewhere.example")) == 401
    finally:
        app.extensions["toh"].database.dispose()


def test_the_secret_is_made_once_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    first = settings.token_settings().secret
    path = tmp_path / "data" / "jwt-secret"
    assert first and len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings.token_settings().secret == first          # kept, not made again


@pytest.mark.parametrize("weak", ["secret", "changeme", "a" * 64, "0123456789" * 2])
def test_a_weak_configured_secret_is_refused(weak: str, tmp_path: Path) -> None:
    with pytest.raises(WeakSecret):
        create_app({"database_url": f"sqlite:///{tmp_path / 'toh.db'}", "jwt_secret": weak})


def test_toh_token_prints_a_token_the_service_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TOH_JWT_SECRET", raising=False)
    monkeypatch.setenv("TOH_DATA_DIR", str(tmp_path / "data"))
    assert toh(["token", "--role", "auditor", "--sub", "alice", "--patient", "p1", "--ttl", "30m"]) == 0
    token = capsys.readouterr().out.strip()
    claims = TokenVerifier(Settings.from_env().token_settings()).verify(token)
    assert claims["exp"] - claims["iat"] == 1800
    who = Principal.from_claims(claims)
    assert who.subject == "alice" and who.patient == "p1"
    assert "user/AuditEvent.rs" in who.scope_text.split()


class _Later:
    """Moves both clocks a token is judged by (ours: time.time; PyJWT's: datetime.now)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from datetime import datetime, timedelta
        import jwt.api_jwt
        self.shift = 0.0
        real_time, shifted = time.time, self

        class Now(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> Any:   # type: ignore[override]
                return datetime.now(tz) + timedelta(seconds=shifted.shift)

        monkeypatch.setattr(jwt.api_jwt, "datetime", Now)
        monkeypatch.setattr(time, "time", lambda: real_time() + shifted.shift)


def test_a_remembered_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier remembers a verified token (the same token comes with every request) but
    never past its exp + leeway, nor for longer than VERIFIED_CACHE_SECONDS."""
    from service.security import tokens
    from service.security.tokens import InvalidToken, TokenSettings, issue_token
    settings = TokenSettings(issuer=ISSUER, audience=AUDIENCE, secret="s" * 48, leeway_seconds=10)
    verifier = TokenVerifier(settings)
    clock = _Later(monkeypatch)
    checks: list[str] = []
    real_decode = tokens.jwt.decode
    monkeypatch.setattr(tokens.jwt, "decode", lambda *a, **k: checks.append("decode") or real_decode(*a, **k))

    token = issue_token(settings, subject="dr-who", scopes=["user/*.rs"], ttl_seconds=30)
    first = verifier.verify(token)
    first["sub"] = "someone else"                            # the caller's copy, not the remembered one
    assert verifier.verify(token)["sub"] == "dr-who" and checks == ["decode"]   # remembered
    clock.shift = 39                                         # exp + leeway not reached
    assert verifier.verify(token)["sub"] == "dr-who" and checks == ["decode"]
    clock.shift = 41                                         # past exp + leeway
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)
    assert checks == ["decode", "decode"]                   # judged again, and refused

    long_lived = issue_token(settings, subject="dr-who", scopes=["user/*.rs"], ttl_seconds=3600)
    verifier.verify(long_lived)
    clock.shift += tokens.VERIFIED_CACHE_SECONDS + 1         # remembered for a minute at most
    verifier.verify(long_lived)
    assert checks.count("decode") == 4


def test_an_unverifiable_token_is_never_remembered() -> None:
    from service.security.tokens import InvalidToken, TokenSettings, issue_token
    settings = TokenSettings(issuer=ISSUER, audience=AUDIENCE, secret="s" * 48)
    other = TokenSettings(issuer=ISSUER, audience=AUDIENCE, secret="t" * 48)
    forged = issue_token(other, subject="dr-who", scopes=["user/*.rs"], ttl_seconds=300)
    verifier = TokenVerifier(settings)
    for _ in range(2):
        with pytest.raises(InvalidToken, match="signature"):
            verifier.verify(forged)
