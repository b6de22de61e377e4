"""Value helpers: string normalisation, date ranges by precision, numbers, references."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from service.fhir.search.values import (Ref, date_range, normalize, number_range, parse_reference,
                                        split_prefix)

UTC = timezone.utc


def test_normalize_is_case_and_accent_insensitive() -> None:
    assert normalize("Müller") == normalize("MULLER") == "muller"
    assert normalize("Zoë Ølsen") == "zoe ølsen"
    assert normalize("Straße") == "strasse"


def test_normalize_of_ascii_text_equals_the_full_unicode_path() -> None:
    """normalize takes a short cut for ASCII text; every ASCII character, alone and in words
    with spaces and controls around them, gives what NFKD + dropping combining marks +
    casefold + strip gives."""
    import unicodedata

    def full(text: str) -> str:
        decomposed = unicodedata.normalize("NFKD", text)
        return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()

    samples = [chr(i) for i in range(128)] + ["  Body Weight\t", "\x1fHip MRI\n", "ABC-def_123 ~!@#$%^&*()", ""]
    for text in samples:
        assert text.isascii()
        assert normalize(text) == full(text), repr(text)


@pytest.mark.parametrize("value,low,high", [
    ("2026", datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ("2026-03", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
    ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ("2026-02", datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),     # 28 days
    ("2024-02", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),     # leap: 29 days
    ("2026-04", datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)),     # 30 days
    ("2024", datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)),        # a leap year
    ("2026-02-28", datetime(2026, 2, 28, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
    ("2026-03-01T10:00Z", datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 10, 1, tzinfo=UTC)),
    ("2026-03-01T10:00:05+02:00", datetime(2026, 3, 1, 8, 0, 5, tzinfo=UTC),
     datetime(2026, 3, 1, 8, 0, 6, tzinfo=UTC)),
    ("2026-03-01T10:00:05.25Z", datetime(2026, 3, 1, 10, 0, 5, 250000, tzinfo=UTC),
     datetime(2026, 3, 1, 10, 0, 5, 260000, tzinfo=UTC)),
    ("2026-03-01T10:00:05", datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC), datetime(2026, 3, 1, 10, 0, 6, tzinfo=UTC)),
])
def test_date_range_follows_precision(value: str, low: datetime, high: datetime) -> None:
    assert date_range(value) == (low, high)


@pytest.mark.parametrize("bad", ["26", "2026-3", "2026-03-01T10", "yesterday", "2026-13-01", ""])
def test_date_range_rejects_malformed_dates(bad: str) -> None:
    with pytest.raises(ValueError):
        date_range(bad)


def test_number_range_uses_significant_digits() -> None:
    assert number_range("5.4") == (Decimal("5.4"), Decimal("5.35"), Decimal("5.45"))
    assert number_range("100") == (Decimal(100), Decimal("99.5"), Decimal("100.5"))
    assert number_range("1e2")[1:] == (Decimal("50"), Decimal("150"))
    with pytest.raises(ValueError):
        number_range("ten")


def test_split_prefix() -> None:
    assert split_prefix("ge2026") == ("ge", "2026")
    assert split_prefix("2026") == ("eq", "2026")
    assert split_prefix("ap-5") == ("ap", "-5")
    assert split_prefix("eq") == ("eq", "eq")   # not a prefix when nothing numeric follows


@pytest.mark.parametrize("text,ref", [
    ("Patient/1", Ref("Patient", "1")),
    ("Patient/1/_history/3", Ref("Patient", "1")),
    ("http://toh.test/fhir/Patient/1", Ref("Patient", "1")),
    ("http://elsewhere.org/fhir/Patient/1", Ref(url="http://elsewhere.org/fhir/Patient/1")),
    ("urn:uuid:0f2e", Ref(url="urn:uuid:0f2e")),
    ("http://x.org/PlanDefinition/p|1.0", Ref(url="http://x.org/PlanDefinition/p")),
    ("#contained", None),
])
def test_parse_reference(text: str, ref: Ref | None) -> None:
    assert parse_reference(text, ("http://toh.test/fhir",)) == ref
