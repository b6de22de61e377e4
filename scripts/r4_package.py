"""Fetch the FHIR R4 example package (hl7.fhir.r4.examples@4.0.1) with npm, for the generators."""
from __future__ import annotations

import os
import subprocess
import tarfile

PACKAGE = "hl7.fhir.r4.examples@4.0.1"


def unpack(dest: str) -> str:
    """``npm pack`` the examples package into dest and return the unpacked package folder.

    Raises subprocess.CalledProcessError when npm fails.
    """
    out = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=dest, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    with tarfile.open(os.path.join(dest, out)) as tar:
        tar.extractall(dest, filter="data")
    return os.path.join(dest, "package")
