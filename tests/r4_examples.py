"""The official FHIR R4 example resources (npm package hl7.fhir.r4.examples@4.0.1).

Fetched once with `npm pack` into .cache/ (or taken from $TOH_R4_EXAMPLES).
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tarfile
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGE = "hl7.fhir.r4.examples@4.0.1"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "hl7.fhir.r4.examples-4.0.1"


@lru_cache(maxsize=1)
def examples_dir() -> Path:
    """The unpacked package folder; runs `npm pack` the first time (raises if npm fails)."""
    configured = os.environ.get("TOH_R4_EXAMPLES")
    if configured:
        return Path(configured)
    package = CACHE / "package"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:  # test processes running side by side fetch it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (package / "package.json").exists():
            out = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=CACHE, check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            with tarfile.open(CACHE / out) as tar:
                tar.extractall(CACHE, filter="data")
    return package


def examples(resource_type: str) -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every example of resource_type in the package."""
    found = []
    for path in sorted(examples_dir().glob(f"{resource_type}-*.json")):
        resource = json.loads(path.read_text())
        if resource.get("resourceType") == resource_type:
            found.append((path.name, resource))
    return found
