"""The rent plugin's ``monthly`` tariff: fees fixed or per m², per month, prorated by days."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import BUILTIN_PLUGINS
from hypothesis import given, settings
from hypothesis import strategies as st

import onecard_rent
from onecard.errors import InvalidInput
from onecard.plugins import load_plugins
from onecard.pricing import Charge, Usage, exact
from onecard.tariffs import Position, Schedule, quote_fixed, quote_units, schedule_from_documents
from onecard.tariffs.documents import read_file, validate_document
from onecard.utility import UtilityRegistry
from onecard_rent.tariff import MonthlyModel, month_of

ROOT = Path(__file__).resolve().parents[2]
AREA = {"floor_area": Decimal("85.50")}
BODY = {
    "fees": [
        {"id": "rent", "label": "rent", "fixed": "3000"},
        {"id": "property", "label": "property fee", "per_m2": "3.50"},
    ]
}


def doc(body: Any = BODY, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "rent",
        "name": "shops",
        "model": "monthly",
        "effective_from": "2026-01-01T00:00:00+08:00",
        "body": body,
        **extra,
    }


@pytest.fixture(scope="module")
def utilities() -> UtilityRegistry:
    reg = UtilityRegistry()
    onecard_rent.onecard_register_utilities(registry=reg)
    return reg


@pytest.fixture(scope="module")
def shops(utilities: UtilityRegistry) -> Schedule:
    return schedule_from_documents(utilities, [doc()])


def fixed(sched: Schedule, on: dt.date, **position: Any) -> Any:
    position.setdefault("context", AREA)
    return quote_fixed(sched, on=on, position=Position(**position))


def test_the_plugin_registers_monthly_on_rent() -> None:
    kind = load_plugins(BUILTIN_PLUGINS).utilities.get("rent")
    assert kind.money_only and kind.unit is None
    assert "monthly" in kind.tariffs


def test_a_whole_month(shops: Schedule) -> None:
    q = fixed(shops, dt.date(2026, 3, 15))
    assert q.direction == "fixed" and q.amount == 329925
    rent, prop = q.lines
    assert (rent.item, rent.label, rent.amount, rent.price, rent.component) == (
        "fixed",
        "rent",
        Decimal(3000),
        Decimal(3000),
        "rent",
    )
    assert (prop.label, prop.amount, prop.quantity, prop.unit, prop.price, prop.component) == (
        "property fee",
        Decimal("299.25"),
        Decimal("85.50"),
        "m²",
        Decimal("3.50"),
        "property",
    )


def test_opening_within_the_month_prorates_by_days(shops: Schedule) -> None:
    q = fixed(shops, dt.date(2026, 3, 15), opened=dt.date(2026, 3, 10))
    assert [ln.label for ln in q.lines] == ["rent · 22/31 days", "property fee · 22/31 days"]
    with exact():
        assert q.lines[0].amount == Decimal(3000) * 22 / 31
        assert q.exact == (Decimal(3000) + Decimal("299.25")) * 22 / 31
    assert q.lines[0].detail["days"] == 22 and q.lines[0].detail["period_days"] == 31
    assert q.lines[0].detail["month"] == "2026-03"
    assert q.amount == 234140


def test_closing_and_opening_in_one_month(shops: Schedule) -> None:
    q = fixed(shops, dt.date(2026, 2, 1), opened=dt.date(2026, 2, 8), closed=dt.date(2026, 2, 15))
    with exact():
        assert q.exact == Decimal("3299.25") * 7 / 28
    assert q.amount == 82481  # 824.8125 -> 824.81


def test_an_account_closed_before_the_month_pays_nothing(shops: Schedule) -> None:
    q = fixed(shops, dt.date(2026, 3, 15), closed=dt.date(2026, 2, 20))
    assert q.lines == [] and q.amount == 0


def test_the_charge_period_is_the_calendar_month() -> None:
    model = MonthlyModel()
    assert model.charge_period(None, dt.date(2026, 12, 31)) == (
        dt.date(2026, 12, 1),
        dt.date(2027, 1, 1),
    )
    assert model.charge_period(None, dt.date(2028, 2, 1)) == (
        dt.date(2028, 2, 1),
        dt.date(2028, 3, 1),
    )
    assert model.ladder_period(None, dt.datetime(2026, 3, 1, tzinfo=dt.UTC)) is None


def test_rent_has_no_units(shops: Schedule) -> None:
    model = MonthlyModel()
    priced = model.compile(model.validate(BODY))
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert model.usage(priced, Usage(Decimal(0), Decimal(0), at)) == []
    with pytest.raises(InvalidInput) as err:
        model.usage(priced, Usage(Decimal(1), Decimal(0), at))
    assert err.value.field == "units"
    with pytest.raises(InvalidInput) as err:
        quote_units(shops, units=100, at=at)
    assert err.value.field == "units"


def test_a_per_m2_fee_needs_the_floor_area(shops: Schedule, utilities: UtilityRegistry) -> None:
    with pytest.raises(InvalidInput, match="per m² of floor area") as err:
        fixed(shops, dt.date(2026, 3, 1), context={})
    assert err.value.field == "floor_area"
    with pytest.raises(InvalidInput) as err:
        fixed(shops, dt.date(2026, 3, 1), context={"floor_area": "-3"})
    assert err.value.field == "floor_area"
    only_rent = schedule_from_documents(
        utilities, [doc({"fees": [{"id": "rent", "fixed": "1200.50"}]})]
    )
    q = fixed(only_rent, dt.date(2026, 3, 1), context={})
    assert q.amount == 120050 and q.lines[0].label == "rent"


def test_validation_normalises() -> None:
    body = MonthlyModel().validate(
        {"fees": [{"id": "rent", "fixed": 3000}, {"id": "mgmt", "label": "管理费", "per_m2": 2.5}]}
    )
    assert body == {
        "fees": [
            {"id": "rent", "label": "rent", "fixed": "3000"},
            {"id": "mgmt", "label": "管理费", "per_m2": "2.5"},
        ]
    }


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "body.fees", "is required"),
        ({"fees": []}, "body.fees", "give 1 to 20 fees"),
        ({"fees": [{"id": "rent", "fixed": "-1"}]}, "body.fees[0].fixed", "must not be negative"),
        (
            {"fees": [{"id": "rent", "fixed": "1"}, {"id": "p", "per_m2": "-0.5"}]},
            "body.fees[1].per_m2",
            "must not be negative",
        ),
        ({"fees": [{"id": "rent"}]}, "body.fees[0].fixed", "give either fixed"),
        (
            {"fees": [{"id": "rent", "fixed": "1", "per_m2": "2"}]},
            "body.fees[0].per_m2",
            "not both",
        ),
        (
            {"fees": [{"id": "rent", "fixed": "1"}, {"id": "rent", "fixed": "2"}]},
            "body.fees[1].id",
            "duplicate fee id 'rent'",
        ),
        (
            {
                "fees": [
                    {"id": "a", "label": "x", "fixed": "1"},
                    {"id": "b", "label": "x", "fixed": 2},
                ]
            },
            "body.fees[1].label",
            "duplicate label",
        ),
        ({"fees": [{"id": "Rent!", "fixed": "1"}]}, "body.fees[0].id", "lower-case"),
        ({"fees": [{"id": "rent", "price": "1"}]}, "body.fees[0].price", "not a field"),
        ({"fees": [{"id": "rent", "fixed": "abc"}]}, "body.fees[0].fixed", "must be a number"),
        ({"fees": [{"id": "rent", "fixed": "1"}], "extra": 1}, "body.extra", "not a field"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(
    utilities: UtilityRegistry, body: Any, field: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        validate_document(utilities, doc(body))
    assert err.value.field == field
    assert str(err.value).startswith(field)


def test_categories_give_one_fee_table_per_category(utilities: UtilityRegistry) -> None:
    sched = schedule_from_documents(
        utilities,
        [
            {
                **doc(),
                "body": None,
                "categories": {
                    "commercial": BODY,
                    "residential": {"fees": [{"id": "property", "per_m2": "1.20"}]},
                },
            }
        ],
    )
    day = dt.date(2026, 5, 1)
    home = quote_fixed(sched, on=day, category="residential", position=Position(context=AREA))
    assert home.amount == 10260  # 85.50 x 1.20
    shop = quote_fixed(sched, on=day, category="commercial", position=Position(context=AREA))
    assert shop.amount == 329925


def test_the_sample_document_loads_and_quotes(utilities: UtilityRegistry) -> None:
    raw = read_file(ROOT / "docs/tariffs/examples/rent-shops.yaml")
    checked = validate_document(utilities, raw)
    assert checked["body"]["fees"][0] == {"id": "rent", "label": "rent", "fixed": "3000"}
    sched = schedule_from_documents(utilities, [raw])
    assert fixed(sched, dt.date(2026, 3, 15)).amount == 329925


@settings(max_examples=150, deadline=None)
@given(
    month=st.integers(1, 12),
    cut=st.integers(0, 31),
    fee=st.decimals(min_value=0, max_value=100000, places=2),
    rate=st.decimals(min_value=0, max_value=100, places=4),
    area=st.decimals(min_value=Decimal("0.01"), max_value=10000, places=2),
)
def test_the_days_before_and_after_a_cut_cost_the_whole_month(
    utilities: UtilityRegistry, month: int, cut: int, fee: Decimal, rate: Decimal, area: Decimal
) -> None:
    """Closing on day d and opening on day d split the month exactly (before the rounding)."""
    body = {"fees": [{"id": "rent", "fixed": str(fee)}, {"id": "mgmt", "per_m2": str(rate)}]}
    sched = schedule_from_documents(utilities, [doc(body)])
    first, nxt = month_of(dt.date(2026, month, 1))
    day = min(first + dt.timedelta(days=cut), nxt)
    ctx = {"floor_area": area}
    whole = quote_fixed(sched, on=first, position=Position(context=ctx))
    before = quote_fixed(sched, on=first, position=Position(closed=day, context=ctx))
    after = quote_fixed(sched, on=first, position=Position(opened=day, context=ctx))
    assert whole.exact == fee + rate * area
    assert abs(before.exact + after.exact - whole.exact) < Decimal("1e-30")
    assert abs(before.amount + after.amount - whole.amount) <= 1
    assert before.amount <= whole.amount and after.amount <= whole.amount


def test_the_model_prorates_with_charge_prorate() -> None:
    model = MonthlyModel()
    priced = model.compile(model.validate(BODY))
    charge = Charge(
        dt.date(2026, 4, 1), dt.date(2026, 4, 11), dt.date(2026, 4, 1), dt.date(2026, 5, 1), AREA
    )
    lines = model.fixed(priced, charge)
    with exact():
        assert [ln.amount for ln in lines] == [Decimal(1000), Decimal("299.25") / 3]
