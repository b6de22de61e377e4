"""The seeded fuzzer (hypothesis): malformed and hostile requests of every kind issue 10 lists,
sent to the application on SQLite and PostgreSQL, and raw HTTP to a real `toh serve`.

Properties, for every request:
- no 5xx;
- every error (4xx) is an OperationOutcome served as application/fhir+json;
- a refused request changes no row of any table;
and, after the run, every stored version reads back as strict JSON.

The kinds (the issue's numbering): 1 search cost (repeats, long value lists, chains),
2 index size (many names), 3 nesting, 4 calendar-edge dates, 5 integers, 6 NaN/Infinity/
unknown elements on R4-only types, 7 control characters, 8 lone surrogates, 9 chunked
bodies over the limit, 10 malformed HTTP (raw, to gunicorn), 11 '.'/'..' ids; and issue 18's:
odd unicode (RTL marks, BOM, zero-width, non-characters), injection attempts in ids,
parameters and headers, hostile transaction bundles (circular and self references, duplicate
fullUrls, the same resource twice, dangling and conditional references, too many entries).

The short run (CI) is derandomized, so it is the same every time: FUZZ_EXAMPLES requests per
database. `TOH_FUZZ_LONG=1 python -m pytest tests/reliability/test_fuzz.py` runs the long
one (3,000 per database, as in the issue), and TOH_FUZZ_SEED picks another seed.
"""
from __future__ import annotations

import io
import json
import os
import socket
from typing import Any
from urllib.parse import quote as _quote

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, inspect, text

from service import create_app
from tests.reliability.hostile import FHIR, assert_everything_reads_back

LONG = os.environ.get("TOH_FUZZ_LONG") == "1"
FUZZ_EXAMPLES = int(os.environ.get("TOH_FUZZ_EXAMPLES", 3000 if LONG else 120))
RAW_EXAMPLES = int(os.environ.get("TOH_FUZZ_RAW_EXAMPLES", 600 if LONG else 40))
SEED = int(os.environ.get("TOH_FUZZ_SEED", "10"))
PAYLOAD = 256 * 1024     # the fuzzed app's payload limit: small, so kind 9 stays cheap
INDEX_BOUND = 5000       # the fuzzed app's TOH_MAX_INDEX_ENTRIES: small, so kind 2 stays cheap

TYPES = ["Patient", "Observation", "Condition", "Evidence", "MedicinalProduct", "RiskAssessment",
         "SubstanceNucleicAcid", "EffectEvidenceSynthesis", "Bundle"]
PARAMS = ["name", "family", "birthdate", "gender", "_id", "_lastUpdated", "identifier", "subject",
          "subject:Patient.name", "subject.organization.partof.partof.name", "code", "date",
          "value-quantity", "probability", "_count", "_sort", "_include", "_total", "_summary",
          "name:exact", "name:contains", "gender:not", "birthdate:missing", "unknown-param", "_cursor"]

def quote(text: str, safe: str = "") -> str:
    """Percent-encode, lone surrogates too (as the bytes no UTF-8 decoder accepts)."""
    return _quote(text, safe=safe, errors="surrogatepass")


# --- atoms ------------------------------------------------------------------------------

EDGE_DATES = ["0001-01-01", "0001-01-01T00:00:00+01:00", "9999-12-31", "9999-12-31T23:59:59-02:00",
              "9999", "0001", "2026-02-30", "2026-13-01", "10000-01-01", "2026-01-01T25:00:00Z"]
BIG_NUMBERS = ["9223372036854775808", "99999999999999999999", "9" * 400, "1e400", "-1e400", "0.1e-400",
               "-0", "1" + "0" * 4301, "\u0663", "-1", "2147483648", "2147483647"]
# odd unicode (issue 18): RTL/LTR overrides and marks, BOM, zero-width, a non-character, the
# last code point, a combining accent, a fullwidth digit
ODD_UNICODE = ["\u202e", "ab\u202ecd", "\u200f", "\u061c", "\ufeff", "\u200b", "\u2028", "\ufffe", "\uffff",
               "\U0010ffff", "e\u0301", "\uff11", "\u0000\u202e"]
# injection attempts in ids, parameters and headers (issue 18)
INJECTION = ["' OR '1'='1", "1; DROP TABLE resources; --", "p1' --", "\" OR 1=1 --", "${jndi:ldap://x/a}",
             "<script>alert(1)</script>", "../../etc/passwd", "Patient/p1 UNION SELECT content FROM resources",
             "%27%20OR%201%3D1", "{{7*7}}", "$where", "\\x27", "p1%00.json", "*/--"]
