"""FHIR JSON out of an assessment: the $toh-assessment Parameters, and one Flag per finding."""
from __future__ import annotations

from typing import Any

from service.fhir.canonical import EXT_FLAG_DETAIL, FLAG_CATEGORY, FLAG_KEY_SYSTEM, SD_TOH_FLAG, TOH_CODES
from service.fhir.errors import Issue, operation_outcome

from .model import Assessment, AssessmentIssue, Episode, FlagFinding


def _ref(reference: str) -> dict[str, Any]:
    return {"reference": reference}


def flag_coding(finding: FlagFinding) -> dict[str, Any]:
    """The TOH CodeSystem coding of a finding."""
    return {"system": TOH_CODES, "code": finding.code, "display": finding.display}


def flag_resource(finding: FlagFinding, patient_ref: str) -> dict[str, Any]:
    """A new FHIR Flag (profile toh-flag) for a finding: status active, category clinical,
    code from the TOH CodeSystem with the sentence as code.text, period.start the clinical date
    the situation began, one flag-detail extension per evidence reference, and the finding's
    key as identifier (system FLAG_KEY_SYSTEM). No id: the store assigns it."""
    return {
        "resourceType": "Flag",
        "meta": {"profile": [SD_TOH_FLAG]},
        "extension": [{"url": EXT_FLAG_DETAIL, "valueReference": _ref(r)} for r in finding.evidence],
        "identifier": [{"system": FLAG_KEY_SYSTEM, "value": finding.key}],
        "status": "active",
        "category": [{"coding": [{"system": FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}]}],
        "code": {"coding": [flag_coding(finding)], "text": finding.text},
        "subject": _ref(patient_ref),
        "period": {"start": finding.start.isoformat()},
    }


def _episode_parts(episode: Episode) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if episode.joint:
        parts.append({"name": "joint", "valueCode": episode.joint})
    parts.append({"name": "side", "valueCode": episode.side or "unknown"})
    if episode.onset:
        parts.append({"name": "onset", "valueDate": episode.onset.isoformat()})
    parts.append({"name": "status", "valueCode": episode.status})
    if episode.resolution_date:
        parts.append({"name": "resolutionDate", "valueDate": episode.resolution_date.isoformat()})
    if episode.months_since_onset is not None:
        parts.append({"name": "monthsSinceOnset", "valueInteger": episode.months_since_onset})
    parts.append({"name": "resolutionSuggested", "valueBoolean": episode.resolution_suggested})
    parts.extend({"name": "evidence", "valueReference": _ref(r)} for r in episode.evidence)
    return parts


def _flag_parts(finding: FlagFinding, issues: tuple[AssessmentIssue, ...] = ()) -> list[dict[str, Any]]:
    evidence = set(finding.evidence)
    return [
        {"name": "code", "valueCoding": flag_coding(finding)},
        {"name": "start", "valueDate": finding.start.isoformat()},
        {"name": "text", "valueString": finding.text},
        {"name": "key", "valueString": finding.key},
        *({"name": "evidence", "valueReference": _ref(r)} for r in finding.evidence),
        *({"name": "issue", "valueString": f"{i.where}: {i.text} [{i.code}]"} for i in issues
          if evidence & set(i.where.split(";"))),
    ]


def _issue_parts(issue: AssessmentIssue) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"name": "code", "valueCode": issue.code},
                                   {"name": "severity", "valueCode": issue.severity}]
    for where in filter(None, issue.where.split(";")):
        if "/" in where:
            parts.append({"name": "resource", "valueReference": _ref(where)})
    parts.append({"name": "text", "valueString": issue.text})
    return parts


def _issue(issue: AssessmentIssue) -> Issue:
    where = f"{issue.where}: " if issue.where else ""
    code = "processing" if issue.code == "terminology" else "incomplete"
    return Issue(issue.severity, code, f"{where}{issue.text} [{issue.code}]")


def assessment_to_parameters(assessment: Assessment) -> dict[str, Any]:
    """The Parameters resource of GET Patient/{id}/$toh-assessment: `asOf` (valueDate), one
    `episode` per episode (parts joint, side, onset, status, resolutionDate, monthsSinceOnset,
    resolutionSuggested, evidence*), one `flag` per finding (parts code, start, text, key,
    evidence*, and issue* (valueString) for what could not be read in its evidence), one `issue`
    per thing the engine could not read or decide (parts code, severity, resource* (the
    resources concerned), text), and `issues` (the same as an OperationOutcome) when there are
    any."""
    params: list[dict[str, Any]] = [{"name": "asOf", "valueDate": assessment.as_of.isoformat()}]
    params += [{"name": "episode", "part": _episode_parts(e)} for e in assessment.episodes]
    params += [{"name": "flag", "part": _flag_parts(f, assessment.issues)} for f in assessment.flags]
    params += [{"name": "issue", "part": _issue_parts(i)} for i in assessment.issues]
    if assessment.issues:
        params.append({"name": "issues",
                       "resource": operation_outcome([_issue(i) for i in assessment.issues])})
    return {"resourceType": "Parameters", "parameter": params}
