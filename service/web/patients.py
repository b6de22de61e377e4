"""Finding a patient by name, identifier or birth date, through the store's FHIR search
(https://hl7.org/fhir/R4/patient.html#search). No Flask here.

    find_patients(reader, "1979-04-02")  -> Patient?birthdate=1979-04-02
    find_patients(reader, "MRN|12345")   -> Patient?identifier=MRN|12345
    find_patients(reader, "smi")         -> Patient?name=smi, plus Patient?identifier=smi
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from service.web.reading import Reader, patient_name

LIMIT = 50
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


@dataclass(frozen=True)
class PatientRow:
    """One patient found: id, name, birth date, gender and identifiers as "system|value"."""

    patient_id: str
    name: str
    birth_date: str
    gender: str
    identifiers: tuple[str, ...]


@dataclass(frozen=True)
class PatientSearch:
    """What a search found (at most LIMIT, sorted by name) and how it searched."""

    query: str
    searched: str
    rows: list[PatientRow]
    truncated: bool


def find_patients(reader: Reader, text: str) -> PatientSearch:
    """Patients matching text (see module docstring); an empty text finds nothing. Raises
    Forbidden if the principal may not search Patients."""
    text = text.strip()
    if not text:
        return PatientSearch(text, "", [], False)
    if _DATE.match(text):
        searches = [[("birthdate", text)]]
        how = f"birth date {text}"
    elif "|" in text:
        searches = [[("identifier", text)]]
        how = f"identifier {text}"
    else:
        searches = [[("name", text)], [("identifier", text)]]
        how = f"name starting with or identifier equal to {text!r}"
    found: dict[str, dict[str, Any]] = {}
    truncated = False
    for params in searches:
        result = reader.find("Patient", params, limit=LIMIT)
        truncated = truncated or result.truncated
        for patient in result.resources:
            found.setdefault(str(patient["id"]), patient)
    rows = sorted((_row(p) for p in found.values()), key=lambda r: (r.name.lower(), r.patient_id))
    return PatientSearch(text, how, rows[:LIMIT], truncated or len(rows) > LIMIT)


def _row(patient: dict[str, Any]) -> PatientRow:
    identifiers = tuple(f"{i.get('system', '')}|{i.get('value', '')}" if i.get("system") else str(i.get("value", ""))
                        for i in patient.get("identifier") or () if i.get("value"))
    return PatientRow(str(patient["id"]), patient_name(patient, fallback="(no name)"), str(patient.get("birthDate", "")),
                      str(patient.get("gender", "")), identifiers)