HOSTILE_TEXT = ["\x00", "a\x00b", "\x1f", "\x0b", "\t", "\r\n", "\ud800", "\udfff", "\ud83e\udeb4", "é",
                "%", "\\", ",", "|", "$", "'", '"', "*", "..", ".", "<div>", " " * 3] + ODD_UNICODE + INJECTION
IDS = [".", "..", "...", "a" * 65, "a" * 64, "x", "%00", "a%00b", "%2E%2E", "a/b", "\u0663", "p1", "-",
       "p1'--", "p1;DROP", "\u202ep1", "p1\ufeff", "p1%27%20OR%201=1", "$where", "{{7*7}}"]
BUNDLE_LIMIT = 20        # the fuzzed app's TOH_MAX_BUNDLE_ENTRIES: small, so "too many entries" stays cheap

text_atom = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=12),
                      st.sampled_from(EDGE_DATES), st.sampled_from(BIG_NUMBERS))
prefix = st.sampled_from(["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"])


@st.composite
def search_value(draw: Any) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(prefix) + draw(st.sampled_from(EDGE_DATES + BIG_NUMBERS))
    if kind == 1:                                   # long comma lists
        return ",".join([draw(text_atom)] * draw(st.sampled_from([2, 99, 101, 499, 600])))
    return draw(text_atom)


@st.composite
def search_request(draw: Any) -> tuple[str, str, Any, dict[str, str]]:
    """Kind 1, 4, 5, 7: a search with hostile names, values, repeats and lengths."""
    res_type = draw(st.sampled_from(TYPES[:4] + ["Unicorn"]))
    pairs: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.one_of(st.sampled_from(PARAMS), text_atom))
        repeats = draw(st.sampled_from([1, 1, 2, 63, 65, 250]))
        pairs += [(name, draw(search_value()))] * repeats
    query = "&".join(f"{quote(n, safe=':.')}={quote(v, safe=',|:')}" for n, v in pairs)
    method = draw(st.sampled_from(["GET", "GET", "POST"]))
    if method == "POST":
        return "POST", f"/fhir/{res_type}/_search", query, {"Content-Type": "application/x-www-form-urlencoded"}
    return "GET", f"/fhir/{res_type}?{query}", None, {}


@st.composite
def rest_request(draw: Any) -> tuple[str, str, Any, dict[str, str]]:
    """Kinds 5, 7, 11: reads, vreads, history and deletes with hostile ids, versions, params."""
    res_type = draw(st.sampled_from(["Patient", "Observation", "Unicorn", "_history", "metadata"]))
    res_id = draw(st.sampled_from(IDS))
    number = draw(st.sampled_from(BIG_NUMBERS + ["1", "0"]))
    since = quote(draw(st.sampled_from(EDGE_DATES + ["2026-01-01T00:00:00Z", "\x00"])), safe="")
    path = draw(st.sampled_from([
        f"/fhir/{res_type}/{res_id}", f"/fhir/{res_type}/{res_id}/_history",
        f"/fhir/{res_type}/{res_id}/_history/{quote(number)}", f"/fhir/{res_type}/_history?_since={since}",
        f"/fhir/_history?_offset={quote(number)}&_count={quote(number)}", f"/fhir/_history?_at={since}",
    ]))
    method = draw(st.sampled_from(["GET", "GET", "DELETE", "HEAD"]))
    headers = {"If-Match": draw(st.sampled_from(['W/"1"', f'W/"{number}"', "\x00", "*"]))} if method == "DELETE" else {}
    if draw(st.integers(0, 2)) == 0:      # injection and odd unicode in headers
        name = draw(st.sampled_from(["If-Match", "If-None-Match", "If-None-Exist", "If-Modified-Since", "Prefer",
                                     "Accept", "X-Request-Id", "X-Forwarded-For", "Content-Type", "Authorization"]))
        value = draw(st.sampled_from(INJECTION + ODD_UNICODE + ['W/"1\' OR 1=1 --"', "return=' OR 1=1",
                                                                "Bearer ' OR 1=1 --", "Bearer \u202e"]))
        headers[name] = value.replace("\x00", "")
    return method, path, None, headers


def _nest(levels: int) -> Any:
    value: Any = {"url": "http://e.org/x", "valueString": "a"}
    for _ in range(levels):
        value = {"url": "http://e.org/x", "extension": [value]}
    return value


