"""The patient timeline as geometry for a server-rendered SVG (templates/_timeline.svg.html
draws it). Pure: dates and labels in, coordinates (SVG user units, 1 = 1 px at 100%) out.

    build_timeline(today, lanes, bars, marks, pain) -> Timeline

Layout, left to right in clinical time (a linear day scale over the data's range), top to
bottom: the month axis; one lane per joint and side, each holding its episodes as bars from
onset to resolution (or to today, hatched while active), the 12- and 24-month marks of each
episode (dashed lines), MRI findings and flags as marks, follow-ups as ticks; then the pain
scores (0-10) as a line over the same months. Every mark has a title; shapes and patterns,
not colour alone, tell kinds apart (see SHAPES), and flags carry their number in the table.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from dateutil.relativedelta import relativedelta

WIDTH = 960
LEFT = 150          # lane labels
RIGHT = 24
AXIS = 34           # month axis band at the top
LANE = 64           # height of one lane
PAIN = 120          # height of the pain band (0-10)
GAP = 18

# What each mark kind looks like (the legend shows the same words).
SHAPES = {
    "oedema": "filled circle: MRI shows diffuse bone marrow oedema",
    "oedema-absent": "open circle: MRI shows no oedema",
    "avn": "filled diamond: MRI shows AVN features",
    "fracture": "cross: MRI or radiograph shows a fracture line",
    "flag": "pennant with its number: a flag",
    "done": "tick with a filled square: follow-up done",
    "missed": "tick with a crossed square: follow-up missed (window passed, not done)",
    "due": "tick with a half-filled square: follow-up due now",
    "upcoming": "tick with an open square: follow-up upcoming",
}


@dataclass(frozen=True)
class LaneInput:
    """A lane: its key (joint, side) and label ("left hip")."""

    key: tuple[str | None, str | None]
    label: str


@dataclass(frozen=True)
class BarInput:
    """An episode on a lane: onset, end (resolution, or None while active) and its title."""

    lane: tuple[str | None, str | None]
    onset: date
    end: date | None
    title: str
    label: str


@dataclass(frozen=True)
class MarkInput:
    """A mark on a lane (None: the first lane) on a day: kind is a key of SHAPES."""

    lane: tuple[str | None, str | None] | None
    day: date
    kind: str
    title: str
    text: str = ""


@dataclass(frozen=True)
class PainInput:
    """One pain score (0-10) on a day."""

    day: date
    score: float
    title: str


@dataclass(frozen=True)
class Lane:
    label: str
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    active: bool
    title: str
    label: str


@dataclass(frozen=True)
class Milestone:
    x: float
    y1: float
    y2: float
    text: str
    title: str
    beyond: bool = False    # after the end of the axis: drawn as a note at its right edge


@dataclass(frozen=True)
class Mark:
    kind: str
    x: float
    y: float
    title: str
    text: str = ""


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class PainPoint:
    x: float
    y: float
    title: str
    day: date


@dataclass(frozen=True)
class Timeline:
    """Everything the SVG template draws."""

    width: int
    height: int
    start: date
    end: date
    today: date
    plot_left: float
    plot_right: float
    today_x: float
    lanes: list[Lane] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    milestones: list[Milestone] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    months: list[Tick] = field(default_factory=list)
    pain_top: float = 0
    pain_bottom: float = 0
    pain_points: list[PainPoint] = field(default_factory=list)
    pain_ticks: list[tuple[float, str]] = field(default_factory=list)

    @property
    def pain_line(self) -> str:
        """The pain polyline's points attribute ("x,y x,y ...")."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.pain_points)


FOLLOW_UP_KINDS = frozenset({"done", "missed", "due", "upcoming"})
AHEAD_DAYS = 60     # how far past today the time axis goes (later follow-ups are in the table)


def _range(today: date, bars: Sequence[BarInput], marks: Sequence[MarkInput],
           pain: Sequence[PainInput]) -> tuple[date, date]:
    """From two weeks before the first date to three weeks after the last one, and at least
    AHEAD_DAYS past today; upcoming follow-ups do not stretch it (a plan reaches two years ahead)."""
    days = [today + timedelta(days=AHEAD_DAYS)] + [b.onset for b in bars] + [b.end for b in bars if b.end] \
        + [m.day for m in marks if m.kind not in FOLLOW_UP_KINDS or m.day <= today] + [p.day for p in pain]
    return min(days) - timedelta(days=14), max(days) + timedelta(days=21)


