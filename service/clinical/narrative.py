"""Read imaging narrative for the guide's findings, with negation and uncertainty.

A small ConText / NegEx rule set (Chapman et al., "A simple algorithm for identifying negated
findings and diseases in discharge summaries", J Biomed Inform 2001; Harkema et al., "ConText",
J Biomed Inform 2009), restricted to the vocabulary the TOH rules act on. Why not medspaCy
ConText itself: see tests/unit/clinical/test_narrative.py and bench/bench_narrative.py; in
short, the same triggers and scope rules over a dozen target phrases cost about 0.1 ms per
report, while medspaCy's pipeline (spaCy tokenizer, PyRuSH sentences, ConText) costs about
20 ms per report and a 280 MB install: one report would spend the whole 5 ms budget of an
assessment four times over.

How a text is read:
- split into sentences (". ", "; ", new lines, ":" after a heading) and words (lower case);
- a *target* is a finding phrase of TARGETS ("double line sign", "subchondral fracture", ...);
- a *modifier* trigger opens a scope: pre-triggers ("no", "without", "negative for", "possible",
  "cannot exclude", "to rule out") look forward, post-triggers ("not seen", "is absent",
  "is suspected") look backward; a scope runs to the end of the sentence, at most SCOPE words,
  and stops at a terminator ("but", "however", "although", "which", "with" ... after a negation);
- pseudo-triggers ("no change", "no interval change", "not only") are not triggers;
- a target in a negation scope is absent; in an uncertainty scope it is uncertain; in a
  hypothetical scope ("to rule out", "risk of", "evaluate for") it is hypothetical; otherwise
  present. Negation wins over uncertainty ("no definite crescent sign" is absent).
- the side of a mention is the side named in its own sentence, if any.

Everything is memoised per text and per sentence: the same report text, or the same template
sentence, is read once per process; a text naming no finding word is skipped by one regex.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .anatomy import parse_text

PRESENT, ABSENT, UNCERTAIN, HYPOTHETICAL = "present", "absent", "uncertain", "hypothetical"

# Finding keys are the codes of the local CodeSystem (fhir_profiles/CodeSystem/CodeSystem-toh.json).
DOUBLE_LINE = "double-line-sign"
CRESCENT = "crescent-sign"
FOCAL_LESION = "focal-subchondral-lesion"
AVN = "avascular-necrosis"
FRACTURE_LINE = "subchondral-fracture-line"
OEDEMA = "bone-marrow-oedema-diffuse"

AVN_KEYS = frozenset((DOUBLE_LINE, CRESCENT, FOCAL_LESION, AVN))
FRACTURE_KEYS = frozenset((FRACTURE_LINE,))

TARGETS: dict[str, str] = {
    "double line sign": DOUBLE_LINE, "double line": DOUBLE_LINE,
    "crescent sign": CRESCENT, "subchondral crescent": CRESCENT, "crescent": CRESCENT,
    "focal subchondral lesion": FOCAL_LESION, "segmental subchondral lesion": FOCAL_LESION,
    "focal segmental lesion": FOCAL_LESION, "segmental lesion": FOCAL_LESION,
    "segmental necrosis": FOCAL_LESION,
    "avascular necrosis": AVN, "osteonecrosis": AVN, "avn": AVN, "aseptic necrosis": AVN,
    "subchondral fracture line": FRACTURE_LINE, "subchondral fracture": FRACTURE_LINE,
    "subchondral insufficiency fracture": FRACTURE_LINE, "insufficiency fracture": FRACTURE_LINE,
    "fracture line": FRACTURE_LINE,
    "bone marrow oedema": OEDEMA, "bone marrow edema": OEDEMA, "marrow oedema": OEDEMA,
    "marrow edema": OEDEMA, "bone marrow oedema pattern": OEDEMA, "bone marrow edema pattern": OEDEMA,
}

NAMES: dict[str, str] = {
    DOUBLE_LINE: "Double-line sign", CRESCENT: "Crescent sign",
    FOCAL_LESION: "Focal subchondral lesion", AVN: "Avascular necrosis",
    FRACTURE_LINE: "Subchondral fracture line", OEDEMA: "Diffuse bone marrow oedema",
}

# (phrase, kind, direction): direction "pre" looks forward, "post" looks backward.
_TRIGGERS: list[tuple[str, str, str]] = [
    *[(p, ABSENT, "pre") for p in (
        "no", "not", "without", "negative for", "no evidence of", "no sign of", "no signs of",
        "absence of", "absent", "free of", "no definite", "no convincing", "no focal", "nor",
        "resolution of", "resolved", "never", "denies", "excluded", "rules out", "ruled out",
        "no mri evidence of", "no radiographic evidence of", "there is no", "there was no",
        "rather than", "instead of", "avoid", "avoiding", "do not", "must not", "should not")],
    *[(p, ABSENT, "post") for p in (
        "not seen", "not identified", "not present", "not demonstrated", "not detected",
        "not visualised", "not visualized", "not evident", "is absent", "are absent", "absent",
        "was absent", "were absent", "has resolved", "have resolved", "resolved", "excluded",
        "is excluded", "ruled out", "is ruled out", "not appreciated", "none")],
    *[(p, UNCERTAIN, "pre") for p in (
        "possible", "possibly", "probable", "probably", "questionable", "suspicious for",
        "suspected", "equivocal", "may represent", "might represent", "could represent",
        "cannot exclude", "can not exclude", "cannot rule out", "can not rule out",
        "not excluded", "concern for", "concerning for", "suggestive of", "suggests", "?",
        "differential includes", "versus", "vs", "likely", "query", "indeterminate")],
    *[(p, UNCERTAIN, "post") for p in (
        "cannot be excluded", "can not be excluded", "not excluded", "is not excluded",
        "cannot be ruled out", "is suspected", "suspected", "is questionable", "is possible",
        "is not certain", "uncertain", "?", "versus", "vs")],
    *[(p, HYPOTHETICAL, "pre") for p in (
        "to rule out", "rule out", "r o", "evaluate for", "evaluation for", "assess for",
        "risk of", "at risk of", "to exclude", "to assess for", "if", "prevent", "protect against",
        "in case of", "history of", "family history of", "indication", "clinical question")],
]
_PSEUDO = ("no change", "no interval change", "no significant change", "not only", "no increase",
           "not necessarily", "no longer", "without change", "no new")
_TERMINATORS = frozenset(("but", "however", "although", "though", "which", "whereas", "except",
                          "aside", "apart", "yet", "still", "and", "with"))
SCOPE = 6      # words a trigger reaches

_WORD = re.compile(r"\?|[a-z0-9]+")
_SENTENCES = re.compile(r"[.!;](?:\s+|$)|\n+|:\s+(?=[A-Z])")


_TARGET_WORDS = {tuple(_WORD.findall(p)): key for p, key in TARGETS.items()}
_MAX_TARGET = max(len(k) for k in _TARGET_WORDS)
_TARGET_FIRST = frozenset(k[0] for k in _TARGET_WORDS)
_ANY_TARGET = re.compile(r"\b(?:" + "|".join(sorted(_TARGET_FIRST)) + r")\b", re.IGNORECASE)
# first word -> [(phrase words, kind, direction)], longest phrase first; kind None = pseudo.
_BY_FIRST: dict[str, list[tuple[tuple[str, ...], str | None, str]]] = {}
for _phrase, _kind, _direction in [*_TRIGGERS, *((p, None, "") for p in _PSEUDO)]:
    _words = tuple(_WORD.findall(_phrase))
    _BY_FIRST.setdefault(_words[0], []).append((_words, _kind, _direction))
for _entries in _BY_FIRST.values():
    _entries.sort(key=lambda e: (-len(e[0]), e[1] is not None))


@dataclass(frozen=True)
class Mention:
    """A finding named in a text: `key` (a local finding code), its assertion (present, absent,
    uncertain or hypothetical), the sides its own sentence names (empty: none named) and the
    sentence it was read from."""

    key: str
    assertion: str
    sides: frozenset[str]
    sentence: str

    @property
    def name(self) -> str:
        """The finding's display name ("Double-line sign")."""
        return NAMES[self.key]