@st.composite
def hostile_value(draw: Any) -> Any:
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(text_atom)
    if kind == 1:
        return draw(st.sampled_from([0, -1, 2**31, 2**63, 10**30, 1.5, True, None, [], {}]))
    if kind == 2:
        return _nest(draw(st.sampled_from([5, 31, 40, 140])))
    if kind == 3:
        return {"resourceType": draw(text_atom)}
    if kind == 4:
        return [draw(text_atom)] * draw(st.integers(0, 3))
    if kind == 5:
        return {"value": draw(st.sampled_from(BIG_NUMBERS + ["NaN"]))}
    return draw(st.sampled_from(EDGE_DATES))


BASES: dict[str, dict[str, Any]] = {
    "Patient": {"resourceType": "Patient", "name": [{"family": "Hip"}], "birthDate": "1980-01-01"},
    "Observation": {"resourceType": "Observation", "status": "final", "code": {"text": "pain"},
                    "effectiveDateTime": "2026-01-01", "valueQuantity": {"value": 3}},
    "Evidence": {"resourceType": "Evidence", "status": "active", "name": "e"},
    "MedicinalProduct": {"resourceType": "MedicinalProduct", "name": [{"productName": "x"}]},
    "RiskAssessment": {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/p1"},
                       "prediction": [{"probabilityDecimal": 0.5}]},
    "SubstanceNucleicAcid": {"resourceType": "SubstanceNucleicAcid", "numberOfSubunits": 1},
}
KEYS = ["name", "family", "birthDate", "extension", "valueQuantity", "effectiveDateTime", "status", "id",
        "meta", "text", "maritalStatus", "unknownElement", "numberOfSubunits", "prediction", "code", "\x00"]


def _json_text(resource: Any, raw_tokens: list[str]) -> str:
    """JSON text of resource with placeholders replaced by raw tokens (NaN, 1e400...)."""
    out = json.dumps(resource)
    for i, token in enumerate(raw_tokens):
        out = out.replace(json.dumps(f"@raw{i}@"), token)
    return out


@st.composite
def write_request(draw: Any) -> tuple[str, str, Any, dict[str, str]]:
    """Kinds 2, 3, 4, 5, 6, 7, 8, 11: creates, updates, $validate and bundles of mutated resources."""
    res_type = draw(st.sampled_from(sorted(BASES)))
    resource = json.loads(json.dumps(BASES[res_type]))
    raw: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(KEYS))
        if draw(st.booleans()) and key in resource and isinstance(resource[key], list) and resource[key]:
            resource[key][0] = {"x": draw(hostile_value())} if draw(st.booleans()) else draw(hostile_value())
        elif draw(st.integers(0, 4)) == 0:
            raw.append(draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "9" * 400, "1" + "0" * 4301])))
            resource[key] = f"@raw{len(raw) - 1}@"
        else:
            resource[key] = draw(hostile_value())
    if draw(st.integers(0, 30)) == 0:   # kind 2: an index over the bound
        resource = {"resourceType": "Patient", "name": [{"family": str(i)} for i in range(INDEX_BOUND + 1)]}
        res_type = "Patient"
    body = _json_text(resource, raw)
    shape = draw(st.integers(0, 4))
    if shape == 0:
        return "POST", f"/fhir/{res_type}", body, {}
    if shape == 1:
        res_id = draw(st.sampled_from(IDS))
        resource_id = draw(st.sampled_from([res_id, "p1", ".."]))
        body = body[:-1] + f', "id": {json.dumps(resource_id)}}}' if body.endswith("}") else body
        return "PUT", f"/fhir/{res_type}/{res_id}", body, {"If-Match": draw(st.sampled_from(["", 'W/"1"', "9" * 30]))}
    if shape == 2:
        return "POST", f"/fhir/{res_type}/$validate", body, {}
    if shape == 3:
        kind = draw(st.sampled_from(["batch", "transaction"]))
        method = draw(st.sampled_from(["POST", "PUT"]))
        url = res_type if method == "POST" else f"{res_type}/{draw(st.sampled_from(IDS))}"
        return "POST", "/fhir", (f'{{"resourceType":"Bundle","type":"{kind}","entry":[{{"resource":{body},'
                                 f'"request":{{"method":"{method}","url":{json.dumps(url)}}}}}]}}'), {}
    # kind 9: a chunked body past the payload limit (a valid resource, then padding)
    return "CHUNKED", f"/fhir/{res_type}", body + " " * (PAYLOAD + 10) + "garbage", {}


