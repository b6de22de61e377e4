"""The flag rules: pure functions of episodes, facts and the assessment date.

Each rule returns the FlagFindings that hold on `as_of` (and may add issues). A finding's key
names the situation, so the same situation always maps to the same stored Flag.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import date, timedelta
from . import codes
from .anatomy import site_label
from .dates import add_months, whole_months
from .episodes import same_site
from .facts import ConditionFact, Facts, Finding, StatusPoint
from .model import ACTIVE, AssessmentIssue, Episode, FlagFinding


def _finding(code: str, start: date, text: str, evidence: list[str], *key_parts: object) -> FlagFinding:
    key = "|".join([code, *("" if p is None else str(p) for p in key_parts)])
    return FlagFinding(code, codes.FLAG_DISPLAY[code], start, text,
                       tuple(dict.fromkeys(evidence)), key)


def _months(n: int) -> str:
    return "1 month" if n == 1 else f"{n} months"


def _conditions(episode: Episode) -> list[str]:
    return [r for r in episode.evidence if r.startswith("Condition/")]


# -- migration and recurrence ---------------------------------------------------------------
def migration_and_recurrence(episodes: list[Episode], as_of: date,
                             issues: list[AssessmentIssue]) -> list[FlagFinding]:
    """Migration: an active episode whose onset follows an earlier episode at a definitely
    different joint or side, with no earlier episode at its own site. Recurrence: an active
    episode at the site of an earlier episode that had resolved. Same-day onsets are not
    "earlier". When a comparison depends on an unknown side or joint, no flag, an issue."""
    out: list[FlagFinding] = []
    dated = [e for e in episodes if e.onset is not None]
    for episode in dated:
        if episode.status != ACTIVE:
            continue
        assert episode.onset is not None
        priors = [p for p in dated if p.onset is not None and p.onset < episode.onset]
        if not priors:
            continue
        relation = [(p, same_site(p, episode)) for p in priors]
        same = [p for p, r in relation if r is True]
        if same:
            before = max(same, key=lambda p: p.onset or date.min)
            if before.resolution_date is not None:
                gap = whole_months(before.resolution_date, episode.onset)
                out.append(_finding(
                    codes.RECURRENCE, episode.onset,
                    f"Bone marrow oedema has returned in the {episode.site} on {episode.onset}, "
                    f"{_months(gap)} after it resolved there on {before.resolution_date}: "
                    "recurrence of transient osteoporosis",
                    _conditions(episode) + _conditions(before),
                    episode.joint, episode.side, episode.onset))
            continue
        if any(r is None for _, r in relation):
            issues.append(AssessmentIssue(
                "migration-undetermined",
                f"Episode at the {episode.site} from {episode.onset}: cannot tell whether it is a "
                "migration or a recurrence because a joint or side is not recorded",
                ";".join(_conditions(episode))))
            continue
        before = max(priors, key=lambda p: (p.onset or date.min, p.joint or "", p.side or ""))
        assert before.onset is not None
        gap = whole_months(before.onset, episode.onset)
        out.append(_finding(
            codes.MIGRATION, episode.onset,
            f"Bone marrow oedema now in the {episode.site}, {_months(gap)} after the "
            f"{before.site}: suspected regional migratory osteoporosis",
            _conditions(episode) + _conditions(before),
            episode.joint, episode.side, episode.onset))
    return out


# -- time to resolution -----------------------------------------------------------------------
# (months after onset, flag code, advice): the only rules that change with the date alone.
UNRESOLVED_THRESHOLDS = (
    (12, codes.DELAYED_RESOLUTION, "expected to resolve within 6-12 months"),
    (24, codes.FAILURE_TO_RESOLVE, "review the diagnosis (AVN, neoplasm) and consider core decompression"),
)


def next_time_change(episodes: tuple[Episode, ...] | list[Episode], as_of: date) -> date | None:
    """The first day after `as_of` on which unresolved_too_long() can give other findings with
    no new data (an active episode reaching 12 or 24 months), or None."""
    days = []
    for episode in episodes:
        start = episode.onset or episode.recorded
        if episode.status != ACTIVE or start is None:
            continue
        days += [due for due in (add_months(start, m) for m, _, _ in UNRESOLVED_THRESHOLDS) if due > as_of]
    return min(days, default=None)


def unresolved_too_long(episodes: list[Episode], as_of: date) -> list[FlagFinding]:
    """delayed-resolution from 12 months after onset and failure-to-resolve from 24 months, while
    the episode is unresolved; both fire on the day the months complete (onset + relativedelta).
    Without an onset, counted from recordedDate (the onset was no later), worded "at least"."""
    out: list[FlagFinding] = []
    for episode in episodes:
        if episode.status != ACTIVE:
            continue
        start, exact = (episode.onset, True) if episode.onset else (episode.recorded, False)
        if start is None:
            continue
        for months, code, advice in UNRESOLVED_THRESHOLDS:
            due = add_months(start, months)
            if as_of < due:
                continue
            since = (f"{whole_months(start, as_of)} months after onset on {start}" if exact else
                     f"at least {whole_months(start, as_of)} months (onset unknown, recorded {start})")
            out.append(_finding(
                code, due, f"{episode.site.capitalize()} still unresolved {since}: {advice}",
                list(episode.evidence), episode.joint, episode.side, start))
    return out


# -- imaging findings -------------------------------------------------------------------------
def _by_site(findings: list[Finding], conditions: list[ConditionFact]
             ) -> dict[tuple[str | None, str | None], tuple[date, list[str], list[str]]]:
    """(joint, side) -> (first date, evidence refs, finding names); bilateral/unknown side of a
    finding is kept as one group with side None."""
    groups: dict[tuple[str | None, str | None], tuple[date, list[str], list[str]]] = {}

    def add(joint: str | None, sides: frozenset[str], day: date, ref: str, name: str) -> None:
        side = next(iter(sides)) if len(sides) == 1 else None
        first, refs, names = groups.get((joint, side), (day, [], []))
        refs.append(ref)
        if name not in names:
            names.append(name)
        groups[(joint, side)] = (min(first, day), refs, names)

    for f in sorted(findings, key=lambda f: (f.day, f.ref)):
        add(f.site.joint, f.site.sides, f.day, f.ref, f.name)
    for c in sorted(conditions, key=lambda c: c.ref):
        day = c.onset or c.recorded
        if day is None or c.resolved:
            continue
        add(c.site.joint, c.site.sides, day, c.ref, "recorded diagnosis")
    return groups


def imaging_flags(facts: Facts) -> list[FlagFinding]:
    """avn-features: focal subchondral lesion / double-line / crescent sign reported present
    (valueBoolean true) at a joint, or a Condition coded in the avn-features ValueSet.
    insufficiency-fracture: a subchondral fracture line reported present, or a Condition in the
    insufficiency-fracture-findings ValueSet. Findings reported absent are not findings."""
    out: list[FlagFinding] = []
    for code, findings, conditions, meaning in (
            (codes.AVN_FEATURES, facts.avn, facts.avn_conditions,
             "features of avascular necrosis, not of transient osteoporosis: review the diagnosis "
             "and weight-bearing"),
            (codes.INSUFFICIENCY_FRACTURE, facts.fracture, facts.fracture_conditions,
             "subchondral insufficiency fracture: keep protected weight-bearing and review")):
        for (joint, side), (first, refs, names) in sorted(
                _by_site(findings, conditions).items(), key=lambda kv: (kv[1][0], str(kv[0]))):
            label = site_label(joint, side)
            out.append(_finding(code, first, f"{', '.join(names).capitalize()} at the {label} "
                                f"since {first}: {meaning}", refs, joint, side))
    return out


# -- bisphosphonate in pregnancy or breastfeeding -----------------------------------------------
PREGNANCY_MAX = timedelta(weeks=42)


@dataclass(frozen=True)
class StatusInterval:
    """Pregnant or breastfeeding from `start` up to (not including) `end` (None: open)."""

    ref: str
    start: date
    end: date | None

    def holds_on(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day < self.end)


def _first_after(day: date, days: list[date]) -> date | None:
    i = bisect_right(days, day)
    return days[i] if i < len(days) else None


def pregnancy_intervals(facts: Facts) -> list[StatusInterval]:
    """When the patient was pregnant or breastfeeding (shared/clinical/TOH.md, "How long a
    status holds"): a "pregnant" status or pregnancy Condition holds from its date for at most
    42 weeks, and ends sooner at a later "not pregnant", a breastfeeding status, a delivery or
    postpartum Condition, or its abatement; a breastfeeding status or Condition holds until a
    later "not breastfeeding" (or its abatement)."""
    enders = sorted({p.day for p in facts.pregnancy if not p.positive}
                    | {p.day for p in facts.breastfeeding if p.positive}
                    | {p.day for p in facts.pregnancy_ended}
                    | {w.start for w in facts.pregnancy_conditions if w.breastfeeding})
    weaned = sorted({p.day for p in facts.breastfeeding if not p.positive})
    out: list[StatusInterval] = []

    def pregnancy(ref: str, start: date, end: date | None) -> None:
        ends = [d for d in (start + PREGNANCY_MAX, _first_after(start, enders), end) if d is not None]
        out.append(StatusInterval(ref, start, min(ends)))

    for p in facts.pregnancy:
        if p.positive:
            pregnancy(p.ref, p.day, None)
    for p in facts.breastfeeding:
        if p.positive:
            out.append(StatusInterval(p.ref, p.day, _first_after(p.day, weaned)))
    for w in facts.pregnancy_conditions:
        if w.breastfeeding:
            out.append(StatusInterval(w.ref, w.start, w.end or _first_after(w.start, weaned)))
        else:
            pregnancy(w.ref, w.start, w.end)
    return [i for i in out if i.end is None or i.end > i.start]


def bisphosphonate_in_pregnancy(facts: Facts, as_of: date) -> list[FlagFinding]:
    """A bisphosphonate exposure (order or plan period) overlapping a time the patient was
    pregnant or breastfeeding (pregnancy_intervals). Holds while the exposure is still open or
    the patient is still pregnant or breastfeeding on as_of; starts on the first overlapping day."""
    out: list[FlagFinding] = []
    if not facts.exposures:
        return out
    intervals = pregnancy_intervals(facts)
    for exp in sorted(facts.exposures, key=lambda e: (e.start, e.ref)):
        last = min(exp.end, as_of) if exp.end else as_of
        firsts = [max(exp.start, i.start) for i in intervals]
        overlapping = [(d, i) for d, i in zip(firsts, intervals) if d <= last and i.holds_on(d)]
        if not overlapping:
            continue
        day = min(d for d, _ in overlapping)
        still_open = exp.end is None or exp.end >= as_of
        if not still_open and not any(i.holds_on(as_of) for i in intervals):
            continue
        proof = sorted({i.ref for i in intervals if i.holds_on(day)})
        out.append(_finding(
            codes.BISPHOSPHONATE_IN_PREGNANCY, day,
            f"{exp.drug.capitalize()} ordered or planned ({exp.ref}, from {exp.start}) while "
            f"the patient is pregnant or breastfeeding (since {day} at the latest): "
            "bisphosphonates are avoided in pregnancy and breastfeeding",
            [exp.ref] + proof, exp.ref))
    return out


# -- weight-bearing -----------------------------------------------------------------------------
def full_weight_bearing(facts: Facts, episodes: list[Episode], as_of: date) -> list[FlagFinding]:
    """The latest weight-bearing status on or before as_of is full, it (or the unbroken run of
    "full" statuses it ends) was recorded while an episode was active, and an episode is still
    active on as_of. Starts at the first "full" record of the run made during an active episode."""
    points = sorted(facts.weight_bearing, key=lambda p: (p.day, not p.positive, p.ref))
    if not points or not points[-1].positive:
        return []
    active_now = [e for e in episodes if e.status == ACTIVE and e.onset is not None]
    if not active_now:
        return []
    run: list[StatusPoint] = []
    for p in reversed(points):
        if not p.positive:
            break
        run.append(p)
    run.reverse()
    during = [p for p in run if any(e.active_on(p.day) for e in episodes)]
    if not during:
        return []
    start = during[0].day
    sites = ", ".join(e.site for e in active_now)
    evidence = [p.ref for p in during] + [r for e in active_now for r in _conditions(e)]
    return [_finding(
        codes.FULL_WEIGHT_BEARING_ACTIVE_OEDEMA, start,
        f"Full weight-bearing recorded on {during[-1].day} while bone marrow oedema is active in "
        f"the {sites}: risk of subchondral insufficiency fracture, advise protected weight-bearing",
        evidence, start)]

