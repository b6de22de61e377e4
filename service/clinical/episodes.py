"""Episodes: one joint on one side from onset to resolution, built from TOH Conditions and MRIs.

- A Condition on both sides ("Right and left", "both hips") gives one episode per side.
- Conditions at the same joint and side whose onset falls before the earlier episode resolved
  are one episode (a second code for the same illness); an onset after the resolution starts a
  new episode (a recurrence; also after a resolution without a date).
- A Condition without onset is its own episode with onset None (never merged, never ordered).
- Encounter diagnoses (category encounter-diagnosis) at a joint and side that also has a
  problem-list (or uncategorised) Condition are copies of it: they join the episode whose onset
  is the latest on or before theirs as evidence, and never decide its status nor start one, so a
  stale `active` copy never keeps a resolved problem open (shared/clinical/TOH.md). Where only
  encounter diagnoses exist, they are read like any Condition.
- An MRI is attached to the episode at its joint and side whose onset is the latest on or before
  the MRI date (the first episode if it precedes them all). An MRI whose side is unknown is
  attached only to an episode whose side is also unknown.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Sequence

from .anatomy import LEFT, RIGHT, Site, site_label
from .dates import whole_months
from .facts import ConditionFact, Finding
from .model import ACTIVE, RESOLVED, AssessmentIssue, Episode


@dataclass
class _Draft:
    joint: str | None
    side: str | None
    onset: date | None
    recorded: date | None
    conditions: list[ConditionFact] = field(default_factory=list)
    mris: list[Finding] = field(default_factory=list)
    copies: list[ConditionFact] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return all(c.resolved for c in self.conditions)

    @property
    def resolution_date(self) -> date | None:
        if not self.resolved or any(c.resolved_on is None for c in self.conditions):
            return None
        return max(c.resolved_on for c in self.conditions if c.resolved_on)

    def absorbs(self, onset: date) -> bool:
        """A Condition with this onset is the same illness: this episode had not resolved by
        then (a resolution without a date ends the episode: a later onset is a new one)."""
        if not self.resolved:
            return True
        end = self.resolution_date
        return end is not None and onset <= end


def _sides(site: Site) -> Sequence[str | None]:
    if site.sides:
        return sorted(site.sides)
    return [None]


def _issues_for(fact: ConditionFact) -> list[AssessmentIssue]:
    out = []
    for problem in fact.site.problems:
        code = "side-unknown" if "side" in problem or "laterality" in problem else "joint-unknown"
        consequence = ("migration to or from this joint cannot be decided" if code == "side-unknown"
                       else "it cannot be placed at a joint")
        out.append(AssessmentIssue(code, f"TOH Condition: {problem}; {consequence}", fact.ref))
    if fact.onset is None:
        out.append(AssessmentIssue(
            "missing-onset", "TOH Condition without onset[x]: not used for migration or "
            "recurrence; time-based flags counted from recordedDate if present", fact.ref))
    if fact.resolved and fact.resolved_on is None:
        out.append(AssessmentIssue(
            "missing-abatement", "TOH Condition resolved without abatement[x]: resolution date "
            "unknown", fact.ref))
    return out


def build_episodes(conditions: Iterable[ConditionFact], mris: Iterable[Finding], as_of: date
                   ) -> tuple[list[Episode], list[AssessmentIssue]]:
    """Episodes on `as_of`, sorted by (onset, joint, side), and the issues met building them."""
    issues: list[AssessmentIssue] = []
    units: dict[tuple[str | None, str | None], list[ConditionFact]] = {}
    for fact in sorted(conditions, key=lambda c: (c.onset or date.min, c.ref)):
        issues.extend(_issues_for(fact))
        for side in _sides(fact.site):
            units.setdefault((fact.site.joint, side), []).append(fact)
    drafts: list[_Draft] = []
    for (joint, side), facts in units.items():
        current: _Draft | None = None
        entries = [f for f in facts if not f.copy] or facts
        copies = [f for f in facts if f.copy] if len(entries) < len(facts) else []
        here: list[_Draft] = []
        for fact in entries:
            if fact.onset is None:
                drafts.append(_Draft(joint, side, None, fact.recorded, [fact]))
                continue
            if current is not None and current.absorbs(fact.onset):
                current.conditions.append(fact)
                continue
            current = _Draft(joint, side, fact.onset, fact.recorded, [fact])
            drafts.append(current)
            here.append(current)
        for fact in copies:      # copies of the problem list: evidence only, never the status
            dated = [d for d in here if d.onset is not None]
            if not dated:
                continue
            target = dated[0]
            for d in dated:
                if fact.onset is not None and d.onset is not None and d.onset <= fact.onset:
                    target = d
            target.copies.append(fact)
    _attach_mris(drafts, mris, issues)
    episodes = [_finish(d, as_of) for d in drafts]
    episodes.sort(key=lambda e: (e.onset or date.max, e.joint or "", e.side or "", e.evidence))
    return episodes, issues


def _attach_mris(drafts: list[_Draft], mris: Iterable[Finding], issues: list[AssessmentIssue]) -> None:
    by_site: dict[tuple[str | None, str | None], list[_Draft]] = {}
    for d in drafts:
        if d.onset is not None:
            by_site.setdefault((d.joint, d.side), []).append(d)
    for drafts_at_site in by_site.values():
        drafts_at_site.sort(key=lambda d: d.onset or date.min)
    unplaced: set[str] = set()
    undiagnosed: set[tuple[str, str]] = set()
    for mri in mris:
        placed = False
        for side in _sides(mri.site):
            group = by_site.get((mri.site.joint, side))
            if not group:
                continue
            target = group[0]
            for d in group:
                if d.onset is not None and d.onset <= mri.day:
                    target = d
            target.mris.append(mri)
            placed = True
        if placed or mri.site.joint is None:
            continue
        if not mri.site.sides:
            unplaced.add(mri.ref)
        elif mri.present:
            undiagnosed.add((mri.ref, mri.site.label()))
    for ref in sorted(unplaced):
        issues.append(AssessmentIssue("side-unknown", "MRI side not recorded: not attached to "
                                      "an episode", ref, "information"))
    for ref, label in sorted(undiagnosed):
        issues.append(AssessmentIssue(
            "oedema-without-condition", f"MRI shows bone marrow oedema at the {label} where no TOH "
            "Condition is recorded: not an episode (no migration flag) until it is diagnosed", ref))


def _finish(d: _Draft, as_of: date) -> Episode:
    resolved = d.resolved
    resolution = d.resolution_date
    evidence = sorted({c.ref for c in d.conditions + d.copies}) + sorted({m.ref for m in d.mris})
    suggested = False
    if not resolved and d.mris:
        by_day: dict[date, list[Finding]] = {}
        for m in d.mris:
            if d.onset is None or m.day >= d.onset:
                by_day.setdefault(m.day, []).append(m)
        if by_day:
            latest = by_day[max(by_day)]
            suggested = all(not m.present for m in latest)
    months = whole_months(d.onset, as_of) if d.onset is not None else None
    return Episode(
        joint=d.joint, side=d.side, onset=d.onset, status=RESOLVED if resolved else ACTIVE,
        resolution_date=resolution, months_since_onset=months, resolution_suggested=suggested,
        evidence=tuple(dict.fromkeys(evidence)), recorded=d.recorded)


def same_site(a: Episode, b: Episode) -> bool | None:
    """True/False when both joints (and, at the same joint, both sides) are known; None when
    it cannot be decided without guessing."""
    if a.joint is None or b.joint is None:
        return None
    if a.joint != b.joint:
        return False
    if a.side is None or b.side is None:
        return None
    return a.side == b.side


__all__ = ["build_episodes", "same_site", "site_label", "LEFT", "RIGHT"]
