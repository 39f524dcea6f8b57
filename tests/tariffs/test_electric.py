"""Electric tariff models: flat, tou, tiered, tiered_tou (validation, band and tier maths,
calendars, the core's period resets, and the properties the issue asks for)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import onecard_electric
from onecard.errors import InvalidInput
from onecard.pricing import Usage, exact, round_fen
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
from onecard_electric.tariff import FlatModel, TieredModel, TieredTouModel, TouModel

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "tariffs" / "examples"
CST = ZoneInfo("Asia/Shanghai")
D = Decimal


def registry() -> UtilityRegistry:
    reg = UtilityRegistry()
    onecard_electric.onecard_register_utilities(registry=reg)
    return reg


REG = registry()


def doc(model: str, body: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return {
        "kind": "electric",
        "name": "test",
        "model": model,
        "effective_from": "2026-01-01T00:00:00+08:00",
        "body": body,
        **envelope,
    }


def sched(model: str, body: dict[str, Any], **envelope: Any) -> Schedule:
    return schedule_from_documents(REG, [doc(model, body, **envelope)])


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=CST)


def kwh(units: str) -> int:
    """Text kWh -> smallest units (0.01 kWh)."""
    return int(D(units) * 100)


def lines(quote: Any) -> list[tuple[str, str, str]]:
    return [(ln.label, str(ln.quantity), str(ln.amount)) for ln in quote.lines]


def by_band(quote: Any) -> dict[str, Decimal]:
    """Quantity per band of a quote's lines (one line per band)."""
    return {ln.band: ln.quantity for ln in quote.lines}


BEIJING = {
    "reset": "annual",
    "tiers": [
        {"upto": 2880, "price": "0.4883"},
        {"upto": 4800, "price": "0.5383"},
        {"upto": None, "price": "0.7883"},
    ],
}

SHANGHAI_WINDOWS = [{"windows": {"peak": ["06:00-22:00"], "valley": ["22:00-06:00"]}}]
SHANGHAI = {
    "reset": "annual",
    "bands": {"peak": {"label": "峰"}, "valley": {"label": "谷"}},
    "timetables": SHANGHAI_WINDOWS,
    "tiers": [
        {"upto": 3120, "prices": {"peak": "0.617", "valley": "0.307"}},
        {"upto": 4800, "prices": {"peak": "0.677", "valley": "0.337"}},
        {"upto": None, "prices": {"peak": "0.977", "valley": "0.487"}},
    ],
}

FOUR_BANDS = {
    "bands": {
        "sharp": {"price": "1.35", "label": "尖峰"},
        "peak": {"price": "1.10", "label": "高峰"},
        "flat": {"price": "0.70", "label": "平段"},
        "valley": {"price": "0.32", "label": "低谷"},
    },
    "calendar": {
        "weekdays": {"workday": ["mon", "tue", "wed", "thu", "fri"], "weekend": ["sat", "sun"]},
        "dates": {"holiday": ["2026-10-01", "2026-10-02"], "workday": ["2026-10-10"]},
    },
    "timetables": [
        {
            "days": ["workday"],
            "months": [7, 8],
            "windows": {
                "sharp": ["11:00-13:00"],
                "peak": ["10:00-11:00", "13:00-15:00", "18:00-23:00"],
                "flat": ["07:00-10:00", "15:00-18:00"],
                "valley": ["23:00-07:00"],
            },
        },
        {
            "days": ["workday"],
            "months": [1, 2, 3, 4, 5, 6, 9, 10, 11, 12],
            "windows": {
                "peak": ["10:00-15:00", "18:00-23:00"],
                "flat": ["07:00-10:00", "15:00-18:00"],
                "valley": ["23:00-07:00"],
            },
        },
        {
            "days": ["weekend", "holiday"],
            "windows": {"flat": ["07:00-23:00"], "valley": ["23:00-07:00"]},
        },
    ],
}


# Validation -------------------------------------------------------------------------------------


