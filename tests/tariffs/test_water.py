"""Water tariff models: quota steps with itemized components, and the flat price."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import onecard_water
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
from onecard_water.tariff import FlatModel, StepsModel

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "tariffs" / "examples"
CST = dt.timezone(dt.timedelta(hours=8))
AT = dt.datetime(2026, 3, 1, 10, 0, tzinfo=CST)


def registry() -> UtilityRegistry:
    reg = UtilityRegistry()
    onecard_water.onecard_register_utilities(registry=reg)
    return reg


REG = registry()


def beijing() -> dict[str, Any]:
    """Beijing residential tap water from 2014-05-01: 5 / 7 / 9 yuan per m³, annual steps."""
    return {
        "kind": "water.cold",
        "name": "residential",
        "model": "steps",
        "effective_from": "2014-05-01T00:00:00+08:00",
        "body": {
            "reset": "annual",
            "label": "water fee",
            "steps": [
                {"upto": 180, "price": "2.07"},
                {"upto": "260", "price": "4.07"},
                {"upto": None, "price": "6.07"},
            ],
            "components": [
                {"id": "resource", "label": "water resource fee", "price": "1.57"},
                {"id": "sewage", "label": "sewage treatment fee", "price": "1.36"},
            ],
        },
    }


def schedule(*docs: dict[str, Any]) -> Schedule:
    return schedule_from_documents(REG, list(docs))


def labels(quote: Any) -> list[tuple[str, Decimal]]:
    return [(ln.label, ln.amount) for ln in quote.lines]


# --- registration and normalisation -------------------------------------------------------------


def test_every_water_kind_has_steps_and_flat() -> None:
    for code in onecard_water.KINDS:
        assert REG.get(code).tariffs.names() == ["flat", "steps"]


def test_steps_body_is_normalised_and_validating_it_again_changes_nothing() -> None:
    body = validate_document(REG, beijing())["body"]
    assert body == {
        "reset": "annual",
        "anchor": "01-01",
        "label": "water fee",
        "steps": [
            {"upto": "180", "price": "2.07"},
            {"upto": "260", "price": "4.07"},
            {"upto": None, "price": "6.07"},
        ],
        "components": [
            {"id": "resource", "label": "water resource fee", "price": "1.57"},
            {"id": "sewage", "label": "sewage treatment fee", "price": "1.36"},
        ],
    }
    assert StepsModel().validate(body) == body


def test_defaults_label_component_label_and_overrides_are_kept_as_text() -> None:
    body = StepsModel().validate(
        {
            "reset": "monthly",
            "steps": [
                {"upto": 10.5, "price": 2},
                {"price": "3.00", "components": {"sewage": 1.2}},
            ],
            "components": [{"id": "sewage", "price": "0.90"}],
        }
    )
    assert body["label"] == "water"
    assert "anchor" not in body
    assert body["components"] == [{"id": "sewage", "label": "sewage", "price": "0.90"}]
    assert body["steps"] == [
        {"upto": "10.5", "price": "2"},
        {"upto": None, "price": "3.00", "components": {"sewage": "1.2"}},  # kept as written
    ]
    flat = FlatModel().validate({"price": "25"})
    assert flat == {"price": "25", "label": "water", "components": []}
    assert FlatModel().validate(flat) == flat


# --- refusals ------------------------------------------------------------------------------------


def _steps(*uptos: Any) -> list[dict[str, Any]]:
    return [{"upto": u, "price": "1"} for u in uptos]


STEPS_REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    ("out of order", {"steps": _steps(260, 180, None)}, "body.steps[1].upto", "greater than"),
    ("equal bounds", {"steps": _steps(180, 180, None)}, "body.steps[1].upto", "greater than"),
    ("zero bound", {"steps": _steps(0, None)}, "body.steps[0].upto", "greater than 0"),
    ("negative bound", {"steps": _steps(-5, None)}, "body.steps[0].upto", "greater than 0"),
    ("last step closed", {"steps": _steps(180, 260)}, "body.steps[1].upto", "open-ended"),
    ("middle step open", {"steps": _steps(None, None)}, "body.steps[0].upto", "open-ended"),
    ("seven steps", {"steps": _steps(1, 2, 3, 4, 5, 6, None)}, "body.steps", "one to six"),
    ("no steps", {"steps": []}, "body.steps", "one to six"),
    ("steps missing", {"steps": None}, "body.steps", ""),
    (
        "negative water price",
        {"steps": [{"upto": 180, "price": "-2.07"}, {"upto": None, "price": "4"}]},
        "body.steps[0].price",
        "must not be negative",
    ),
    (
        "negative component price",
        {"components": [{"id": "resource", "price": "1.57"}, {"id": "sewage", "price": "-1"}]},
        "body.components[1].price",
        "must not be negative",
    ),
    (
        "negative override",
        {"steps": [{"upto": 180, "price": "2"}, {"price": "4", "components": {"sewage": "-1"}}]},
        "body.steps[1].components.sewage",
        "must not be negative",
    ),
    (
        "override of an unknown component",
        {"steps": [{"upto": 180, "price": "2", "components": {"heating": "1"}}, {"price": "4"}]},
        "body.steps[0].components.heating",
        "not a component",
    ),
    (
        "override that is not a number",
        {"steps": [{"upto": 180, "price": "2"}, {"price": "4", "components": {"sewage": "x"}}]},
        "body.steps[1].components.sewage",
        "must be a number",
    ),
    ("unknown body field", {"discount": "0.1"}, "body.discount", "not a field"),
    (
        "unknown step field",
        {"steps": [{"upto": None, "price": "2", "rate": "1"}]},
        "body.steps[0].rate",
        "not a field",
    ),
    (
        "unknown component field",
        {"components": [{"id": "sewage", "price": "1", "per": "m3"}]},
        "body.components[0].per",
        "not a field",
    ),
    (
        "duplicate component",
        {"components": [{"id": "sewage", "price": "1"}, {"id": "sewage", "price": "2"}]},
        "body.components[1].id",
        "already components[0].id",
    ),
    (
        "bad component id",
        {"components": [{"id": "Sewage Fee", "price": "1"}]},
        "body.components[0].id",
        "lower-case",
    ),
    ("reset missing", {"reset": None}, "body.reset", "required with more than one step"),
    ("unknown reset", {"reset": "weekly"}, "body.reset", "Must be one of"),
    ("anchor with monthly", {"reset": "monthly", "anchor": "07-01"}, "body.anchor", "annual"),
    ("anchor 29 February", {"anchor": "02-29"}, "body.anchor", "not a day of every year"),
    ("anchor badly written", {"anchor": "7-1"}, "body.anchor", "month and day"),
    (
        "float with too many decimals",
        {"steps": [{"price": "0.123456789"}]},
        "body.steps[0].price",
        "decimals",
    ),
    (
        "free open-ended last step",
        {"steps": [{"upto": 10, "price": "1"}, {"price": "0"}], "components": []},
        "body.steps[1].price",
        "must cost something",
    ),
]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [(c, f, w) for _, c, f, w in STEPS_REFUSALS],
    ids=[name for name, *_ in STEPS_REFUSALS],
)
def test_bad_steps_documents_are_refused_naming_the_field(
    change: dict[str, Any], field: str, words: str
) -> None:
    doc = beijing()
    doc["body"].update(change)
    with pytest.raises(InvalidInput) as err:
        validate_document(REG, doc)
    assert err.value.field == field
    assert err.value.message.startswith(f"{field}: ")
    assert words in err.value.message


FLAT_REFUSALS: list[tuple[dict[str, Any], str, str]] = [
    ({"price": "-1"}, "body.price", "must not be negative"),
    ({}, "body.price", "is required"),
    ({"price": "0"}, "body.price", "must cost something"),
    ({"price": "2", "steps": []}, "body.steps", "not a field"),
    (
        {"price": "2", "components": [{"id": "s", "price": "-0.5"}]},
        "body.components[0].price",
        "negative",
    ),
]


@pytest.mark.parametrize(("body", "field", "words"), FLAT_REFUSALS)
def test_bad_flat_documents_are_refused_naming_the_field(
    body: dict[str, Any], field: str, words: str
) -> None:
    doc = {"kind": "water.hot", "name": "hot", "model": "flat", "effective_from": "2026-01-01"}
    with pytest.raises(InvalidInput) as err:
        validate_document(REG, {**doc, "body": body})
    assert err.value.field == field
    assert words in err.value.message


def test_a_free_flat_price_with_a_paid_component_is_accepted() -> None:
    body = FlatModel().validate({"price": "0", "components": [{"id": "sewage", "price": "1"}]})
    assert body["price"] == "0"


def test_a_refusal_in_a_category_names_the_category() -> None:
    doc = beijing()
    body = doc.pop("body")
    bad = copy.deepcopy(body)
    bad["steps"][2]["price"] = "-1"
    doc["categories"] = {"residential": body, "commercial": bad}
    with pytest.raises(InvalidInput) as err:
        validate_document(REG, doc)
    assert err.value.field == "categories.commercial.steps[2].price"


# --- pricing -------------------------------------------------------------------------------------


def test_beijing_crossing_from_step_one_to_two_itemizes_water_and_components() -> None:
    q = quote_units(schedule(beijing()), units=2000, at=AT, position=Position(used=17000))
    assert q.amount == 12000  # 10 m³ x 5.00 + 10 m³ x 7.00
    assert labels(q) == [
        ("tier 1 · water fee", Decimal("20.70")),
        ("tier 1 · water resource fee", Decimal("15.70")),
        ("tier 1 · sewage treatment fee", Decimal("13.60")),
        ("tier 2 · water fee", Decimal("40.70")),
        ("tier 2 · water resource fee", Decimal("15.70")),
        ("tier 2 · sewage treatment fee", Decimal("13.60")),
    ]
    first, resource = q.lines[0], q.lines[1]
    assert (first.item, first.tier, first.component, first.price) == (
        "energy",
        1,
        None,
        Decimal("2.07"),
    )
    assert (first.quantity, first.unit) == (Decimal("10.00"), "m³")
    assert (resource.item, resource.tier, resource.component) == ("component", 1, "resource")
    assert q.lines[4].price == Decimal("1.57") and q.lines[4].tier == 2
    assert q.period is not None
    assert (q.period[0].date(), q.period[1].date()) == (dt.date(2026, 1, 1), dt.date(2027, 1, 1))


def test_beijing_money_to_cubic_metres_leaves_the_rest_as_credit() -> None:
    q = quote_money(schedule(beijing()), amount=10000, at=AT, position=Position(used=25000))
    # 10 m³ at 7.00 = 70.00; 30.00 left at 9.00 buys 3.33 m³ (29.97); 0.03 stays as credit
    assert (q.units, q.amount, q.credit) == (1333, 9997, 3)
    assert q.quantity == Decimal("13.33")


def test_the_annual_quota_starts_again_on_1_january_when_use_spans_the_year_end() -> None:
    start = dt.datetime(2025, 12, 20, tzinfo=CST)
    until = dt.datetime(2026, 1, 10, tzinfo=CST)
    sched = schedule(beijing())
    q = quote_units(sched, units=2100, at=start, until=until, position=Position(used=17000))
    # 21 m³ over 21 days: 12 m³ in 2025 (10 at tier 1, 2 at tier 2), 9 m³ in 2026 from zero
    assert q.amount == 10900
    assert [(ln.tier, ln.quantity) for ln in q.lines if ln.item == "energy"] == [
        (1, Decimal("10.00")),
        (2, Decimal("2.00")),
        (1, Decimal("9.00")),
    ]
    # the same as buying the 2025 part and the 2026 part apart
    old = quote_units(sched, units=1200, at=start, position=Position(used=17000))
    new = quote_units(sched, units=900, at=until, position=Position(used=0))
    assert q.exact == old.exact + new.exact


def test_an_annual_anchor_moves_the_reset_day() -> None:
    doc = beijing()
    doc["body"]["anchor"] = "07-01"
    sched = schedule(doc)
    q = quote_units(sched, units=100, at=AT, position=Position(used=0))
    assert q.period is not None
    assert (q.period[0].date(), q.period[1].date()) == (dt.date(2025, 7, 1), dt.date(2026, 7, 1))
    spread = quote_units(
        sched,
        units=200,
        at=dt.datetime(2026, 6, 30, tzinfo=CST),
        until=dt.datetime(2026, 7, 2, tzinfo=CST),
        position=Position(used=26000),
    )
    # 1 m³ at step 3 (9.00) before 1 July, 1 m³ at step 1 (5.00) after
    assert spread.amount == 1400


def test_a_monthly_reset_starts_each_month_at_zero() -> None:
    doc = {
        "kind": "water.recycled",
        "name": "recycled",
        "model": "steps",
        "effective_from": "2026-01-01",
        "body": {"reset": "monthly", "steps": [{"upto": 10, "price": "1"}, {"price": "2"}]},
    }
    sched = schedule(doc)
    q = quote_units(
        sched,
        units=400,
        at=dt.datetime(2026, 4, 29, tzinfo=CST),
        until=dt.datetime(2026, 5, 3, tzinfo=CST),
        position=Position(used=900),
    )
    # 2 m³ in April: 1 at 1.00 (to 10 m³), 1 at 2.00; 2 m³ in May at 1.00
    assert q.amount == 500
    assert [ln.label for ln in q.lines] == ["tier 1 · water", "tier 2 · water", "tier 1 · water"]


def test_a_step_override_changes_a_component_and_a_zero_override_leaves_its_line_out() -> None:
    doc = beijing()
    doc["body"]["steps"][0]["components"] = {"sewage": "0"}
    doc["body"]["steps"][2]["components"] = {"sewage": "2.00"}
    sched = schedule(doc)
    q = quote_units(sched, units=100, at=AT, position=Position(used=0))
    assert [ln.component for ln in q.lines] == [None, "resource"]
    q = quote_units(sched, units=100, at=AT, position=Position(used=30000))
    assert labels(q)[-1] == ("tier 3 · sewage treatment fee", Decimal("2.0000"))
    assert q.amount == 607 + 157 + 200


def test_a_one_step_document_is_a_flat_price_without_a_ladder() -> None:
    doc = {
        "kind": "water.purified",
        "name": "purified",
        "model": "steps",
        "effective_from": "2026-01-01",
        "body": {"steps": [{"upto": None, "price": "10"}]},
    }
    q = quote_units(schedule(doc), units=250, at=AT, position=Position(used=999999))
    assert q.period is None
    assert q.amount == 2500
    assert labels(q) == [("tier 1 · water", Decimal("25.00"))]


def test_flat_hot_water_with_a_component() -> None:
    doc = {
        "kind": "water.hot",
        "name": "hot",
        "model": "flat",
        "effective_from": "2026-01-01",
        "body": {
            "price": "23.64",
            "label": "hot water",
            "components": [{"id": "sewage", "label": "sewage treatment fee", "price": "1.36"}],
        },
    }
    sched = schedule(doc)
    q = quote_units(sched, units=350, at=AT)
    assert q.amount == 8750
    assert labels(q) == [
        ("hot water", Decimal("82.7400")),
        ("sewage treatment fee", Decimal("4.7600")),
    ]
    assert q.lines[0].tier is None and q.lines[1].component == "sewage"
    assert q.period is None
    m = quote_money(sched, amount=5000, at=AT)
    assert (m.units, m.amount, m.credit) == (200, 5000, 0)


def test_a_price_change_in_the_middle_of_a_spread_is_split_by_the_core() -> None:
    new = beijing()
    new["effective_from"] = "2026-03-16T00:00:00+08:00"
    new["body"]["steps"][0]["price"] = "3.07"
    sched = schedule(beijing(), new)
    q = quote_units(
        sched,
        units=3000,
        at=dt.datetime(2026, 3, 1, tzinfo=CST),
        until=dt.datetime(2026, 3, 31, tzinfo=CST),
        position=Position(used=0),
    )
    # 15 days at 5.00 (15 m³), 15 days at 6.00 (15 m³)
    assert q.versions == [1, 2]
    assert q.amount == 15 * 500 + 15 * 600


@pytest.mark.parametrize(
    "name", ["water-cold-residential", "water-hot", "water-recycled", "water-purified"]
)
def test_sample_documents_load(name: str) -> None:
    doc = validate_document(REG, read_file(EXAMPLES / f"{name}.yaml"))
    assert doc["kind"].startswith("water.")
    schedule(read_file(EXAMPLES / f"{name}.yaml"))


# --- properties ----------------------------------------------------------------------------------

PRICE = st.integers(min_value=0, max_value=20000).map(lambda n: Decimal(n).scaleb(-3))


@st.composite
def step_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A random valid steps document: 1-6 steps, 0-3 components, some per-step overrides."""
    n = draw(st.integers(min_value=1, max_value=6))
    bounds = sorted(draw(st.sets(st.integers(1, 40000), min_size=n - 1, max_size=n - 1)))
    ncomp = draw(st.integers(min_value=0, max_value=3))
    comps = [{"id": f"c{j}", "price": str(draw(PRICE))} for j in range(ncomp)]
    steps = []
    for i in range(n):
        step: dict[str, Any] = {
            "upto": str(Decimal(bounds[i]).scaleb(-2)) if i < n - 1 else None,
            "price": str(draw(PRICE)),
        }
        overrides = {
            c["id"]: str(draw(PRICE)) for c in comps if draw(st.booleans()) and draw(st.booleans())
        }
        if overrides:
            step["components"] = overrides
        steps.append(step)
    steps[-1]["price"] = str(Decimal(steps[-1]["price"]) + Decimal("0.5"))  # never free at the top
    return {
        "kind": "water.cold",
        "name": "random",
        "model": "steps",
        "effective_from": "2020-01-01",
        "body": {"reset": "annual", "steps": steps, "components": comps},
    }


