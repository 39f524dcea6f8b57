"""Heat tariffs: the two-part price (basic fee by area per season + heat per GJ/kWh), area-only."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import onecard_heat
from onecard.errors import InvalidInput
from onecard.pricing import Charge, exact, round_fen
from onecard.tariffs import (
    Position,
    Schedule,
    quote_fixed,
    quote_money,
    quote_units,
    read_file,
    schedule_from_documents,
    validate_document,
)
from onecard.utility import UtilityRegistry
from onecard_heat.tariff import KWH_PER_GJ, AreaOnlyModel, Season, TwoPartModel, per_gj

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "tariffs" / "examples"
CST = dt.timezone(dt.timedelta(hours=8))
AREA = {"heated_area": Decimal("85.5")}
SEASON = {"start": "11-15", "end": "03-15"}


def registry() -> UtilityRegistry:
    reg = UtilityRegistry()
    onecard_heat.onecard_register_utilities(registry=reg)
    return reg


REG = registry()


def two_part(
    basic: str = "12",
    price: str = "0.16",
    unit: str = "kWh",
    effective: str = "2025-10-01T00:00:00+08:00",
    season: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "kind": "heat",
        "name": "residential",
        "model": "two_part",
        "effective_from": effective,
        "body": {
            "season": season or SEASON,
            "basic_rate": basic,
            "heat_price": price,
            "price_unit": unit,
        },
    }


def area_only(basic: str = "24", effective: str = "2025-10-01T00:00:00+08:00") -> dict[str, Any]:
    return {
        "kind": "heat",
        "name": "residential-area",
        "model": "area_only",
        "effective_from": effective,
        "body": {"season": SEASON, "basic_rate": basic},
    }


def sched(*docs: dict[str, Any]) -> Schedule:
    return schedule_from_documents(REG, list(docs))


def at(y: int, m: int, d: int, h: int = 10) -> dt.datetime:
    return dt.datetime(y, m, d, h, tzinfo=CST)


# --- registration, validation, samples -------------------------------------------------------


def test_the_heat_plugin_attaches_both_models() -> None:
    heat = REG.get("heat")
    assert heat.tariffs.names() == ["area_only", "two_part"]
    assert heat.unit == "GJ" and heat.unit_decimals == 3
    assert onecard_heat.KWH_PER_GJ == KWH_PER_GJ == Decimal("277.78")


def test_validate_normalises_the_body() -> None:
    doc = two_part(basic="12.00", price=0.16)  # type: ignore[arg-type]
    out = validate_document(REG, doc)["body"]
    assert out == {
        "season": {"start": "11-15", "end": "03-15"},
        "basic_rate": "12.00",  # kept as written
        "heat_price": "0.16",
        "price_unit": "kWh",
    }
    assert validate_document(REG, area_only())["body"] == {
        "season": {"start": "11-15", "end": "03-15"},
        "basic_rate": "24",
    }


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"season": {"start": "11-31", "end": "03-15"}}, "body.season.start", "not a day"),
        ({"season": {"start": "02-29", "end": "03-15"}}, "body.season.start", "not a day"),
        ({"season": {"start": "11-15", "end": "3-15"}}, "body.season.end", "like 11-15"),
        ({"season": {"start": "13-01", "end": "03-15"}}, "body.season.start", "not a day"),
        ({"season": {"start": "11-15", "end": "11-15"}}, "body.season.end", "must differ"),
        ({"season": {"start": "11-15"}}, "body.season.end", "is required"),
        ({"season": {**SEASON, "days": 121}}, "body.season.days", "not a field"),
        ({"season": None}, "body.season", ""),
        ({"basic_rate": "-1"}, "body.basic_rate", "must not be negative"),
        ({"basic_rate": "twelve"}, "body.basic_rate", "must be a number"),
        ({"heat_price": "-0.16"}, "body.heat_price", "greater than 0"),
        ({"heat_price": "0"}, "body.heat_price", "greater than 0"),
        ({"price_unit": "MWh"}, "body.price_unit", "must be GJ or kWh"),
        ({"price_unit": "kwh"}, "body.price_unit", "must be GJ or kWh"),
        ({"price_unit": None}, "body.price_unit", ""),
        ({"ladder": []}, "body.ladder", "not a field"),
    ],
)
def test_bad_two_part_bodies_are_refused_naming_the_field(
    change: dict[str, Any], field: str, words: str
) -> None:
    doc = two_part()
    doc["body"] = {**doc["body"], **change}
    with pytest.raises(InvalidInput) as err:
        validate_document(REG, doc)
    assert err.value.field == field
    assert words in err.value.message
    assert err.value.message.startswith(field)


def test_two_part_needs_its_price_unit() -> None:
    doc = two_part()
    del doc["body"]["price_unit"]
    with pytest.raises(InvalidInput, match=r"body\.price_unit: is required"):
        validate_document(REG, doc)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"basic_rate": "0"}, "body.basic_rate"),
        ({"basic_rate": "-24"}, "body.basic_rate"),
        ({"heat_price": "0.16"}, "body.heat_price"),
        ({"season": {"start": "03-15", "end": "03-15"}}, "body.season.end"),
    ],
)
def test_bad_area_only_bodies_are_refused(change: dict[str, Any], field: str) -> None:
    doc = area_only()
    doc["body"] = {**doc["body"], **change}
    with pytest.raises(InvalidInput) as err:
        validate_document(REG, doc)
    assert err.value.field == field


def test_the_sample_documents_load() -> None:
    two = validate_document(REG, read_file(EXAMPLES / "heat-two-part.yaml"))
    assert (two["model"], two["body"]["heat_price"], two["body"]["price_unit"]) == (
        "two_part",
        "0.16",
        "kWh",
    )
    area = validate_document(REG, read_file(EXAMPLES / "heat-area-only.yaml"))
    assert (area["model"], area["body"]["basic_rate"]) == ("area_only", "24")


# --- the season ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "first", "after"),
    [
        (dt.date(2025, 12, 1), dt.date(2025, 11, 15), dt.date(2026, 3, 16)),
        (dt.date(2025, 11, 15), dt.date(2025, 11, 15), dt.date(2026, 3, 16)),  # first day
        (dt.date(2026, 3, 15), dt.date(2025, 11, 15), dt.date(2026, 3, 16)),  # last day, included
        (dt.date(2026, 1, 1), dt.date(2025, 11, 15), dt.date(2026, 3, 16)),
        (dt.date(2026, 3, 16), dt.date(2026, 11, 15), dt.date(2027, 3, 16)),  # between: the next
        (dt.date(2025, 10, 8), dt.date(2025, 11, 15), dt.date(2026, 3, 16)),
        (dt.date(2025, 11, 14), dt.date(2025, 11, 15), dt.date(2026, 3, 16)),
    ],
)
def test_charge_period_is_the_season_holding_the_day_or_the_coming_one(
    on: dt.date, first: dt.date, after: dt.date
) -> None:
    priced = TwoPartModel().compile(validate_document(REG, two_part())["body"])
    assert TwoPartModel().charge_period(priced, on) == (first, after)


def test_season_lengths_count_both_ends_and_leap_days() -> None:
    wrap = Season((11, 15), (3, 15))
    first, after = wrap.starting(2025)
    assert (after - first).days == 121
    first, after = wrap.starting(2027)  # holds 2028-02-29
    assert (after - first).days == 122
    year = Season((1, 1), (12, 31))
    assert year.holding(dt.date(2026, 7, 1)) == (dt.date(2026, 1, 1), dt.date(2027, 1, 1))
    spring = Season((3, 1), (5, 31))  # within one year
    assert spring.holding(dt.date(2026, 6, 1)) == (dt.date(2027, 3, 1), dt.date(2027, 6, 1))
    assert spring.holding(dt.date(2026, 2, 1)) == (dt.date(2026, 3, 1), dt.date(2026, 6, 1))


# --- kWh and GJ ------------------------------------------------------------------------------


def test_one_gj_is_277_78_kwh() -> None:
    heat = REG.get("heat")
    assert heat.to_units(Decimal("277.78"), "kWh") == 1
    assert per_gj(Decimal("0.16"), "kWh") == Decimal("44.4448")
    assert per_gj(Decimal("44.45"), "GJ") == Decimal("44.45")
    q = quote_units(sched(two_part()), units=1000, at=at(2025, 12, 1))
    (line,) = q.lines
    assert line.amount == Decimal("44.4448") and line.price == Decimal("44.4448")
    assert (line.quantity, line.unit) == (Decimal("1.000"), "GJ")
    assert line.detail["kwh"] == Decimal("277.78")
    assert line.detail["price_per_kwh"] == Decimal("0.16")
    assert q.amount == 4444


@settings(max_examples=100, deadline=None)
@given(
    price=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(5), places=4),
    units=st.integers(min_value=1, max_value=10**7),
)
def test_a_price_per_kwh_is_that_price_times_277_78_per_gj(price: Decimal, units: int) -> None:
    by_kwh = sched(two_part(price=str(price), unit="kWh"))
    by_gj = sched(two_part(price=str(price * Decimal("277.78")), unit="GJ"))
    q_kwh = quote_units(by_kwh, units=units, at=at(2025, 12, 1))
    q_gj = quote_units(by_gj, units=units, at=at(2025, 12, 1))
    assert q_kwh.exact == q_gj.exact == Decimal(units).scaleb(-3) * price * Decimal("277.78")


# --- the basic fee and proration -------------------------------------------------------------


def test_a_whole_season_basic_fee() -> None:
    q = quote_fixed(sched(two_part()), on=dt.date(2025, 12, 1), position=Position(context=AREA))
    assert q.exact == Decimal("1026") and q.amount == 102600
    (line,) = q.lines
    assert (line.item, line.label, line.quantity, line.unit, line.price) == (
        "fixed",
        "basic fee",
        Decimal("85.5"),
        "m²",
        Decimal("12"),
    )
    assert line.detail["season_start"] == dt.date(2025, 11, 15)
    assert line.detail["season_end"] == dt.date(2026, 3, 15)
    assert (line.detail["days"], line.detail["season_days"]) == (121, 121)


@pytest.mark.parametrize(
    ("opened", "closed", "days"),
    [
        (dt.date(2026, 1, 10), None, 65),  # 22 + 28 + 15
        (None, dt.date(2026, 2, 1), 78),  # closed is the first day not charged: 16 + 31 + 31
        (dt.date(2025, 12, 1), dt.date(2026, 1, 1), 31),
        (dt.date(2026, 3, 15), None, 1),  # the last day is a day of the season
        (dt.date(2025, 9, 1), None, 121),  # opened before the season: the whole season
        (None, dt.date(2026, 6, 1), 121),  # closes after the season: the whole season
    ],
)
def test_the_basic_fee_is_prorated_by_days_for_an_account_opened_or_closed_within_the_season(
    opened: dt.date | None, closed: dt.date | None, days: int
) -> None:
    s = sched(two_part())
    position = Position(fixed_due=True, opened=opened, closed=closed, context=AREA)
    with exact():
        expected = Decimal("1026") * days / 121
        with_heat = expected + 2 * Decimal("44.4448")
    fixed = quote_fixed(s, on=dt.date(2026, 1, 20), position=position)
    assert fixed.exact == expected
    (line,) = fixed.lines
    assert line.detail["days"] == days
    assert line.label == ("basic fee" if days == 121 else f"basic fee · {days}/121 days")
    # the same through a purchase with the basic fee due: the fee comes first, then the heat
    bought = quote_units(s, units=2000, at=at(2026, 1, 20), position=position)
    assert [ln.item for ln in bought.lines] == ["fixed", "energy"]
    assert bought.exact == with_heat
    assert bought.amount == round_fen(with_heat)


def test_an_account_closed_before_the_season_pays_no_basic_fee() -> None:
    position = Position(fixed_due=True, closed=dt.date(2025, 11, 1), context=AREA)
    q = quote_fixed(sched(two_part()), on=dt.date(2025, 10, 8), position=position)
    assert q.lines == [] and q.amount == 0


def test_buying_between_seasons_pays_the_coming_season() -> None:
    position = Position(fixed_due=True, context=AREA)
    q = quote_units(sched(two_part()), units=1000, at=at(2025, 10, 20), position=position)
    assert q.lines[0].detail["season_start"] == dt.date(2025, 11, 15)
    assert q.exact == Decimal("1026") + Decimal("44.4448")
    assert q.amount == 107044


def test_money_first_covers_the_basic_fee() -> None:
    position = Position(fixed_due=True, context=AREA)
    q = quote_money(sched(two_part()), amount=150000, at=at(2025, 11, 20), position=position)
    assert q.units == 10665 and q.amount == 150000 and q.credit == 0
    assert q.exact == Decimal("1026") + Decimal("10.665") * Decimal("44.4448")
    with pytest.raises(InvalidInput, match="does not cover the fixed charges") as err:
        quote_money(sched(two_part()), amount=100000, at=at(2025, 11, 20), position=position)
    assert err.value.field == "amount"


@pytest.mark.parametrize(
    "context",
    [{}, {"heated_area": None}, {"heated_area": Decimal(0)}, {"heated_area": Decimal("-3")}],
)
def test_the_basic_fee_needs_a_heated_area(context: dict[str, Any]) -> None:
    position = Position(fixed_due=True, context=context)
    for doc in (two_part(), area_only()):
        with pytest.raises(InvalidInput) as err:
            quote_units(sched(doc), units=0, at=at(2025, 12, 1), position=position)
        assert err.value.field == "heated_area"
    # without the fee due, no area is needed for heat
    assert quote_units(sched(two_part()), units=1000, at=at(2025, 12, 1)).amount == 4444


def test_a_heated_area_given_as_text_or_int_is_read_exactly() -> None:
    priced = TwoPartModel().compile(validate_document(REG, two_part())["body"])
    period = (dt.date(2025, 11, 15), dt.date(2026, 3, 16))
    for area in ("85.5", 85, Decimal("85.50")):
        (line,) = TwoPartModel().fixed(priced, Charge(*period, *period, {"heated_area": area}))
        assert line.amount == Decimal(12) * Decimal(str(area))
    with pytest.raises(InvalidInput):
        TwoPartModel().fixed(priced, Charge(*period, *period, {"heated_area": 85.5}))


def test_a_basic_rate_change_mid_season_splits_the_fee_by_days() -> None:
    s = sched(two_part(), two_part(basic="13", effective="2026-01-01T00:00:00+08:00"))
    q = quote_fixed(s, on=dt.date(2025, 11, 20), position=Position(context=AREA))
    assert [(ln.label, ln.detail["version"]) for ln in q.lines] == [
        ("basic fee · 47/121 days", 1),
        ("basic fee · 74/121 days", 2),
    ]
    assert [ln.detail["from"] for ln in q.lines] == ["2025-11-15", "2026-01-01"]
    with exact():
        assert q.exact == Decimal("85.5") * 12 * 47 / 121 + Decimal("85.5") * 13 * 74 / 121
    assert q.amount == 107829 and q.versions == [1, 2]
    # a change at noon: that day still belongs to the old version
    s = sched(two_part(), two_part(basic="13", effective="2026-01-01T12:00:00+08:00"))
    q = quote_fixed(s, on=dt.date(2025, 11, 20), position=Position(context=AREA))
    assert [ln.detail["days"] for ln in q.lines] == [48, 73]
    # opened mid-season, after the change: only the new version's days
    late = Position(opened=dt.date(2026, 2, 1), context=AREA)
    q = quote_fixed(
        sched(two_part(), two_part(basic="13", effective="2026-01-01T00:00:00+08:00")),
        on=dt.date(2026, 2, 1),
        position=late,
    )
    assert [ln.detail["version"] for ln in q.lines] == [2]
    with exact():
        assert q.exact == Decimal("85.5") * 13 * 43 / 121


def test_heat_spread_over_a_price_change_is_split_by_time() -> None:
    s = sched(two_part(), two_part(price="0.20", effective="2026-01-01T00:00:00+08:00"))
    q = quote_units(s, units=2000, at=at(2025, 12, 31, 12), until=at(2026, 1, 1, 12))
    assert [(ln.quantity, ln.price) for ln in q.lines] == [
        (Decimal(1), Decimal("44.4448")),
        (Decimal(1), Decimal("55.556")),
    ]
    assert q.exact == Decimal("100.0008") and q.amount == 10000


# --- area only -------------------------------------------------------------------------------


def test_area_only_charges_the_area_fee_and_sells_no_units() -> None:
    s = sched(area_only())
    q = quote_fixed(s, on=dt.date(2025, 11, 20), position=Position(context=AREA))
    assert [(ln.label, ln.amount) for ln in q.lines] == [("area fee", Decimal("2052.0"))]
    q = quote_units(
        s, units=0, at=at(2025, 11, 20), position=Position(fixed_due=True, context=AREA)
    )
    assert q.amount == 205200
    closed = Position(fixed_due=True, closed=dt.date(2026, 2, 1), context=AREA)
    q = quote_fixed(s, on=dt.date(2025, 11, 20), position=closed)
    with exact():
        assert q.exact == Decimal(2052) * 78 / 121
    assert q.amount == 132278
    with pytest.raises(InvalidInput) as err:
        quote_units(s, units=1, at=at(2025, 11, 20))
    assert err.value.field == "units"
    with pytest.raises(InvalidInput) as err:
        quote_money(s, amount=500000, at=at(2025, 11, 20), position=Position(context=AREA))
    assert err.value.field == "units"
    assert AreaOnlyModel().ladder_period(None, at(2025, 11, 20)) is None  # type: ignore[arg-type]


# --- properties of the heat part -------------------------------------------------------------

PRICES = [
    ("0.16", "kWh"),  # 44.4448 yuan/GJ: 0.001 GJ costs 4.4 fen
    ("44.45", "GJ"),
    ("0.005", "GJ"),  # 0.001 GJ costs 0.0005 fen: many units per fen
    ("0.01", "kWh"),  # 2.7778 yuan/GJ: 0.001 GJ costs 0.28 fen
    ("120", "GJ"),
]
SCHEDULES = {p: sched(two_part(price=p[0], unit=p[1])) for p in PRICES}
WHEN = at(2025, 12, 1)

prices = st.sampled_from(PRICES)
quantities = st.integers(min_value=0, max_value=5_000_000)  # up to 5000 GJ
fee_due = st.booleans()


def position(used: int = 0, due: bool = False) -> Position:
    return Position(used=used, fixed_due=due, context=AREA)


@settings(max_examples=150, deadline=None)
@given(price=prices, a=quantities, b=quantities, used=quantities)
def test_buying_a_then_b_costs_the_same_as_a_plus_b(
    price: tuple[str, str], a: int, b: int, used: int
) -> None:
    s = SCHEDULES[price]
    first = quote_units(s, units=a, at=WHEN, position=position(used))
    second = quote_units(s, units=b, at=WHEN, position=position(used + a))
    both = quote_units(s, units=a + b, at=WHEN, position=position(used))
    assert first.exact + second.exact == both.exact
    assert abs(first.amount + second.amount - both.amount) <= 1


@settings(max_examples=150, deadline=None)
@given(price=prices, a=quantities, extra=quantities, due=fee_due)
def test_cost_is_monotonic_in_quantity(
    price: tuple[str, str], a: int, extra: int, due: bool
) -> None:
    s = SCHEDULES[price]
    less = quote_units(s, units=a, at=WHEN, position=position(due=due))
    more = quote_units(s, units=a + extra, at=WHEN, position=position(due=due))
    assert less.exact <= more.exact and less.amount <= more.amount


@settings(max_examples=150, deadline=None)
@given(price=prices, u=st.integers(min_value=1, max_value=5_000_000), due=fee_due)
def test_units_of_the_money_units_cost_return_the_units(
    price: tuple[str, str], u: int, due: bool
) -> None:
    s = SCHEDULES[price]
    m = quote_units(s, units=u, at=WHEN, position=position(due=due)).amount
    assume(m > 0)  # a few units of a very cheap heat cost less than half a fen
    bought = quote_money(s, amount=m, at=WHEN, position=position(due=due))
    v = bought.units
    assert v >= u
    assert quote_units(s, units=v, at=WHEN, position=position(due=due)).amount == m
    assert bought.credit == 0
    if per_gj(Decimal(price[0]), price[1]) / 1000 >= Decimal("0.01"):  # a unit costs >= 1 fen
        assert v == u
