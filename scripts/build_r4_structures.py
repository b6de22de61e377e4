"""Build service/fhir/r4-structures.json: the element tables of the R4 resource types that
fhir.resources' R4B models lack or define differently (MedicinalProduct*, Substance* details,
the evidence syntheses, Evidence and EvidenceVariable), read from their R4 (4.0.1)
StructureDefinitions in the npm package ``hl7.fhir.r4.examples``.

The output, read by service/fhir/r4_structures.py:

    {"Evidence": {"Evidence.url": [0, "1", ["uri"]],
                  "Evidence.note": [0, "*", ["Annotation"]],
                  "Evidence.exposureVariant": [0, "*", ["Reference"]], ...},
     "MedicinalProduct": {..., "MedicinalProduct.name.namePart": [0, "*", ["BackboneElement"]],
                          "MedicinalProduct.name.namePart.part": [1, "1", ["string"]]}, ...}

SubstanceAmount, a data type these use that R4B dropped, is there too. Each element is
[min, max, types]; types are FHIR type codes (a primitive's System.String id is
given as 'string'), or ["#<path>"] for a contentReference.

    python scripts/build_r4_structures.py              # .cache/ package, else npm pack
    python scripts/build_r4_structures.py --package /tmp/r4ex/package

Raises SystemExit when the package does not hold the expected definitions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from r4_package import unpack  # scripts/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
CACHED = ROOT / ".cache" / "hl7.fhir.r4.examples-4.0.1" / "package"
OUT = ROOT / "service" / "fhir" / "r4-structures.json"
sys.path.insert(0, str(ROOT))


def _type_code(t: dict[str, Any]) -> str:
    for ext in t.get("extension") or ():
        if ext.get("url", "").endswith("structuredefinition-fhir-type"):
            return str(ext["valueUrl"])
    return str(t["code"])


def _has_r4b_model(type_code: str) -> bool:
    from fhir.resources.R4B import get_fhir_model_class
    try:
        get_fhir_model_class(type_code)
    except (KeyError, ValueError, ImportError, AttributeError):
        return False
    return True


def build(package_dir: str) -> dict[str, Any]:
    """The element tables of every type service.fhir.resources checks structurally, and of
    the complex data types they use that R4B dropped (SubstanceAmount)."""
    from service.fhir.resources import r4_only_types
    out: dict[str, Any] = {}
    todo = sorted(r4_only_types())
    while todo:
        res_type = todo.pop(0)
        if res_type in out:
            continue
        path = os.path.join(package_dir, f"StructureDefinition-{res_type}.json")
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing")
        with open(path, encoding="utf-8") as f:
            sd = json.load(f)
        table: dict[str, Any] = {}
        for element in sd["snapshot"]["element"][1:]:
            if "contentReference" in element:
                types = [element["contentReference"]]
            else:
                types = [_type_code(t) for t in element.get("type") or ()]
            table[element["path"]] = [element.get("min", 0), element.get("max", "*"), types]
            todo += [t for t in types if t[:1].isupper() and t not in out and not _has_r4b_model(t)]
        out[res_type] = table
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", help="an unpacked hl7.fhir.r4.examples@4.0.1 package folder")
    args = parser.parse_args()
    if args.package or (CACHED / "package.json").exists():
        document = build(args.package or str(CACHED))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            document = build(unpack(tmp))
    OUT.write_text(json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
