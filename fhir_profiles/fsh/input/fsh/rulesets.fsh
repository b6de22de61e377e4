// bodySite: one coding of the joint (tracked-joints); the side preferably in the laterality
// extension, also accepted as a second SNOMED laterality coding or readable bodySite.text.
RuleSet: JointAndSide
* bodySite MS
* bodySite obeys toh-bodysite-1
* bodySite.extension contains Laterality named laterality 0..1 MS
* bodySite.coding 1..* MS
* bodySite.coding ^slicing.discriminator.type = #value
* bodySite.coding ^slicing.discriminator.path = "$this"
* bodySite.coding ^slicing.rules = #open
* bodySite.coding ^slicing.description = "The joint, and optionally the side as a second coding"
* bodySite.coding contains joint 1..1 MS and side 0..1 MS
* bodySite.coding[joint] from $VS-tracked-joints (required)
* bodySite.coding[joint] ^short = "The joint (SNOMED CT body structure from tracked-joints)"
* bodySite.coding[side] from $VS-laterality (required)
* bodySite.coding[side] ^short = "The side, when not given in the laterality extension"
* bodySite.text MS

RuleSet: PatientObservation
* status MS
* subject 1..1 MS
* subject only Reference(Patient)
* effective[x] 1..1 MS
* effective[x] only dateTime or Period

Invariant: toh-bodysite-1
Description: "The side of the body site should be given: a laterality extension, a laterality coding, or bodySite.text naming the side"
Severity: #warning
Expression: "extension('https://fhir.toh-service.org/StructureDefinition/laterality').exists() or coding.where(system = 'http://snomed.info/sct' and (code = '7771000' or code = '24028007' or code = '51440002')).exists() or (text.exists() and text.lower().matches('left|right|bilateral|both'))"

Invariant: toh-cond-1
Description: "A resolved TOH condition must carry its abatement (the date of resolution)"
Severity: #error
Expression: "clinicalStatus.coding.where(system = 'http://terminology.hl7.org/CodeSystem/condition-clinical' and code = 'resolved').exists() implies abatement.exists()"

Invariant: toh-mri-1
Description: "Each MRI finding is reported at most once"
Severity: #error
Expression: "component.code.coding.where(system = 'https://fhir.toh-service.org/CodeSystem/toh').code.isDistinct()"

Invariant: toh-pain-1
Description: "The pain score is a number from 0 to 10"
Severity: #error
Expression: "value.ofType(Quantity).value.all($this >= 0 and $this <= 10)"
