"""Gas tariff models: tiered (阶梯气价) by annual (or monthly) cumulative use, and flat.

Body of ``tiered``::

    reset: annual            # annual (default) | monthly
    anchor: "01-01"          # annual only: the day each year the tiers start again
    tiers:                   # any number of tiers; upto = cumulative m³ where the tier ends
      - {upto: 350, price: "2.61"}
      - {upto: 500, price: "2.83"}
      - {upto: null, price: "4.23"}   # the last tier is open-ended

Body of ``flat``: ``{price: "2.63"}``.

Lines (``item="energy"``): ``tier N`` per tier the quantity falls in, or ``gas`` for a flat
price. Amounts are exact; the core rounds once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from marshmallow import Schema, fields, validate

from onecard.pricing import Charge, Line, Usage, calendar_period, exact, ladder
from onecard.tariffs.fields import Exact, MonthDay, check_bounds, load, plain, refuse


class TierSchema(Schema):
    upto = Exact(load_default=None, allow_none=True, positive=True, maximum=None)
    price = Exact(required=True)


class TieredSchema(Schema):
    reset = fields.String(load_default="annual", validate=validate.OneOf(["annual", "monthly"]))
    anchor = MonthDay(load_default=None)
    tiers = fields.List(fields.Nested(TierSchema), required=True)


class FlatSchema(Schema):
    price = Exact(required=True, positive=True)


@dataclass(frozen=True)
class GasPrice:
    """A compiled gas body (``flat`` is one open-ended tier without a ladder)."""

    reset: str | None
    anchor: tuple[int, int]
    bounds: tuple[Decimal | None, ...]
    prices: tuple[Decimal, ...]


def _check_tiers(tiers: list[dict[str, Any]]) -> None:
    """Refuse no tiers, bounds out of order, or a last tier that is not open-ended."""
    if not tiers:
        raise refuse("tiers", "give at least one tier")
    check_bounds(tiers, "tiers", "tier", "m³")
    last = len(tiers) - 1
    if tiers[last]["price"] == 0:
        raise refuse(f"tiers[{last}].price", "the open-ended last tier must cost something per m³")


def _lines(priced: GasPrice, use: Usage, tiered: bool) -> list[Line]:
    lines: list[Line] = []
    with exact():
        for i, qty in ladder(priced.bounds, use.used_before, use.quantity):
            price = priced.prices[i]
            lines.append(
                Line(
                    "energy",
                    f"tier {i + 1}" if tiered else "gas",
                    qty * price,
                    qty,
                    use.unit,
                    price,
                    tier=i + 1 if tiered else None,
                )
            )
    return lines


class TieredModel:
    """Tiered gas prices by cumulative use over a year (from an anchor day) or a month."""

    name = "tiered"

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        data = load(TieredSchema(), body)
        tiers = data["tiers"]
        _check_tiers(tiers)
        if data["anchor"] is not None and data["reset"] != "annual":
            raise refuse("anchor", "only an annual reset has an anchor (the day the year starts)")
        out: dict[str, Any] = {"reset": data["reset"]}
        if data["reset"] == "annual":
            month, day = data["anchor"] or (1, 1)
            out["anchor"] = f"{month:02d}-{day:02d}"
        out["tiers"] = [
            {"upto": None if t["upto"] is None else plain(t["upto"]), "price": plain(t["price"])}
            for t in tiers
        ]
        return out

    def compile(self, body: Mapping[str, Any]) -> GasPrice:
        """Turn a validated body into exact tiers."""
        anchor = body.get("anchor") or "01-01"
        return GasPrice(
            reset=body["reset"],
            anchor=(int(anchor[:2]), int(anchor[3:])),
            bounds=tuple(None if t["upto"] is None else Decimal(t["upto"]) for t in body["tiers"]),
            prices=tuple(Decimal(t["price"]) for t in body["tiers"]),
        )

    def ladder_period(
        self, priced: GasPrice, at: dt.datetime
    ) -> tuple[dt.datetime, dt.datetime] | None:
        """Return the year (from the anchor) or the month holding ``at``."""
        if priced.reset is None:
            return None
        return calendar_period(at, priced.reset, priced.anchor)

    def charge_period(self, priced: GasPrice, on: dt.date) -> tuple[dt.date, dt.date] | None:
        """Return None: gas has no fixed charges."""
        return None

    def usage(self, priced: GasPrice, use: Usage) -> list[Line]:
        """Price the quantity tier by tier."""
        return _lines(priced, use, tiered=True)

    def fixed(self, priced: GasPrice, charge: Charge) -> list[Line]:
        """Return no lines: gas has no fixed charges."""
        return []


class FlatModel:
    """One price per m³."""

    name = "flat"

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        data = load(FlatSchema(), body)
        return {"price": plain(data["price"])}

    def compile(self, body: Mapping[str, Any]) -> GasPrice:
        """Turn a validated body into one open-ended tier without a ladder."""
        return GasPrice(reset=None, anchor=(1, 1), bounds=(None,), prices=(Decimal(body["price"]),))

    def ladder_period(
        self, priced: GasPrice, at: dt.datetime
    ) -> tuple[dt.datetime, dt.datetime] | None:
        """Return None: a flat price has no ladder."""
        return None

    def charge_period(self, priced: GasPrice, on: dt.date) -> tuple[dt.date, dt.date] | None:
        """Return None: gas has no fixed charges."""
        return None

    def usage(self, priced: GasPrice, use: Usage) -> list[Line]:
        """Price the quantity at the one price."""
        return _lines(priced, use, tiered=False)

    def fixed(self, priced: GasPrice, charge: Charge) -> list[Line]:
        """Return no lines: gas has no fixed charges."""
        return []


__all__ = ["FlatModel", "GasPrice", "TieredModel"]
