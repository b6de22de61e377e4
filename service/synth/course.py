"""The synthetic course of one patient's transient osteoporosis: who, which joints, when.

Pure and seeded: `draw_course(seed, index, as_of, migration_share)` gives the same Course for the
same arguments on every machine (random.Random seeded with a string, which CPython hashes with
SHA-512), and patient `index` does not depend on how many others are drawn. Nothing here knows
FHIR; service/synth/bundle.py writes a Course as a transaction Bundle.

The proportions follow ../shared/clinical/TOH.md (facts distilled from the seed texts):
- who: men aged 40-55 and women in the third trimester or up to 8 weeks after delivery, about
  3:1 (P(man) = MEN_SHARE); the left hip in 70% of the women, either hip equally in men;
- course: onset, an MRI 3-21 days later (diffuse bone marrow oedema, often an effusion, no focal
  lesion), radiographs at 4-8 weeks (osteopenia, joint space preserved), monthly pain scores,
  protected weight-bearing from diagnosis, full weight-bearing from resolution;
- resolution (RESOLUTION_MIX): 6-12 months in 75%, 12-24 months in 18%, never in 7%;
- migration to another joint (other hip, knee, ankle, foot) in `migration_share` (5-40%);
  recurrence in the same hip after resolution in RECURRENCE_SHARE; AVN features on a follow-up MRI
  in AVN_SHARE (then no resolution); a bisphosphonate ordered during pregnancy in
  BISPHOSPHONATE_IN_PREGNANCY_SHARE of the pregnant women (the pitfall the guide flags); men are
  sometimes given alendronate (MAN_BISPHOSPHONATE_SHARE).
Onsets fall from ONSET_WINDOW_DAYS to 30 days before `as_of`, so most patients have their whole
two-year course behind them and some are still in it on `as_of`. `Course.tags` name what the
drawn course holds, also after `as_of`; the bundle holds only what is known on `as_of`.
"""
from __future__ import annotations

import random
from calendar import monthrange
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from service.clinical.dates import add_months

MEN_SHARE = 0.75
PREGNANT_SHARE_OF_WOMEN = 0.6          # third trimester at onset; the rest post-partum
LEFT_SHARE_IN_WOMEN = 0.7
RESOLUTION_MIX = ((0.75, (6, 12)), (0.18, (12, 24)), (0.07, None))  # (share, months range | never)
RECURRENCE_SHARE = 0.06
AVN_SHARE = 0.03
BISPHOSPHONATE_IN_PREGNANCY_SHARE = 0.08
MAN_BISPHOSPHONATE_SHARE = 0.15
ONSET_WINDOW_DAYS = 1000               # about 33 months
MIGRATION_TARGETS = (("hip", 0.3), ("knee", 0.35), ("ankle", 0.2), ("foot", 0.15))
DEFAULT_AS_OF = date(2026, 1, 1)       # fixed, so `toh synth` without --as-of is reproducible

MEN_GIVEN = ("James", "Robert", "Michael", "David", "Thomas", "Daniel", "Paul", "Mark", "Peter", "Karl",
             "Luis", "Hamid", "Jan", "Pierre", "Marco", "Kenji", "Ravi", "Stefan", "Omar", "Lars")
WOMEN_GIVEN = ("Anna", "Maria", "Sarah", "Laura", "Emma", "Julia", "Sofia", "Hannah", "Claire", "Nadia",
               "Elena", "Aisha", "Ingrid", "Chiara", "Yuki", "Priya", "Lena", "Fatima", "Marta", "Olivia")
FAMILY = ("Smith", "Mueller", "Garcia", "Rossi", "Dubois", "Novak", "Jensen", "Kowalski", "Silva", "Tanaka",
          "Okafor", "Haddad", "Larsen", "Weber", "Moreau", "Costa", "Nguyen", "Patel", "Schmidt", "Andersen")


@dataclass(frozen=True)
class Episode:
    """One joint on one side, from onset to resolution (None: not resolved within the course).

    kind: "first", "migration" (another joint or side) or "recurrence" (the same joint again).
    diagnosed: the day of the MRI that showed the oedema (and of the Condition's recordedDate).
    avn_on: the day of a follow-up MRI showing AVN features at this site, if any.
    """

    kind: str
    joint: str               # "hip", "knee", "ankle", "foot"
    side: str                # "left", "right"
    onset: date
    diagnosed: date
    radiograph: date
    resolved: date | None
    avn_on: date | None = None

    def active_on(self, day: date) -> bool:
        """Known (onset on or before `day`) and not yet resolved on `day`."""
        return self.onset <= day and (self.resolved is None or self.resolved > day)


