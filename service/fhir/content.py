"""Reading a client's JSON safely: the checks that run on the parsed body before any model does.

    parse_json(body) -> dict          json.loads, then check_content(); raises BadRequest / Unprocessable

What is refused, and why:

- JSON nested deeper than MAX_JSON_DEPTH (64) levels (objects and arrays each count one):
  the R4 examples go no deeper than 23, and the models recurse once per level (400).
- NaN, Infinity and -Infinity: not JSON (RFC 8259 section 6), so they could be stored but
  never read back by a client (400).
- A number outside the range of a double (e.g. 400 digits): it cannot be indexed or
  compared (422).
- A string (or object key) holding a lone UTF-16 surrogate (``"\\ud800"``): it has no UTF-8
  form, so it can be neither stored nor sent (400).
- A string holding a control character other than tab, CR and LF: FHIR forbids them
  (https://hl7.org/fhir/R4/datatypes.html#string) and PostgreSQL cannot store NUL (422).

parse_json's checks run at C speed over the text (the depth over the brackets left when the
strings are cut out; the strings' escapes by one regular expression, since a control
character or a lone surrogate can only reach a parsed string through an escape); only a body
that they flag is walked in Python, to name where the fault is. check_content() is that walk
(iterative, whatever the depth), for content that did not come as text.
"""
from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from service.fhir.errors import BadRequest, Unprocessable

MAX_JSON_DEPTH = 64

MAX_NUMBER_DIGITS = 308      # beyond, a number is outside a double's range

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# An escape that may decode to a forbidden control character (\b, \f, \u0000-\u0008, \u000b,
# \u000c, \u000e-\u001f) or to a surrogate (\ud800-\udfff). It may also match after an escaped
# backslash, and a valid surrogate pair decodes to one character: the walk decides.
_SUSPECT_ESCAPE = re.compile(r"\\(?:[bf]|u00(?:0[0-8bcefBCEF]|1[0-9a-fA-F])|u[dD][89a-fA-F])")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = {ord(c): None for c in map(chr, range(128)) if c not in "[]{}"}
_STRUCTURE = {ord(c): None for c in map(chr, range(128)) if c not in '[]{}"\\'}
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _refuse_constant(name: str) -> Any:
    raise BadRequest(f"The body is not valid JSON: {name} is not a JSON number", code="structure")


def parse_json(body: bytes | str) -> dict[str, Any]:
    """Parse a request body as a JSON object and run check_content() on it.

    Raises BadRequest if it is not JSON, not an object, too deep, holds NaN/Infinity or a lone
    surrogate; Unprocessable for a control character or a number no double can hold.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_int=_parse_int, parse_float=_parse_float)
    except RecursionError as exc:
        raise BadRequest(f"The body is nested deeper than {MAX_JSON_DEPTH} levels", code="too-costly") from exc
    except _OutOfRange as exc:
        raise Unprocessable(f"The number {exc} is outside the range this server can hold", code="value") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}", code="structure") from exc
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object (a FHIR resource)", code="structure")
    raw_surrogate = isinstance(body, str) and _SURROGATE.search(body)
    if raw_surrogate or _depth(text) > MAX_JSON_DEPTH or _SUSPECT_ESCAPE.search(text):
        check_content(data)   # names the fault (a surrogate pair flagged above passes)
    return data


class _OutOfRange(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _OutOfRange(f"{text[:20]}... ({len(text)} digits)")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _OutOfRange(text[:40])
    return value


def _depth(text: str) -> int:
    """How deep the JSON text nests (objects and arrays), from its brackets outside strings."""
    # Only brackets, quotes and backslashes decide it: keep those (and the non-ASCII text of
    # strings, which translate leaves), cut out the strings, count what remains.
    brackets = _JSON_STRING.sub("", text.translate(_STRUCTURE)).translate(_BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def check_content(data: Any) -> None:
    """Walk parsed JSON once and refuse what the module docstring lists.

    Raises BadRequest (depth, lone surrogate) or Unprocessable (control character, number
    out of range), the issue located by a FHIRPath-like path ('Patient.name[0].family').
    """
    root = data.get("resourceType") if isinstance(data, dict) else None
    stack: list[tuple[Any, str, int]] = [(data, root if isinstance(root, str) and root.isalnum() else "$", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_string(value, path)
        elif isinstance(value, dict):
            _check_depth(depth, path)
            for key, item in value.items():
                _check_string(key, f"{path} (a key)")
                stack.append((item, f"{path}.{key}", depth + 1))
        elif isinstance(value, list):
            _check_depth(depth, path)
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise Unprocessable(f"{path}: the number is outside the range this server can hold",
                                code="value", expression=[path])
        elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1023:
            raise Unprocessable(f"{path}: the number is outside the range this server can hold",
                                code="value", expression=[path])


def has_control_character(text: str) -> bool:
    """Whether text holds a character FHIR strings forbid (below U+0020 but tab, CR, LF)."""
    return _CONTROL.search(text) is not None


def _check_depth(depth: int, path: str) -> None:
    if depth > MAX_JSON_DEPTH:
        raise BadRequest(f"The body is nested deeper than {MAX_JSON_DEPTH} levels (at {path})",
                         code="too-costly", expression=[path])


def _check_string(text: str, path: str) -> None:
    if _SURROGATE.search(text):
        raise BadRequest(f"{path}: a lone UTF-16 surrogate is not a character", code="structure",
                         expression=[path])
    if _CONTROL.search(text):
        raise Unprocessable(f"{path}: FHIR strings may not contain control characters other than "
                            "tab, CR and LF", code="value", expression=[path])
