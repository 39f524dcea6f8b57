"""Gas tariff models: tiered by annual (or monthly) cumulative use, and flat."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import onecard_gas
from onecard.errors import InvalidInput
from onecard.tariffs import (
    Position,
    Schedule,
    quote_money,
    quote_units,
    read_file,
    schedule_from_documents,
    validate_document,
)
from onecard.utility import UtilityRegistry
from onecard_gas.tariff import FlatModel, TieredModel

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "tariffs" / "examples"
CST = dt.timezone(dt.timedelta(hours=8))
AT = dt.datetime(2026, 3, 1, 10, 0, tzinfo=CST)


def registry() -> UtilityRegistry:
    reg = UtilityRegistry()
    onecard_gas.onecard_register_utilities(registry=reg)
    return reg


REG = registry()


def beijing() -> dict[str, Any]:
    """Beijing residential pipeline gas: 2.61 / 2.83 / 4.23 yuan per m³ by annual use."""
    return {
        "kind": "gas",
        "name": "residential",
        "model": "tiered",
        "effective_from": "2024-01-01T00:00:00+08:00",
        "body": {
            "tiers": [
                {"upto": 350, "price": "2.61"},
                {"upto": 500, "price": "2.83"},
                {"upto": None, "price": "4.23"},
            ]
        },
    }


def flat(price: Any = "3.50") -> dict[str, Any]:
    return {
        "kind": "gas",
        "name": "commercial",
        "model": "flat",
        "effective_from": "2026-01-01T00:00:00+08:00",
        "body": {"price": price},
    }


def schedule(*docs: dict[str, Any]) -> Schedule:
    return schedule_from_documents(REG, list(docs))


def labels(quote: Any) -> list[tuple[str, Decimal]]:
    return [(ln.label, ln.amount) for ln in quote.lines]


# --- registration and normalisation -------------------------------------------------------------


def test_gas_has_tiered_and_flat() -> None:
    assert REG.get("gas").tariffs.names() == ["flat", "tiered"]


def test_tiered_defaults_to_an_annual_reset_from_1_january() -> None:
    body = validate_document(REG, beijing())["body"]
    assert body == {
        "reset": "annual",
        "anchor": "01-01",
        "tiers": [
            {"upto": "350", "price": "2.61"},
            {"upto": "500", "price": "2.83"},
            {"upto": None, "price": "4.23"},
        ],
    }
    assert TieredModel().validate(body) == body
    monthly = TieredModel().validate({"reset": "monthly", "tiers": [{"price": 3}]})
    assert monthly == {"reset": "monthly", "tiers": [{"upto": None, "price": "3"}]}
    assert FlatModel().validate({"price": 2.63}) == {"price": "2.63"}


def test_any_number_of_tiers_is_accepted() -> None:
    tiers = [{"upto": i * 10, "price": str(i)} for i in range(1, 12)] + [{"price": "20"}]
    body = TieredModel().validate({"tiers": tiers})
    assert len(body["tiers"]) == 12
    q = quote_units(
        schedule({**beijing(), "body": {"tiers": tiers}}), units=12000, at=AT, position=Position()
    )
    # 10 m³ in each of tiers 1..11 (1+2+...+11 = 66 yuan per m³ x 10) + 10 m³ at 20
    assert q.amount == 66 * 10 * 100 + 20 * 10 * 100
    assert [ln.tier for ln in q.lines] == list(range(1, 13))


# --- refusals ------------------------------------------------------------------------------------


def _tiers(*uptos: Any) -> list[dict[str, Any]]:
    return [{"upto": u, "price": "1"} for u in uptos]


TIERED_REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    ("out of order", {"tiers": _tiers(500, 350, None)}, "body.tiers[1].upto", "greater than"),
    ("equal bounds", {"tiers": _tiers(350, 350, None)}, "body.tiers[1].upto", "greater than"),
    ("zero bound", {"tiers": _tiers(0, None)}, "body.tiers[0].upto", "greater than 0"),
    ("last tier closed", {"tiers": _tiers(350, 500)}, "body.tiers[1].upto", "open-ended"),
    ("middle tier open", {"tiers": _tiers(None, None)}, "body.tiers[0].upto", "open-ended"),
    ("no tiers", {"tiers": []}, "body.tiers", "at least one tier"),
    ("tiers missing", {"tiers": None}, "body.tiers", ""),
    (
        "negative price",
        {"tiers": [{"upto": 350, "price": "-2.61"}, {"price": "2.83"}]},
        "body.tiers[0].price",
        "must not be negative",
    ),
    (
        "free open-ended last tier",
        {"tiers": [{"upto": 350, "price": "2.61"}, {"price": "0"}]},
        "body.tiers[1].price",
        "must cost something",
    ),
    ("unknown body field", {"components": []}, "body.components", "not a field"),
    (
        "unknown tier field",
        {"tiers": [{"upto": None, "price": "2", "band": "peak"}]},
        "body.tiers[0].band",
        "not a field",
    ),
    ("unknown reset", {"reset": "weekly"}, "body.reset", "Must be one of"),
    ("anchor with monthly", {"reset": "monthly", "anchor": "07-01"}, "body.anchor", "annual"),
    ("anchor 29 February", {"anchor": "02-29"}, "body.anchor", "not a day of every year"),
    ("price not a number", {"tiers": [{"price": "cheap"}]}, "body.tiers[0].price", "a number"),
]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [(c, f, w) for _, c, f, w in TIERED_REFUSALS],
    ids=[name for name, *_ in TIERED_REFUSALS],
)
def test_bad_tiered_documents_are_refused_naming_the_field(
    change: dict[str, Any], field: str, words: str
) -> None:
    doc = beijing()
    doc["body"].update(change)
    with pytest.raises(InvalidInput) as err:
        validate_document(REG, doc)
    assert err.value.field == field
    assert err.value.message.startswith(f"{field}: ")
    assert words in err.value.message


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"price": "-1"}, "body.price", "greater than 0"),
        ({"price": "0"}, "body.price", "greater than 0"),
        ({}, "body.price", "is required"),
        ({"price": "2.63", "tiers": []}, "body.tiers", "not a field"),
    ],
)
def test_bad_flat_documents_are_refused_naming_the_field(
    body: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_document(REG, {**flat(), "body": body})
    assert err.value.field == field
    assert words in err.value.message


# --- pricing -------------------------------------------------------------------------------------


def test_beijing_crossing_tiers() -> None:
    sched = schedule(beijing())
    q = quote_units(sched, units=2000, at=AT, position=Position(used=34000))
    assert q.amount == 5440  # 10 x 2.61 + 10 x 2.83
    assert labels(q) == [("tier 1", Decimal("26.1000")), ("tier 2", Decimal("28.3000"))]
    line = q.lines[1]
    assert (line.item, line.tier, line.quantity, line.unit, line.price) == (
        "energy",
        2,
        Decimal("10.00"),
        "m³",
        Decimal("2.83"),
    )
    q = quote_units(sched, units=2000, at=AT, position=Position(used=49000))
    assert q.amount == 7060  # 10 x 2.83 + 10 x 4.23


def test_beijing_money_to_cubic_metres_across_a_tier() -> None:
    q = quote_money(schedule(beijing()), amount=10000, at=AT, position=Position(used=34000))
    # 10 m³ at 2.61 = 26.10; 73.90 left at 2.83 buys 26.11 m³ (73.8913): 99.9913 -> 99.99
    assert (q.units, q.amount, q.credit) == (3611, 9999, 1)


def test_the_annual_tiers_start_again_on_1_january_when_use_spans_the_year_end() -> None:
    start = dt.datetime(2025, 12, 29, tzinfo=CST)
    until = dt.datetime(2026, 1, 2, tzinfo=CST)
    q = quote_units(
        schedule(beijing()), units=800, at=start, until=until, position=Position(used=34500)
    )
    # 2 m³ a day: 6 m³ in 2025 (5 at tier 1, 1 at tier 2), 2 m³ in 2026 at tier 1
    assert [(ln.tier, ln.quantity) for ln in q.lines] == [
        (1, Decimal("5.00")),
        (2, Decimal("1.00")),
        (1, Decimal("2.00")),
    ]
    assert q.amount == 2110
    assert q.period is not None
    assert q.period[0].date() == dt.date(2025, 1, 1)


def test_an_anchor_moves_the_start_of_the_gas_year() -> None:
    doc = beijing()
    doc["body"]["anchor"] = "10-01"
    sched = schedule(doc)
    q = quote_units(
        sched,
        units=200,
        at=dt.datetime(2025, 12, 31, 12, tzinfo=CST),
        until=dt.datetime(2026, 1, 1, 12, tzinfo=CST),
        position=Position(used=34900),
    )
    assert [ln.tier for ln in q.lines] == [1, 2]  # no reset on 1 January
    q = quote_units(
        sched,
        units=200,
        at=dt.datetime(2026, 9, 30, 12, tzinfo=CST),
        until=dt.datetime(2026, 10, 1, 12, tzinfo=CST),
        position=Position(used=60000),
    )
    assert q.amount == 423 + 261  # 1 m³ at tier 3 in the old year, 1 m³ at tier 1 in the new


def test_a_monthly_reset() -> None:
    doc = beijing()
    doc["body"]["reset"] = "monthly"
    q = quote_units(
        schedule(doc),
        units=200,
        at=dt.datetime(2026, 2, 28, 12, tzinfo=CST),
        until=dt.datetime(2026, 3, 1, 12, tzinfo=CST),
        position=Position(used=50000),
    )
    assert q.amount == 423 + 261


def test_flat_gas() -> None:
    sched = schedule(flat())
    q = quote_units(sched, units=10000, at=AT, position=Position(used=10**9))
    assert q.period is None
    assert labels(q) == [("gas", Decimal("350.0000"))]
    assert q.lines[0].tier is None
    m = quote_money(sched, amount=10000, at=AT)
    # 28.57 m³ x 3.50 = 99.995 -> 100.00 (half-up), which 100.00 covers; 28.58 m³ would be 100.03
    assert (m.units, m.amount, m.credit) == (2857, 10000, 0)


def test_a_price_change_in_the_middle_of_a_spread_is_split_by_the_core() -> None:
    sched = schedule(flat("3.00"), {**flat("4.00"), "effective_from": "2026-03-16T00:00:00+08:00"})
    q = quote_units(
        sched,
        units=3000,
        at=dt.datetime(2026, 3, 1, tzinfo=CST),
        until=dt.datetime(2026, 3, 31, tzinfo=CST),
    )
    assert q.versions == [1, 2]
    assert q.amount == 15 * 300 + 15 * 400


@pytest.mark.parametrize("name", ["gas-residential", "gas-commercial"])
def test_sample_documents_load(name: str) -> None:
    raw = read_file(EXAMPLES / f"{name}.yaml")
    assert validate_document(REG, raw)["kind"] == "gas"
    schedule(raw)


# --- properties ----------------------------------------------------------------------------------

PRICE = st.integers(min_value=0, max_value=9000).map(lambda n: Decimal(n).scaleb(-3))


@st.composite
def tiered_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A random valid tiered document with 1-10 tiers."""
    n = draw(st.integers(min_value=1, max_value=10))
    bounds = sorted(draw(st.sets(st.integers(1, 80000), min_size=n - 1, max_size=n - 1)))
    tiers: list[dict[str, Any]] = [
        {"upto": str(Decimal(b).scaleb(-2)), "price": str(draw(PRICE))} for b in bounds
    ]
    tiers.append({"upto": None, "price": str(draw(PRICE) + Decimal("0.01"))})
    return {**beijing(), "name": "random", "body": {"tiers": tiers}}


