"""Build service/fhir/required-codes.json: the closed code lists of R4's required bindings.

fhir.resources does not check coded values, so this script reads the base StructureDefinitions
of FHIR R4 (4.0.1) from the npm package ``hl7.fhir.r4.examples`` and keeps, for every resource
and complex data type, the elements of type ``code`` whose binding is ``required``, with the
codes of the bound ValueSet expanded from the package's ValueSets and CodeSystems (whole code
systems with their nested concepts, concept lists, imported value sets, exclusions). Bindings
that cannot be expanded to a closed list from the package (mime types, UCUM, ISO currencies,
filters...) are skipped and counted.

The output, read by service/fhir/required_codes.py:

    {"valueSets": {"administrative-gender": ["female", "male", "other", "unknown"], ...},
     "types": {"Patient": {"codes": {"gender": "administrative-gender",
                                     "contact.gender": "administrative-gender", ...},
                           "types": {"name": "HumanName", "contact.telecom": "ContactPoint",
                                     "contained": "Resource", ...},
                           "refs": {}},
               "Questionnaire": {..., "refs": {"item.item": "item"}}, ...},
     "skipped": {"http://hl7.org/fhir/ValueSet/mimetypes": ["Attachment.contentType", ...]}}

Paths are relative to the type and use JSON property names (``valueQuantity`` for a choice
element). ``types`` names the complex data type of an element (or ``Resource`` for a nested
resource), listed only where that type has codes to check; ``refs`` are contentReferences.
``extension`` and ``modifierExtension`` (type Extension) are left out: every element has them.

    python scripts/build_required_codes.py              # .cache/ package, else npm pack
    python scripts/build_required_codes.py --package /tmp/r4ex/package

Raises SystemExit when npm fails or the package does not hold the expected definitions.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from r4_package import unpack  # scripts/ is on sys.path when a script runs
ROOT = Path(__file__).resolve().parent.parent
CACHED = ROOT / ".cache" / "hl7.fhir.r4.examples-4.0.1" / "package"
OUT = ROOT / "service" / "fhir" / "required-codes.json"
BASE = "http://hl7.org/fhir/StructureDefinition/"


class Unexpandable(Exception):
    """The ValueSet has no closed list of codes in the package."""


def load(package_dir: str, kind: str) -> list[dict[str, Any]]:
    """Every resource of the package stored in a file named ``<kind>-*.json``."""
    found = []
    for path in sorted(glob.glob(os.path.join(package_dir, f"{kind}-*.json"))):
        with open(path, encoding="utf-8") as f:
            resource = json.load(f)
        if resource.get("resourceType") == kind:
            found.append(resource)
    return found


def concept_codes(concepts: list[dict[str, Any]]) -> list[str]:
    """The codes of a CodeSystem's concepts, nested ones included."""
    codes = []
    for concept in concepts:
        codes.append(concept["code"])
        codes.extend(concept_codes(concept.get("concept", [])))
    return codes


class Expander:
    """Expands ValueSets by canonical URL from the package's ValueSets and CodeSystems."""

    def __init__(self, value_sets: list[dict[str, Any]], code_systems: list[dict[str, Any]]) -> None:
        self.value_sets = {vs["url"]: vs for vs in value_sets}
        self.code_systems = {cs["url"]: cs for cs in code_systems}
        self.cache: dict[str, frozenset[str]] = {}

    def expand(self, url: str) -> frozenset[str]:
        """The codes of the ValueSet at url; raises Unexpandable if it is not closed here."""
        url = url.split("|")[0]
        if url not in self.cache:
            vs = self.value_sets.get(url)
            if vs is None:
                raise Unexpandable(f"ValueSet {url} is not in the package")
            compose = vs.get("compose") or {}
            if not compose.get("include"):
                raise Unexpandable(f"ValueSet {url} has no compose.include")
            codes = set().union(*(self._part(part) for part in compose["include"]))
            for part in compose.get("exclude", []):
                codes -= self._part(part)
            self.cache[url] = frozenset(codes)
        return self.cache[url]

    def _part(self, part: dict[str, Any]) -> frozenset[str]:
        if part.get("filter"):
            raise Unexpandable(f"include of {part.get('system')} uses a filter")
        imported = [self.expand(v) for v in part.get("valueSet", [])]
        codes: set[str] | None = None
        if "concept" in part:
            codes = {c["code"] for c in part["concept"]}
        elif "system" in part:
            cs = self.code_systems.get(part["system"])
            if cs is None or cs.get("content") != "complete":
                raise Unexpandable(f"code system {part['system']} is not complete in the package")
            codes = set(concept_codes(cs.get("concept", [])))
        for other in imported:       # an include's parts intersect
            codes = set(other) if codes is None else codes & other
        return frozenset(codes or ())


