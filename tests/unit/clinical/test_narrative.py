"""The narrative reader against the ConText / NegEx behaviours a hip MRI report needs.

Why a small rule set and not medspaCy's ConText: medspaCy 1.3.1 installs from PyPI without a
model (spaCy 3.7, PyRuSH, 283 MB in a fresh venv), but on this machine one report costs about
22 ms through its pipeline (p50, 300 reports, `python bench/bench_narrative.py` in a venv with medspaCy, see the note
of issue 9): one report alone is four times the 5 ms budget of a 200-resource assessment.
The rule set below costs about 0.1 ms per report and covers each ConText behaviour that changes
a TOH flag: pre- and post-negation, uncertainty, hypothetical (indication) scopes, scope
termination, pseudo-negation, negation winning over uncertainty, and sentence boundaries; the
finding vocabulary is the guide's (double-line sign, crescent sign, focal/segmental lesion,
AVN, subchondral fracture, marrow oedema). Every row was written from the report's plain
meaning, both directions.
"""
from __future__ import annotations

import pytest

from service.clinical import narrative
from service.clinical.narrative import ABSENT, HYPOTHETICAL, PRESENT, UNCERTAIN

DLS, CRESCENT, LESION, AVN, FRACTURE, OEDEMA = (
    narrative.DOUBLE_LINE, narrative.CRESCENT, narrative.FOCAL_LESION, narrative.AVN,
    narrative.FRACTURE_LINE, narrative.OEDEMA)

ROWS = [
    # affirmed
    ("Double line sign on T2.", [(DLS, PRESENT)]),
    ("There is a subchondral crescent sign.", [(CRESCENT, PRESENT)]),
    ("Segmental lesion of the anterosuperior femoral head.", [(LESION, PRESENT)]),
    ("Findings consistent with avascular necrosis.", [(AVN, PRESENT)]),
    ("Subchondral insufficiency fracture of the femoral head.", [(FRACTURE, PRESENT)]),
    ("Diffuse bone marrow edema of the femoral head and neck.", [(OEDEMA, PRESENT)]),
    # negated before and after
    ("No double line sign.", [(DLS, ABSENT)]),
    ("No double line sign, crescent sign or collapse.", [(DLS, ABSENT), (CRESCENT, ABSENT)]),
    ("Without evidence of a subchondral fracture.", [(FRACTURE, ABSENT)]),
    ("Negative for osteonecrosis.", [(AVN, ABSENT)]),
    ("Double-line sign not identified.", [(DLS, ABSENT)]),
    ("Crescent sign: none.", [(CRESCENT, ABSENT)]),
    ("The bone marrow oedema has resolved.", [(OEDEMA, ABSENT)]),
    ("Transient osteoporosis rather than AVN.", [(AVN, ABSENT)]),
    # uncertain
    ("Possible crescent sign.", [(CRESCENT, UNCERTAIN)]),
    ("Early osteonecrosis cannot be excluded.", [(AVN, UNCERTAIN)]),
    ("Appearances suspicious for a subchondral fracture.", [(FRACTURE, UNCERTAIN)]),
    ("Transient osteoporosis vs AVN.", [(AVN, UNCERTAIN)]),
    ("No definite double line sign.", [(DLS, ABSENT)]),          # negation wins over doubt
    # hypothetical: indication, risk, history
    ("Indication: rule out AVN.", [(AVN, HYPOTHETICAL)]),
    ("Protected weight-bearing to reduce the risk of insufficiency fracture.", [(FRACTURE, HYPOTHETICAL)]),
    # scope ends at a terminator or a sentence, and does not reach past SCOPE words
    ("No effusion but a double line sign is present.", [(DLS, PRESENT)]),
    ("No effusion. Double line sign on T2.", [(DLS, PRESENT)]),
    ("No effusion; subchondral fracture line in the femoral head.", [(FRACTURE, PRESENT)]),
    ("No effusion is seen in the joint space of the hip today and the double line sign is seen.",
     [(DLS, PRESENT)]),
    # pseudo-negation
    ("No interval change in the double line sign.", [(DLS, PRESENT)]),
    ("Not only marrow oedema but also a crescent sign.", [(OEDEMA, PRESENT), (CRESCENT, PRESENT)]),
    # nothing to read
    ("Joint space preserved. Small effusion.", []),
]


@pytest.mark.parametrize("text, expected", ROWS, ids=[r[0] for r in ROWS])
def test_assertions(text, expected):
    assert [(m.key, m.assertion) for m in narrative.read_text(text)] == expected


@pytest.mark.parametrize("text, sides", [
    ("Left hip: double line sign.", {"left"}),
    ("Double line sign in the right femoral head.", {"right"}),
    ("Double line sign.", set()),
    ("Double line sign, left or right side unclear.", set()),   # a contradiction names no side
])
def test_side_of_the_sentence(text, sides):
    (mention,) = narrative.read_text(text)
    assert set(mention.sides) == sides


@pytest.mark.parametrize("label, assertion", [
    ("Transient osteoporosis R hip", PRESENT), ("No transient osteoporosis", ABSENT),
    ("TOH ruled out", ABSENT), ("? TOH left hip", UNCERTAIN), ("Possible bone marrow oedema syndrome", UNCERTAIN),
    ("History of TOH", HYPOTHETICAL), ("Transient osteoporosis of hip, left", PRESENT),
])
def test_qualifier_of_a_label(label, assertion):
    assert narrative.qualifier(label) == assertion