UNITS = st.integers(min_value=0, max_value=100000)


@settings(max_examples=150, deadline=None)
@given(doc=tiered_documents(), used=UNITS, a=UNITS, b=UNITS)
def test_buying_a_then_b_costs_a_plus_b(doc: dict[str, Any], used: int, a: int, b: int) -> None:
    sched = schedule(doc)
    qa = quote_units(sched, units=a, at=AT, position=Position(used=used))
    qb = quote_units(sched, units=b, at=AT, position=Position(used=used + a))
    qab = quote_units(sched, units=a + b, at=AT, position=Position(used=used))
    assert qa.exact + qb.exact == qab.exact
    assert abs(qa.amount + qb.amount - qab.amount) <= 1


@settings(max_examples=150, deadline=None)
@given(doc=tiered_documents(), used=UNITS, a=UNITS, extra=st.integers(1, 5000))
def test_cost_is_monotonic_in_quantity(doc: dict[str, Any], used: int, a: int, extra: int) -> None:
    sched = schedule(doc)
    less = quote_units(sched, units=a, at=AT, position=Position(used=used))
    more = quote_units(sched, units=a + extra, at=AT, position=Position(used=used))
    assert less.exact <= more.exact
    assert less.amount <= more.amount


@settings(max_examples=120, deadline=None)
@given(doc=tiered_documents(), used=UNITS, u=st.integers(1, 100000))
def test_units_of_money_of_units_returns_the_units(doc: dict[str, Any], used: int, u: int) -> None:
    sched = schedule(doc)
    m = quote_units(sched, units=u, at=AT, position=Position(used=used)).amount
    assume(m > 0)
    v = quote_money(sched, amount=m, at=AT, position=Position(used=used)).units
    assert v >= u
    assert quote_units(sched, units=v, at=AT, position=Position(used=used)).amount == m
    if min(Decimal(t["price"]) for t in doc["body"]["tiers"]) >= 1:
        assert v == u  # 0.01 m³ costs at least 1 fen in every tier: money gives back exactly u
