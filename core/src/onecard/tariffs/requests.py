"""A quote request as people type it (CLI options, API JSON, the guide's worked examples).

``units`` is a quantity in the kind's unit (or ``unit``, an alternative unit such as kWh for
heat) written as decimal text; ``amount`` is yuan text. ``used_this_period`` is a quantity too.
Times are ISO text; without an offset they are read in the tariff's time zone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from onecard.errors import InvalidInput
from onecard.models import utcnow
from onecard.money import parse_yuan
from onecard.tariffs.documents import parse_time
from onecard.tariffs.engine import (
    Position,
    Quote,
    Schedule,
    quote_fixed,
    quote_money,
    quote_units,
)
from onecard.utility import UtilityKind

KEYS = (
    "units",
    "amount",
    "unit",
    "used_this_period",
    "at",
    "until",
    "by_band",
    "category",
    "fixed_due",
    "heated_area",
    "floor_area",
    "opened",
    "closed",
)


@dataclass(frozen=True)
class QuoteRequest:
    units: int | None
    amount: int | None
    at: dt.datetime
    until: dt.datetime | None
    by_band: Mapping[str, Decimal] | None
    category: str | None
    position: Position


def _decimal(value: Any, field: str, *, positive: bool = False) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise InvalidInput(f"{field} must be a number written as text, like 12.5", field=field)
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise InvalidInput(f"{field} must be a number, not {value!r}", field=field) from None
    if not number.is_finite() or number < 0 or (positive and number == 0):
        raise InvalidInput(
            f"{field} must be {'greater than 0' if positive else 'a number >= 0'}, not {value!r}",
            field=field,
        )
    return number


def to_smallest(kind: UtilityKind, quantity: Decimal, unit: str | None, field: str) -> int:
    """A quantity in ``unit`` -> whole smallest units of the kind.

    In the kind's own unit it must be exact to the kind's resolution; from an alternative unit
    (kWh for heat) it is converted and rounded half-up to the smallest unit.
    """
    step = Decimal(1).scaleb(-kind.unit_decimals)
    if unit in (None, "", kind.unit):
        if quantity != quantity.quantize(step):
            raise InvalidInput(
                f"{field} has more decimals than the {kind.code} resolution ({step} {kind.unit})",
                field=field,
            )
        return int(quantity.scaleb(kind.unit_decimals))
    converted = kind.to_units(quantity, unit)  # NotFound(field="unit") for an unknown unit
    return int(converted.quantize(step, rounding=ROUND_HALF_UP).scaleb(kind.unit_decimals))


def _date(value: Any, field: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(
            f"{field} must be a date like 2026-11-15, not {value!r}", field=field
        ) from None


def parse(
    schedule: Schedule, data: Mapping[str, Any], now: dt.datetime | None = None
) -> QuoteRequest:
    """Check a request against its tariff's kind; name the field of any problem."""
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a quote field (fields: {', '.join(KEYS)})", field=unknown[0]
        )
    kind = schedule.kind
    tz = schedule.versions[-1].tz
    units = amount = None
    if data.get("units") not in (None, "") and data.get("amount") not in (None, ""):
        raise InvalidInput("give units or amount, not both", field="amount")
    if data.get("units") not in (None, ""):
        if kind.money_only:
            raise InvalidInput(
                f"{kind.code} is billed in money only: it has no units", field="units"
            )
        units = to_smallest(kind, _decimal(data["units"], "units"), data.get("unit"), "units")
    elif data.get("amount") not in (None, ""):
        amount = parse_yuan(data["amount"], "amount")
    used = 0
    if data.get("used_this_period") not in (None, ""):
        if kind.money_only:
            raise InvalidInput(
                f"{kind.code} has no units: used_this_period does not apply",
                field="used_this_period",
            )
        used = to_smallest(
            kind,
            _decimal(data["used_this_period"], "used_this_period"),
            data.get("unit"),
            "used_this_period",
        )
    at = parse_time(data["at"], tz, "at") if data.get("at") not in (None, "") else (now or utcnow())
    until = parse_time(data["until"], tz, "until") if data.get("until") not in (None, "") else None
    if until is not None and until <= at:
        raise InvalidInput("until must be later than at", field="until")
    by_band = None
    if data.get("by_band"):
        if not isinstance(data["by_band"], Mapping):
            raise InvalidInput("by_band must map band names to shares", field="by_band")
        by_band = {str(k): _decimal(v, f"by_band.{k}") for k, v in data["by_band"].items()}
        if sum(by_band.values()) != 1:
            raise InvalidInput("by_band shares must add up to 1", field="by_band")
    context: dict[str, Any] = {}
    for area in ("heated_area", "floor_area"):
        if data.get(area) not in (None, ""):
            context[area] = _decimal(data[area], area, positive=True)
    fixed_due = data.get("fixed_due", False)
    if not isinstance(fixed_due, bool):
        raise InvalidInput("fixed_due must be true or false", field="fixed_due")
    category = data.get("category") or None
    if category is not None and not isinstance(category, str):
        raise InvalidInput("category must be text", field="category")
    return QuoteRequest(
        units=units,
        amount=amount,
        at=at,
        until=until,
        by_band=by_band,
        category=category,
        position=Position(
            used=used,
            fixed_due=fixed_due or kind.money_only,
            opened=_date(data.get("opened"), "opened"),
            closed=_date(data.get("closed"), "closed"),
            context=context,
        ),
    )


def run(schedule: Schedule, request: QuoteRequest) -> Quote:
    """Price a parsed request: money -> units, units -> money, or (neither) the fixed charges."""
    common: dict[str, Any] = {
        "at": request.at,
        "until": request.until,
        "by_band": request.by_band,
        "category": request.category,
        "position": request.position,
    }
    if request.amount is not None:
        return quote_money(schedule, amount=request.amount, **common)
    if request.units is not None:
        return quote_units(schedule, units=request.units, **common)
    tz = schedule.versions[-1].tz
    return quote_fixed(
        schedule,
        on=request.at.astimezone(tz).date(),
        category=request.category,
        position=request.position,
    )