def _entry(full_url: str | None, resource: dict[str, Any], method: str = "POST", url: str | None = None,
           **request: str) -> dict[str, Any]:
    out: dict[str, Any] = {"resource": resource,
                           "request": {"method": method, "url": url or resource["resourceType"], **request}}
    if full_url is not None:
        out["fullUrl"] = full_url
    return out


@st.composite
def hostile_bundle(draw: Any) -> tuple[str, str, Any, dict[str, str]]:
    """Hostile transaction (and batch) bundles: circular and self references, duplicate
    fullUrls, the same resource twice, references to nothing, too many entries."""
    kind = draw(st.sampled_from(["transaction", "transaction", "batch"]))
    a, b = "urn:uuid:" + "a" * 8 + "-0000-4000-8000-" + "0" * 12, "urn:uuid:" + "b" * 8 + "-0000-4000-8000-" + "0" * 12
    shape = draw(st.integers(0, 7))
    if shape == 0:     # circular: A links to B, B links to A
        entries = [_entry(a, {"resourceType": "Patient", "link": [{"other": {"reference": b}, "type": "seealso"}]}),
                   _entry(b, {"resourceType": "Patient", "link": [{"other": {"reference": a}, "type": "seealso"}]})]
    elif shape == 1:   # self reference
        entries = [_entry(a, {"resourceType": "Patient", "link": [{"other": {"reference": a}, "type": "seealso"}]})]
    elif shape == 2:   # duplicate fullUrls
        entries = [_entry(a, {"resourceType": "Patient"}), _entry(a, {"resourceType": "Patient", "gender": "male"})]
    elif shape == 3:   # the same resource written twice
        entries = [_entry(None, {"resourceType": "Patient", "id": "dup"}, "PUT", "Patient/dup"),
                   _entry(None, {"resourceType": "Patient", "id": "dup"}, "PUT", "Patient/dup")]
    elif shape == 4:   # a reference to an urn:uuid the bundle does not hold, or a conditional one to itself
        ref = draw(st.sampled_from([b, "Patient?identifier=urn:x|self", "Patient?" + draw(st.sampled_from(INJECTION))]))
        entries = [_entry(a, {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                              "identifier": [{"system": "urn:x", "value": "self"}], "subject": {"reference": ref}})]
    elif shape == 5:   # too many entries (over the limit), or exactly the limit
        n = draw(st.sampled_from([BUNDLE_LIMIT + 1, BUNDLE_LIMIT]))
        entries = [_entry(f"urn:uuid:{i:08d}-0000-4000-8000-000000000000", {"resourceType": "Basic",
                          "code": {"text": "x"}}) for i in range(n)]
    elif shape == 6:   # a delete and an update of the same resource; a hostile conditional create
        entries = [_entry(None, {"resourceType": "Patient", "id": "p1"}, "PUT", "Patient/p1"),
                   {"request": {"method": "DELETE", "url": "Patient/p1"}},
                   _entry(a, {"resourceType": "Patient"}, "POST", "Patient",
                          ifNoneExist="identifier=" + draw(st.sampled_from(INJECTION + ODD_UNICODE)))]
    else:              # a valid entry, then one that fails: the first must not stay
        entries = [_entry(a, {"resourceType": "Patient", "name": [{"family": draw(st.sampled_from(ODD_UNICODE))}]}),
                   _entry(b, {"resourceType": "Observation", "status": "bogus", "code": {"text": "x"},
                              "subject": {"reference": a}})]
    body = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return "POST", "/fhir", json.dumps(body, ensure_ascii=draw(st.booleans())), {}


any_request = st.one_of(search_request(), rest_request(), write_request(), hostile_bundle())


# --- the in-process fuzzer ------------------------------------------------------------------

