"""The heat tariff models: the two-part heat price and the area-only price.

Both bill a **basic fee by heated area per heating season**: ``basic_rate`` yuan per m² of heated
area for the whole season, prorated by days for an account that opens or closes within it. The
two-part price (``two_part``) adds ``heat_price`` per GJ (or per kWh) of heat bought; the area-only
price (``area_only``) sells no heat units at all.

The season is ``season.start`` to ``season.end`` as ``"MM-DD"``, **both days included** (``11-15``
to ``03-15`` is 121 days, 122 when it holds a 29 February). A season whose end comes before its
start in the calendar runs over the year end. :meth:`charge_period` returns ``[first day, day
after the last)``, the season holding the day asked about or, between seasons, the coming one.

Heat is kept in GJ (0.001 GJ units). A price stated per kWh is turned into a price per GJ with
1 GJ = 277.78 kWh (:data:`onecard_heat.KWH_PER_GJ`) exactly as the tariff states it: ``p`` yuan/kWh
is ``p x 277.78`` yuan/GJ, no rounding.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from onecard.errors import InvalidInput
from onecard.pricing import Charge, Line, Usage, exact
from onecard.tariffs.fields import Exact, MonthDay, load, refuse

#: kWh in one GJ: 10**9 J / 3.6 * 10**6 J = 277.777..., stated to the hundredth as tariffs print it.
KWH_PER_GJ = Decimal("277.78")

PRICE_UNITS = ("GJ", "kWh")
MAX_AREA = Decimal("1000000")


class SeasonSchema(Schema):
    start = MonthDay(required=True)
    end = MonthDay(required=True)


class TwoPartSchema(Schema):
    season = fields.Nested(SeasonSchema, required=True)
    basic_rate = Exact(required=True)
    heat_price = Exact(required=True, positive=True)
    price_unit = fields.String(
        required=True,
        validate=validate.OneOf(PRICE_UNITS, error="must be GJ or kWh, not {input!r}"),
    )


class AreaOnlySchema(Schema):
    season = fields.Nested(SeasonSchema, required=True)
    basic_rate = Exact(required=True, positive=True)


@dataclass(frozen=True)
class Season:
    """A heating season recurring every year: ``start`` to ``end`` (month, day), both included."""

    start: tuple[int, int]
    end: tuple[int, int]

    @property
    def wraps(self) -> bool:
        """Whether the season runs over the year end (its end comes before its start)."""
        return self.end < self.start

    def starting(self, year: int) -> tuple[dt.date, dt.date]:
        """The season that starts in ``year``: ``[first day, day after the last)``."""
        first = dt.date(year, *self.start)
        last = dt.date(year + 1 if self.wraps else year, *self.end)
        return first, last + dt.timedelta(days=1)

    def holding(self, on: dt.date) -> tuple[dt.date, dt.date]:
        """The season holding ``on``, or the next one when ``on`` falls between seasons."""
        for year in (on.year - 1, on.year):
            first, after = self.starting(year)
            if first <= on < after:
                return first, after
        for year in (on.year, on.year + 1):
            first, after = self.starting(year)
            if first > on:
                return first, after
        raise AssertionError("unreachable: a season starts every year")  # pragma: no cover

    def to_json(self) -> dict[str, str]:
        return {"start": _month_day(self.start), "end": _month_day(self.end)}


@dataclass(frozen=True)
class HeatPrice:
    """A compiled heat price table: the season, the basic rate and (two-part) the heat price.

    ``heat_price``/``price_unit`` are as the tariff states them; ``per_gj`` is the price of one GJ
    (``heat_price x 277.78`` for a price per kWh), or None for the area-only tariff.
    """

    season: Season
    basic_rate: Decimal
    heat_price: Decimal | None = None
    price_unit: str | None = None
    per_gj: Decimal | None = None


def _month_day(md: tuple[int, int]) -> str:
    return f"{md[0]:02d}-{md[1]:02d}"


def _season(loaded: Mapping[str, Any]) -> Season:
    season = Season(loaded["start"], loaded["end"])
    if season.start == season.end:
        raise refuse(
            "season.end",
            f"must differ from season.start ({_month_day(season.start)}); "
            "a season runs from its start day to its end day, both included",
        )
    return season


def per_gj(price: Decimal, unit: str) -> Decimal:
    """A heat price in ``unit`` (GJ or kWh) -> yuan per GJ, exact (1 GJ = 277.78 kWh)."""
    if unit == "GJ":
        return price
    if unit == "kWh":
        with exact():
            return price * KWH_PER_GJ
    raise ValueError(f"unknown heat price unit {unit!r}")


def heated_area(charge: Charge) -> Decimal:
    """The heated area (m²) the basic fee is measured by, from the charge's context."""
    value = charge.context.get("heated_area")
    if value is None or value == "":
        raise InvalidInput(
            "heated_area: the heat basic fee is charged by heated area and none is given "
            "(set the heated area of the premises)",
            field="heated_area",
        )
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise InvalidInput(
            f"heated_area: must be a number of m², not {value!r}", field="heated_area"
        )
    try:
        area = Decimal(value) if isinstance(value, (Decimal, int)) else Decimal(value.strip())
    except InvalidOperation:
        raise InvalidInput(
            f"heated_area: must be a number of m², not {value!r}", field="heated_area"
        ) from None
    if not area.is_finite() or area <= 0 or area > MAX_AREA:
        raise InvalidInput(
            f"heated_area: must be more than 0 and at most 1,000,000 m², not {value}",
            field="heated_area",
        )
    return area


