"""Build service/fhir/element-flags.json: which elements of each R4 resource type are in its
summary (``isSummary``), which top-level elements are mandatory (``min`` >= 1) and which
top-level elements are choices (``value[x]``).

Read by service/fhir/subsetting.py for ``_summary`` and ``_elements``
(https://hl7.org/fhir/R4/search.html#summary, #elements). The base StructureDefinitions come
from the npm package ``hl7.fhir.r4.examples@4.0.1``. The output:

    {"Observation": {"summary": {"id": null, "status": null, "value[x]": null,
                                 "component": {"code": null, "value[x]": null, ...}, ...},
                     "mandatory": ["code", "status"],
                     "choices": ["effective[x]", "value[x]"]}, ...}

A summary element maps to null (kept whole) or, for a backbone element with summary children
of its own, to those children (kept recursively). ``value[x]`` stands for every JSON name of
a choice element (valueQuantity, valueString...).

    python scripts/build_element_flags.py              # .cache/ package, else npm pack
    python scripts/build_element_flags.py --package /tmp/r4ex/package

Raises SystemExit when npm fails or the package does not hold the expected definitions.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from build_required_codes import load  # scripts/ is on sys.path when a script runs
from r4_package import unpack

ROOT = Path(__file__).resolve().parent.parent
CACHED = ROOT / ".cache" / "hl7.fhir.r4.examples-4.0.1" / "package"
OUT = ROOT / "service" / "fhir" / "element-flags.json"


def flags(sd: dict[str, Any]) -> dict[str, Any]:
    """The summary tree and the top-level mandatory elements of one resource type."""
    root = sd["type"]
    elements = sd["snapshot"]["element"]
    summary: dict[str, Any] = {}
    nodes: dict[str, dict[str, Any] | None] = {root: summary}
    mandatory, choices = [], []
    for e in elements[1:]:
        path: str = e["path"]
        parent, _, name = path.rpartition(".")
        if parent == root and e.get("min", 0) >= 1:
            mandatory.append(name)
        if parent == root and name.endswith("[x]"):
            choices.append(name)
        holder = nodes.get(parent)
        if holder is None or not e.get("isSummary"):
            continue
        holder[name] = None
        if any(t.get("code") in ("BackboneElement", "Element") for t in e.get("type", ())):
            children: dict[str, Any] = {}
            nodes[path] = children
            holder[name] = children
    return {"summary": _prune(summary), "mandatory": sorted(mandatory), "choices": sorted(choices)}


def _prune(tree: dict[str, Any]) -> dict[str, Any]:
    """A backbone element without summary children of its own is kept whole (null)."""
    return {k: (_prune(v) or None) if isinstance(v, dict) else None for k, v in tree.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", help="an unpacked hl7.fhir.r4.examples package folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        package = args.package or (str(CACHED) if CACHED.is_dir() else unpack(tmp))
        out = {}
        for sd in load(package, "StructureDefinition"):
            if sd.get("kind") == "resource" and sd.get("derivation") == "specialization" \
                    and not sd.get("abstract"):
                out[sd["type"]] = flags(sd)
    if "Observation" not in out or len(out) < 140:
        raise SystemExit(f"the package holds only {len(out)} resource definitions")
    OUT.write_text(json.dumps(out, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(out)} resource types)")


if __name__ == "__main__":
    main()
