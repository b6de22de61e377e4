"""Value helpers shared by extraction and query parsing: string normalisation, FHIR dates as
UTC ranges by precision, numbers as ranges by significant digits (references: service.fhir.references).

All ranges are half-open [low, high). Dates are timezone-aware UTC datetimes; an open end
of a Period is LOW_END / HIGH_END. See https://hl7.org/fhir/R4/search.html#date and
https://hl7.org/fhir/R4/search.html#number.
"""
from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from dateutil.relativedelta import relativedelta

# References and ids live in service.fhir.references; re-exported for the search modules.
from service.fhir.references import Ref, is_id, is_type_name, parse_reference  # noqa: F401

UTC = timezone.utc
LOW_END = datetime(1, 1, 1, tzinfo=UTC)
HIGH_END = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$")
_PREFIXED = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+.\d])")


def normalize(text: str) -> str:
    """Case- and accent-insensitive form of a string: NFKD, combining marks dropped, casefold."""
    if text.isascii():   # NFKD leaves ASCII as it is, and no ASCII character is a combining mark
        return text.casefold().strip()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def fold_case(text: str) -> str:
    """The case-insensitive form of a token taken from a string-typed element (R4: "If the
    underlying datatype is string then the search is not case sensitive"), cut to the
    index's 255 characters."""
    return text.casefold()[:255]


def split_prefix(value: str) -> tuple[str, str]:
    """'ge2026' -> ('ge', '2026'); no prefix means 'eq'."""
    m = _PREFIXED.match(value)
    return (m.group(1), value[2:]) if m else ("eq", value)


def date_range(value: str) -> tuple[datetime, datetime]:
    """The UTC range [low, high) a FHIR date/dateTime/instant covers, by its precision.

    '2026' -> [2026-01-01, 2027-01-01); '2026-03-01T10:00Z' -> one minute. A time without
    a zone is taken as UTC. Raises ValueError for anything that is not a FHIR date.
    """
    m = _DATE.match(value.strip())
    if not m:
        raise ValueError(f"not a FHIR date: {value!r}")
    g = m.groupdict()
    y, mo, d = int(g["y"]), int(g["m"] or 1), int(g["d"] or 1)
    if g["H"] is None:
        low = datetime(y, mo, d, tzinfo=UTC)
        step = relativedelta(years=1) if g["m"] is None else (
            relativedelta(months=1) if g["d"] is None else relativedelta(days=1))
        return low, _add(low, step)
    frac = g["f"] or ""
    micro = int((frac + "000000")[:6]) if frac else 0
    tz = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hh, mm = int(g["tz"][1:3]), int(g["tz"][4:6])
        tz = timezone(sign * timedelta(hours=hh, minutes=mm))
    local = datetime(y, mo, d, int(g["H"]), int(g["M"]), int(g["S"] or 0), micro, tzinfo=tz)
    low = to_utc(local)
    if g["S"] is None:
        step = timedelta(minutes=1)
    elif not frac:
        step = timedelta(seconds=1)
    else:
        step = timedelta(microseconds=10 ** max(0, 6 - len(frac)))
    return low, _add(low, step)


def to_utc(moment: datetime) -> datetime:
    """An aware datetime in UTC; one whose UTC time falls outside the calendar (0001-01-01
    00:00 at +01:00, 9999-12-31 23:00 at -02:00) is clamped to LOW_END / HIGH_END."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return LOW_END if moment.year == 1 else HIGH_END


def shift(moment: datetime, step: timedelta) -> datetime:
    """moment + step, clamped to [LOW_END, HIGH_END] instead of overflowing."""
    try:
        return moment + step
    except OverflowError:
        return HIGH_END if step > timedelta(0) else LOW_END


def _add(moment: datetime, step: timedelta | relativedelta) -> datetime:
    try:
        return moment + step
    except OverflowError:
        return HIGH_END


def number_range(text: str) -> tuple[Decimal, Decimal, Decimal]:
    """(value, low, high) of a search number by its significant digits: '5.4' -> 5.35..5.45.

    Raises ValueError if text is not a decimal number.
    """
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    return value, value - half, value + half
