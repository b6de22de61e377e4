// One valid example per profile. A woman in the third trimester of pregnancy with TOH of the
// left hip; onset 2024-03-10.

Instance: toh-patient-1
InstanceOf: Patient
Usage: #example
Title: "Example patient"
* name.family = "Example"
* name.given = "Anna"
* gender = #female
* birthDate = "1990-05-14"

Instance: toh-left-hip
InstanceOf: TOHCondition
Usage: #example
Title: "TOH of the left hip (active)"
* clinicalStatus = $condition-clinical#active
* verificationStatus = $condition-ver-status#confirmed
* code = $TOH#transient-osteoporosis-hip "Transient osteoporosis of the hip"
* code.coding[+] = $ICD10CM#M81.6 "Localized osteoporosis [Lequesne]"
* bodySite.coding[joint] = $SCT#24136001 "Hip joint structure"
* bodySite.extension[laterality].valueCodeableConcept = $SCT#7771000 "Left"
* bodySite.text = "Left hip"
* subject = Reference(Patient/toh-patient-1)
* onsetDateTime = "2024-03-10"
* recordedDate = "2024-03-20"

Instance: toh-mri-left-hip
InstanceOf: TOHMRIObservation
Usage: #example
Title: "MRI of the left hip: diffuse oedema and small effusion, no AVN features"
* status = #final
* category[imaging] = $obs-category#imaging
* code = $LNC#36020-6 "MR Hip - left"
* subject = Reference(Patient/toh-patient-1)
* effectiveDateTime = "2024-03-18"
* bodySite.coding[joint] = $SCT#24136001 "Hip joint structure"
* bodySite.coding[side] = $SCT#7771000 "Left"
* bodySite.text = "Left hip"
* component[0].code = $TOH#bone-marrow-oedema-diffuse "Diffuse bone marrow oedema"
* component[0].valueBoolean = true
* component[1].code = $TOH#joint-effusion "Joint effusion"
* component[1].valueBoolean = true
* component[2].code = $TOH#focal-subchondral-lesion "Focal subchondral lesion"
* component[2].valueBoolean = false
* component[3].code = $TOH#double-line-sign "Double-line sign"
* component[3].valueBoolean = false
* component[4].code = $TOH#crescent-sign "Crescent sign"
* component[4].valueBoolean = false
* component[5].code = $TOH#subchondral-fracture-line "Subchondral fracture line"
* component[5].valueBoolean = false

Instance: toh-pain-score-left-hip
InstanceOf: TOHPainScore
Usage: #example
Title: "Pain score 7/10"
* status = #final
* code = $LNC#72514-3 "Pain severity - 0-10 verbal numeric rating [Score] - Reported"
* subject = Reference(Patient/toh-patient-1)
* effectiveDateTime = "2024-03-20"
* valueQuantity = $UCUM#{score} "{score}"
* valueQuantity.value = 7

Instance: toh-weight-bearing-partial
InstanceOf: TOHWeightBearingStatus
Usage: #example
Title: "Partial weight-bearing on the left hip"
* status = #final
* code = $TOH#weight-bearing-status "Weight-bearing status"
* subject = Reference(Patient/toh-patient-1)
* effectiveDateTime = "2024-03-20"
* valueCodeableConcept = $TOH#partial-weight-bearing "Partial (protected) weight-bearing"
* bodySite.coding[joint] = $SCT#24136001 "Hip joint structure"
* bodySite.extension[laterality].valueCodeableConcept = $SCT#7771000 "Left"

Instance: toh-pregnancy-status
InstanceOf: TOHPregnancyStatus
Usage: #example
Title: "Pregnant"
* status = #final
* code = $LNC#82810-3 "Pregnancy status"
* subject = Reference(Patient/toh-patient-1)
* effectiveDateTime = "2024-03-20"
* valueCodeableConcept = $SCT#77386006 "Pregnant"

Instance: toh-breastfeeding-status
InstanceOf: TOHBreastfeedingStatus
Usage: #example
Title: "Breastfeeding"
* status = #final
* code = $LNC#63895-7 "Breastfeeding status"
* subject = Reference(Patient/toh-patient-1)
* effectiveDateTime = "2024-06-15"
* valueCodeableConcept = $SCT#413712001 "Breastfeeding (mother)"

Instance: toh-careplan-left-hip
InstanceOf: TOHCarePlan
Usage: #example
Title: "Follow-up plan of the left hip episode"
* instantiatesCanonical = "https://fhir.toh-service.org/PlanDefinition/toh-follow-up-protocol"
* status = #active
* intent = #plan
* category[toh] = $TOH#toh-follow-up-plan "TOH follow-up plan"
* subject = Reference(Patient/toh-patient-1)
* period.start = "2024-03-10"
* addresses = Reference(Condition/toh-left-hip)
* activity[0].detail.kind = #ServiceRequest
* activity[0].detail.code = $TOH#protected-weight-bearing "Protected weight-bearing with crutches"
* activity[0].detail.status = #in-progress
* activity[1].reference = Reference(Task/toh-review-6w-left-hip)

Instance: toh-review-6w-left-hip
InstanceOf: TOHFollowUpTask
Usage: #example
Title: "6-week review of the left hip episode"
* instantiatesUri = "https://fhir.toh-service.org/PlanDefinition/toh-follow-up-protocol#review-6w"
* basedOn = Reference(CarePlan/toh-careplan-left-hip)
* status = #requested
* intent = #order
* code = $TOH#follow-up-review "TOH follow-up review"
* focus = Reference(Condition/toh-left-hip)
* for = Reference(Patient/toh-patient-1)
* authoredOn = "2024-03-20"
* restriction.period.start = "2024-04-21"
* restriction.period.end = "2024-04-21"

Instance: toh-flag-bisphosphonate-in-pregnancy
InstanceOf: TOHFlag
Usage: #example
Title: "Bisphosphonate planned while pregnant"
* extension[detail].valueReference = Reference(Observation/toh-pregnancy-status)
* status = #active
* category[clinical] = $flag-category#clinical "Clinical"
* code = $TOH#bisphosphonate-in-pregnancy "Bisphosphonate in pregnancy or breastfeeding"
* subject = Reference(Patient/toh-patient-1)
* period.start = "2024-03-21"
