"""Electricity tariff models: flat, time-of-use, tiered (ladder) and tiered time-of-use.

Every model prices one piece of a request (one tariff version, one ladder period); the core splits
requests, sums the exact lines and rounds once. The models never round.

Time-of-use documents share three parts:

* ``bands``: the price bands by name (``sharp``, ``peak``, ``flat``, ``valley`` or any other
  identifier), each with an optional receipt ``label`` (尖峰, 高峰 ...) and, for ``tou``, a
  ``price``;
* ``calendar`` (optional): the day type of each day. ``weekdays`` maps a day type to the weekdays
  it covers (every weekday once; without it every day is of type ``daily``); ``dates`` maps a day
  type to dates that take it whatever their weekday (public holidays, make-up workdays 调休);
* ``timetables``: window sets. Each applies to some day types (``days``, default all) in some
  months (``months``, default all) and gives each band its daily windows, ``"HH:MM-HH:MM"``
  (``"23:00-07:00"`` wraps midnight). Each day type in each month has exactly one timetable, and
  each timetable covers the 24 hours exactly once.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from onecard.errors import InvalidInput
from onecard.pricing import Charge, Line, Usage, calendar_period, exact, ladder
from onecard.tariffs.fields import Exact, LocalDate, MonthDay, load, plain, refuse

DAY = 24 * 60
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: The day type of every day when a document has no ``calendar.weekdays``.
DAILY = "daily"
#: The most tiers a ladder may have (the issue says "any number"; this only stops nonsense).
MAX_TIERS = 100

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


# Schemas ----------------------------------------------------------------------------------------


class _FlatSchema(Schema):
    price = Exact(required=True, positive=True)


class _BandSchema(Schema):
    price = Exact(positive=True)
    label = fields.String(validate=validate.Length(min=1, max=32))


class _CalendarSchema(Schema):
    weekdays = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True))
    dates = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True))


class _TimetableSchema(Schema):
    days = fields.List(fields.String(), validate=validate.Length(min=1))
    months = fields.List(
        fields.Integer(validate=validate.Range(1, 12, error="must be a month from 1 to 12")),
        validate=validate.Length(min=1),
    )
    windows = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True), required=True)


_RESET = fields.String(
    required=True,
    validate=validate.OneOf(["monthly", "annual"], error="must be monthly or annual"),
)


class _TierSchema(Schema):
    upto = Exact(required=True, allow_none=True, positive=True, maximum=None)
    price = Exact(required=True, positive=True)


class _TieredSchema(Schema):
    reset = _RESET
    anchor = MonthDay()
    tiers = fields.List(fields.Raw(), required=True)


class _TouSchema(Schema):
    bands = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True), required=True)
    calendar = fields.Raw()
    timetables = fields.List(fields.Raw(), required=True)


class _TouTierSchema(Schema):
    upto = Exact(required=True, allow_none=True, positive=True, maximum=None)
    prices = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True))
    markup = Exact()


class _TieredTouSchema(_TouSchema):
    reset = _RESET
    anchor = MonthDay()
    tiers = fields.List(fields.Raw(), required=True)


# Compiled forms ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """A time-of-use band: its name, receipt label and (for ``tou``, or as the base of a tier
    markup) its price."""

    name: str
    label: str
    price: Decimal | None


@dataclass(frozen=True)
class Timetable:
    """One day's windows, merged: ``starts[i]`` (minutes) begins a segment of ``bands[i]`` that
    runs to ``starts[i + 1]`` (or midnight)."""

    starts: tuple[int, ...]
    bands: tuple[str, ...]

    def band_at(self, minute: int) -> str:
        """Return the band of the minute ``minute`` after midnight."""
        return self.bands[bisect.bisect_right(self.starts, minute) - 1]


@dataclass(frozen=True)
class Clock:
    """The calendar and timetables of a time-of-use document: which band holds which instant."""

    bands: tuple[Band, ...]
    weekday_types: tuple[str, ...]
    date_types: Mapping[dt.date, str]
    tables: Mapping[tuple[str, int], Timetable]

    def day_type(self, day: dt.date) -> str:
        """Return the day type of ``day`` (a listed date first, else its weekday)."""
        return self.date_types.get(day) or self.weekday_types[day.weekday()]

    def timetable(self, day: dt.date) -> Timetable:
        """Return the timetable in force on ``day``."""
        return self.tables[(self.day_type(day), day.month)]

    def band_at(self, when: dt.datetime) -> str:
        """Return the band of the local instant ``when``."""
        return self.timetable(when.date()).band_at(when.hour * 60 + when.minute)

    def durations(self, start: dt.datetime, end: dt.datetime) -> dict[str, int]:
        """Return the microseconds of ``[start, end)`` each band covers (real elapsed time).

        Window edges are local wall-clock times; they are turned into instants (UTC) day by day.
        Where a clock change skips wall-clock time, the skipped windows get no time; where it
        repeats an hour, the window holding it gets both.
        """
        tz = start.tzinfo
        lo, hi = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
        out: dict[str, int] = {}
        day = start.date()
        last = end.astimezone(tz).date() if tz is not None else end.date()
        while day <= last:
            table = self.timetable(day)
            instants = _edges(day, table.starts, tz)
            for i, band in enumerate(table.bands):
                a, b = max(instants[i], lo), min(instants[i + 1], hi)
                if b > a:
                    span = b - a
                    micro = (span.days * 86400 + span.seconds) * 1_000_000 + span.microseconds
                    out[band] = out.get(band, 0) + micro
            day += dt.timedelta(days=1)
        return out

    def weights(self, use: Usage) -> tuple[dict[str, Decimal], Decimal]:
        """Return how ``use`` falls on the bands: (weight per band, total weight).

        At an instant, all of it falls on that instant's band; over ``[start, end)`` each band
        weighs the time it covers; ``use.by_band`` overrides the split."""
        if use.by_band is not None:
            return self._by_band(use.by_band), Decimal(1)
        if use.end is None or use.end <= use.start:
            return {self.band_at(use.start): Decimal(1)}, Decimal(1)
        micro = self.durations(use.start, use.end)
        return {k: Decimal(v) for k, v in micro.items()}, Decimal(sum(micro.values()))

    def split(
        self, weights: Mapping[str, Decimal], total: Decimal, quantity: Decimal
    ) -> list[tuple[Band, Decimal]]:
        """Return ``quantity`` split over the bands in proportion to ``weights``, in band order,
        leaving out empty bands. The parts add up to ``quantity`` exactly (the last band takes
        what the others leave)."""
        present = [b for b in self.bands if weights.get(b.name, 0) > 0]
        if not present or quantity == 0:
            return []
        out: list[tuple[Band, Decimal]] = []
        with exact():
            given = Decimal(0)
            for band in present[:-1]:
                part = quantity * weights[band.name] / total
                out.append((band, part))
                given += part
            out.append((present[-1], quantity - given))
        return [(b, q) for b, q in out if q > 0]

    def _by_band(self, by_band: Mapping[str, Decimal]) -> dict[str, Decimal]:
        names = {b.name for b in self.bands}
        shares: dict[str, Decimal] = {}
        for name, share in by_band.items():
            if name not in names:
                raise InvalidInput(
                    f"by_band.{name}: this tariff has no band {name!r} "
                    f"(bands: {', '.join(b.name for b in self.bands)})",
                    field=f"by_band.{name}",
                )
            value = Decimal(share)
            if not value.is_finite() or value < 0:
                raise InvalidInput(
                    f"by_band.{name}: a share must be a number >= 0", field=f"by_band.{name}"
                )
            shares[name] = value
        with exact():
            if sum(shares.values(), Decimal(0)) != 1:
                raise InvalidInput("by_band: the shares must add up to 1", field="by_band")
        return shares


@functools.lru_cache(maxsize=4096)
def _edges(day: dt.date, starts: tuple[int, ...], tz: dt.tzinfo | None) -> tuple[dt.datetime, ...]:
    """The instants (UTC) of the segment starts of ``day``, and of its end (next midnight)."""
    midnight, end = _instant(day, 0, tz), _instant(day, DAY, tz)
    if end - midnight == dt.timedelta(days=1) and midnight.astimezone(tz).utcoffset() == (
        end.astimezone(tz).utcoffset()
    ):  # no clock change that day (the usual case): minutes after midnight
        return (*(midnight + dt.timedelta(minutes=m) for m in starts), end)
    return (*(_instant(day, m, tz) for m in starts), end)


def _instant(day: dt.date, minute: int, tz: dt.tzinfo | None) -> dt.datetime:
    """The instant (UTC) of ``minute`` after local midnight of ``day`` (``1440``: next midnight).

    A wall-clock time that a clock change skips is the instant of the change (so the windows of a
    day stay in order and cover it exactly once); a repeated one is its first occurrence."""
    if minute >= DAY:
        day, minute = day + dt.timedelta(days=1), minute - DAY
    wall = dt.datetime(day.year, day.month, day.day, minute // 60, minute % 60)
    late = wall.replace(tzinfo=tz).astimezone(dt.UTC)
    if tz is None or late.astimezone(tz).replace(tzinfo=None) == wall:
        return late
    # skipped: the change lies between the readings with the offsets after (early) and before
    early = wall.replace(tzinfo=tz, fold=1).astimezone(dt.UTC)
    after = late.astimezone(tz).utcoffset()
    while late - early > dt.timedelta(seconds=1):
        middle = early + (late - early) / 2
        if middle.astimezone(tz).utcoffset() == after:
            late = middle
        else:
            early = middle
    return late.replace(microsecond=0) if late.microsecond else late


@dataclass(frozen=True)
class Ladder:
    """The steps of a ladder: cumulative upper bounds (None: open-ended), how it resets."""

    bounds: tuple[Decimal | None, ...]
    reset: str
    anchor: tuple[int, int]

    def period(self, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """Return the ladder period (local midnights) holding ``at``."""
        return calendar_period(at, self.reset, self.anchor)


@dataclass(frozen=True)
class Flat:
    price: Decimal


@dataclass(frozen=True)
class Tou:
    clock: Clock
    prices: Mapping[str, Decimal]


@dataclass(frozen=True)
class Tiered:
    ladder: Ladder
    prices: tuple[Decimal, ...]


@dataclass(frozen=True)
class TieredTou:
    ladder: Ladder
    clock: Clock
    prices: tuple[Mapping[str, Decimal], ...]  # tier -> band -> price


# Validation helpers -----------------------------------------------------------------------------


def _plain(value: Decimal) -> Decimal:
    """``Decimal("3.12E+3")`` -> ``Decimal("3120")``: whole numbers without an exponent."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def _price(raw: Any, field: str) -> Decimal:
    """Read one price that is not a schema field (a value of a mapping)."""
    try:
        return _plain(Exact(positive=True).deserialize(raw))
    except ValidationError as exc:
        message = exc.messages[0] if isinstance(exc.messages, list) else str(exc.messages)
        raise refuse(field, str(message)) from None


