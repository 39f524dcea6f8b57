"""Quoting: split a request across tariff versions and ladder periods, sum exactly, round once.

Nothing here touches the database: a :class:`Schedule` holds the compiled versions of one tariff,
and :func:`quote_units`, :func:`quote_money` and :func:`quote_fixed` price against it. The models
(in plugins) price each piece; this module decides the pieces:

* **versions**: a request over ``[at, until)`` that spans a price change is split at the instant
  of the change, the quantity shared in proportion to time, and each piece priced by its version;
  fixed charges are split by days (a day belongs to the version in force when it begins);
* **ladder periods**: where a piece crosses the end of a ladder period (month, year), the quantity
  after it starts the new period at zero;
* **rounding**: the exact yuan of every line are summed and rounded half-up to the fen once.
  Buying with money gives the most whole smallest units whose rounded price the money covers;
  what is left (less than one smallest unit's price) stays with the customer as credit.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from onecard.errors import InvalidInput, NotFound
from onecard.interfaces import TariffModel
from onecard.money import format_fen
from onecard.pricing import Charge, Line, Usage, exact, round_fen, to_quantity
from onecard.utility import UtilityKind

#: The most smallest units one quote may price (10**12: 10 billion kWh at 0.01 kWh).
MAX_UNITS = 10**12


@dataclass(frozen=True)
class Version:
    """One version of a tariff, compiled: ``bodies`` maps a customer category (or None, for
    every category) to what the model prices with."""

    kind: str
    name: str
    version: int
    model: TariffModel
    effective_from: dt.datetime
    tz: ZoneInfo
    bodies: Mapping[str | None, Any]
    document: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None

    def priced(self, category: str | None) -> Any:
        if category in self.bodies:
            return self.bodies[category]
        if None in self.bodies:
            return self.bodies[None]
        have = ", ".join(sorted(str(c) for c in self.bodies))
        raise NotFound(
            f"tariff {self.kind}/{self.name} v{self.version} has no price table for category "
            f"{category!r} (it has: {have})",
            field="category",
        )

    def change_day(self) -> dt.date:
        """The first day this version prices whole (a day belongs to the version in force
        when it begins)."""
        local = self.effective_from.astimezone(self.tz)
        return local.date() if local.time() == dt.time(0) else local.date() + dt.timedelta(days=1)


@dataclass(frozen=True)
class Schedule:
    """Every version of one tariff (a kind and a name), in the order they take effect."""

    kind: UtilityKind
    name: str
    versions: Sequence[Version]

    def __post_init__(self) -> None:
        ordered = sorted(self.versions, key=lambda v: (v.effective_from, v.version))
        # of two versions taking effect at the same instant, the later version wins
        kept: list[Version] = []
        for v in ordered:
            if kept and kept[-1].effective_from == v.effective_from:
                kept[-1] = v
            else:
                kept.append(v)
        object.__setattr__(self, "versions", tuple(kept))
        object.__setattr__(self, "_starts", [v.effective_from for v in kept])

    def at(self, when: dt.datetime) -> Version:
        """The version in force at ``when``."""
        i = bisect.bisect_right(self._starts, when)  # type: ignore[attr-defined]
        if i == 0:
            first = self.versions[0].effective_from.isoformat() if self.versions else "never"
            raise NotFound(
                f"tariff {self.kind.code}/{self.name} is not in force at {when.isoformat()} "
                f"(its first version takes effect {first})",
                field="at",
            )
        return self.versions[i - 1]

    def pieces(
        self, start: dt.datetime, end: dt.datetime
    ) -> list[tuple[Version, dt.datetime, dt.datetime]]:
        """``[start, end)`` cut at each change of version."""
        out = []
        cursor = start
        v = self.at(start)
        i = self.versions.index(v) + 1
        while i < len(self.versions) and self.versions[i].effective_from < end:
            nxt = self.versions[i]
            out.append((v, cursor, nxt.effective_from))
            cursor, v = nxt.effective_from, nxt
            i += 1
        out.append((v, cursor, end))
        return out

    def day_pieces(self, start: dt.date, end: dt.date) -> list[tuple[Version, dt.date, dt.date]]:
        """The days ``[start, end)`` cut at each change of version."""
        changes = [(v.change_day(), v) for v in self.versions]
        current = None
        for day, v in changes:
            if day <= start:
                current = v
        if current is None:
            raise NotFound(
                f"tariff {self.kind.code}/{self.name} is not in force on {start.isoformat()}",
                field="at",
            )
        out = []
        cursor = start
        for day, v in changes:
            if start < day < end and v is not current:
                out.append((current, cursor, day))
                cursor, current = day, v
        out.append((current, cursor, end))
        return [p for p in out if p[2] > p[1]]


@dataclass(frozen=True)
class Position:
    """Where a meter (or a hypothetical one) stands when it buys.

    ``used`` is smallest units already used or bought in the ladder period holding the quote's
    time. ``fixed_due`` says the fixed charges of the current billing period (a heat basic fee)
    are still unpaid and belong in this quote. ``opened``/``closed`` bound those charges for an
    account that opens or closes within the period (``closed`` is the first day not charged).
    ``context`` carries what fixed charges are measured by (``heated_area``, ``floor_area``).
    """

    used: int = 0
    fixed_due: bool = False
    opened: dt.date | None = None
    closed: dt.date | None = None
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Quote:
    """A priced request: the exact lines, their exact sum, and the fen charged (rounded once)."""

    kind: str
    tariff: str
    category: str | None
    direction: str  # "units" (units given) | "money" (money given) | "fixed"
    units: int
    unit: str | None
    decimals: int
    exact: Decimal
    amount: int
    lines: list[Line]
    versions: list[int]
    at: dt.datetime
    until: dt.datetime | None = None
    paid: int | None = None
    used_before: int = 0
    period: tuple[dt.datetime, dt.datetime] | None = None
    tz: dt.tzinfo = dt.UTC  # the tariff's time zone, for showing times

    def local(self, when: dt.datetime) -> str:
        return when.astimezone(self.tz).isoformat()

    @property
    def credit(self) -> int:
        """Money paid but not spent on whole units: it stays with the customer as credit."""
        return 0 if self.paid is None else self.paid - self.amount

    @property
    def quantity(self) -> Decimal:
        return to_quantity(self.units, self.decimals)

    @property
    def fixed(self) -> int:
        """The fen of the fixed lines (rounded on their own, for display)."""
        return round_fen(sum((ln.amount for ln in self.lines if ln.item == "fixed"), Decimal(0)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tariff": self.tariff,
            "category": self.category,
            "versions": self.versions,
            "direction": self.direction,
            "at": self.local(self.at),
            "until": self.local(self.until) if self.until else None,
            "units": self.units,
            "quantity": str(self.quantity) if self.unit else None,
            "unit": self.unit,
            "used_before": str(to_quantity(self.used_before, self.decimals)),
            "period": [p.isoformat() for p in self.period] if self.period else None,
            "exact_yuan": str(self.exact),
            "amount_fen": self.amount,
            "amount": format_fen(self.amount),
            "paid_fen": self.paid,
            "credit_fen": self.credit,
            "lines": [line_dict(ln) for ln in self.lines],
        }


def line_dict(line: Line) -> dict[str, Any]:
    out: dict[str, Any] = {"item": line.item, "label": line.label, "amount": str(line.amount)}
    for name in ("quantity", "unit", "price", "tier", "band", "component"):
        value = getattr(line, name)
        if value is not None:
            out[name] = str(value) if isinstance(value, Decimal) else value
    out.update({k: _jsonable(v) for k, v in line.detail.items()})
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (Decimal, dt.date, dt.datetime)):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    return value


def _aware(when: dt.datetime, name: str) -> dt.datetime:
    if when.tzinfo is None:
        raise InvalidInput(f"{name} must carry a time zone offset", field=name)
    return when


def _tag(lines: Sequence[Line], version: Version, **extra: Any) -> list[Line]:
    return [replace(ln, detail={**ln.detail, "version": version.version, **extra}) for ln in lines]


def _check_units(units: int, name: str = "units") -> None:
    if isinstance(units, bool) or not isinstance(units, int) or units < 0:
        raise InvalidInput(f"{name} must be a whole number of smallest units, >= 0", field=name)
    if units > MAX_UNITS:
        raise InvalidInput(f"{name} is too large (at most {MAX_UNITS})", field=name)


def _usage(
    schedule: Schedule,
    *,
    units: int,
    at: dt.datetime,
    until: dt.datetime | None,
    by_band: Mapping[str, Decimal] | None,
    category: str | None,
    used: int,
    context: Mapping[str, Any],
) -> tuple[list[Line], Decimal, set[int], tuple[dt.datetime, dt.datetime] | None]:
    kind = schedule.kind
    if kind.money_only:
        if units:
            raise InvalidInput(
                f"{kind.code} is billed in money only: it has no units", field="units"
            )
        return [], Decimal(0), set(), None
    decimals = kind.unit_decimals
    quantity = to_quantity(units, decimals)
    used_q = to_quantity(used, decimals)
    unit = kind.unit or ""
    if until is None:
        v = schedule.at(at)
        body = v.priced(category)
        local = at.astimezone(v.tz)
        period = v.model.ladder_period(body, local)
        if units == 0:
            return [], Decimal(0), {v.version}, period
        single = v.model.usage(body, Usage(quantity, used_q, local, None, by_band, unit, context))
        return _tag(single, v), _sum(single), {v.version}, period
    if until <= at:
        raise InvalidInput("until must be later than at", field="until")
    # cut at version changes, then at ladder period ends
    cuts: list[tuple[Version, Any, dt.datetime, dt.datetime, Any]] = []
    first_period = None
    for v, a, b in schedule.pieces(at.astimezone(dt.UTC), until.astimezone(dt.UTC)):
        body = v.priced(category)
        cursor = a
        while cursor < b:
            period = v.model.ladder_period(body, cursor.astimezone(v.tz))
            if first_period is None:
                first_period = period
            # in UTC, so durations are real elapsed time even across a clock change
            stop = b if period is None or period[1] >= b else period[1].astimezone(dt.UTC)
            cuts.append((v, body, cursor, stop, period))
            cursor = stop
    if units == 0:
        return [], Decimal(0), {c[0].version for c in cuts}, first_period
    total_seconds = Decimal((until - at).total_seconds())
    lines: list[Line] = []
    given = Decimal(0)
    position = used_q
    previous: Any = None
    with exact():
        for i, (v, body, a, b, period) in enumerate(cuts):
            if i == len(cuts) - 1:
                share = quantity - given
            else:
                share = quantity * Decimal((b - a).total_seconds()) / total_seconds
            given += share
            if previous is not None and period is not None and period[0] > previous:
                position = Decimal(0)  # a new ladder period starts from zero
            previous = a.astimezone(v.tz)
            piece = v.model.usage(
                body,
                Usage(
                    share, position, a.astimezone(v.tz), b.astimezone(v.tz), by_band, unit, context
                ),
            )
            position += share
            extra = (
                {"from": a.astimezone(v.tz).isoformat(), "to": b.astimezone(v.tz).isoformat()}
                if len(cuts) > 1
                else {}
            )
            lines.extend(_tag(piece, v, **extra))
    return lines, _sum(lines), {c[0].version for c in cuts}, first_period


def _sum(lines: Sequence[Line]) -> Decimal:
    with exact():
        return sum((ln.amount for ln in lines), Decimal(0))


def _fixed(
    schedule: Schedule, on: dt.date, category: str | None, position: Position
) -> tuple[list[Line], set[int]]:
    v = schedule.at(dt.datetime.combine(on, dt.time(23, 59, 59), schedule.versions[-1].tz))
    period = v.model.charge_period(v.priced(category), on)
    if period is None:
        return [], set()
    start = max(period[0], position.opened) if position.opened else period[0]
    end = min(period[1], position.closed) if position.closed else period[1]
    if end <= start:
        return [], set()
    lines: list[Line] = []
    used: set[int] = set()
    pieces = schedule.day_pieces(start, end)
    for pv, a, b in pieces:
        charge = Charge(a, b, period[0], period[1], position.context)
        extra = {"from": a.isoformat(), "to": b.isoformat()} if len(pieces) > 1 else {}
        lines.extend(_tag(pv.model.fixed(pv.priced(category), charge), pv, **extra))
        used.add(pv.version)
    return lines, used


def quote_units(
    schedule: Schedule,
    *,
    units: int,
    at: dt.datetime,
    until: dt.datetime | None = None,
    by_band: Mapping[str, Decimal] | None = None,
    category: str | None = None,
    position: Position = Position(),
) -> Quote:
    """Price ``units`` (smallest units) used at ``at`` (or spread over ``[at, until)``)."""
    _check_units(units)
    _check_units(position.used, "used_this_period")
    _aware(at, "at")
    if until is not None:
        _aware(until, "until")
    lines, total, versions, period = _usage(
        schedule,
        units=units,
        at=at,
        until=until,
        by_band=by_band,
        category=category,
        used=position.used,
        context=position.context,
    )
    if position.fixed_due:
        fixed, fixed_versions = _fixed(
            schedule, at.astimezone(schedule.versions[-1].tz).date(), category, position
        )
        lines = fixed + lines
        total = _sum(lines)
        versions |= fixed_versions
    return Quote(
        kind=schedule.kind.code,
        tariff=schedule.name,
        category=category,
        direction="units",
        units=units,
        unit=schedule.kind.unit,
        decimals=schedule.kind.unit_decimals,
        exact=total,
        amount=round_fen(total),
        lines=lines,
        versions=sorted(versions),
        at=at,
        until=until,
        used_before=position.used,
        period=period,
        tz=schedule.versions[-1].tz,
    )


def quote_money(
    schedule: Schedule,
    *,
    amount: int,
    at: dt.datetime,
    until: dt.datetime | None = None,
    by_band: Mapping[str, Decimal] | None = None,
    category: str | None = None,
    position: Position = Position(),
) -> Quote:
    """How many smallest units ``amount`` fen buys: the most whose rounded price it covers."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidInput("amount must be a positive number of fen", field="amount")
    if schedule.kind.money_only:
        raise InvalidInput(
            f"{schedule.kind.code} is billed in money only: quote its fixed charges", field="kind"
        )

    def cost(u: int) -> Quote:
        return quote_units(
            schedule,
            units=u,
            at=at,
            until=until,
            by_band=by_band,
            category=category,
            position=position,
        )

    base = cost(0)
    if base.amount > amount:
        raise InvalidInput(
            f"amount {format_fen(amount)} does not cover the fixed charges due "
            f"({format_fen(base.amount)})",
            field="amount",
        )
    one = cost(1)
    if one.amount > amount:
        unit = to_quantity(1, schedule.kind.unit_decimals)
        raise InvalidInput(
            f"amount {format_fen(amount)} buys less than {unit} {schedule.kind.unit} "
            f"(which costs {format_fen(one.amount - base.amount)})",
            field="amount",
        )
    # the price per unit is never zero across the whole range, so this search ends
    lo, best = 1, one
    hi = max(2, int(Decimal(amount) / max(one.exact - base.exact, Decimal("0.000001")) / 100))
    hi = min(hi, MAX_UNITS)
    while True:
        probe = cost(hi)
        if probe.amount > amount:
            break
        lo, best = hi, probe
        if hi == MAX_UNITS:
            raise InvalidInput(
                f"amount: tariff {schedule.name} prices {schedule.kind.code} at (nearly) nothing "
                f"here: {format_fen(amount)} would buy more than {MAX_UNITS} smallest units",
                field="amount",
            )
        hi = min(hi * 2, MAX_UNITS)
    # invariant: cost(lo) fits, cost(hi) does not (or hi is the cap)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        probe = cost(mid)
        if probe.amount <= amount:
            lo, best = mid, probe
        else:
            hi = mid
    best.direction = "money"
    best.paid = amount
    return best


def quote_fixed(
    schedule: Schedule,
    *,
    on: dt.date,
    category: str | None = None,
    position: Position = Position(),
) -> Quote:
    """The fixed charges (basic fee, rent, management fee) of the billing period holding ``on``."""
    lines, versions = _fixed(schedule, on, category, position)
    total = _sum(lines)
    tz = schedule.versions[-1].tz
    return Quote(
        kind=schedule.kind.code,
        tariff=schedule.name,
        category=category,
        direction="fixed",
        units=0,
        unit=schedule.kind.unit,
        decimals=schedule.kind.unit_decimals,
        exact=total,
        amount=round_fen(total),
        lines=lines,
        versions=sorted(versions),
        at=dt.datetime.combine(on, dt.time(0), tz),
        tz=tz,
    )