def json_names(element: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """(JSON property path, type) for each type of an element: value[x] -> valueQuantity..."""
    types = element.get("type", [])
    if not path.endswith("[x]"):
        return [(path, t) for t in types]
    stem = path[:-3]
    return [(stem + t["code"][0].upper() + t["code"][1:], t) for t in types]


def type_table(sd: dict[str, Any], expander: Expander,
               value_sets: dict[str, list[str]], skipped: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """codes / types / refs of one StructureDefinition's snapshot (paths relative to the type)."""
    root = sd["type"]
    codes: dict[str, str] = {}
    types: dict[str, str] = {}
    refs: dict[str, str] = {}
    for element in sd["snapshot"]["element"]:
        full = element["path"]
        if "." not in full:
            continue
        rel = full.split(".", 1)[1]
        if rel.rsplit(".", 1)[-1] in ("extension", "modifierExtension"):
            continue                # every element may have them: the runtime adds them
        if "contentReference" in element:
            refs[rel] = element["contentReference"].lstrip("#").split(".", 1)[1]
            continue
        for name, t in json_names(element, rel):
            code = t["code"]
            binding = element.get("binding", {})
            if code == "code" and binding.get("strength") == "required" and binding.get("valueSet"):
                url = binding["valueSet"].split("|")[0]
                try:
                    allowed = expander.expand(url)
                except Unexpandable:
                    skipped.setdefault(url, []).append(f"{root}.{name}")
                    continue
                key = url.rsplit("/", 1)[-1]
                if value_sets.setdefault(key, sorted(allowed)) != sorted(allowed):
                    raise SystemExit(f"two ValueSets named {key}")
                codes[name] = key
            elif code == "Resource" or (code[:1].isupper() and code not in ("Element", "BackboneElement")):
                types[name] = code
    return {"codes": codes, "types": types, "refs": refs}


def prune(tables: dict[str, dict[str, dict[str, str]]]) -> None:
    """Drop the data-type links to types that have nothing to check, and such types."""
    useful = {"Resource"} | {name for name, t in tables.items() if t["codes"]}
    changed = True
    while changed:
        changed = False
        for name, table in tables.items():
            if name not in useful and any(t in useful for t in table["types"].values()):
                useful.add(name)
                changed = True
    for name in [n for n in tables if n not in useful]:
        del tables[name]
    for table in tables.values():
        table["types"] = {p: t for p, t in table["types"].items() if t in useful}


def build(package_dir: str) -> dict[str, Any]:
    """Read the package folder and return the required-codes document."""
    sds = [sd for sd in load(package_dir, "StructureDefinition")
           if sd.get("kind") in ("resource", "complex-type") and sd["url"] == BASE + sd["type"]
           and "snapshot" in sd]
    if len(sds) < 180:
        raise SystemExit(f"expected ~189 base StructureDefinitions, found {len(sds)}")
    expander = Expander(load(package_dir, "ValueSet"), load(package_dir, "CodeSystem"))
    value_sets: dict[str, list[str]] = {}
    skipped: dict[str, list[str]] = {}
    tables = {sd["type"]: type_table(sd, expander, value_sets, skipped)
              for sd in sorted(sds, key=lambda s: s["type"])}
    prune(tables)
    kept = sum(len(t["codes"]) for t in tables.values())
    dropped = sum(len(v) for v in skipped.values())
    if kept < 250:
        raise SystemExit(f"expected ~300 checkable required bindings, found {kept}")
    print(f"{kept} required code bindings vendored ({len(value_sets)} ValueSets) for "
          f"{len(tables)} types; {dropped} skipped ({len(skipped)} ValueSets not closed):")
    for url, where in sorted(skipped.items()):
        print(f"  {url}: {', '.join(where)}")
    return {"valueSets": dict(sorted(value_sets.items())), "types": tables,
            "skipped": dict(sorted(skipped.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", help="an unpacked hl7.fhir.r4.examples@4.0.1 package folder")
    args = parser.parse_args()
    if args.package or (CACHED / "package.json").exists():
        document = build(args.package or str(CACHED))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            document = build(unpack(tmp))
    OUT.write_text(json.dumps(document, separators=(",", ":"), sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