def _date(raw: Any, field: str) -> dt.date:
    """Read one date of a calendar list."""
    try:
        day: dt.date = LocalDate().deserialize(raw)
    except ValidationError:
        raise refuse(field, f"must be a date like 2026-10-01, not {raw!r}") from None
    return day


def _load(schema: Schema, data: Any, path: str = "") -> dict[str, Any]:
    """``load`` with the numbers it reads written plainly (for lines and normalised bodies)."""
    loaded: dict[str, Any] = load(schema, data, path)
    return {k: _plain(v) if isinstance(v, Decimal) else v for k, v in loaded.items()}


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _identifier(name: Any, field: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise refuse(
            field,
            f"{what} {name!r} must be 1 to 32 lower-case letters, digits or _, "
            "starting with a letter",
        )
    return name


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise refuse(field, "must be a non-empty list")
    return value


def _window(text: Any, field: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` -> (start, end) in minutes; ``end <= start`` wraps midnight."""
    m = _WINDOW.match(text) if isinstance(text, str) else None
    if not m:
        raise refuse(field, f"must be a window like 08:00-11:00 (or 23:00-07:00), not {text!r}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise refuse(field, f"{text!r} is not a time of day range (00:00 to 24:00)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise refuse(field, f"{text!r} is empty; write 00:00-24:00 for the whole day")
    return start, end


def _bands(raw: Mapping[str, Any], *, price_required: bool) -> tuple[list[Band], dict[str, Any]]:
    if not raw:
        raise refuse("bands", "name at least one band")
    bands: list[Band] = []
    normal: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for name, spec in raw.items():
        _identifier(name, f"bands.{name}", "a band name")
        loaded = _load(_BandSchema(), spec, f"bands.{name}")
        price = loaded.get("price")
        if price_required and price is None:
            raise refuse(f"bands.{name}.price", "is required")
        label = loaded.get("label", name)
        if label in labels:
            raise refuse(
                f"bands.{name}.label", f"{label!r} is already the label of band {labels[label]}"
            )
        labels[label] = name
        bands.append(Band(name, label, price))
        normal[name] = {}
        if price is not None:
            normal[name]["price"] = plain(price)
        if "label" in loaded:
            normal[name]["label"] = loaded["label"]
    return bands, normal


def _calendar(raw: Any) -> tuple[tuple[str, ...], dict[dt.date, str], dict[str, Any] | None]:
    """Return (day type per weekday, day type per listed date, normalised calendar)."""
    if raw is None:
        return (DAILY,) * 7, {}, None
    cal = _load(_CalendarSchema(), raw, "calendar")
    normal: dict[str, Any] = {}
    weekday_types: list[str | None] = [None] * 7
    if "weekdays" in cal:
        normal["weekdays"] = {}
        for day_type, days in cal["weekdays"].items():
            field = f"calendar.weekdays.{day_type}"
            _identifier(day_type, field, "a day type")
            names = []
            for i, name in enumerate(_list(days, field)):
                text = str(name).strip().lower()
                if text not in WEEKDAYS:
                    raise refuse(
                        f"{field}[{i}]",
                        f"{name!r} is not a weekday (mon, tue, wed, thu, fri, sat, sun)",
                    )
                index = WEEKDAYS.index(text)
                if weekday_types[index] is not None:
                    raise refuse(
                        f"{field}[{i}]",
                        f"{text} is already of day type {weekday_types[index]}",
                    )
                weekday_types[index] = day_type
                names.append(text)
            normal["weekdays"][day_type] = names
        missing = [WEEKDAYS[i] for i, t in enumerate(weekday_types) if t is None]
        if missing:
            raise refuse(
                "calendar.weekdays",
                f"give every weekday a day type (missing: {', '.join(missing)})",
            )
    else:
        weekday_types = [DAILY] * 7
    date_types: dict[dt.date, str] = {}
    if "dates" in cal:
        normal["dates"] = {}
        for day_type, dates in cal["dates"].items():
            field = f"calendar.dates.{day_type}"
            _identifier(day_type, field, "a day type")
            listed = [_date(d, f"{field}[{i}]") for i, d in enumerate(_list(dates, field))]
            for i, day in enumerate(listed):
                if day in date_types:
                    raise refuse(
                        f"{field}[{i}]",
                        f"{day.isoformat()} is already of day type {date_types[day]}",
                    )
                date_types[day] = day_type
            normal["dates"][day_type] = [d.isoformat() for d in listed]
    return tuple(t or DAILY for t in weekday_types), date_types, normal


def _timetables(
    raw: list[Any], bands: Sequence[Band], day_types: Sequence[str]
) -> tuple[dict[tuple[str, int], Timetable], list[dict[str, Any]]]:
    if not raw:
        raise refuse("timetables", "give at least one timetable")
    band_names = [b.name for b in bands]
    tables: dict[tuple[str, int], Timetable] = {}
    owner: dict[tuple[str, int], int] = {}
    normal: list[dict[str, Any]] = []
    used: set[str] = set()
    for t, spec in enumerate(raw):
        path = f"timetables[{t}]"
        loaded = _load(_TimetableSchema(), spec, path)
        out: dict[str, Any] = {}
        days = loaded.get("days")
        if days is not None:
            for i, d in enumerate(days):
                if d not in day_types:
                    raise refuse(
                        f"{path}.days[{i}]",
                        f"unknown day type {d!r} (day types: {', '.join(sorted(day_types))})",
                    )
                if d in days[:i]:
                    raise refuse(f"{path}.days[{i}]", f"{d} is listed twice")
            out["days"] = list(days)
        months = loaded.get("months")
        if months is not None:
            for i, month in enumerate(months):
                if month in months[:i]:
                    raise refuse(f"{path}.months[{i}]", f"{month} is listed twice")
            out["months"] = list(months)
        segments: list[tuple[int, int, str, str, str]] = []  # start, end, band, field, text
        windows_out: dict[str, list[str]] = {}
        for band, windows in loaded["windows"].items():
            field = f"{path}.windows.{band}"
            if band not in band_names:
                raise refuse(field, f"unknown band (bands: {', '.join(band_names)})")
            used.add(band)
            texts = []
            for i, text in enumerate(_list(windows, field)):
                start, end = _window(text, f"{field}[{i}]")
                shown = f"{_hhmm(start)}-{_hhmm(end)}"
                texts.append(shown)
                parts = [(start, end)] if start < end else [(start, DAY), (0, end)]
                segments += [(a, b, band, f"{field}[{i}]", shown) for a, b in parts if b > a]
            windows_out[band] = texts
        out["windows"] = windows_out
        table = _merge(segments, f"{path}.windows")
        for day_type in days or day_types:
            for month in months or range(1, 13):
                key = (day_type, month)
                if key in owner:
                    raise refuse(
                        path,
                        f"applies to {day_type} days in {MONTHS[month - 1]}, as "
                        f"timetables[{owner[key]}] does (each day type and month needs exactly "
                        "one timetable)",
                    )
                owner[key] = t
                tables[key] = table
        normal.append(out)
    for day_type in day_types:
        for month in range(1, 13):
            if (day_type, month) not in tables:
                raise refuse(
                    "timetables",
                    f"no timetable applies to {day_type} days in {MONTHS[month - 1]}",
                )
    for band in band_names:
        if band not in used:
            raise refuse(f"bands.{band}", "no timetable uses this band")
    return tables, normal


def _merge(segments: list[tuple[int, int, str, str, str]], path: str) -> Timetable:
    """Check the windows cover [00:00, 24:00) exactly once; return the merged timetable."""
    segments.sort(key=lambda s: (s[0], s[1]))
    starts: list[int] = []
    names: list[str] = []
    cursor = 0
    previous: tuple[int, int, str, str, str] | None = None
    for seg in segments:
        start, end, band, field, text = seg
        if previous is not None and start < cursor:
            _, p_end, p_band, p_field, p_text = previous
            raise refuse(
                field,
                f"{text} ({band}) overlaps {p_text} ({p_band}, {p_field}) at "
                f"{_hhmm(start)}-{_hhmm(min(end, p_end))}",
            )
        if start > cursor:
            raise refuse(path, f"{_hhmm(cursor)}-{_hhmm(start)} is not covered by any band")
        if not names or names[-1] != band:
            starts.append(start)
            names.append(band)
        cursor = end
        previous = seg
    if cursor < DAY:
        raise refuse(path, f"{_hhmm(cursor)}-24:00 is not covered by any band")
    return Timetable(tuple(starts), tuple(names))


def _clock(body: Mapping[str, Any], *, price_required: bool) -> tuple[Clock, dict[str, Any]]:
    bands, bands_out = _bands(body["bands"], price_required=price_required)
    weekday_types, date_types, cal_out = _calendar(body.get("calendar"))
    day_types = sorted(set(weekday_types) | set(date_types.values()))
    tables, tables_out = _timetables(body["timetables"], bands, day_types)
    normal: dict[str, Any] = {"bands": bands_out}
    if cal_out is not None:
        normal["calendar"] = cal_out
    normal["timetables"] = tables_out
    clock = Clock(tuple(bands), weekday_types, date_types, tables)
    return clock, normal


def _ladder(
    loaded: Mapping[str, Any], raw_tiers: list[Any], schema: type[Schema]
) -> tuple[Ladder, list[dict[str, Any]], dict[str, Any]]:
    """Check the ladder fields; return it, the loaded tiers, and the normalised ladder fields."""
    reset = loaded["reset"]
    if "anchor" in loaded and reset != "annual":
        raise refuse("anchor", "applies only to an annual ladder (reset: annual)")
    if not raw_tiers:
        raise refuse("tiers", "give at least one tier")
    if len(raw_tiers) > MAX_TIERS:
        raise refuse("tiers", f"at most {MAX_TIERS} tiers")
    tiers = [_load(schema(), spec, f"tiers[{i}]") for i, spec in enumerate(raw_tiers)]
    bounds: list[Decimal | None] = []
    for i, tier in enumerate(tiers):
        upto = tier["upto"]
        last = i == len(tiers) - 1
        if upto is None and not last:
            raise refuse(f"tiers[{i}].upto", "only the last tier is open-ended (upto: null)")
        if upto is not None and last:
            raise refuse(f"tiers[{i}].upto", "the last tier must be open-ended (upto: null)")
        if upto is not None and bounds and bounds[-1] is not None and upto <= bounds[-1]:
            raise refuse(
                f"tiers[{i}].upto",
                f"must be greater than tiers[{i - 1}].upto ({bounds[-1]}), got {upto}",
            )
        bounds.append(upto)
    anchor = loaded.get("anchor", (1, 1))
    normal: dict[str, Any] = {"reset": reset}
    if reset == "annual":
        normal["anchor"] = f"{anchor[0]:02d}-{anchor[1]:02d}"
    return Ladder(tuple(bounds), reset, anchor), tiers, normal


def _upto(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)


def _energy(
    label: str,
    quantity: Decimal,
    price: Decimal,
    unit: str,
    *,
    tier: int | None = None,
    band: str | None = None,
) -> Line:
    with exact():
        amount = quantity * price
    return Line("energy", label, amount, quantity, unit, price, tier=tier, band=band)


class _Model:
    """What every electric model shares: no fixed charges."""

    name = ""

    def charge_period(self, priced: Any, on: dt.date) -> tuple[dt.date, dt.date] | None:
        """Return None: electric tariffs have no fixed charges."""
        return None

    def fixed(self, priced: Any, charge: Charge) -> list[Line]:
        """Return no lines: electric tariffs have no fixed charges."""
        return []


# Models -----------------------------------------------------------------------------------------


class FlatModel(_Model):
    """One price per kWh, at any time and any use."""

    name = "flat"

    def _load(self, body: Mapping[str, Any]) -> tuple[Flat, dict[str, Any]]:
        loaded = _load(_FlatSchema(), body)
        return Flat(loaded["price"]), {"price": plain(loaded["price"])}

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        return self._load(body)[1]

    def compile(self, body: Mapping[str, Any]) -> Flat:
        """Return the price to quote with."""
        return self._load(body)[0]

    def ladder_period(self, priced: Any, at: dt.datetime) -> None:
        """Return None: a flat price has no ladder."""
        return None

    def usage(self, priced: Flat, use: Usage) -> list[Line]:
        """Price ``use`` at the one price."""
        if use.quantity == 0:
            return []
        return [_energy("energy", use.quantity, priced.price, use.unit)]


class TouModel(_Model):
    """Time-of-use: a price per band; the quantity goes to the bands of the times it is used."""

    name = "tou"

    def _load(self, body: Mapping[str, Any]) -> tuple[Tou, dict[str, Any]]:
        loaded = _load(_TouSchema(), body)
        clock, normal = _clock(loaded, price_required=True)
        prices = {b.name: b.price for b in clock.bands if b.price is not None}
        return Tou(clock, prices), normal

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        return self._load(body)[1]

    def compile(self, body: Mapping[str, Any]) -> Tou:
        """Return the calendar, timetables and prices to quote with."""
        return self._load(body)[0]

    def ladder_period(self, priced: Any, at: dt.datetime) -> None:
        """Return None: time-of-use alone has no ladder."""
        return None

    def usage(self, priced: Tou, use: Usage) -> list[Line]:
        """Price ``use`` band by band."""
        weights, total = priced.clock.weights(use)
        return [
            _energy(band.label, q, priced.prices[band.name], use.unit, band=band.name)
            for band, q in priced.clock.split(weights, total, use.quantity)
        ]


class TieredModel(_Model):
    """A ladder: the price of each kWh depends on the cumulative use of the month or year."""

    name = "tiered"

    def _load(self, body: Mapping[str, Any]) -> tuple[Tiered, dict[str, Any]]:
        loaded = _load(_TieredSchema(), body)
        lad, tiers, normal = _ladder(loaded, loaded["tiers"], _TierSchema)
        normal["tiers"] = [{"upto": _upto(t["upto"]), "price": plain(t["price"])} for t in tiers]
        return Tiered(lad, tuple(t["price"] for t in tiers)), normal

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        return self._load(body)[1]

    def compile(self, body: Mapping[str, Any]) -> Tiered:
        """Return the ladder and its prices to quote with."""
        return self._load(body)[0]

    def ladder_period(self, priced: Tiered, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """Return the month or year (from ``anchor``) holding ``at``."""
        return priced.ladder.period(at)

    def usage(self, priced: Tiered, use: Usage) -> list[Line]:
        """Price ``use`` tier by tier, from where the meter stands in the period."""
        return [
            _energy(f"tier {i + 1}", q, priced.prices[i], use.unit, tier=i + 1)
            for i, q in ladder(priced.ladder.bounds, use.used_before, use.quantity)
        ]


class TieredTouModel(_Model):
    """A ladder of time-of-use prices: each tier has a price per band (or a markup on the
    bands' base prices). The quantity of each tier is split over the bands like the whole use."""

    name = "tiered_tou"

    def _load(self, body: Mapping[str, Any]) -> tuple[TieredTou, dict[str, Any]]:
        loaded = _load(_TieredTouSchema(), body)
        clock, normal = _clock(loaded, price_required=False)
        lad, tiers, ladder_normal = _ladder(loaded, loaded["tiers"], _TouTierSchema)
        names = [b.name for b in clock.bands]
        prices: list[dict[str, Decimal]] = []
        tiers_out: list[dict[str, Any]] = []
        marked = None
        for i, tier in enumerate(tiers):
            path = f"tiers[{i}]"
            if ("prices" in tier) == ("markup" in tier):
                raise refuse(
                    path,
                    "give exactly one of prices (one per band) or markup (added to the bands' "
                    f"prices), not {'both' if 'prices' in tier else 'neither'}",
                )
            out: dict[str, Any] = {"upto": _upto(tier["upto"])}
            if "markup" in tier:
                marked = marked if marked is not None else i
                for band in clock.bands:
                    if band.price is None:
                        raise refuse(
                            f"bands.{band.name}.price",
                            f"is required: tiers[{i}] gives a markup on the bands' prices",
                        )
                markup: Decimal = tier["markup"]
                with exact():
                    prices.append({b.name: (b.price or Decimal(0)) + markup for b in clock.bands})
                out["markup"] = plain(tier["markup"])
            else:
                table: dict[str, Decimal] = {}
                for band, raw_price in tier["prices"].items():
                    if band not in names:
                        raise refuse(
                            f"{path}.prices.{band}",
                            f"unknown band (bands: {', '.join(names)})",
                        )
                    table[band] = _price(raw_price, f"{path}.prices.{band}")
                missing = [n for n in names if n not in table]
                if missing:
                    raise refuse(f"{path}.prices", f"no price for band {', '.join(missing)}")
                prices.append({n: table[n] for n in names})
                out["prices"] = {n: plain(table[n]) for n in names}
            tiers_out.append(out)
        if marked is None:
            for band in clock.bands:
                if band.price is not None:
                    raise refuse(
                        f"bands.{band.name}.price",
                        "no tier gives a markup, so the bands take no price here "
                        "(give the prices in the tiers)",
                    )
        normal.update(ladder_normal)
        normal["tiers"] = tiers_out
        return TieredTou(lad, clock, tuple(prices)), normal

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        return self._load(body)[1]

    def compile(self, body: Mapping[str, Any]) -> TieredTou:
        """Return the ladder, calendar and tier-by-band prices to quote with."""
        return self._load(body)[0]

    def ladder_period(self, priced: TieredTou, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """Return the month or year (from ``anchor``) holding ``at``."""
        return priced.ladder.period(at)

    def usage(self, priced: TieredTou, use: Usage) -> list[Line]:
        """Price ``use`` tier by tier, each tier band by band."""
        lines: list[Line] = []
        steps = ladder(priced.ladder.bounds, use.used_before, use.quantity)
        if not steps:
            return lines
        weights, total = priced.clock.weights(use)
        for i, q in steps:
            lines += [
                _energy(
                    f"tier {i + 1} · {band.label}",
                    part,
                    priced.prices[i][band.name],
                    use.unit,
                    tier=i + 1,
                    band=band.name,
                )
                for band, part in priced.clock.split(weights, total, q)
            ]
        return lines