UNITS = st.integers(min_value=0, max_value=60000)


@settings(max_examples=150, deadline=None)
@given(doc=step_documents(), used=UNITS, a=UNITS, b=UNITS)
def test_buying_a_then_b_costs_a_plus_b(doc: dict[str, Any], used: int, a: int, b: int) -> None:
    sched = schedule(doc)
    qa = quote_units(sched, units=a, at=AT, position=Position(used=used))
    qb = quote_units(sched, units=b, at=AT, position=Position(used=used + a))
    qab = quote_units(sched, units=a + b, at=AT, position=Position(used=used))
    assert qa.exact + qb.exact == qab.exact
    assert abs(qa.amount + qb.amount - qab.amount) <= 1


@settings(max_examples=150, deadline=None)
@given(doc=step_documents(), used=UNITS, a=UNITS, extra=st.integers(1, 5000))
def test_cost_is_monotonic_in_quantity(doc: dict[str, Any], used: int, a: int, extra: int) -> None:
    sched = schedule(doc)
    less = quote_units(sched, units=a, at=AT, position=Position(used=used))
    more = quote_units(sched, units=a + extra, at=AT, position=Position(used=used))
    assert less.exact <= more.exact
    assert less.amount <= more.amount


@settings(max_examples=120, deadline=None)
@given(doc=step_documents(), used=UNITS, u=st.integers(1, 60000))
def test_units_of_money_of_units_returns_the_units(doc: dict[str, Any], used: int, u: int) -> None:
    sched = schedule(doc)
    m = quote_units(sched, units=u, at=AT, position=Position(used=used)).amount
    assume(m > 0)
    v = quote_money(sched, amount=m, at=AT, position=Position(used=used)).units
    assert v >= u
    assert quote_units(sched, units=v, at=AT, position=Position(used=used)).amount == m
    body = doc["body"]
    totals = [
        Decimal(s["price"])
        + sum(
            (Decimal(s.get("components", {}).get(c["id"], c["price"])) for c in body["components"]),
            Decimal(0),
        )
        for s in body["steps"]
    ]
    if min(totals) >= 1:  # 0.01 m³ costs at least 1 fen everywhere: money gives back exactly u
        assert v == u
