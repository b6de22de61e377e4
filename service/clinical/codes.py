"""Codes the clinical rules use that are not ValueSet memberships.

Membership questions ("is this a TOH diagnosis?", "is this a bisphosphonate?") are answered by
ValueSets through `Terminology`. What stays here is the fixed vocabulary of the service itself:
the flag codes of the local CodeSystem, the local MRI finding and weight-bearing codes (our own
CodeSystem, no clinic maps them), and the LOINC question codes of the status Observations.
"""
from __future__ import annotations

# Flag codes (local CodeSystem TOH_CODES) and the display the Flag carries.
MIGRATION = "migration"
RECURRENCE = "recurrence"
DELAYED_RESOLUTION = "delayed-resolution"
FAILURE_TO_RESOLVE = "failure-to-resolve"
AVN_FEATURES = "avn-features"
INSUFFICIENCY_FRACTURE = "insufficiency-fracture"
BISPHOSPHONATE_IN_PREGNANCY = "bisphosphonate-in-pregnancy"
FULL_WEIGHT_BEARING_ACTIVE_OEDEMA = "full-weight-bearing-active-oedema"

# Displays as in fhir_profiles/CodeSystem/CodeSystem-toh.json.
FLAG_DISPLAY: dict[str, str] = {
    MIGRATION: "Migration to another joint",
    RECURRENCE: "Recurrence at the same joint",
    DELAYED_RESOLUTION: "Delayed resolution",
    FAILURE_TO_RESOLVE: "Failure to resolve",
    AVN_FEATURES: "AVN features on MRI",
    INSUFFICIENCY_FRACTURE: "Insufficiency fracture",
    BISPHOSPHONATE_IN_PREGNANCY: "Bisphosphonate in pregnancy or breastfeeding",
    FULL_WEIGHT_BEARING_ACTIVE_OEDEMA: "Full weight-bearing during active oedema",
}

# Local MRI finding and weight-bearing codes (system TOH_CODES).
FINDING_OEDEMA = "bone-marrow-oedema-diffuse"
WEIGHT_BEARING_STATUS = "weight-bearing-status"
FULL_WEIGHT_BEARING = "full-weight-bearing"

# LOINC question codes of the status Observations.
LOINC_PREGNANCY_STATUS = "82810-3"
LOINC_BREASTFEEDING_STATUS = "63895-7"
LOINC_PAIN_SEVERITY = "72514-3"
