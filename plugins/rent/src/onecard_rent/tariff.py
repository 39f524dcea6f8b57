"""The ``monthly`` tariff model of the ``rent`` kind: rent and property fees per calendar month.

A body is a list of ``fees``; each is either ``fixed`` (yuan per month) or ``per_m2`` (yuan per m²
of floor area per month, the floor area coming from the premises: ``Charge.context["floor_area"]``).
The billing period is the calendar month; an account that opens or closes within a month pays
the month's fees prorated by days. Rent is money only: there are no units, so no usage to price.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates

from onecard.errors import InvalidInput
from onecard.pricing import Charge, Line, Usage, exact
from onecard.tariffs.fields import Exact, load, plain, refuse

_FEE_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_FEES = 20


class FeeSchema(Schema):
    id = fields.String(required=True)
    label = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 60))
    fixed = Exact(load_default=None, allow_none=True)
    per_m2 = Exact(load_default=None, allow_none=True)

    @validates("id")
    def _id(self, value: str, **_: Any) -> None:
        if not _FEE_ID.match(value):
            raise ValidationError(
                "must be 1 to 32 lower-case letters, digits or _, starting with a letter, "
                "like 'rent' or 'property_fee'"
            )


class MonthlySchema(Schema):
    fees = fields.List(
        fields.Nested(FeeSchema),
        required=True,
        validate=validate.Length(1, MAX_FEES, error=f"give 1 to {MAX_FEES} fees"),
    )


@dataclass(frozen=True)
class Fee:
    """One monthly fee: ``fixed`` yuan, or ``per_m2`` yuan per m² of floor area."""

    id: str
    label: str
    fixed: Decimal | None
    per_m2: Decimal | None


@dataclass(frozen=True)
class Monthly:
    """A compiled ``monthly`` body."""

    fees: tuple[Fee, ...]

    @property
    def needs_area(self) -> bool:
        return any(f.per_m2 is not None for f in self.fees)


def month_of(on: dt.date) -> tuple[dt.date, dt.date]:
    """The calendar month holding ``on``: ``[first day, first day of the next month)``."""
    start = on.replace(day=1)
    nxt = dt.date(on.year + on.month // 12, on.month % 12 + 1, 1)
    return start, nxt


def floor_area(context: Mapping[str, Any], fee: Fee) -> Decimal:
    """The floor area (m²) a per-m² fee is charged by; refuse clearly when it is missing."""
    value = context.get("floor_area")
    if value is None or value == "":
        raise InvalidInput(
            f"fee {fee.id!r} is charged per m² of floor area, and no floor area is known: "
            "give the premises' floor area",
            field="floor_area",
        )
    try:
        if isinstance(value, bool):
            raise InvalidOperation
        area = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput(
            f"floor_area must be a number of m², not {value!r}", field="floor_area"
        ) from None
    if not area.is_finite() or area <= 0:
        raise InvalidInput(
            f"floor_area must be a positive number of m², not {value!r}", field="floor_area"
        )
    return area


class MonthlyModel:
    """Rent and property/management fees, fixed or per m² of floor area, per calendar month."""

    name = "monthly"

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        data = load(MonthlySchema(), body)
        ids: dict[str, int] = {}
        labels: dict[str, int] = {}
        out = []
        for i, fee in enumerate(data["fees"]):
            where = f"fees[{i}]"
            if fee["id"] in ids:
                raise refuse(
                    f"{where}.id", f"duplicate fee id {fee['id']!r} (also fees[{ids[fee['id']]}])"
                )
            ids[fee["id"]] = i
            has_fixed, has_area = fee["fixed"] is not None, fee["per_m2"] is not None
            if has_fixed and has_area:
                raise refuse(
                    f"{where}.per_m2",
                    "give either fixed (yuan per month) or per_m2 (yuan per m² per month), "
                    "not both; make two fees for both",
                )
            if not has_fixed and not has_area:
                raise refuse(
                    f"{where}.fixed",
                    "give either fixed (yuan per month) or per_m2 (yuan per m² per month)",
                )
            label = (fee["label"] or fee["id"]).strip()
            if not label:
                raise refuse(f"{where}.label", "must not be blank")
            if label in labels:
                raise refuse(
                    f"{where}.label", f"duplicate label {label!r} (also fees[{labels[label]}])"
                )
            labels[label] = i
            item: dict[str, Any] = {"id": fee["id"], "label": label}
            if has_fixed:
                item["fixed"] = plain(fee["fixed"])
            else:
                item["per_m2"] = plain(fee["per_m2"])
            out.append(item)
        return {"fees": out}

    def compile(self, body: Mapping[str, Any]) -> Monthly:
        """Turn a validated body into :class:`Monthly` with Decimals."""
        return Monthly(
            tuple(
                Fee(
                    id=f["id"],
                    label=f["label"],
                    fixed=Decimal(f["fixed"]) if f.get("fixed") is not None else None,
                    per_m2=Decimal(f["per_m2"]) if f.get("per_m2") is not None else None,
                )
                for f in body["fees"]
            )
        )

    def ladder_period(self, priced: Any, at: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
        """Rent has no ladder."""
        return None

    def charge_period(self, priced: Any, on: dt.date) -> tuple[dt.date, dt.date] | None:
        """The calendar month holding ``on``."""
        return month_of(on)

    def usage(self, priced: Any, use: Usage) -> list[Line]:
        """Rent has no units: nothing to price for zero, a refusal for a quantity."""
        if use.quantity == 0:
            return []
        raise InvalidInput("rent is billed in money only: it has no units", field="units")

    def fixed(self, priced: Monthly, charge: Charge) -> list[Line]:
        """The month's fees for the days of ``charge``, prorated by days.

        A prorated line's label says the days (``rent · 22/31 days``) and the line carries
        ``days``, ``period_days`` and ``month``.
        """
        detail: dict[str, Any] = {}
        suffix = ""
        if not charge.whole:
            detail = {
                "days": charge.days,
                "period_days": charge.period_days,
                "month": charge.period_start.strftime("%Y-%m"),
            }
            suffix = f" · {charge.days}/{charge.period_days} days"
        lines = []
        with exact():
            for fee in priced.fees:
                if fee.fixed is not None:
                    lines.append(
                        Line(
                            "fixed",
                            fee.label + suffix,
                            charge.prorate(fee.fixed),
                            price=fee.fixed,
                            component=fee.id,
                            detail=detail,
                        )
                    )
                else:
                    assert fee.per_m2 is not None
                    area = floor_area(charge.context, fee)
                    lines.append(
                        Line(
                            "fixed",
                            fee.label + suffix,
                            charge.prorate(area * fee.per_m2),
                            quantity=area,
                            unit="m²",
                            price=fee.per_m2,
                            component=fee.id,
                            detail=detail,
                        )
                    )
        return lines
