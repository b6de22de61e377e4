"""The clinical package stays pure, and reads the repository's own examples."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

from service.clinical import assess
from service.fhir.profiles import default_directory


def test_imports_no_framework():
    # service/__init__.py (the app factory) may import Flask; service.clinical adds nothing of it.
    code = ("import sys, service, service.fhir.canonical, service.fhir.errors, service.fhir.references, "
            "service.fhir.terminology; before = set(sys.modules); "
            "import service.clinical; new = set(sys.modules) - before; "
            "bad = sorted(m for m in new if not m.startswith(('service.clinical', 'dateutil', 'six')) "
            "and m.split('.')[0] not in sys.stdlib_module_names); "
            "print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


EXAMPLES = default_directory() / "examples"


def test_profile_examples_are_read(guide_terminology):
    resources = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))]
    a = assess(resources, date(2024, 6, 1), guide_terminology)
    hips = [e for e in a.episodes if (e.joint, e.side) == ("hip", "left")]
    assert len(hips) == 1, a.episodes
    assert "Observation/toh-mri-left-hip" in hips[0].evidence      # MRI side from the LOINC code
    assert "avn-features" not in a.flag_codes()                      # reported absent
    assert not [i for i in a.issues if i.severity == "error"], a.issues
