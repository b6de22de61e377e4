"""Print the concrete R4 resource types from an unpacked hl7.fhir.r4.examples@4.0.1 package.

Usage: npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz
       python scripts/list_r4_types.py package/
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(folder: str) -> None:
    names = []
    for path in Path(folder).glob("StructureDefinition-*.json"):
        sd = json.loads(path.read_text())
        if sd.get("kind") == "resource" and sd.get("derivation") == "specialization" and not sd.get("abstract"):
            names.append(sd["type"])
    print("\n".join(sorted(names)))


if __name__ == "__main__":
    main(sys.argv[1])
