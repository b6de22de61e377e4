Extension: Laterality
Id: laterality
Title: "Laterality"
Description: "The side of the body of a body site: left, right, or right and left. Sits on Condition.bodySite and Observation.bodySite, next to the coding of the joint."
Context: Condition.bodySite, Observation.bodySite
* value[x] 1..1
* value[x] only CodeableConcept
* valueCodeableConcept from $VS-laterality (required)

Extension: SubscriptionSecret
Id: subscription-secret
Title: "Subscription signing secret"
Description: "The secret a rest-hook Subscription's notifications are signed with (Standard Webhooks: 'whsec_' and the base64 of the key, at least 24 bytes, or any text of 32+ characters). Write-only: the service keeps it apart from the stored Subscription, answers it in the response to the write that gave or generated it, and never shows it on read, search or history."
Context: Subscription
* value[x] 1..1
* value[x] only string

Extension: SubscriptionOwner
Id: subscription-owner
Title: "Subscription owner"
Description: "Who made the Subscription: the subject (sub) of the token that created it. Set by the service; only its owner, or an administrator, may read, change or delete the Subscription."
Context: Subscription
* value[x] 1..1
* value[x] only string
