"""The clinical engine: TOH episodes over time and the flags a clinician must not miss.

Pure functions over plain FHIR JSON dicts and a clinical date: imports only the standard
library, python-dateutil and service.fhir. Nothing here reads a clock or a store.

    guide = Conformance.load()                          # service.fhir.profiles, once per process
    terminology = Terminology.from_value_sets(guide.terminology.value_sets)
    assessment = assess(resources, as_of, terminology)  # Assessment(episodes, flags, issues)
    assessment_to_parameters(assessment)                # GET Patient/{id}/$toh-assessment
    changes = reconcile_flags(assessment.flags, stored_flags, as_of)
    for finding in changes.create: store flag_resource(finding, "Patient/123")
    for flag in changes.update + changes.deactivate: store flag (an update of that id)

Modules: terminology (ValueSet membership), anatomy (joint and side), dates, facts (resources
-> facts), episodes, rules (one function per flag family), assess, fhir_output, reconcile.
"""
from __future__ import annotations

from .assess import assess, parse_as_of
from .fhir_output import assessment_to_parameters, flag_resource
from .model import Assessment, AssessmentIssue, Episode, FlagFinding
from .reconcile import FlagChanges, flag_key, reconcile_flags
from .rules import next_time_change
from .terminology import Terminology

__all__ = [
    "Assessment", "AssessmentIssue", "Episode", "FlagChanges", "FlagFinding", "Terminology",
    "assess", "assessment_to_parameters", "flag_key", "flag_resource", "next_time_change",
    "parse_as_of", "reconcile_flags",
]
