"""FHIR's HTTP conventions that do not depend on a web framework: version ETags and the
search criteria of conditional requests (https://hl7.org/fhir/R4/http.html)."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from service.fhir.errors import BadRequest

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]+)"?\s*$')
_DIGITS = re.compile(r"^[0-9]{1,18}$")
MAX_INT = 2**31 - 1   # FHIR integer (https://hl7.org/fhir/R4/datatypes.html#integer); versions, counts, offsets

Criteria = list[tuple[str, str]]


def etag_version(etag: Any, what: str = "If-Match") -> int | None:
    """The version in a version ETag (W/"3" or "3"), None if absent; raises BadRequest if malformed."""
    if etag is None:
        return None
    match = _ETAG.match(str(etag))
    if not match:
        raise BadRequest(f"{what} '{str(etag)[:40]}' is not a version ETag like W/\"3\"")
    return bounded_int(match.group(1), what, low=1)


def bounded_int(text: str, what: str, *, low: int = 0, high: int = MAX_INT) -> int:
    """A client's decimal integer (ASCII digits only) within [low, high]; raises BadRequest
    naming `what` otherwise, so no number from a request can overflow the database's columns."""
    if not _DIGITS.match(text) or not low <= int(text) <= high:
        raise BadRequest(f"{what} must be an integer from {low} to {high}, got '{text[:40]}'")
    return int(text)


def conditional_criteria(text: str, what: str) -> Criteria:
    """The search parameters of a conditional request ('a=b', '?a=b' or 'Type?a=b');
    raises BadRequest if there are none."""
    query = text.split("?", 1)[1] if "?" in text else text
    criteria = parse_qsl(query, keep_blank_values=True)
    if not criteria:
        raise BadRequest(f"{what} must carry search parameters")
    return criteria
