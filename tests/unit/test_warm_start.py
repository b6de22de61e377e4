"""A worker does its one-off work before the first request: the service's gunicorn worker
(service.gunicorn_worker) builds the R4 models of routine content (service.fhir.resources.
warm_models) and freezes what the application built out of the garbage collector's sight."""
from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest

from service import gunicorn_worker
from service.fhir import resources
from service.fhir.resources import ROUTINE_TYPES, warm_models

# Validate an Encounter and an Observation with nested element types (in a fresh interpreter,
# so that no other test has imported the models already), and print the model modules that
# validating them imported.
PROBE = """
import json, sys
from service.fhir.resources import validate, warm_models
if sys.argv[1] == "warm":
    warm_models()
before = {m for m in sys.modules if m.startswith("fhir.resources.R4B.")}
for resource in json.loads(sys.argv[2]):
    validate(resource)
print(json.dumps(sorted({m for m in sys.modules if m.startswith("fhir.resources.R4B.")} - before)))
"""

CONTENT = [
    {"resourceType": "Encounter", "status": "finished",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
     "hospitalization": {"dischargeDisposition": {"text": "home"}},
     "location": [{"location": {"reference": "Location/l1"}, "period": {"start": "2026-01-05"}}]},
    {"resourceType": "Observation", "status": "final", "code": {"text": "MRI hip"},
     "component": [{"code": {"text": "oedema"}, "valueCodeableConcept": {"text": "present"}}],
     "referenceRange": [{"low": {"value": 1, "unit": "mm"}}], "note": [{"text": "left hip"}]},
]


def imported_while_validating(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode, json.dumps(CONTENT)], capture_output=True,
                         text=True, timeout=120, check=True)
    return list(json.loads(out.stdout))


def test_after_warm_models_validating_routine_content_builds_no_model() -> None:
    assert imported_while_validating("cold"), "without the warm-up, validation builds models on first use"
    assert imported_while_validating("warm") == []


def test_warm_models_reaches_the_element_types_and_is_idempotent() -> None:
    reached = warm_models()
    assert reached > len(ROUTINE_TYPES)      # CodeableConcept, Reference, Period, backbone elements...
    assert warm_models() == reached


def test_the_worker_warms_the_models_then_freezes_what_was_built(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    monkeypatch.setattr(gunicorn_worker.ThreadWorker, "load_wsgi", lambda self: done.append("loaded"))
    monkeypatch.setattr(resources, "warm_models", lambda: done.append("warmed") or 0)
    worker = object.__new__(gunicorn_worker.OutcomeThreadWorker)
    try:
        gunicorn_worker.OutcomeThreadWorker.load_wsgi(worker)
        assert done == ["loaded", "warmed"]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
