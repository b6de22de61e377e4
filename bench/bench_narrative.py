"""Benchmark: the narrative reader (service.clinical.narrative) against medspaCy's ConText.

    python bench/bench_narrative.py [--reports 300]

medspaCy is not a dependency of the service; install it in a separate venv to compare
(`python -m venv /tmp/ms && /tmp/ms/bin/pip install medspacy` plus this project's dependencies,
or run this file with PYTHONPATH pointing at the repository). Without it only our reader is
timed. Each report text is different (a number in it), and our reader's memos are emptied
before each call, so neither side reads a report twice.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.clinical import narrative  # noqa: E402

TEMPLATE = ("Diffuse bone marrow oedema of the right femoral head and neck, small effusion {i} ml. "
            "No double line sign, crescent sign or collapse.")


def ours(text: str) -> list[tuple[str, str]]:
    narrative.read_text.cache_clear()
    narrative._sentence_mentions.cache_clear()
    return [(m.key, m.assertion) for m in narrative.read_text(text)]


def p(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=300)
    args = parser.parse_args()
    texts = [TEMPLATE.format(i=i) for i in range(args.reports)]
    readers = {"service.clinical.narrative": ours}
    try:
        from loguru import logger
        logger.remove()                     # PyRuSH logs every token at DEBUG otherwise
    except ImportError:
        pass
    try:
        import medspacy
        from medspacy.ner import TargetRule
        t0 = time.perf_counter()
        nlp = medspacy.load()
        nlp.get_pipe("medspacy_target_matcher").add([TargetRule(t, "FINDING") for t in (
            "double line sign", "crescent sign", "bone marrow oedema", "collapse")])
        print(f"medspaCy {medspacy.__version__}: pipeline {nlp.pipe_names} loaded in "
              f"{time.perf_counter() - t0:.2f} s")
        readers["medspacy ConText"] = lambda t: [(e.text, "absent" if e._.is_negated else "present")
                                                 for e in nlp(t).ents]
    except ImportError:
        print("medspaCy not installed: timing our reader only")
    results = {}
    for name, read in readers.items():
        for t in texts[:20]:
            read(t)
        samples = []
        for t in texts:
            s = time.perf_counter()
            read(t)
            samples.append((time.perf_counter() - s) * 1000)
        results[name] = samples
        print(f"{name:28} p50 {p(samples, .5):8.3f} ms  p95 {p(samples, .95):8.3f} ms  "
              f"mean {statistics.fmean(samples):8.3f} ms   e.g. {read(texts[0])}")
    if len(results) == 2:
        a, b = results["medspacy ConText"], results["service.clinical.narrative"]
        print(f"medspaCy p50 / ours p50 = {p(a, .5) / p(b, .5):.0f}x")
        agreement(medspacy.load(), TargetRule)     # a fresh pipeline: only our targets
    return 0


def agreement(nlp: Any, target_rule: Any) -> None:
    """How often medspaCy's default ConText rules, given our finding phrases as targets, give
    the assertion tests/unit/clinical/test_narrative.py expects for each row."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "clinical"))
    from test_narrative import ROWS
    phrases = list(narrative.TARGETS.items())
    phrases += [(k.replace(" ", "-"), v) for k, v in phrases if " " in k]
    nlp.get_pipe("medspacy_target_matcher").add([target_rule(k, v) for k, v in phrases])
    agree = 0
    for text, expected in ROWS:
        got = [(e.label_, "absent" if e._.is_negated else "hypothetical" if e._.is_hypothetical
                else "uncertain" if e._.is_uncertain else "present") for e in nlp(text).ents]
        agree += got == expected
        if got != expected:
            print(f"  differs: {text!r}: medspaCy {got}, expected {expected}")
    print(f"medspaCy ConText (default rules) gives the expected assertion on {agree}/{len(ROWS)} rows; "
          f"service.clinical.narrative on {len(ROWS)}/{len(ROWS)} (pytest tests/unit/clinical/test_narrative.py)")


if __name__ == "__main__":
    raise SystemExit(main())
