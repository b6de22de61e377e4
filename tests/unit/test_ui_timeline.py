"""The timeline's geometry (service.web.timeline) and the worklist's order of urgency, as pure
functions: no app, no database."""
from __future__ import annotations

from datetime import date, timedelta

from service.web.acknowledgement import acknowledge, acknowledged_by
from service.web.timeline import AHEAD_DAYS, BarInput, LaneInput, MarkInput, PainInput, build_timeline
from service.web.worklist import URGENCY, urgency

TODAY = date(2026, 6, 1)
HIP, KNEE = ("hip", "left"), ("knee", "right")


def test_a_day_scale_over_the_data_with_the_axis_ahead_of_today() -> None:
    t = build_timeline(TODAY, [LaneInput(HIP, "left hip")], [BarInput(HIP, date(2025, 6, 1), None, "t", "active")],
                       [], [])
    assert t.start == date(2025, 6, 1) - timedelta(days=14)
    assert t.end == TODAY + timedelta(days=AHEAD_DAYS + 21)
    bar = t.bars[0]
    expected = t.plot_left + 14 / (t.end - t.start).days * (t.plot_right - t.plot_left)
    assert bar.active and abs(bar.x - expected) < 0.1
    assert abs(bar.x + bar.width - t.today_x) < 0.2   # an active episode runs to today


def test_a_resolved_episode_ends_at_its_resolution_and_lanes_stack() -> None:
    lanes = [LaneInput(HIP, "left hip"), LaneInput(KNEE, "right knee")]
    bars = [BarInput(HIP, date(2025, 1, 1), date(2025, 9, 1), "hip", "resolved"),
            BarInput(KNEE, date(2025, 8, 1), None, "knee", "active")]
    t = build_timeline(TODAY, lanes, bars, [], [])
    hip, knee = t.bars
    assert not hip.active and knee.active and knee.y > hip.y
    assert hip.x + hip.width < knee.x + knee.width
    assert [lane.label for lane in t.lanes] == ["left hip", "right knee"] and t.lanes[1].y > t.lanes[0].y


def test_the_12_and_24_month_marks() -> None:
    onset = date(2024, 5, 1)
    t = build_timeline(TODAY, [LaneInput(HIP, "left hip")], [BarInput(HIP, onset, None, "t", "active")], [], [])
    assert [m.text for m in t.milestones] == ["12 mo", "24 mo"]
    assert t.milestones[0].x < t.milestones[1].x < t.today_x   # 2025-05-01 and 2026-05-01
    young = build_timeline(TODAY, [LaneInput(KNEE, "right knee")],
                           [BarInput(KNEE, date(2026, 5, 1), None, "t", "active")], [], [])
    assert [m.text for m in young.milestones] == ["12 mo on 2027-05-01 \u2192"] and young.milestones[0].beyond


def test_marks_go_on_their_lane_and_far_follow_ups_are_left_to_the_table() -> None:
    lanes = [LaneInput(HIP, "left hip"), LaneInput(KNEE, "right knee")]
    marks = [MarkInput(KNEE, date(2026, 3, 1), "avn", "AVN"), MarkInput(None, date(2026, 2, 1), "flag", "F1", "F1"),
             MarkInput(HIP, TODAY + timedelta(days=400), "upcoming", "far"),
             MarkInput(HIP, TODAY + timedelta(days=10), "upcoming", "near")]
    t = build_timeline(TODAY, lanes, [], marks, [])
    by_title = {m.title: m for m in t.marks}
    assert set(by_title) == {"AVN", "F1", "near"}
    assert by_title["AVN"].y > t.lanes[1].y and by_title["F1"].y < t.lanes[1].y   # unknown lane: the first
    assert t.end < TODAY + timedelta(days=400)


def test_pain_is_a_line_from_0_at_the_bottom_to_10_at_the_top() -> None:
    pain = [PainInput(date(2026, 1, 1), 10, "ten"), PainInput(date(2025, 12, 1), 0, "zero"),
            PainInput(date(2026, 2, 1), 12, "clamped")]
    t = build_timeline(TODAY, [], [], [], pain)
    assert [p.title for p in t.pain_points] == ["zero", "ten", "clamped"]
    zero, ten, clamped = t.pain_points
    assert zero.y == t.pain_bottom and ten.y < zero.y and clamped.y == ten.y
    assert t.pain_line.count(",") == 3 and t.lanes[0].label == "no episode"


def test_urgency_puts_avn_and_fracture_first() -> None:
    assert URGENCY[:2] == ("avn-features", "insufficiency-fracture")
    assert sorted(["delayed-resolution", "something-else", "insufficiency-fracture", "avn-features"], key=urgency) \
        == ["avn-features", "insufficiency-fracture", "delayed-resolution", "something-else"]


def test_an_acknowledgement_is_a_tag_replaced_not_repeated() -> None:
    flag = {"resourceType": "Flag", "meta": {"versionId": "1", "tag": [{"system": "x", "code": "y"}]}}
    once = acknowledge(flag, "nurse-kim", TODAY)
    twice = acknowledge(once, "dr-lee", TODAY + timedelta(days=1))
    assert acknowledged_by(flag) is None and acknowledged_by(once) == "Acknowledged by nurse-kim on 2026-06-01"
    assert [t.get("display") for t in twice["meta"]["tag"]] == [None, "Acknowledged by dr-lee on 2026-06-02"]
    assert "tag" in flag["meta"] and len(flag["meta"]["tag"]) == 1   # the input is left alone


def test_pain_scores_are_the_loinc_0_to_10_ratings_by_day() -> None:
    from service.web.patient import pain_scores

    def obs(oid: str, day: str, value: object, code: str = "72514-3", status: str = "final") -> dict[str, object]:
        return {"resourceType": "Observation", "id": oid, "status": status, "effectiveDateTime": day,
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "valueQuantity": {"value": value}}

    found = pain_scores([obs("b", "2026-02-01T10:00:00Z", 4), obs("a", "2026-01-01", 7),
                         obs("wrong-code", "2026-01-02", 5, code="8867-4"), obs("void", "2026-01-03", 9, status="entered-in-error"),
                         obs("no-number", "2026-01-04", "7"), obs("flag", "2026-01-05", True)])
    assert found == [(date(2026, 1, 1), 7.0, "Observation/a"), (date(2026, 2, 1), 4.0, "Observation/b")]
