"""Subsets of a resource for ``_summary`` and ``_elements`` (https://hl7.org/fhir/R4/search.html#summary
and #elements), from the R4 element flags in element-flags.json (scripts/build_element_flags.py).

    summarize(resource, "true" | "text" | "data") -> the summary view, tagged SUBSETTED
    select_elements(resource, ("code", ...))     -> those elements and the mandatory ones, tagged

Pure functions over the resource's JSON dict; the input is not changed.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).with_name("element-flags.json")
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
SUMMARY_MODES = ("true", "text", "data")
_ALWAYS_KEPT = frozenset({"resourceType", "id", "meta"})


@functools.lru_cache(maxsize=1)
def _flags() -> dict[str, Any]:
    with open(DATA_FILE, encoding="utf-8") as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


def mandatory_elements(res_type: str) -> tuple[str, ...]:
    """The top-level elements of res_type with a minimum cardinality of 1 ('value[x]' for a choice)."""
    return tuple(_flags().get(res_type, {}).get("mandatory", ()))


def _matches(key: str, name: str) -> bool:
    """Does the JSON property key (or its primitive extension '_key') stand for element name?"""
    key = key[1:] if key.startswith("_") else key
    if name.endswith("[x]"):
        stem = name[:-3]
        return key.startswith(stem) and len(key) > len(stem) and key[len(stem)].isupper()
    return key == name


def _kept(key: str, names: Iterable[str]) -> str | None:
    return next((n for n in names if _matches(key, n)), None)


def _tagged(resource: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    out = {"resourceType": resource.get("resourceType"), **{k: v for k, v in kept.items() if k != "resourceType"}}
    meta = dict(resource.get("meta") or {})
    meta["tag"] = list(meta.get("tag") or []) + [SUBSETTED]
    out["meta"] = meta
    return out


def _summary_of(value: Any, tree: dict[str, Any]) -> Any:
    """value (an object or a list of them) with only the summary children of tree."""
    if isinstance(value, list):
        return [_summary_of(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        name = _kept(key, tree)
        if name is not None:
            sub = tree[name]
            out[key] = item if sub is None else _summary_of(item, sub)
    return out


def summarize(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """The _summary view of resource, tagged SUBSETTED:

    true  the elements marked summary in the R4 definition (recursively in backbone elements)
    text  text, id, meta and the top-level mandatory elements
    data  everything but text

    Raises ValueError for another mode.
    """
    res_type = str(resource.get("resourceType"))
    if mode == "true":
        tree = _flags().get(res_type, {}).get("summary") or {}
        return _tagged(resource, _summary_of(resource, tree))
    if mode == "text":
        names = ("text", *mandatory_elements(res_type))
        return _tagged(resource, {k: v for k, v in resource.items()
                                  if k in _ALWAYS_KEPT or _kept(k, names) is not None})
    if mode == "data":
        return _tagged(resource, {k: v for k, v in resource.items() if k not in ("text", "_text")})
    raise ValueError(f"not a _summary mode: {mode!r}")


def select_elements(resource: dict[str, Any], elements: Iterable[str]) -> dict[str, Any]:
    """resource with only the top-level elements asked for (a choice element by its name
    without [x], e.g. 'value'), plus id, meta and the mandatory elements, which servers
    SHOULD always return; tagged SUBSETTED."""
    res_type = str(resource.get("resourceType"))
    choices = set(_flags().get(res_type, {}).get("choices", ()))
    wanted = {e if e + "[x]" not in choices else e + "[x]" for e in elements}
    wanted.update(mandatory_elements(res_type))
    kept = {k: v for k, v in resource.items() if k in _ALWAYS_KEPT or _kept(k, wanted) is not None}
    return _tagged(resource, kept)
