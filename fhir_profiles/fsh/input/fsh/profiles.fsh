Profile: TOHCondition
Parent: Condition
Id: toh-condition
Title: "TOH Condition"
Description: "A diagnosis of transient osteoporosis of the hip, bone marrow oedema syndrome, transient regional or regional migratory osteoporosis at one joint and side: one episode that the service follows to resolution. Resolved means clinicalStatus resolved with abatement[x] the date of resolution."
* obeys toh-cond-1
* clinicalStatus 1..1 MS
* verificationStatus MS
* code 1..1 MS
* code from $VS-toh-conditions (required)
* subject only Reference(Patient)
* bodySite 1..* MS
* insert JointAndSide
* onset[x] 1..1 MS
* onset[x] only dateTime or Period
* abatement[x] MS
* abatement[x] only dateTime or Period

Profile: TOHMRIObservation
Parent: Observation
Id: toh-mri-observation
Title: "TOH MRI Observation"
Description: "The report of an MRI of a tracked joint: one component per finding, with the finding's local code and valueBoolean true when present, false when reported absent."
* obeys toh-mri-1
* insert PatientObservation
* category 1..* MS
* category ^slicing.discriminator.type = #pattern
* category ^slicing.discriminator.path = "$this"
* category ^slicing.rules = #open
* category contains imaging 1..1 MS
* category[imaging] = $obs-category#imaging
* code MS
* code from $VS-mri-joint-codes (required)
* bodySite 1..1
* insert JointAndSide
* component 1..* MS
* component.code MS
* component.code from $VS-mri-findings (required)
* component.value[x] 1..1 MS
* component.value[x] only boolean

Profile: TOHPainScore
Parent: Observation
Id: toh-pain-score
Title: "TOH pain score"
Description: "Pain severity on a 0-10 verbal numeric rating scale (LOINC 72514-3)."
* obeys toh-pain-1
* insert PatientObservation
* code MS
* code = $LNC#72514-3
* value[x] 1..1 MS
* value[x] only Quantity
* valueQuantity.value 1..1 MS

Profile: TOHWeightBearingStatus
Parent: Observation
Id: toh-weight-bearing-status
Title: "TOH weight-bearing status"
Description: "The weight-bearing instructed or practised on the affected limb: non, partial (protected, with crutches) or full. bodySite, when present, names the joint and side."
* insert PatientObservation
* code MS
* code = $TOH#weight-bearing-status
* value[x] 1..1 MS
* value[x] only CodeableConcept
* valueCodeableConcept from $VS-weight-bearing (required)
* insert JointAndSide

Profile: TOHPregnancyStatus
Parent: Observation
Id: toh-pregnancy-status
Title: "TOH pregnancy status"
Description: "Pregnancy status (LOINC 82810-3); the value is SNOMED CT 77386006 pregnant or 60001007 not pregnant."
* insert PatientObservation
* code MS
* code = $LNC#82810-3
* value[x] 1..1 MS
* value[x] only CodeableConcept
* valueCodeableConcept from $VS-pregnancy-status-values (extensible)

Profile: TOHBreastfeedingStatus
Parent: Observation
Id: toh-breastfeeding-status
Title: "TOH breastfeeding status"
Description: "Breastfeeding status (LOINC 63895-7); the value SNOMED CT 413712001 breastfeeding (mother) means the patient is breastfeeding."
* insert PatientObservation
* code MS
* code = $LNC#63895-7
* value[x] 1..1 MS
* value[x] only CodeableConcept

Profile: TOHCarePlan
Parent: CarePlan
Id: toh-careplan
Title: "TOH CarePlan"
Description: "The follow-up plan of one TOH episode, instantiating the TOH follow-up protocol; period.start is the episode's onset."
* instantiatesCanonical MS
* status MS
* intent MS
* category 1..* MS
* category ^slicing.discriminator.type = #pattern
* category ^slicing.discriminator.path = "$this"
* category ^slicing.rules = #open
* category contains toh 1..1 MS
* category[toh] = $TOH#toh-follow-up-plan
* subject MS
* subject only Reference(Patient)
* period 1..1 MS
* period.start 1..1 MS
* addresses 1..* MS
* addresses only Reference(Condition)
* activity MS

Profile: TOHFollowUpTask
Parent: Task
Id: toh-followup-task
Title: "TOH follow-up Task"
Description: "One scheduled review or repeat MRI of a TOH episode. restriction.period.end is the due date; instantiatesUri names the protocol action (PlanDefinition url#action-id)."
* instantiatesUri MS
* basedOn 1..* MS
* basedOn only Reference(CarePlan)
* status MS
* intent MS
* code 1..1 MS
* code from $VS-followup-task-codes (required)
* focus 1..1 MS
* focus only Reference(Condition)
* for 1..1 MS
* for only Reference(Patient)
* restriction 1..1 MS
* restriction.period 1..1 MS
* restriction.period.end 1..1 MS
* restriction.period.end ^short = "Due date"

Profile: TOHFlag
Parent: Flag
Id: toh-flag
Title: "TOH Flag"
Description: "A flag raised by the TOH rules. The flag-detail extension references the evidence it was derived from."
* extension contains $flag-detail named detail 0..* MS
* status MS
* category 1..* MS
* category ^slicing.discriminator.type = #pattern
* category ^slicing.discriminator.path = "$this"
* category ^slicing.rules = #open
* category contains clinical 1..1 MS
* category[clinical] = $flag-category#clinical
* code MS
* code from $VS-toh-flags (required)
* subject MS
* subject only Reference(Patient)
* period 1..1 MS
* period.start 1..1 MS