def build_timeline(today: date, lanes: Sequence[LaneInput], bars: Sequence[BarInput], marks: Sequence[MarkInput],
                   pain: Sequence[PainInput]) -> Timeline:
    """The geometry of one patient's timeline (see module docstring). lanes are drawn in the
    order given; a mark or bar whose lane is unknown goes on the first lane. With no lanes, one
    lane "no episode" is drawn so that marks still have a place."""
    lanes = list(lanes) or [LaneInput((None, None), "no episode")]
    start, end = _range(today, bars, marks, pain)
    span = max((end - start).days, 1)
    plot_left, plot_right = float(LEFT), float(WIDTH - RIGHT)

    def x(day: date) -> float:
        return round(plot_left + (day - start).days / span * (plot_right - plot_left), 1)

    lane_y = {lane.key: AXIS + i * LANE for i, lane in enumerate(lanes)}
    first = lanes[0].key

    def y_of(key: tuple[str | None, str | None] | None) -> float:
        return float(lane_y.get(key, lane_y[first]) if key is not None else lane_y[first])

    lanes_bottom = AXIS + len(lanes) * LANE
    pain_top = lanes_bottom + GAP
    pain_bottom = pain_top + PAIN
    timeline = Timeline(width=WIDTH, height=int(pain_bottom + 30), start=start, end=end, today=today, plot_left=plot_left,
                        plot_right=plot_right, today_x=x(today), pain_top=pain_top, pain_bottom=pain_bottom)
    timeline.lanes.extend(Lane(lane.label, float(lane_y[lane.key]), float(LANE)) for lane in lanes)
    for bar in bars:
        y0 = y_of(bar.lane)
        stop = bar.end or today
        x1, x2 = x(bar.onset), x(max(stop, bar.onset))
        timeline.bars.append(Bar(x1, y0 + 24, max(x2 - x1, 2.0), 16, bar.end is None, bar.title, bar.label))
        for months in (12, 24):
            day = bar.onset + relativedelta(months=months)
            title = f"{months} months after the onset on {bar.onset.isoformat()} ({day.isoformat()})"
            if start <= day <= end:
                timeline.milestones.append(Milestone(x(day), y0 + 4, y0 + LANE - 4, f"{months} mo", title))
            elif day > end and bar.end is None and months == 12:   # ahead of the axis: said at its end
                timeline.milestones.append(Milestone(plot_right, y0 + 4, y0 + 20,
                                                     f"12 mo on {day.isoformat()} \u2192", title, beyond=True))
    offsets = {"flag": 12, "oedema": 32, "oedema-absent": 32, "avn": 32, "fracture": 32,
               "done": 52, "missed": 52, "due": 52, "upcoming": 52}
    for mark in marks:
        if not start <= mark.day <= end:
            continue    # a follow-up far ahead: listed in the table below the timeline
        timeline.marks.append(Mark(mark.kind, x(mark.day), y_of(mark.lane) + offsets.get(mark.kind, 32),
                                   mark.title, mark.text))
    timeline.months.extend(_months(start, end, x))
    scale = (pain_bottom - pain_top - 10) / 10
    timeline.pain_ticks.extend((round(pain_bottom - v * scale, 1), str(v)) for v in (0, 5, 10))
    for point in sorted(pain, key=lambda p: p.day):
        score = min(max(point.score, 0.0), 10.0)
        timeline.pain_points.append(PainPoint(x(point.day), round(pain_bottom - score * scale, 1), point.title,
                                              point.day))
    return timeline


def _months(start: date, end: date, x: object) -> list[Tick]:
    """A tick on the first of every month; labelled every month over short ranges, every
    quarter over long ones (with the year in January and on the first label)."""
    assert callable(x)
    every = 1 if (end - start).days <= 270 else 3
    day = date(start.year, start.month, 1) + relativedelta(months=1)
    ticks: list[Tick] = []
    while day <= end:
        label = ""
        if (day.month - 1) % every == 0:
            label = day.strftime("%b %Y") if day.month == 1 or not any(t.label for t in ticks) else day.strftime("%b")
        ticks.append(Tick(x(day), label))
        day += relativedelta(months=1)
    return ticks
