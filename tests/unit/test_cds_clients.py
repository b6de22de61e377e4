"""CDS clients' JWTs (service.security.cds_clients) without a database: keys from a JWKS file
or a JWKS URL (a loopback HTTP server here), the algorithms, the jku rule and the replay check;
TOH_CDS_ISSUERS parsing."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.security.cds_clients import CdsClientVerifier
from service.security.tokens import InvalidToken
from tests.cds_client import EhrKeys

AUD = "https://toh.example/cds-services/toh-order-sign"


def once() -> Any:
    seen: set[tuple[str, str]] = set()

    def first_use(issuer: str, jti: str, exp: int) -> bool:
        fresh = (issuer, jti) not in seen
        seen.add((issuer, jti))
        return fresh
    return first_use


@pytest.fixture
def keys(tmp_path: Path) -> EhrKeys:
    return EhrKeys.generate(tmp_path)


@pytest.fixture
def jwks_url(keys: EhrKeys) -> Iterator[tuple[str, list[int]]]:
    """The EHR's JWKS served on loopback: (its URL, the number of fetches so far in a list)."""
    fetches = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            fetches[0] += 1
            body = json.dumps(keys.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", fetches
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("alg", ["RS384", "ES384", "RS256"])
def test_a_jwks_file_verifies_each_accepted_algorithm(keys: EhrKeys, alg: str) -> None:
    verifier = CdsClientVerifier({keys.issuer: str(keys.jwks_path)}, once())
    claims = verifier.verify(keys.token(AUD, alg=alg), AUD)
    assert claims["iss"] == keys.issuer and claims["aud"] == AUD


@pytest.mark.parametrize("alg, kid", [("ES384", "rsa-1"), ("RS384", "ec-1"), ("RS256", "ec-1")])
def test_a_kid_naming_a_key_of_another_kind_is_refused(keys: EhrKeys, alg: str, kid: str) -> None:
    """A token whose alg does not fit the kind of key its kid names is an InvalidToken (not a
    TypeError from the signature check), and its jti is not used up."""
    seen: list[str] = []
    verifier = CdsClientVerifier({keys.issuer: str(keys.jwks_path)}, lambda i, jti, e: not seen.append(jti))
    with pytest.raises(InvalidToken, match=f"not a key for {alg}"):
        verifier.verify(keys.token(AUD, alg=alg, kid=kid), AUD)
    assert seen == []


def test_an_audience_list_naming_the_endpoint_is_accepted(keys: EhrKeys) -> None:
    verifier = CdsClientVerifier({keys.issuer: str(keys.jwks_path)}, once())
    assert verifier.verify(keys.token([AUD]), AUD)["aud"] == [AUD]   # type: ignore[arg-type]


def test_a_jwks_url_is_fetched_once_and_cached_and_jku_must_be_it(keys: EhrKeys, jwks_url: tuple[str, list[int]]) -> None:
    url, fetches = jwks_url
    verifier = CdsClientVerifier({keys.issuer: url}, once())
    for _ in range(3):
        verifier.verify(keys.token(AUD, alg="ES384"), AUD)
    assert fetches[0] == 1
    import jwt
    signed = jwt.encode({"iss": keys.issuer, "aud": AUD, "exp": 2**31, "iat": 0, "jti": "j"}, keys.rsa,
                        algorithm="RS384", headers={"kid": "rsa-1", "jku": url})
    assert verifier.verify(signed, AUD)["jti"] == "j"
    with pytest.raises(InvalidToken, match="replay"):
        verifier.verify(signed, AUD)


def test_the_configuration_is_checked_at_start(keys: EhrKeys, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="https"):
        CdsClientVerifier({keys.issuer: "http://ehr.example.org/jwks.json"}, once())
    with pytest.raises(ValueError, match="not a readable JWKS"):
        CdsClientVerifier({keys.issuer: str(tmp_path / "missing.json")}, once())


def test_toh_cds_issuers_is_read_as_issuer_jwks_pairs() -> None:
    settings = Settings(cds_issuers=" https://ehr.a/=https://ehr.a/jwks?tenant=1 , urn:ehr:b=/etc/toh/b.json,")
    assert settings.cds_issuer_map() == {"https://ehr.a/": "https://ehr.a/jwks?tenant=1", "urn:ehr:b": "/etc/toh/b.json"}
    assert Settings().cds_issuer_map() == {}
    for bad in ("https://ehr.a/", "=x.json", "a=x.json,a=y.json"):
        with pytest.raises(ValueError, match="TOH_CDS_ISSUERS"):
            Settings(cds_issuers=bad).cds_issuer_map()