@dataclass(frozen=True)
class Bisphosphonate:
    """A bisphosphonate order: `drug` ("zoledronic acid", "alendronic acid") authored on
    `ordered`, valid until `valid_until` (inclusive)."""

    drug: str
    ordered: date
    valid_until: date


@dataclass(frozen=True)
class Course:
    """A patient and the whole course of their disease, as known on `as_of`.

    group: "man", "pregnant" (third trimester at onset) or "postpartum".
    delivery: the day of delivery (women); pain: (day, score 0-10) monthly from diagnosis.
    """

    seed: int
    index: int
    as_of: date
    patient_uuid: str
    sex: str
    group: str
    given: str
    family: str
    birth_date: date
    episodes: tuple[Episode, ...]
    delivery: date | None = None
    bisphosphonate: Bisphosphonate | None = None
    pain: tuple[tuple[date, int], ...] = field(default=())
    tags: tuple[str, ...] = ()
    mrn_prefix: str = "SYN"

    @property
    def mrn(self) -> str:
        """The medical record number (identifier value) of the patient."""
        return f"{self.mrn_prefix}-{self.seed}-{self.index:06d}"

    def pregnant_on(self, day: date) -> bool:
        """Pregnant on `day`: the pregnant group, before delivery."""
        return self.group == "pregnant" and self.delivery is not None and day < self.delivery

    def expected_flags(self, as_of: date | None = None) -> frozenset[str]:
        """The TOH flag codes that hold on `as_of` (default: the course's) by construction of
        the course: the ground truth the clinical engine is tested against.

        migration: an active episode with an earlier one elsewhere and none earlier at its own
        site; recurrence: an active episode at the site of an earlier, resolved one;
        delayed-resolution / failure-to-resolve: an active episode 12 / 24 months after onset;
        avn-features: a follow-up MRI with AVN features on or before the day;
        bisphosphonate-in-pregnancy: ordered while pregnant, and still valid or still pregnant.
        """
        day = as_of or self.as_of
        flags: set[str] = set()
        for episode in self.episodes:
            if not episode.active_on(day) or episode.diagnosed > day:
                continue
            earlier = [e for e in self.episodes if e.onset < episode.onset and e.diagnosed <= day]
            same = [e for e in earlier if (e.joint, e.side) == (episode.joint, episode.side)]
            if same:
                if max(same, key=lambda e: e.onset).resolved is not None:
                    flags.add("recurrence")
            elif earlier:
                flags.add("migration")
            if add_months(episode.onset, 12) <= day:
                flags.add("delayed-resolution")
            if add_months(episode.onset, 24) <= day:
                flags.add("failure-to-resolve")
        if any(e.avn_on is not None and e.avn_on <= day for e in self.episodes):
            flags.add("avn-features")
        drug = self.bisphosphonate
        if drug is not None and drug.ordered <= day and self.pregnant_on(drug.ordered) and (
                drug.valid_until >= day or self.pregnant_on(day)):
            flags.add("bisphosphonate-in-pregnancy")
        return frozenset(flags)


def patient_rng(seed: int, index: int) -> random.Random:
    """The random stream of patient `index` of cohort `seed` (independent of cohort size)."""
    return random.Random(f"toh-synth:{seed}:{index}")


def rng_uuid(rng: random.Random) -> str:
    """A version-4 UUID drawn from rng (reproducible)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def plus_months(day: date, months: int) -> date:
    """`day` plus whole months, clamped to the month's last day: add_months() without
    relativedelta's cost (the monthly pain scores call it 24 times per patient)."""
    total = day.year * 12 + day.month - 1 + months
    year, month = divmod(total, 12)
    return date(year, month + 1, min(day.day, monthrange(year, month + 1)[1]))


def _days(rng: random.Random, low: int, high: int) -> timedelta:
    return timedelta(days=rng.randint(low, high))


def _resolution(rng: random.Random, onset: date) -> date | None:
    pick = rng.random()
    for share, months in RESOLUTION_MIX:
        pick -= share
        if pick < 0:
            if months is None:
                return None
            return onset + timedelta(days=round(rng.uniform(months[0], months[1]) * 30.44))
    return None


def _episode(rng: random.Random, kind: str, joint: str, side: str, onset: date) -> Episode:
    return Episode(kind=kind, joint=joint, side=side, onset=onset, diagnosed=onset + _days(rng, 3, 21),
                   radiograph=onset + _days(rng, 28, 56), resolved=_resolution(rng, onset))


