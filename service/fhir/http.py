"""FHIR's HTTP conventions that do not depend on a web framework: version ETags and the
search criteria of conditional requests (https://hl7.org/fhir/R4/http.html)."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from service.fhir.errors import BadRequest

_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')

Criteria = list[tuple[str, str]]


def etag_version(etag: Any, what: str = "If-Match") -> int | None:
    """The version in a version ETag (W/"3" or "3"), None if absent; raises BadRequest if malformed."""
    if etag is None:
        return None
    match = _ETAG.match(str(etag))
    if not match:
        raise BadRequest(f"{what} '{etag}' is not a version ETag like W/\"3\"")
    return int(match.group(1))


def conditional_criteria(text: str, what: str) -> Criteria:
    """The search parameters of a conditional request ('a=b', '?a=b' or 'Type?a=b');
    raises BadRequest if there are none."""
    query = text.split("?", 1)[1] if "?" in text else text
    criteria = parse_qsl(query, keep_blank_values=True)
    if not criteria:
        raise BadRequest(f"{what} must carry search parameters")
    return criteria