def basic_fee(priced: HeatPrice, charge: Charge, label: str) -> list[Line]:
    """The season's basic fee ``basic_rate x heated area``, prorated by the days charged."""
    area = heated_area(charge)
    with exact():
        season_fee = priced.basic_rate * area
    amount = charge.prorate(season_fee)
    if not charge.whole:
        label = f"{label} · {charge.days}/{charge.period_days} days"
    return [
        Line(
            "fixed",
            label,
            amount,
            quantity=area,
            unit="m²",
            price=priced.basic_rate,
            detail={
                "days": charge.days,
                "season_days": charge.period_days,
                "season_start": charge.period_start,
                "season_end": charge.period_end - dt.timedelta(days=1),
            },
        )
    ]


class TwoPartModel:
    """The two-part heat price: ``basic_rate x heated area`` per season + ``heat_price x GJ``."""

    name = "two_part"

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        loaded = load(TwoPartSchema(), body)
        return {
            "season": _season(loaded["season"]).to_json(),
            "basic_rate": str(loaded["basic_rate"]),
            "heat_price": str(loaded["heat_price"]),
            "price_unit": loaded["price_unit"],
        }

    def compile(self, body: Mapping[str, Any]) -> HeatPrice:
        """Turn a validated body into a :class:`HeatPrice`."""
        season = body["season"]
        price = Decimal(body["heat_price"])
        unit = body["price_unit"]
        return HeatPrice(
            season=Season(_parse_md(season["start"]), _parse_md(season["end"])),
            basic_rate=Decimal(body["basic_rate"]),
            heat_price=price,
            price_unit=unit,
            per_gj=per_gj(price, unit),
        )

    def ladder_period(
        self, priced: HeatPrice, at: dt.datetime
    ) -> tuple[dt.datetime, dt.datetime] | None:
        """Return None: the heat price has no ladder."""
        return None

    def charge_period(self, priced: HeatPrice, on: dt.date) -> tuple[dt.date, dt.date]:
        """Return the season holding ``on`` (or the coming one between seasons)."""
        return priced.season.holding(on)

    def usage(self, priced: HeatPrice, use: Usage) -> list[Line]:
        """Price the heat bought: GJ x the price per GJ (converted exactly from kWh)."""
        if use.quantity == 0:
            return []
        assert priced.per_gj is not None and priced.heat_price is not None
        with exact():
            amount = use.quantity * priced.per_gj
            detail: dict[str, Any] = {}
            if priced.price_unit == "kWh":
                detail = {
                    "kwh": use.quantity * KWH_PER_GJ,
                    "price_per_kwh": priced.heat_price,
                    "kwh_per_gj": KWH_PER_GJ,
                }
        return [
            Line(
                "energy",
                "heat",
                amount,
                quantity=use.quantity,
                unit=use.unit or "GJ",
                price=priced.per_gj,
                detail=detail,
            )
        ]

    def fixed(self, priced: HeatPrice, charge: Charge) -> list[Line]:
        """Return the basic fee for the days charged."""
        return basic_fee(priced, charge, "basic fee")


class AreaOnlyModel:
    """The area-only heat price: ``basic_rate x heated area`` per season, no heat units sold."""

    name = "area_only"

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        loaded = load(AreaOnlySchema(), body)
        return {
            "season": _season(loaded["season"]).to_json(),
            "basic_rate": str(loaded["basic_rate"]),
        }

    def compile(self, body: Mapping[str, Any]) -> HeatPrice:
        """Turn a validated body into a :class:`HeatPrice` without a heat price."""
        season = body["season"]
        return HeatPrice(
            season=Season(_parse_md(season["start"]), _parse_md(season["end"])),
            basic_rate=Decimal(body["basic_rate"]),
        )

    def ladder_period(
        self, priced: HeatPrice, at: dt.datetime
    ) -> tuple[dt.datetime, dt.datetime] | None:
        """Return None: nothing is sold by quantity."""
        return None

    def charge_period(self, priced: HeatPrice, on: dt.date) -> tuple[dt.date, dt.date]:
        """Return the season holding ``on`` (or the coming one between seasons)."""
        return priced.season.holding(on)

    def usage(self, priced: HeatPrice, use: Usage) -> list[Line]:
        """Refuse any heat units: an area-only customer pays by area and buys no GJ."""
        if use.quantity == 0:
            return []
        raise InvalidInput(
            "units: the area-only heat tariff sells no heat units; charge the season's area fee "
            "(the fixed charges) instead",
            field="units",
        )

    def fixed(self, priced: HeatPrice, charge: Charge) -> list[Line]:
        """Return the area fee for the days charged."""
        return basic_fee(priced, charge, "area fee")


def _parse_md(text: str) -> tuple[int, int]:
    try:
        loaded: tuple[int, int] = MonthDay().deserialize(text)
    except ValidationError as exc:  # a stored body was validated; this is a broken store
        raise ValueError(f"bad season day {text!r}: {exc.messages}") from None
    return loaded
