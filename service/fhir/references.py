"""FHIR references and logical ids: `Type/id`, `Type/id/_history/n`, absolute URLs.

Shared by search (indexing and query parsing) and the clinical rules, so both read a
Reference.reference the same way (https://hl7.org/fhir/R4/references.html#literal).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


@dataclass(frozen=True)
class Ref:
    """A parsed reference: a local target (type and id) and/or an absolute URL."""

    target_type: str | None = None
    target_id: str | None = None
    url: str | None = None


@lru_cache(maxsize=8192)
def parse_reference(ref: str, base_urls: tuple[str, ...] = ()) -> Ref | None:
    """Parse a Reference.reference (or a canonical/uri) into a Ref.

    'Patient/1', 'Patient/1/_history/2' and '<one of base_urls>/Patient/1' are local;
    other absolute URLs and 'urn:uuid:...' are kept as url; '#contained' gives None.
    Remembers its last 8,192 answers (a Ref is immutable): a bundle names its patient and
    encounters on nearly every resource, and the index, the rules and Provenance each read them.
    """
    ref = ref.strip()
    if not ref or ref.startswith("#"):
        return None
    for base in base_urls:
        b = base.rstrip("/") + "/"
        if ref.startswith(b):
            local = _local(ref[len(b):])
            if local:
                return local
    if ":" in ref.split("/", 1)[0]:      # a scheme: http:, urn:, ...
        return Ref(url=ref.split("|", 1)[0])
    return _local(ref) or Ref(url=ref)


def _local(path: str) -> Ref | None:
    bits = path.split("/")
    if len(bits) in (2, 4) and _TYPE.match(bits[0]) and _ID.match(bits[1]) and (
            len(bits) == 2 or bits[2] == "_history"):
        return Ref(bits[0], bits[1])
    return None


def is_id(text: str) -> bool:
    """True if text is a valid FHIR logical id."""
    return bool(_ID.match(text))


def is_type_name(text: str) -> bool:
    return bool(_TYPE.match(text))
