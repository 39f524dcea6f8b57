"""The core's quoting engine and document envelope, with a small test-only model.

The model here is deliberately tiny (a two-step monthly ladder and a monthly fixed fee) so the
tests show what the core does: pick the version in force, cut a request at price changes and
ladder-period ends, split fixed charges by days, round once, and invert money to units.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from marshmallow import Schema

from onecard.errors import InvalidInput, NotFound
from onecard.pricing import Charge, Line, Usage, calendar_period, ladder, round_fen
from onecard.tariffs import (
    Position,
    quote_fixed,
    quote_money,
    quote_units,
    schedule_from_documents,
    validate_document,
)
from onecard.tariffs.fields import Exact, load
from onecard.utility import UtilityRegistry

SH = dt.timezone(dt.timedelta(hours=8))


class _Body(Schema):
    price = Exact(required=True)
    step = Exact(required=True, positive=True)
    fee = Exact(load_default=Decimal(0))


class LadderModel:
    """Two steps: ``price`` up to ``step`` per month, then twice the price; ``fee`` a month."""

    name = "ladder"

    def validate(self, body: Any) -> dict[str, Any]:
        return {k: str(v) for k, v in load(_Body(), body).items()}

    def compile(self, body: Any) -> dict[str, Decimal]:
        return {k: Decimal(v) for k, v in body.items()}

    def ladder_period(self, p: Any, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        return calendar_period(at, "monthly")

    def charge_period(self, p: Any, on: dt.date) -> tuple[dt.date, dt.date] | None:
        if not p["fee"]:
            return None
        start = on.replace(day=1)
        return start, (start + dt.timedelta(days=32)).replace(day=1)

    def usage(self, p: Any, use: Usage) -> list[Line]:
        out = []
        for i, q in ladder([p["step"], None], use.used_before, use.quantity):
            price = p["price"] * (i + 1)
            out.append(Line("energy", f"step {i + 1}", q * price, q, use.unit, price, tier=i + 1))
        return out

    def fixed(self, p: Any, charge: Charge) -> list[Line]:
        return [Line("fixed", "monthly fee", charge.prorate(p["fee"]))]


@pytest.fixture(scope="module")
def reg() -> UtilityRegistry:
    r = UtilityRegistry()
    kind = r.add("steam", names={"zh-CN": "蒸汽", "en": "Steam"}, unit="t", unit_decimals=2)
    kind.tariffs.add("ladder", LadderModel())
    return r


def doc(when: str, price: str = "1", step: str = "100", **extra: Any) -> dict[str, Any]:
    body = {"price": price, "step": step, **extra}
    return {"kind": "steam", "name": "std", "model": "ladder", "effective_from": when, "body": body}


def test_the_version_in_force_prices_a_point_quote(reg: UtilityRegistry) -> None:
    s = schedule_from_documents(reg, [doc("2026-01-01", "1"), doc("2026-06-15T12:00", "2")])
    before = quote_units(s, units=1000, at=dt.datetime(2026, 6, 15, 11, 59, tzinfo=SH))
    after = quote_units(s, units=1000, at=dt.datetime(2026, 6, 15, 12, 0, tzinfo=SH))
    assert (before.amount, before.versions) == (1000, [1])
    assert (after.amount, after.versions) == (2000, [2])
    with pytest.raises(NotFound, match="not in force") as err:
        quote_units(s, units=1, at=dt.datetime(2025, 12, 31, 23, 59, tzinfo=SH))
    assert err.value.field == "at"


def test_a_price_change_inside_an_interval_is_split_and_itemized(reg: UtilityRegistry) -> None:
    s = schedule_from_documents(reg, [doc("2026-01-01", "1"), doc("2026-06-11", "2")])
    q = quote_units(
        s,
        units=3000,  # 30 t over ten days, the price doubles after the first six
        at=dt.datetime(2026, 6, 5, tzinfo=SH),
        until=dt.datetime(2026, 6, 15, tzinfo=SH),
    )
    assert q.versions == [1, 2]
    assert [(ln.detail["version"], ln.quantity, ln.amount) for ln in q.lines] == [
        (1, Decimal("18.00"), Decimal("18.00")),
        (2, Decimal("12.00"), Decimal("24.00")),
    ]
    assert q.lines[0].detail["to"] == q.lines[1].detail["from"] == "2026-06-11T00:00:00+08:00"
    assert q.amount == 4200


def test_the_ladder_position_carries_across_a_price_change_and_resets_each_period(
    reg: UtilityRegistry,
) -> None:
    s = schedule_from_documents(reg, [doc("2026-01-01", "1", "10"), doc("2026-06-30", "1", "10")])
    q = quote_units(
        s,
        units=4000,  # 40 t over 4 days, two in June (position 0 -> 20) and two in July
        at=dt.datetime(2026, 6, 29, tzinfo=SH),
        until=dt.datetime(2026, 7, 3, tzinfo=SH),
    )
    rows = [(ln.detail["version"], ln.label, ln.quantity) for ln in q.lines]
    assert rows == [
        (1, "step 1", Decimal("10")),  # 29 June: 10 t, all in step 1
        (2, "step 2", Decimal("10")),  # 30 June: the new version, the position is kept
        (2, "step 1", Decimal("10")),  # July starts at zero again
        (2, "step 2", Decimal("10")),
    ]
    assert q.amount == round_fen(Decimal(10 + 20 + 10 + 20))


def test_money_buys_the_most_whole_units_and_the_rest_stays_as_credit(
    reg: UtilityRegistry,
) -> None:
    s = schedule_from_documents(reg, [doc("2026-01-01", "0.37", "100")])
    at = dt.datetime(2026, 3, 1, tzinfo=SH)
    q = quote_money(s, amount=10000, at=at, position=Position(used=9000))
    # 10 t at 0.37 (3.70) then 96.30 / 0.74 = 130.135 t in step 2. 130.14 t cost 96.3036, so
    # 140.14 t cost 100.0036 exactly: rounded once, 100.00, which the money covers
    assert q.units == 14014
    assert q.direction == "money" and q.paid == 10000
    assert q.exact == Decimal("100.0036") and q.amount == 10000 and q.credit == 0
    more = quote_units(s, units=q.units + 1, at=at, position=Position(used=9000))
    assert more.amount > 10000
    dear = schedule_from_documents(reg, [doc("2026-01-01", "3.7", "100")])
    q = quote_money(dear, amount=10000, at=at)  # 27.02 t cost 99.974; 27.03 t would be 100.011
    assert (q.units, q.amount, q.credit) == (2702, 9997, 3)
    with pytest.raises(InvalidInput, match=r"buys less than 0\.01 t") as err:
        quote_money(dear, amount=3, at=at)  # 0.01 t costs 0.037, rounded 0.04
    assert err.value.field == "amount"


def test_fixed_charges_are_prorated_and_split_by_days_at_a_price_change(
    reg: UtilityRegistry,
) -> None:
    s = schedule_from_documents(
        reg, [doc("2026-01-01", fee="31"), doc("2026-03-21T00:00", fee="62")]
    )
    q = quote_fixed(s, on=dt.date(2026, 3, 5))
    assert [(ln.detail["version"], ln.amount) for ln in q.lines] == [
        (1, Decimal(20)),  # 1-20 March at 31 a month
        (2, Decimal(22)),  # 21-31 March at 62 a month
    ]
    opened = quote_fixed(s, on=dt.date(2026, 3, 5), position=Position(opened=dt.date(2026, 3, 25)))
    assert opened.amount == 1400  # 7 days of 62/31
    # a change at noon takes effect from the next day
    s2 = schedule_from_documents(
        reg, [doc("2026-01-01", fee="31"), doc("2026-03-20T12:00", fee="62")]
    )
    assert [ln.amount for ln in quote_fixed(s2, on=dt.date(2026, 3, 1)).lines] == [20, 22]


def test_fixed_charges_due_are_part_of_a_purchase(reg: UtilityRegistry) -> None:
    s = schedule_from_documents(reg, [doc("2026-01-01", "1", fee="50")])
    at = dt.datetime(2026, 3, 1, tzinfo=SH)
    q = quote_units(s, units=100, at=at, position=Position(fixed_due=True))
    assert [ln.item for ln in q.lines] == ["fixed", "energy"] and q.amount == 5100
    bought = quote_money(s, amount=6000, at=at, position=Position(fixed_due=True))
    assert bought.units == 1000
    with pytest.raises(InvalidInput, match="does not cover the fixed charges due"):
        quote_money(s, amount=4000, at=at, position=Position(fixed_due=True))


def test_categories_pick_a_price_table(reg: UtilityRegistry) -> None:
    d = doc("2026-01-01")
    del d["body"]
    d["categories"] = {
        "residential": {"price": "1", "step": "10"},
        "commercial": {"price": "3", "step": "10"},
    }
    s = schedule_from_documents(reg, [d])
    at = dt.datetime(2026, 3, 1, tzinfo=SH)
    assert quote_units(s, units=100, at=at, category="commercial").amount == 300
    with pytest.raises(NotFound, match="no price table for category 'industrial'") as err:
        quote_units(s, units=100, at=at, category="industrial")
    assert err.value.field == "category"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"kind": "plasma"}, "kind", "unknown utility kind 'plasma'"),
        ({"model": "tiered"}, "model", "steam has no tariff model 'tiered' (known: ladder)"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"effective_from": "soon"}, "effective_from", "is not a time"),
        ({"name": "Bad Name"}, "name", "lower-case letters"),
        ({"colour": "red"}, "colour", "is not a field of this document"),
        ({"body": None}, "body", "give either body"),
        ({"categories": {"residential": {}}}, "body", "give either body"),
        ({"body": {"price": "-1", "step": "1"}}, "body.price", "must not be negative"),
        ({"body": {"price": "1", "step": "0"}}, "body.step", "must be greater than 0"),
        ({"body": {"price": 1.5, "step": "1", "extra": 1}}, "body.extra", "is not a field"),
        ({"body": {"step": "1"}}, "body.price", "is required"),
    ],
)
def test_bad_documents_are_refused_naming_the_field(
    reg: UtilityRegistry, change: dict[str, Any], field: str, message: str
) -> None:
    d = {**doc("2026-01-01"), **change}
    with pytest.raises((InvalidInput, NotFound)) as err:
        validate_document(reg, d)
    assert err.value.field == field
    assert message in err.value.message
    assert err.value.message.startswith(field) or field in ("kind",)


def test_a_category_table_error_names_its_category(reg: UtilityRegistry) -> None:
    d = doc("2026-01-01")
    del d["body"]
    d["categories"] = {"commercial": {"price": "x", "step": "1"}}
    with pytest.raises(InvalidInput) as err:
        validate_document(reg, d)
    assert err.value.field == "categories.commercial.price"


def test_floats_from_yaml_are_read_as_written(reg: UtilityRegistry) -> None:
    out = validate_document(reg, doc("2026-01-01", price=0.4883))  # type: ignore[arg-type]
    assert out["body"]["price"] == "0.4883"
    assert out["effective_from"] == "2025-12-31T16:00:00+00:00"  # midnight in Asia/Shanghai
