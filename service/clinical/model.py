"""What an assessment returns: episodes, flag findings and issues (plain frozen dataclasses)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

ACTIVE, RESOLVED = "active", "resolved"


@dataclass(frozen=True)
class Episode:
    """One joint on one side from onset to resolution, as known on the assessment date.

    side is "left", "right" or None (not determinable). onset is None when no Condition gave
    one. status is "active" or "resolved" on the assessment date; resolution_date is the
    abatement date (None while active, or when resolved without a date).
    resolution_suggested: active, but the latest MRI at this joint reports the oedema gone.
    """

    joint: str | None
    side: str | None
    onset: date | None
    status: str
    resolution_date: date | None
    months_since_onset: int | None
    resolution_suggested: bool = False
    evidence: tuple[str, ...] = ()          # "Condition/1", "Observation/7"
    recorded: date | None = None            # Condition.recordedDate (upper bound of onset)

    @property
    def site(self) -> str:
        """"left hip", "knee (side unknown)"."""
        from .anatomy import site_label
        return site_label(self.joint, self.side)

    def active_on(self, day: date) -> bool:
        """Started on or before `day` and not resolved by then (unknown onset: not active)."""
        if self.onset is None or self.onset > day:
            return False
        if self.status == RESOLVED and self.resolution_date is None:
            return False
        return self.resolution_date is None or self.resolution_date > day


@dataclass(frozen=True)
class FlagFinding:
    """A flag that holds on the assessment date.

    key identifies the situation (e.g. "migration|knee|right|2024-06-01") so re-evaluation maps
    to the same stored Flag; start is the clinical date it began to hold; text is the sentence
    for the clinician; evidence are "Type/id" references.
    """

    code: str
    display: str
    start: date
    text: str
    evidence: tuple[str, ...]
    key: str


@dataclass(frozen=True)
class AssessmentIssue:
    """Something the engine could not decide or had to ignore; severity "warning" or
    "information"; where is a "Type/id" reference or "" (e.g. a missing ValueSet)."""

    code: str           # "side-unknown", "joint-unknown", "missing-onset", ...
    text: str
    where: str = ""
    severity: str = "warning"


@dataclass(frozen=True)
class Assessment:
    """The course of the disease and the flags that hold on `as_of`."""

    as_of: date
    episodes: tuple[Episode, ...] = ()
    flags: tuple[FlagFinding, ...] = ()
    issues: tuple[AssessmentIssue, ...] = field(default_factory=tuple)

    def flag_codes(self) -> list[str]:
        """The codes of the flags, sorted (handy in tests and logs)."""
        return sorted(f.code for f in self.flags)
