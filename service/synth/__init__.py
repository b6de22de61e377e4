"""Synthetic TOH patients: seeded two-year courses (course.py) written as FHIR R4 transaction
Bundles (bundle.py), a cohort of them in a folder (cohort.py, `toh synth`), and the demo cohort
loaded into a running service (demo.py, `toh demo`). Pure generation: no Flask, no database.
"""
from __future__ import annotations

from .bundle import course_bundle
from .cohort import CohortReport, draw_cohort, write_cohort
from .course import DEFAULT_AS_OF, Course, Episode, draw_course

__all__ = ["CohortReport", "Course", "DEFAULT_AS_OF", "Episode", "course_bundle", "draw_cohort", "draw_course",
           "write_cohort"]