def _targets(words: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, key) of the target phrases in words, longest first, not overlapping."""
    out: list[tuple[int, int, str]] = []
    i = 0
    while i < len(words):
        if words[i] not in _TARGET_FIRST:
            i += 1
            continue
        for n in range(min(_MAX_TARGET, len(words) - i), 0, -1):
            key = _TARGET_WORDS.get(tuple(words[i:i + n]))
            if key is not None:
                out.append((i, i + n, key))
                i += n
                break
        else:
            i += 1
    return out


def _scopes(words: list[str], targets: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """(start, end, kind) word ranges each trigger governs."""
    covered = {j for s, e, _ in targets for j in range(s, e)}
    scopes: list[tuple[int, int, str]] = []
    i, count = 0, len(words)
    while i < count:
        entries = _BY_FIRST.get(words[i]) if i not in covered else None
        match = None
        for phrase, kind, direction in entries or ():
            n = len(phrase)
            if tuple(words[i:i + n]) == phrase and not any(j in covered for j in range(i, i + n)):
                match = (n, kind, direction)
                break
        if match is None:
            i += 1
            continue
        n, kind, direction = match
        if kind is None:                       # a pseudo-trigger: not a trigger
            i += n
            continue
        if direction == "pre":
            end = i + n
            while end < count and end - (i + n) < SCOPE and words[end] not in _TERMINATORS:
                end += 1
            scopes.append((i + n, end, kind))
        else:
            start = i
            while start > 0 and i - start < SCOPE and words[start - 1] not in _TERMINATORS:
                start -= 1
            scopes.append((start, i, kind))
        i += n
    return scopes


_PRIORITY = {ABSENT: 3, HYPOTHETICAL: 2, UNCERTAIN: 1}


@lru_cache(maxsize=8192)
def _sentence_mentions(sentence: str) -> tuple[Mention, ...]:
    """The mentions of one sentence (remembered: report templates repeat their sentences)."""
    words = _WORD.findall(sentence.lower())
    targets = _targets(words)
    if not targets:
        return ()
    scopes = _scopes(words, targets)
    _, sides, conflict = parse_text(sentence)
    if conflict:
        sides = frozenset()
    out = []
    for start, end, key in targets:
        kinds = [kind for s, e, kind in scopes if s <= start < e or s < end <= e]
        assertion = max(kinds, key=_PRIORITY.__getitem__) if kinds else PRESENT
        out.append(Mention(key, assertion, sides, sentence.strip()))
    return tuple(out)


@lru_cache(maxsize=4096)
def read_text(text: str) -> tuple[Mention, ...]:
    """The finding mentions of a narrative text, in order (see the module docstring)."""
    if not _ANY_TARGET.search(text):
        return ()
    out: list[Mention] = []
    for sentence in _SENTENCES.split(text):
        if sentence.strip():
            out.extend(_sentence_mentions(sentence))
    return tuple(out)


@lru_cache(maxsize=4096)
def qualifier(text: str) -> str:
    """How a short label asserts what it names: "absent" ("No transient osteoporosis",
    "TOH ruled out"), "uncertain" ("? TOH", "possible bone marrow oedema syndrome"),
    "hypothetical" ("to rule out TOH", "history of ..."), else "present"."""
    words = _WORD.findall(text.lower())
    kinds = {kind for _, _, kind in _scopes(words, [])}
    for kind in (ABSENT, HYPOTHETICAL, UNCERTAIN):
        if kind in kinds:
            return kind
    return PRESENT