class Store:
    """Row counts of every table but the audit trail's (it records every request, refused ones
    included), over one engine kept for the run."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        with self.engine.connect() as conn:
            self.tables = [t for t in inspect(conn).get_table_names() if t not in ("alembic_version", "audit_events")]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in self.tables}


def send(client: Any, request: tuple[str, str, Any, dict[str, str]]) -> Any:
    method, path, body, headers = request
    # header values as a real server hands them to WSGI: their UTF-8 bytes read as latin-1
    headers = {"Content-Type": FHIR, **{k: v.encode("utf-8", "surrogatepass").decode("latin-1")
                                        for k, v in headers.items() if v}}
    if method == "CHUNKED":
        return client.post(path, input_stream=io.BytesIO(body.encode("utf-8", "surrogatepass")),
                           headers={**headers, "Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return client.open(path, method=method, data=data, headers=headers)


def check(response: Any, request: Any, before: dict[str, int], after: dict[str, int]) -> None:
    label = (request[0], request[1][:200], str(request[2])[:200])
    assert response.status_code < 500, (label, response.get_data(as_text=True)[:500])
    if response.status_code >= 400:
        assert response.mimetype == FHIR, (label, response.status_code, response.get_data()[:300])
        if request[0] != "HEAD":
            outcome = json.loads(response.get_data(as_text=True))
            assert outcome["resourceType"] == "OperationOutcome", label
        assert after == before, (label, response.status_code, before, after)


@pytest.mark.fuzz
@pytest.mark.slow
def test_fuzzed_requests_get_no_5xx_and_refusals_change_nothing(database_url, clock) -> None:  # type: ignore[no-untyped-def]
    app = create_app({"database_url": database_url, "max_payload_bytes": PAYLOAD,
                      "max_index_entries": INDEX_BOUND, "max_bundle_entries": BUNDLE_LIMIT}, clock=clock)
    client = app.test_client()
    client.put("/fhir/Patient/p1", data=json.dumps({"resourceType": "Patient", "id": "p1"}),
               headers={"Content-Type": FHIR})
    store = Store(database_url)
    sent = {"n": 0}
    statuses: dict[int, int] = {}

    @seed(SEED)
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not LONG, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=any_request)
    def one(request: tuple[str, str, Any, dict[str, str]]) -> None:
        before = store.counts()
        response = send(client, request)
        check(response, request, before, store.counts())
        sent["n"] += 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    try:
        one()
        print(f"fuzzer: {sent['n']} requests, statuses {dict(sorted(statuses.items()))}")
        assert sent["n"] >= min(FUZZ_EXAMPLES, 50)
        assert assert_everything_reads_back(database_url) > 0
    finally:
        store.engine.dispose()
        app.extensions["toh"].database.dispose()


# --- raw HTTP to gunicorn (kind 10) -------------------------------------------------------

TOKENS = ["GET", "get", "DELETE", "POST", "PATCH", "G\x00T", "", "BREW", "PRI"]
TARGETS = ["/fhir/metadata", "*", "/fhir/Patient?name=" + "x" * 9000, "/fhir/Patient/%00", "http://x/fhir/Patient",
           "/fhir/Patient/..", "/fhir/_history?_offset=99999999999999999999", "//", "/fhir/Patient?name=%ED%A0%80"]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", "http/1.1", ""]
HEADERS = ["Content-Type: application/fhir+json", "Content-Type: application/fhir+json",
           "X-A: a\x00b", "X-B: \x7f", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked",
           "Content-Length: -1", "Content-Length: 99999999999999999999", "Expect: 100-continue",
           "If-Match: W/\"" + "9" * 4301 + "\"", "Bad Header", " folded", "Content-Length: 2",
           "Accept: text/html", "Host: a", "Host: b", "X-Request-Id: ' OR 1=1 --", "If-None-Exist: _id=' OR 1=1",
           "Prefer: return=representation\r\nX-Injected: 1", "Authorization: Bearer ' OR '1'='1"]


@st.composite
def raw_request(draw: Any) -> bytes:
    line = f"{draw(st.sampled_from(TOKENS))} {draw(st.sampled_from(TARGETS))} {draw(st.sampled_from(VERSIONS))}"
    headers = draw(st.lists(st.sampled_from(HEADERS), max_size=4))
    body = draw(st.sampled_from(["", "{}", '{"resourceType":"Patient"}', "0\r\n\r\n"]))
    return ("\r\n".join([line, "Connection: close", *headers]) + "\r\n\r\n" + body).encode("latin-1")


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.fuzz
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_fuzzed_raw_http_is_answered_with_operation_outcomes(live_server, database_url) -> None:  # type: ignore[no-untyped-def]
    store = Store(database_url)

    @seed(SEED)
    @settings(max_examples=RAW_EXAMPLES, deadline=None, derandomize=not LONG, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=raw_request())
    def one(data: bytes) -> None:
        before = store.counts()
        out = _exchange(live_server.port, data)
        if not out:          # the server may close a connection it cannot read at all
            return
        head, _, body = out.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        assert status < 500, (data[:300], out[:500])
        if status >= 400:
            lowered = head.lower()
            assert b"content-type: application/fhir+json" in lowered, (data[:300], out[:500])
            if not data.startswith(b"HEAD"):
                assert json.loads(body)["resourceType"] == "OperationOutcome"
            assert store.counts() == before

    try:
        one()
    finally:
        store.engine.dispose()
