"""Utility-agnostic pricing arithmetic that tariff models in plugins compose.

No tariff model lives here (those are in the plugins); this module holds what every model needs and
must do the same way: the exact ``Decimal`` context, the breakdown :class:`Line`, the one rounding
rule (half-up to the fen, once per transaction), a step ladder walk, and proration by days.

What a model receives: :class:`Usage` (a quantity consumed or bought, where the meter stands in its
ladder period, and when) or :class:`Charge` (a fixed charge over part of a billing period). What
it returns: exact :class:`Line` items in yuan. The core's :mod:`onecard.tariffs` sums the lines of
every tariff version in force and rounds once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any

#: One fen (分) in yuan.
FEN = Decimal("0.01")

#: Enough precision that no realistic tariff sum loses a digit before the final rounding.
PRECISION = 40


def exact() -> Any:
    """A ``with`` block in the pricing precision (40 digits; no rounding surprises)."""
    return localcontext(Context(prec=PRECISION))


def round_fen(yuan: Decimal) -> int:
    """Exact yuan -> integer fen, rounded half-up: the one rounding of a transaction."""
    return int(yuan.quantize(FEN, rounding=ROUND_HALF_UP).scaleb(2))


@dataclass(frozen=True)
class Line:
    """One item of a quote's breakdown, in exact yuan.

    ``item`` says what the line is: ``energy`` (a quantity at a price), ``component`` (a
    surcharge per unit such as a sewage fee), ``fixed`` (a charge not tied to quantity, such as a
    heat basic fee or a month's rent). ``tier`` (1-based), ``band`` and ``component`` name where
    the quantity fell; ``label`` is the text for a receipt. The core adds ``version`` and the
    ``start``/``end`` of the time piece when it splits a request across tariff versions.
    """

    item: str
    label: str
    amount: Decimal
    quantity: Decimal | None = None
    unit: str | None = None
    price: Decimal | None = None
    tier: int | None = None
    band: str | None = None
    component: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    """A quantity to price, with the meter's position and when it is used.

    ``quantity`` and ``used_before`` are in the kind's unit (kWh, m³, GJ), exact. ``used_before``
    is how much of the current ladder period is already used or bought. The quantity is all used
    at ``start`` when ``end`` is None, else spread evenly over ``[start, end)``, unless
    ``by_band`` gives the shares per time-of-use band explicitly (they sum to 1). Times are aware,
    in the tariff's time zone.
    """

    quantity: Decimal
    used_before: Decimal
    start: dt.datetime
    end: dt.datetime | None = None
    by_band: Mapping[str, Decimal] | None = None
    unit: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Charge:
    """A fixed charge for the days ``[start, end)`` of the billing period ``[period_start,
    period_end)``; the model prorates by ``days / period_days``. ``context`` carries what the
    charge is measured by (``heated_area``, ``floor_area`` in m² as ``Decimal``)."""

    start: dt.date
    end: dt.date
    period_start: dt.date
    period_end: dt.date
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def period_days(self) -> int:
        return (self.period_end - self.period_start).days

    @property
    def whole(self) -> bool:
        return self.start == self.period_start and self.end == self.period_end

    def prorate(self, amount: Decimal) -> Decimal:
        """``amount`` for the whole period -> the share of these days (exact)."""
        if self.whole:
            return amount
        with exact():
            return amount * self.days / self.period_days


def ladder(
    bounds: Sequence[Decimal | None], used_before: Decimal, quantity: Decimal
) -> list[tuple[int, Decimal]]:
    """Walk a step ladder: ``[(step index, quantity in that step), ...]`` for ``quantity`` units
    that start ``used_before`` units into the period.

    ``bounds[i]`` is the cumulative quantity where step ``i`` ends (``None``: no end, only the
    last step). Steps with nothing in them are left out; a zero quantity gives ``[]``.
    """
    out: list[tuple[int, Decimal]] = []
    position = used_before
    left = quantity
    lower = Decimal(0)
    for i, upper in enumerate(bounds):
        if left <= 0:
            break
        if upper is not None and position >= upper:
            lower = upper
            continue
        room = left if upper is None else min(left, upper - max(position, lower))
        if room > 0:
            out.append((i, room))
            left -= room
            position += room
        if upper is not None:
            lower = upper
    if left > 0:
        raise ValueError("the ladder's last step must be open-ended (upto: null)")
    return out


def overlap(
    start: dt.datetime, end: dt.datetime, windows: Sequence[tuple[dt.datetime, dt.datetime]]
) -> dt.timedelta:
    """How much of ``[start, end)`` the windows cover (windows must not overlap each other)."""
    total = dt.timedelta(0)
    for a, b in windows:
        lo, hi = max(a, start), min(b, end)
        if hi > lo:
            total += hi - lo
    return total


def to_quantity(units: int, decimals: int) -> Decimal:
    """Integer smallest units -> the quantity in the kind's unit: ``(12345, 2) -> 123.45``."""
    return Decimal(units).scaleb(-decimals)


def calendar_period(
    at: dt.datetime, reset: str, anchor: tuple[int, int] = (1, 1)
) -> tuple[dt.datetime, dt.datetime]:
    """The ladder period holding ``at`` (aware, local): ``reset`` is ``monthly`` or ``annual``;
    an annual period starts each year on ``anchor`` (month, day), a monthly one on the 1st.
    Returns local midnights ``[start, end)``."""
    tz = at.tzinfo
    if reset == "monthly":
        start = dt.datetime(at.year, at.month, 1, tzinfo=tz)
        nxt = dt.datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=tz)
        return start, nxt
    if reset == "annual":
        month, day = anchor
        start = dt.datetime(at.year, month, day, tzinfo=tz)
        if start > at:
            start = dt.datetime(at.year - 1, month, day, tzinfo=tz)
        return start, dt.datetime(start.year + 1, month, day, tzinfo=tz)
    raise ValueError(f"unknown ladder reset {reset!r}")
