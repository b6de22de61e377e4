"""Build service/fhir/search/search-parameters.json from the official R4 SearchParameters.

The FHIR R4 (4.0.1) npm package ``hl7.fhir.r4.examples`` carries the 1,400 SearchParameter
definitions of the specification and the Patient CompartmentDefinition. This script keeps what
the search engine needs (code, type, bases, FHIRPath expression, targets, modifiers,
comparators, multipleOr/And, components, per-type documentation) in one compact JSON file that
is vendored with the service, so the runtime never needs npm.

    python scripts/build_search_parameters.py              # npm pack into a temp dir
    python scripts/build_search_parameters.py --package /tmp/r4ex/package   # already unpacked

Raises SystemExit when npm fails or the package does not hold the expected definitions.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from r4_package import PACKAGE, unpack  # scripts/ is on sys.path when a script runs
OUT = Path(__file__).resolve().parent.parent / "service" / "fhir" / "search" / "search-parameters.json"
_DOC_LINE = re.compile(r"^\*\s*\[(\w+)\]\([^)]*\):\s*(.*)$")


def documentation(sp: dict[str, Any]) -> dict[str, str] | str:
    """Per-type lines of a multi-resource description, or the description itself."""
    text = (sp.get("description") or "").replace("\r", "")
    per_type = {}
    for line in text.split("\n"):
        m = _DOC_LINE.match(line.strip())
        if m:
            per_type[m.group(1)] = m.group(2).strip()
    return per_type or text.strip()


def compact(sp: dict[str, Any]) -> dict[str, Any]:
    """The fields of one SearchParameter that the search engine uses."""
    out: dict[str, Any] = {
        "url": sp["url"], "code": sp["code"], "type": sp["type"], "base": sp["base"],
        "expression": sp["expression"], "doc": documentation(sp),
    }
    for key in ("target", "modifier", "comparator", "multipleOr", "multipleAnd", "chain"):
        if key in sp:
            out[key] = sp[key]
    if "component" in sp:
        out["component"] = [{"definition": c["definition"], "expression": c["expression"]}
                            for c in sp["component"]]
    return out


def build(package_dir: str) -> dict[str, Any]:
    """Read the package folder and return the compact definitions document."""
    params, skipped = [], []
    for path in sorted(glob.glob(os.path.join(package_dir, "SearchParameter-*.json"))):
        with open(path, encoding="utf-8") as f:
            sp = json.load(f)
        # Examples (experimental) and parameters without a FHIRPath expression or base
        # (_text, _content, _query, _filter, extension-defined ones) cannot be indexed.
        if sp.get("experimental") or not sp.get("expression") or not sp.get("base"):
            skipped.append(sp["id"])
            continue
        params.append(compact(sp))
    if len(params) < 1300:
        raise SystemExit(f"expected ~1380 SearchParameters, found {len(params)}")
    with open(os.path.join(package_dir, "CompartmentDefinition-patient.json"), encoding="utf-8") as f:
        cd = json.load(f)
    patient = {r["code"]: r["param"] for r in cd["resource"] if r.get("param")}
    return {
        "source": PACKAGE, "fhirVersion": "4.0.1",
        "skipped": skipped,
        "compartments": {"Patient": patient},
        "params": params,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--package", help="an unpacked package folder (skips npm pack)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        doc = build(args.package or unpack(tmp))
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {len(doc['params'])} search parameters to {args.out}")


if __name__ == "__main__":
    main()
