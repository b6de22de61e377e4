Extension: Laterality
Id: laterality
Title: "Laterality"
Description: "The side of the body of a body site: left, right, or right and left. Sits on Condition.bodySite and Observation.bodySite, next to the coding of the joint."
Context: Condition.bodySite, Observation.bodySite
* value[x] 1..1
* value[x] only CodeableConcept
* valueCodeableConcept from $VS-laterality (required)