def pain_scores(rng: random.Random, episodes: tuple[Episode, ...], until: date) -> tuple[tuple[date, int], ...]:
    """Monthly 0-10 pain scores from the first diagnosis to `until` (or two years): high while an
    episode is active (falling over its course), 0-2 between and after episodes."""
    if not episodes:
        return ()
    first = min(e.diagnosed for e in episodes)
    last = min(until, plus_months(first, 24))
    out: list[tuple[date, int]] = []
    month = 0
    day = first
    while day <= last:
        active = [e for e in episodes if e.active_on(day) and e.diagnosed <= day]
        if active:
            episode = max(active, key=lambda e: e.onset)
            end = episode.resolved or plus_months(episode.onset, 30)
            progress = (day - episode.onset).days / max(1, (end - episode.onset).days)
            base = 8 - 6 * progress if episode.resolved else 7 - 2 * progress
            score = round(base + rng.uniform(-1.2, 1.2))
        else:
            score = rng.randint(0, 2)
        out.append((day, max(0, min(10, score))))
        month += 1
        day = plus_months(first, month)
    return tuple(out)


def draw_course(seed: int, index: int, as_of: date = DEFAULT_AS_OF, migration_share: float = 0.15) -> Course:
    """Patient `index` of cohort `seed`, as known on `as_of`. Raises ValueError if
    migration_share is outside 0.05-0.40 (the range the sources give)."""
    if not 0.05 <= migration_share <= 0.40:
        raise ValueError(f"migration share {migration_share} is outside 0.05-0.40")
    rng = patient_rng(seed, index)
    patient_uuid = rng_uuid(rng)
    onset = as_of - _days(rng, 30, ONSET_WINDOW_DAYS)
    tags: list[str] = []
    delivery = None
    if rng.random() < MEN_SHARE:
        sex, group = "male", "man"
        birth = onset - timedelta(days=round(365.25 * rng.randint(40, 55))) - _days(rng, 0, 364)
        side = rng.choice(("left", "right"))
        given = rng.choice(MEN_GIVEN)
    else:
        sex = "female"
        group = "pregnant" if rng.random() < PREGNANT_SHARE_OF_WOMEN else "postpartum"
        birth = onset - timedelta(days=round(365.25 * rng.randint(24, 42))) - _days(rng, 0, 364)
        side = "left" if rng.random() < LEFT_SHARE_IN_WOMEN else "right"
        given = rng.choice(WOMEN_GIVEN)
        if group == "pregnant":
            delivery = onset + timedelta(weeks=rng.randint(2, 12)) + _days(rng, 0, 6)
        else:
            delivery = onset - _days(rng, 0, 56)
    first = _episode(rng, "first", "hip", side, onset)
    if group == "pregnant" and delivery is not None and first.diagnosed >= delivery:
        first = replace(first, diagnosed=delivery - timedelta(days=1))
    episodes = [first]
    if rng.random() < AVN_SHARE:
        episodes[0] = first = replace(first, resolved=None,
                                      avn_on=first.diagnosed + _days(rng, 45, 150))
        tags.append("avn")
    if rng.random() < migration_share:
        joint = rng.choices([j for j, _ in MIGRATION_TARGETS], [w for _, w in MIGRATION_TARGETS])[0]
        other = ("right" if side == "left" else "left") if joint == "hip" else rng.choice((side, side, "left", "right"))
        if joint != "hip" or other != side:
            episodes.append(_episode(rng, "migration", joint, other, onset + _days(rng, 45, 270)))
            tags.append("migration")
    if first.resolved is not None and rng.random() < RECURRENCE_SHARE:
        episodes.append(_episode(rng, "recurrence", "hip", side, first.resolved + _days(rng, 120, 540)))
        tags.append("recurrence")
    bisphosphonate = None
    if group == "pregnant" and rng.random() < BISPHOSPHONATE_IN_PREGNANCY_SHARE:
        ordered = first.diagnosed
        bisphosphonate = Bisphosphonate("zoledronic acid", ordered, ordered + timedelta(days=90))
        tags.append("bisphosphonate-in-pregnancy")
    elif group == "man" and rng.random() < MAN_BISPHOSPHONATE_SHARE:
        ordered = first.diagnosed + _days(rng, 0, 30)
        bisphosphonate = Bisphosphonate("alendronic acid", ordered, ordered + timedelta(days=90))
    unresolved = [e for e in episodes if e.resolved is None]
    if unresolved and add_months(min(e.onset for e in unresolved), 24) <= as_of:
        tags.append("failure-to-resolve")
    kept = tuple(e for e in episodes if e.diagnosed <= as_of)
    return Course(seed=seed, index=index, as_of=as_of, patient_uuid=patient_uuid, sex=sex, group=group,
                  given=given, family=rng.choice(FAMILY), birth_date=birth, episodes=kept, delivery=delivery,
                  bisphosphonate=bisphosphonate, pain=pain_scores(rng, kept, as_of), tags=tuple(tags))