def refused(model: Any, body: dict[str, Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        model.validate(body)
    return info.value


def with_(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with the value at ``a.b[1].c`` replaced (``...`` deletes it)."""
    out = copy.deepcopy(body)
    node: Any = out
    keys: list[Any] = []
    for part in path.replace("[", ".[").split("."):
        keys += [int(part[1:-1]) if part.startswith("[") else part]
    for key in keys[:-1]:
        node = node[key]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return out


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"price": "-0.1"}, "price", "greater than 0"),
        ({"price": "0.5", "prise": 1}, "prise", "not a field"),
        ({}, "price", "required"),
    ],
)
def test_flat_refusals(body: dict[str, Any], field: str, words: str) -> None:
    err = refused(FlatModel(), body)
    assert err.field == field and words in err.message


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        ("tiers[1].upto", 2000, "tiers[1].upto", "greater than tiers[0].upto (2880)"),
        ("tiers[1].upto", 2880, "tiers[1].upto", "greater than"),
        ("tiers[2].upto", 9000, "tiers[2].upto", "open-ended"),
        ("tiers[0].upto", None, "tiers[0].upto", "only the last tier"),
        ("tiers[0].upto", -5, "tiers[0].upto", "greater than 0"),
        ("tiers[1].price", "-0.5383", "tiers[1].price", "greater than 0"),
        ("tiers[1].price", "abc", "tiers[1].price", "number"),
        ("tiers[1].color", "red", "tiers[1].color", "not a field"),
        ("tiers", [], "tiers", "at least one tier"),
        ("reset", "weekly", "reset", "monthly or annual"),
        ("reset", ..., "reset", "required"),
        ("anchor", "02-30", "anchor", "not a day"),
        ("steps", [], "steps", "not a field"),
    ],
)
def test_tiered_refusals(path: str, value: Any, field: str, words: str) -> None:
    err = refused(TieredModel(), with_(BEIJING, path, value))
    assert err.field == field, err.message
    assert words in err.message
    assert err.message.startswith(f"{field}: ")


def test_tiered_anchor_only_for_annual() -> None:
    body = {**BEIJING, "reset": "monthly", "anchor": "07-01"}
    assert refused(TieredModel(), body).field == "anchor"


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        # overlapping windows: the field and the overlapping times
        (
            "timetables[0].windows.valley",
            ["21:00-07:00"],
            "timetables[0].windows.valley[0]",
            "21:00-07:00 (valley) overlaps 18:00-23:00 (peak, timetables[0].windows.peak[2]) "
            "at 21:00-23:00",
        ),
        (
            "timetables[0].windows.flat",
            ["07:00-10:30", "15:00-18:00"],
            "timetables[0].windows.peak[0]",
            "overlaps 07:00-10:30 (flat, timetables[0].windows.flat[0]) at 10:00-10:30",
        ),
        # uncovered hours: the gap
        (
            "timetables[0].windows.flat",
            ["07:00-10:00"],
            "timetables[0].windows",
            "15:00-18:00 is not covered by any band",
        ),
        (
            "timetables[2].windows.valley",
            ["23:00-24:00"],
            "timetables[2].windows",
            "00:00-07:00 is not covered",
        ),
        (
            "timetables[2].windows.flat",
            ["07:00-22:00"],
            "timetables[2].windows",
            "22:00-23:00 is not covered",
        ),
        # bands and prices
        (
            "timetables[0].windows.shoulder",
            ["01:00-02:00"],
            "timetables[0].windows.shoulder",
            "unknown band",
        ),
        ("bands.extra", {"price": "0.5"}, "bands.extra", "no timetable uses this band"),
        ("bands.peak.price", ..., "bands.peak.price", "required"),
        ("bands.peak.price", "-1.10", "bands.peak.price", "greater than 0"),
        ("bands.peak.label", "尖峰", "bands.peak.label", "already the label of band sharp"),
        ("bands.Peak", {"price": 1}, "bands.Peak", "lower-case"),
        ("bands.peak.colour", "red", "bands.peak.colour", "not a field"),
        ("bands", {}, "bands", "at least one band"),
        # windows
        ("timetables[2].windows.flat", ["7:00-23:00"], None, None),  # H:MM is fine
        ("timetables[2].windows.flat", ["07:00-25:00"], "timetables[2].windows.flat[0]", "24:00"),
        ("timetables[2].windows.flat", ["07:00"], "timetables[2].windows.flat[0]", "window like"),
        ("timetables[2].windows.flat", ["07:00-07:00"], "timetables[2].windows.flat[0]", "empty"),
        ("timetables[2].windows.flat", [], "timetables[2].windows.flat", "non-empty"),
        ("timetables[2].windows", ..., "timetables[2].windows", "required"),
        # calendars
        (
            "calendar.weekdays.weekend",
            ["sat"],
            "calendar.weekdays",
            "missing: sun",
        ),
        (
            "calendar.weekdays.weekend",
            ["sat", "sun", "mon"],
            "calendar.weekdays.weekend[2]",
            "mon is already of day type workday",
        ),
        ("calendar.weekdays.weekend", ["sat", "sunday"], "calendar.weekdays.weekend[1]", "not a"),
        (
            "calendar.dates.workday",
            ["2026-10-01"],
            "calendar.dates.workday[0]",
            "2026-10-01 is already of day type holiday",
        ),
        ("calendar.dates.holiday", ["2026-13-01"], "calendar.dates.holiday[0]", "a date like"),
        ("calendar.holidays", [], "calendar.holidays", "not a field"),
        (
            "timetables[2].days",
            ["weekend", "holliday"],
            "timetables[2].days[1]",
            "unknown day type 'holliday'",
        ),
        ("timetables[2].days", ["weekend", "weekend"], "timetables[2].days[1]", "twice"),
        ("timetables[0].months", [7, 8, 13], "timetables[0].months[2]", "month from 1 to 12"),
        ("timetables[0].months", [7, 7], "timetables[0].months[1]", "twice"),
        (
            "timetables[0].months",
            [7, 8, 9],
            "timetables[1]",
            "applies to workday days in Sep, as timetables[0] does",
        ),
        ("timetables[0].months", [7], "timetables", "no timetable applies to workday days in Aug"),
        ("timetables[2].days", ["weekend"], "timetables", "holiday days in Jan"),
        ("timetables", [], "timetables", "at least one"),
    ],
)
def test_tou_refusals(path: str, value: Any, field: str | None, words: str | None) -> None:
    body = with_(FOUR_BANDS, path, value)
    if field is None:
        TouModel().validate(body)
        return
    err = refused(TouModel(), body)
    assert err.field == field, err.message
    assert words is not None and words in err.message, err.message


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        (
            "tiers[0].markup",
            "0.1",
            "tiers[0]",
            "exactly one of prices (one per band) or markup",
        ),
        ("tiers[0].prices", ..., "tiers[0]", "not neither"),
        ("tiers[1].prices.shoulder", "0.5", "tiers[1].prices.shoulder", "unknown band"),
        ("tiers[1].prices", {"peak": "0.677"}, "tiers[1].prices", "no price for band valley"),
        ("tiers[1].prices.valley", "-0.337", "tiers[1].prices.valley", "greater than 0"),
        ("tiers[1].prices.valley", None, "tiers[1].prices.valley", "null"),
        ("bands.valley", None, "bands.valley", "mapping"),
        ("tiers[1].upto", 3000, "tiers[1].upto", "greater than tiers[0].upto (3120)"),
        ("bands.peak.price", "0.6", "bands.peak.price", "no tier gives a markup"),
        ("bands.peak", {"label": "谷"}, "bands.valley.label", "already the label of band peak"),
    ],
)
def test_tiered_tou_refusals(path: str, value: Any, field: str, words: str) -> None:
    err = refused(TieredTouModel(), with_(SHANGHAI, path, value))
    assert err.field == field, err.message
    assert words in err.message, err.message


def test_tiered_tou_markup_needs_base_prices() -> None:
    body = with_(SHANGHAI, "tiers[1]", {"upto": 4800, "markup": "0.05"})
    err = refused(TieredTouModel(), body)
    assert err.field == "bands.peak.price"
    assert "tiers[1] gives a markup" in err.message


def test_the_core_prefixes_body_and_category_paths() -> None:
    bad = with_(SHANGHAI, "tiers[1].upto", 3000)
    with pytest.raises(InvalidInput) as info:
        validate_document(REG, doc("tiered_tou", bad))
    assert info.value.field == "body.tiers[1].upto"
    cats = {"commercial": FOUR_BANDS, "industrial": with_(FOUR_BANDS, "bands.flat.price", -1)}
    raw = doc("tou", {})
    del raw["body"]
    raw["categories"] = cats
    with pytest.raises(InvalidInput) as info:
        validate_document(REG, raw)
    assert info.value.field == "categories.industrial.bands.flat.price"


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (FlatModel(), {"price": 0.5}),
        (TieredModel(), BEIJING),
        (TieredModel(), {**BEIJING, "anchor": "07-01"}),
        (TouModel(), FOUR_BANDS),
        (TieredTouModel(), SHANGHAI),
        (
            TieredTouModel(),
            {
                **SHANGHAI,
                "reset": "monthly",
                "bands": {"peak": {"price": "0.6"}, "valley": {"price": 0.3, "label": "谷"}},
                "tiers": [{"upto": 200, "markup": 0}, {"upto": None, "markup": "0.3"}],
            },
        ),
    ],
)
def test_normalised_bodies_are_json_and_validate_to_themselves(model: Any, body: Any) -> None:
    normal = model.validate(body)
    assert json.loads(json.dumps(normal)) == normal
    assert model.validate(normal) == normal
    assert model.compile(normal) == model.compile(body)


def test_normalised_numbers_are_plain_and_yaml_minutes_are_read() -> None:
    normal = TieredModel().validate(BEIJING)
    assert [t["upto"] for t in normal["tiers"]] == ["2880", "4800", None]
    assert normal["anchor"] == "01-01"
    assert FlatModel().validate({"price": 10})["price"] == "10"
    # a wrapping window is kept as written; HH:MM normalised
    out = TouModel().validate(
        {
            "bands": {"day": {"price": 1}, "night": {"price": "0.5"}},
            "timetables": [{"windows": {"day": ["6:00-22:00"], "night": ["22:00-06:00"]}}],
        }
    )
    assert out["timetables"][0]["windows"] == {"day": ["06:00-22:00"], "night": ["22:00-06:00"]}


# Flat ---------------------------------------------------------------------------------------------


def test_flat_prices_every_kwh_alike() -> None:
    s = sched("flat", {"price": "0.4883"})
    q = quote_units(s, units=kwh("123.45"), at=at("2026-05-01T03:00"))
    assert lines(q) == [("energy", "123.45", "60.280635")]
    assert q.amount == 6028
    assert q.period is None


# Time of use: band maths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "band"),
    [
        ("2026-03-10T05:59:59", "valley"),
        ("2026-03-10T06:00", "peak"),
        ("2026-03-10T21:59", "peak"),
        ("2026-03-10T22:00", "valley"),
        ("2026-03-10T00:00", "valley"),
    ],
)
def test_an_instant_goes_to_its_band(when: str, band: str) -> None:
    body = {
        "bands": {"peak": {"price": "0.617"}, "valley": {"price": "0.307"}},
        "timetables": SHANGHAI_WINDOWS,
    }
    q = quote_units(sched("tou", body), units=kwh("10"), at=at(when))
    assert [ln.band for ln in q.lines] == [band]


def test_a_spread_is_split_by_the_time_each_band_covers() -> None:
    s = sched("tiered_tou", SHANGHAI)
    # 06:00 to 02:00: 16 h peak, 4 h valley -> 4/5 and 1/5
    q = quote_units(s, units=kwh("30"), at=at("2026-03-10T06:00"), until=at("2026-03-11T02:00"))
    assert lines(q) == [("tier 1 · 峰", "24.00", "14.80800"), ("tier 1 · 谷", "6.00", "1.84200")]
    # a whole day: 2/3 and 1/3 (not a terminating decimal), the parts add up exactly
    q = quote_units(s, units=kwh("10"), at=at("2026-03-10T00:00"), until=at("2026-03-11T00:00"))
    got = by_band(q)
    assert list(got) == ["peak", "valley"]
    assert got["peak"] + got["valley"] == D("10.00")
    with exact():
        assert abs(got["peak"] - D(20) / 3) < D("1e-35")
    assert q.amount == round_fen(D(20) / 3 * D("0.617") + D(10) / 3 * D("0.307"))


def test_four_bands_over_a_summer_workday() -> None:
    s = sched("tou", FOUR_BANDS)
    q = quote_units(s, units=kwh("240"), at=at("2026-07-15T00:00"), until=at("2026-07-16T00:00"))
    assert lines(q) == [
        ("尖峰", "20.00", "27.0000"),
        ("高峰", "80.00", "88.0000"),
        ("平段", "60.00", "42.0000"),
        ("低谷", "80.00", "25.6000"),
    ]
    assert q.amount == 18260
    # a few hours across bands: 09:30-11:30 -> flat 30 min, peak 60 min, sharp 30 min
    q = quote_units(s, units=kwh("12"), at=at("2026-07-15T09:30"), until=at("2026-07-15T11:30"))
    assert [(ln.band, ln.quantity) for ln in q.lines] == [
        ("sharp", D(3)),
        ("peak", D(6)),
        ("flat", D(3)),
    ]


def test_a_spread_over_several_days_and_seconds() -> None:
    s = sched("tou", FOUR_BANDS)
    q = quote_units(
        s, units=kwh("100"), at=at("2026-07-17T22:59:30"), until=at("2026-07-20T07:00:00")
    )
    # Fri 22:59:30-23:00 peak (30 s), 23:00-24:00 valley; Sat and Sun: valley 8 h, flat 16 h
    # each (weekend timetable); Mon 00:00-07:00 valley
    seconds = {"peak": 30, "flat": 2 * 16 * 3600, "valley": 3600 + 2 * 8 * 3600 + 7 * 3600}
    total = sum(seconds.values())
    assert total == 56 * 3600 + 30
    got = by_band(q)
    assert sum(got.values()) == D("100.00")
    with exact():
        for band, secs in seconds.items():
            assert abs(got[band] - D(100) * secs / total) < D("1e-35")


def test_by_band_overrides_the_time_split() -> None:
    s = sched("tou", FOUR_BANDS)
    q = quote_units(
        s,
        units=kwh("100"),
        at=at("2026-07-15T12:00"),
        by_band={"peak": D("0.5"), "valley": D("0.5")},
    )
    assert lines(q) == [("高峰", "50.000", "55.00000"), ("低谷", "50.000", "16.00000")]
    with pytest.raises(InvalidInput) as info:
        quote_units(s, units=100, at=at("2026-07-15T12:00"), by_band={"shoulder": D(1)})
    assert info.value.field == "by_band.shoulder"
    with pytest.raises(InvalidInput) as info:
        quote_units(s, units=100, at=at("2026-07-15T12:00"), by_band={"peak": D("0.7")})
    assert info.value.field == "by_band"
    with pytest.raises(InvalidInput) as info:
        quote_units(s, units=100, at=at("2026-07-15T12:00"), by_band={"peak": D(2), "flat": D(-1)})
    assert info.value.field == "by_band.flat"


def test_by_band_splits_each_tier_of_tiered_tou() -> None:
    s = sched("tiered_tou", SHANGHAI)
    q = quote_units(
        s,
        units=kwh("40"),
        at=at("2026-03-10T12:00"),
        by_band={"peak": D("0.75"), "valley": D("0.25")},
        position=Position(used=kwh("3100")),
    )
    assert [(ln.label, ln.quantity) for ln in q.lines] == [
        ("tier 1 · 峰", D("15.0000")),
        ("tier 1 · 谷", D("5.0000")),
        ("tier 2 · 峰", D("15.0000")),
        ("tier 2 · 谷", D("5.0000")),
    ]


def test_dst_zones_split_real_time() -> None:
    body = {
        "bands": {"day": {"price": "0.30"}, "night": {"price": "0.10"}},
        "timetables": [{"windows": {"day": ["07:00-22:00"], "night": ["22:00-07:00"]}}],
    }
    s = sched("tou", body, timezone="Europe/Berlin", effective_from="2026-01-01T00:00:00+01:00")
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29: clocks go 02:00 -> 03:00; the night of the 28th to 29th lasts 8 h, not 9
    q = quote_units(
        s,
        units=kwh("23"),
        at=dt.datetime(2026, 3, 29, 0, tzinfo=berlin),
        until=dt.datetime(2026, 3, 30, 0, tzinfo=berlin),
    )
    got = {ln.band: ln.quantity for ln in q.lines}
    assert got == {"night": D(8), "day": D(15)}  # 23 real hours: 7 - 1 + 2 night, 15 day
    # 2026-10-25: 03:00 -> 02:00; the day has 25 hours, 10 of them at night
    q = quote_units(
        s,
        units=kwh("25"),
        at=dt.datetime(2026, 10, 25, 0, tzinfo=berlin),
        until=dt.datetime(2026, 10, 26, 0, tzinfo=berlin),
    )
    assert {ln.band: ln.quantity for ln in q.lines} == {"night": D(10), "day": D(15)}
    # a timetable edge inside the skipped hour gets no time, and nothing breaks
    body["timetables"] = [{"windows": {"day": ["02:30-22:00"], "night": ["22:00-02:30"]}}]
    s = sched("tou", body, timezone="Europe/Berlin", effective_from="2026-01-01T00:00:00+01:00")
    q = quote_units(
        s,
        units=kwh("23"),
        at=dt.datetime(2026, 3, 29, 0, tzinfo=berlin),
        until=dt.datetime(2026, 3, 30, 0, tzinfo=berlin),
    )
    assert {ln.band: ln.quantity for ln in q.lines} == {"night": D(4), "day": D(19)}


# Calendars ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "band"),
    [
        ("2026-07-15T12:00", "sharp"),  # a July workday: sharp hours
        ("2026-06-17T12:00", "peak"),  # a June workday: no sharp band
        ("2026-08-31T11:00", "sharp"),  # last day of the season
        ("2026-09-01T11:00", "peak"),
        ("2026-07-18T12:00", "flat"),  # a Saturday in July: weekend timetable
        ("2026-10-01T12:00", "flat"),  # a Thursday, but a listed holiday
        ("2026-10-10T12:00", "peak"),  # a Saturday, but a make-up workday (调休)
        ("2026-10-11T12:00", "flat"),  # the Sunday after: a weekend again
        ("2026-10-10T23:30", "valley"),
    ],
)
def test_calendars_pick_the_timetable(when: str, band: str) -> None:
    q = quote_units(sched("tou", FOUR_BANDS), units=kwh("1"), at=at(when))
    assert [ln.band for ln in q.lines] == [band]


def test_a_calendar_of_dates_only_keeps_daily_for_other_days() -> None:
    body = {
        "bands": {"peak": {"price": 1}, "valley": {"price": "0.5"}},
        "calendar": {"dates": {"holiday": ["2026-05-01"]}},
        "timetables": [
            {"days": ["daily"], "windows": {"peak": ["08:00-20:00"], "valley": ["20:00-08:00"]}},
            {"days": ["holiday"], "windows": {"valley": ["00:00-24:00"]}},
        ],
    }
    s = sched("tou", body)
    assert quote_units(s, units=100, at=at("2026-05-01T12:00")).lines[0].band == "valley"
    assert quote_units(s, units=100, at=at("2026-05-02T12:00")).lines[0].band == "peak"


# Tiers -------------------------------------------------------------------------------------------


def test_a_purchase_crossing_a_tier_boundary() -> None:
    s = sched("tiered", BEIJING)
    q = quote_units(s, units=kwh("200"), at=at("2026-03-01T10:00"), position=Position(kwh("2800")))
    assert lines(q) == [("tier 1", "80.00", "39.064000"), ("tier 2", "120.00", "64.596000")]
    assert q.amount == 10366
    assert [ln.tier for ln in q.lines] == [1, 2]
    assert q.period == (at("2026-01-01T00:00"), at("2027-01-01T00:00"))
    # across both boundaries at once
    q = quote_units(s, units=kwh("2100"), at=at("2026-03-01T10:00"), position=Position(kwh("2800")))
    assert [(ln.tier, ln.quantity) for ln in q.lines] == [
        (1, D("80.00")),
        (2, D("1920.00")),
        (3, D("100.00")),
    ]


def test_anchor_anchors_an_annual_ladder() -> None:
    model = TieredModel()
    priced = model.compile({**BEIJING, "anchor": "07-01"})
    assert model.ladder_period(priced, at("2026-03-01T10:00")) == (
        at("2025-07-01T00:00"),
        at("2026-07-01T00:00"),
    )
    monthly = model.compile({**BEIJING, "reset": "monthly"})
    assert model.ladder_period(monthly, at("2026-12-31T23:59")) == (
        at("2026-12-01T00:00"),
        at("2027-01-01T00:00"),
    )


def test_the_core_resets_the_tiers_at_a_month_end() -> None:
    body = {
        "reset": "monthly",
        "tiers": [{"upto": 100, "price": "0.50"}, {"upto": None, "price": "0.80"}],
    }
    s = sched("tiered", body)
    # 60 kWh spread evenly over Jan 31 12:00 - Feb 1 12:00, 90 kWh used in January already:
    # January takes 30 (10 in tier 1, 20 in tier 2), February starts over: 30 in tier 1
    q = quote_units(
        s,
        units=kwh("60"),
        at=at("2026-01-31T12:00"),
        until=at("2026-02-01T12:00"),
        position=Position(kwh("90")),
    )
    assert [(ln.label, ln.quantity, ln.detail["from"]) for ln in q.lines] == [
        ("tier 1", D("10.00"), "2026-01-31T12:00:00+08:00"),
        ("tier 2", D("20.00"), "2026-01-31T12:00:00+08:00"),
        ("tier 1", D("30.00"), "2026-02-01T00:00:00+08:00"),
    ]
    assert q.amount == 500 + 1600 + 1500
    # the same with time-of-use tiers: each month's piece is split over its own hours
    s = sched("tiered_tou", {**SHANGHAI, "reset": "monthly"})
    q = quote_units(
        s,
        units=kwh("20"),
        at=at("2026-01-31T22:00"),
        until=at("2026-02-01T08:00"),
        position=Position(kwh("3119")),
    )
    # Jan 31 22:00-24:00 (2 h valley) takes 4 kWh: 1 in tier 1, 3 in tier 2; February's
    # 00:00-06:00 valley and 06:00-08:00 peak take 12 and 4, in tier 1
    assert [(ln.label, ln.quantity) for ln in q.lines] == [
        ("tier 1 · 谷", D("1.00")),
        ("tier 2 · 谷", D("3.00")),
        ("tier 1 · 峰", D("4.00")),
        ("tier 1 · 谷", D("12.00")),
    ]


def test_tiered_tou_markup_adds_to_the_base_prices() -> None:
    body = {
        "reset": "monthly",
        "bands": {"peak": {"price": "0.60"}, "valley": {"price": "0.30"}},
        "timetables": [{"windows": {"peak": ["08:00-22:00"], "valley": ["22:00-08:00"]}}],
        "tiers": [
            {"upto": 200, "markup": 0},
            {"upto": 400, "markup": "0.05"},
            {"upto": None, "prices": {"peak": "1.00", "valley": "0.70"}},
        ],
    }
    s = sched("tiered_tou", body)
    q = quote_units(s, units=kwh("300"), at=at("2026-05-05T23:00"), position=Position(kwh("150")))
    assert [(ln.label, ln.quantity, ln.price) for ln in q.lines] == [
        ("tier 1 · valley", D("50.00"), D("0.30")),
        ("tier 2 · valley", D("200.00"), D("0.35")),
        ("tier 3 · valley", D("50.00"), D("0.70")),
    ]
    assert q.amount == 1500 + 7000 + 3500


# Categories and the example files -----------------------------------------------------------------


def test_example_files_load() -> None:
    files = sorted(EXAMPLES.glob("electric-*.yaml"))
    assert {f.name for f in files} >= {
        "electric-residential.yaml",
        "electric-shanghai-tou.yaml",
        "electric-commercial-tou.yaml",
    }
    for f in files:
        validate_document(REG, read_file(f))
    commercial = schedule_from_documents(
        REG, [read_file(EXAMPLES / "electric-commercial-tou.yaml")]
    )
    when = dt.datetime(2026, 7, 15, 12, tzinfo=CST)
    a = quote_units(commercial, units=kwh("100"), at=when, category="commercial")
    b = quote_units(commercial, units=kwh("100"), at=when, category="industrial")
    assert a.lines[0].band == b.lines[0].band == "sharp"
    assert a.amount != b.amount


# Properties ---------------------------------------------------------------------------------------

PROPS = settings(max_examples=150, deadline=None)
#: A ladder low enough that hypothesis crosses its steps often (kWh).
SMALL_LADDER = [50, 120, 300]
UNITS = st.integers(min_value=0, max_value=40_000)  # up to 400 kWh
WHEN = st.integers(min_value=0, max_value=27 * 24 * 60).map(
    lambda m: at("2026-07-01T00:00") + dt.timedelta(minutes=m)
)


def ladder_body(prices: list[str]) -> dict[str, Any]:
    bounds: list[int | None] = [*SMALL_LADDER, None]
    return {
        "reset": "monthly",
        "tiers": [{"upto": u, "price": p} for u, p in zip(bounds, prices, strict=True)],
    }


def four_band_tiers(base: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(FOUR_BANDS)
    for band in body["bands"].values():
        del band["price"]
    bounds: list[int | None] = [*SMALL_LADDER, None]
    body["reset"] = "monthly"
    body["tiers"] = [
        {
            "upto": u,
            "prices": {
                b: str(D(p) + D(i) * D("0.1")) for b, p in zip(body["bands"], base, strict=True)
            },
        }
        for i, u in enumerate(bounds)
    ]
    return body


CHEAP = sched("tiered", ladder_body(["0.4883", "0.5383", "0.7883", "0.9"]))
DEAR = sched("tiered", ladder_body(["1.17", "1.5", "2.03", "3"]))  # >= 1 fen per 0.01 kWh
TOU = sched("tou", FOUR_BANDS)
TIERED_TOU = sched("tiered_tou", four_band_tiers(["1.35", "1.10", "0.70", "0.32"]))
SCHEDULES = {"tiered": CHEAP, "tiered-dear": DEAR, "tou": TOU, "tiered_tou": TIERED_TOU}
NAMES = st.sampled_from(sorted(SCHEDULES))


@PROPS
@given(name=NAMES, used=UNITS, a=UNITS, b=UNITS, when=WHEN, spread=st.integers(0, 3 * 24 * 60))
def test_buying_a_then_b_costs_what_a_plus_b_costs(
    name: str, used: int, a: int, b: int, when: dt.datetime, spread: int
) -> None:
    s = SCHEDULES[name]
    until = when + dt.timedelta(minutes=spread) if spread else None  # within July
    first = quote_units(s, units=a, at=when, until=until, position=Position(used))
    then = quote_units(s, units=b, at=when, until=until, position=Position(used + a))
    both = quote_units(s, units=a + b, at=when, until=until, position=Position(used))
    if until is None:
        assert first.exact + then.exact == both.exact  # exact: no division anywhere
    else:  # shares of time: exact to the 40-digit context
        with exact():
            assert abs(first.exact + then.exact - both.exact) < D("1e-30")
    assert abs(first.amount + then.amount - both.amount) <= 1


@PROPS
@given(name=NAMES, used=UNITS, u=UNITS, extra=st.integers(1, 5_000), when=WHEN)
def test_cost_is_monotonic_in_quantity(
    name: str, used: int, u: int, extra: int, when: dt.datetime
) -> None:
    s = SCHEDULES[name]
    less = quote_units(s, units=u, at=when, position=Position(used))
    more = quote_units(s, units=u + extra, at=when, position=Position(used))
    assert less.exact < more.exact
    assert less.amount <= more.amount


@settings(max_examples=100, deadline=None)
@given(name=NAMES, used=UNITS, u=st.integers(1, 40_000), when=WHEN)
def test_units_of_money_of_units(name: str, used: int, u: int, when: dt.datetime) -> None:
    s = SCHEDULES[name]
    m = quote_units(s, units=u, at=when, position=Position(used)).amount
    assume(m > 0)
    v = quote_money(s, amount=m, at=when, position=Position(used)).units
    assert v >= u
    assert quote_units(s, units=v, at=when, position=Position(used)).amount == m
    if name == "tiered-dear":  # every 0.01 kWh costs at least 1 fen: nothing to spare
        assert v == u


def test_usage_parts_add_up_exactly_for_awkward_spreads() -> None:
    model = TieredTouModel()
    priced = model.compile(four_band_tiers(["1.35", "1.10", "0.70", "0.32"]))
    start = at("2026-07-15T09:17:13")
    for minutes in (1, 7, 61, 1439, 4321):
        use = Usage(D("123.45"), D("40"), start, start + dt.timedelta(minutes=minutes))
        out = model.usage(priced, use)
        assert sum(ln.quantity or 0 for ln in out) == D("123.45")
