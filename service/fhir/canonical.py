"""Canonical URLs of the TOH implementation guide (fhir_profiles/) and of the code systems used."""
from __future__ import annotations

IG = "https://fhir.toh-service.org"

# Local CodeSystem for concepts with no verified standard code (see shared/clinical/TOH.md).
TOH_CODES = f"{IG}/CodeSystem/toh"

# ValueSets the clinical rules read (a clinic adds codes by editing these, not code).
VS_TOH_CONDITIONS = f"{IG}/ValueSet/toh-conditions"
VS_TRACKED_JOINTS = f"{IG}/ValueSet/tracked-joints"
VS_LATERALITY = f"{IG}/ValueSet/laterality"
VS_AVN_FEATURES = f"{IG}/ValueSet/avn-features"
VS_INSUFFICIENCY_FRACTURE = f"{IG}/ValueSet/insufficiency-fracture-findings"
VS_BISPHOSPHONATES = f"{IG}/ValueSet/bisphosphonates"
VS_PREGNANCY_BREASTFEEDING = f"{IG}/ValueSet/pregnancy-breastfeeding-findings"
VS_PREGNANCY_ENDED = f"{IG}/ValueSet/pregnancy-ended-findings"
VS_MRI_HIP = f"{IG}/ValueSet/mri-joint-codes"
VS_WEIGHT_BEARING = f"{IG}/ValueSet/weight-bearing-status"
VS_MRI_FINDINGS = f"{IG}/ValueSet/mri-findings"
VS_TOH_FLAGS = f"{IG}/ValueSet/toh-flags"
VS_PREGNANCY_STATUS_VALUES = f"{IG}/ValueSet/pregnancy-status-values"
VS_FOLLOWUP_TASK_CODES = f"{IG}/ValueSet/followup-task-codes"

# Extensions
EXT_LATERALITY = f"{IG}/StructureDefinition/laterality"
EXT_FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
# A Subscription's Standard Webhooks signing secret (write-only: never stored in the resource)
EXT_SUBSCRIPTION_SECRET = f"{IG}/StructureDefinition/subscription-secret"
# Who made a Subscription (the token subject); set by the service
EXT_SUBSCRIPTION_OWNER = f"{IG}/StructureDefinition/subscription-owner"
# Subscriptions R4 Backport IG (http://hl7.org/fhir/uv/subscriptions-backport)
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
BACKPORT_PAYLOAD_CONTENT = f"{BACKPORT}/StructureDefinition/backport-payload-content"
BACKPORT_STATUS_R4 = f"{BACKPORT}/StructureDefinition/backport-subscription-status-r4"
BACKPORT_NOTIFICATION_R4 = f"{BACKPORT}/StructureDefinition/backport-subscription-notification-r4"

# Profiles
SD_TOH_CONDITION = f"{IG}/StructureDefinition/toh-condition"
SD_TOH_MRI = f"{IG}/StructureDefinition/toh-mri-observation"
SD_PAIN_SCORE = f"{IG}/StructureDefinition/toh-pain-score"
SD_WEIGHT_BEARING = f"{IG}/StructureDefinition/toh-weight-bearing-status"
SD_PREGNANCY_STATUS = f"{IG}/StructureDefinition/toh-pregnancy-status"
SD_BREASTFEEDING_STATUS = f"{IG}/StructureDefinition/toh-breastfeeding-status"
SD_TOH_CAREPLAN = f"{IG}/StructureDefinition/toh-careplan"
SD_TOH_FOLLOWUP_TASK = f"{IG}/StructureDefinition/toh-followup-task"
SD_TOH_FLAG = f"{IG}/StructureDefinition/toh-flag"

PD_TOH_PROTOCOL = f"{IG}/PlanDefinition/toh-follow-up-protocol"

# Identifier system of the stable key of a rule-raised Flag (service/clinical reconcile_flags):
# one Flag per patient and key.
FLAG_KEY_SYSTEM = f"{IG}/NamingSystem/toh-flag-key"

# Standard systems
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ATC = "http://www.whocc.no/atc"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
