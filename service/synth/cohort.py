"""`toh synth`: a cohort of synthetic courses written as one transaction Bundle per patient.

Files in DIR: `patient-000000.json` ... (one Bundle each, compact JSON, UTF-8, newline at the
end) and `manifest.json` (the parameters and, per patient, the file, record number, group,
tags and the flags the course should raise on `as_of`). The same parameters give the same
bytes.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from .bundle import course_bundle
from .course import DEFAULT_AS_OF, Course, draw_course


@dataclass(frozen=True)
class CohortReport:
    """What write_cohort() did: patients written, resources in their bundles, seconds taken."""

    patients: int
    resources: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Patients written per second."""
        return self.patients / self.seconds if self.seconds > 0 else float("inf")


def draw_cohort(patients: int, seed: int, as_of: date = DEFAULT_AS_OF,
                migration_share: float = 0.15) -> Iterator[Course]:
    """Courses 0..patients-1 of cohort `seed` (lazily). Raises ValueError on a bad share or count."""
    if patients < 0:
        raise ValueError("the number of patients cannot be negative")
    for index in range(patients):
        yield draw_course(seed, index, as_of, migration_share)


def dumps(bundle: dict[str, Any]) -> str:
    """The file text of a bundle: compact, key order as built, newline-terminated."""
    return json.dumps(bundle, separators=(",", ":"), ensure_ascii=False) + "\n"


def manifest_entry(course: Course, file_name: str) -> dict[str, Any]:
    """One patient of manifest.json."""
    return {"file": file_name, "mrn": course.mrn, "group": course.group, "sex": course.sex,
            "tags": list(course.tags), "episodes": [[e.kind, e.joint, e.side, e.onset.isoformat()]
                                                    for e in course.episodes],
            "expectedFlags": sorted(course.expected_flags())}


def write_cohort(out: Path, patients: int, seed: int, as_of: date = DEFAULT_AS_OF,
                 migration_share: float = 0.15) -> CohortReport:
    """Write the cohort into `out` (created if missing; files of the same names replaced).
    Raises ValueError on bad parameters and OSError if the folder cannot be written."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    resources = 0
    summary: list[dict[str, Any]] = []
    for course in draw_cohort(patients, seed, as_of, migration_share):
        bundle = course_bundle(course)
        resources += len(bundle["entry"])
        name = f"patient-{course.index:06d}.json"
        (out / name).write_text(dumps(bundle), encoding="utf-8")
        summary.append(manifest_entry(course, name))
    manifest = {"generator": "toh synth", "seed": seed, "patients": patients, "asOf": as_of.isoformat(),
                "migrationShare": migration_share, "patientsDetail": summary}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return CohortReport(patients, resources, time.perf_counter() - start)
