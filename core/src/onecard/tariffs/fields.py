"""Marshmallow fields and the loader that tariff schemas (core and plugins) share.

Every number in a tariff document is read exactly: ``"0.4883"``, ``4883`` and a YAML float
``0.4883`` all become ``Decimal("0.4883")`` (a float is read through its shortest repr, which is
what was typed). Errors come out as one :class:`~onecard.errors.InvalidInput` naming the field by
its path, e.g. ``body.tiers[1].upto: must be greater than body.tiers[0].upto``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import Schema, ValidationError, fields

from onecard.errors import InvalidInput

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")
MAX_PRICE = Decimal("1000000")


class Exact(fields.Field):  # type: ignore[type-arg]
    """A decimal number kept exact; ``minimum``/``maximum`` bound it, ``positive`` excludes 0."""

    def __init__(
        self,
        *,
        minimum: Decimal | int | None = 0,
        maximum: Decimal | int | None = MAX_PRICE,
        positive: bool = False,
        places: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.minimum = None if minimum is None else Decimal(minimum)
        self.maximum = None if maximum is None else Decimal(maximum)
        self.positive = positive
        self.places = places

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            raise ValidationError(f"must be a number, not {value!r}")
        try:
            number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except InvalidOperation:
            raise ValidationError(f"must be a number, not {value!r}") from None
        if not number.is_finite():
            raise ValidationError("must be a finite number")
        if self.positive and number <= 0:
            raise ValidationError(f"must be greater than 0, got {number}")
        if self.minimum is not None and number < self.minimum:
            if self.minimum == 0:
                raise ValidationError(f"must not be negative, got {number}")
            raise ValidationError(f"must be at least {self.minimum}, got {number}")
        if self.maximum is not None and number > self.maximum:
            raise ValidationError(f"must be at most {self.maximum}, got {number}")
        if number != number.quantize(Decimal(1).scaleb(-self.places)):
            raise ValidationError(f"has more than {self.places} decimals: {number}")
        return number

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else format(value, "f")


class TimeOfDay(fields.Field):  # type: ignore[type-arg]
    """``"HH:MM"`` (``"24:00"`` allowed, for an end) -> minutes after midnight."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1440:
            return value  # YAML reads 06:00 as sexagesimal 360: minutes, which is what we keep
        if not isinstance(value, str) or not _HHMM.match(value.strip()):
            raise ValidationError(
                f"must be a time of day like 08:00 (00:00 to 24:00), not {value!r}"
            )
        hours, minutes = value.strip().split(":")
        return int(hours) * 60 + int(minutes)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else f"{value // 60:02d}:{value % 60:02d}"


class MonthDay(fields.Field):  # type: ignore[type-arg]
    """``"MM-DD"`` -> ``(month, day)``, a date that recurs every year (Feb 29 refused)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> tuple[int, int]:
        text = str(value).strip()
        m = re.match(r"^(\d{2})-(\d{2})$", text)
        if not m:
            raise ValidationError(f"must be a month and day like 11-15, not {value!r}")
        month, day = int(m[1]), int(m[2])
        try:
            dt.date(2001, month, day)
        except ValueError:
            raise ValidationError(f"{text} is not a day of every year") from None
        return month, day

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else f"{value[0]:02d}-{value[1]:02d}"


class LocalDate(fields.Date):
    """A calendar date; YAML gives ``datetime.date`` objects, JSON gives ``"2026-10-01"``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date:
        if isinstance(value, dt.datetime):
            raise ValidationError(f"must be a date, not a time: {value!r}")
        if isinstance(value, dt.date):
            return value
        return super()._deserialize(value, attr, data, **kwargs)


def _step(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _first_error(messages: Any, path: str) -> tuple[str, str]:
    """The first leaf of marshmallow's nested error dict, as ``(field path, message)``."""
    if isinstance(messages, Mapping):
        key = sorted(messages, key=lambda k: (not isinstance(k, int), str(k)))[0]
        inner = messages[key]
        if key == "_schema":
            return _first_error(inner, path)
        return _first_error(inner, _step(path, key))
    if isinstance(messages, (list, tuple)) and messages:
        first = messages[0]
        if isinstance(first, (Mapping, list, tuple)):
            return _first_error(first, path)
        return path, str(first)
    return path, str(messages)


def load(schema: Schema, data: Any, path: str = "") -> Any:
    """Load ``data`` with ``schema``; the first error becomes InvalidInput naming its field path."""
    if not isinstance(data, Mapping):
        where = path or "document"
        raise InvalidInput(
            f"{where} must be a mapping (key: value), not {type(data).__name__}", field=where
        )
    try:
        return schema.load(data)
    except ValidationError as exc:
        where, message = _first_error(exc.messages, path)
        if message == "Unknown field.":
            message = "is not a field of this document"
        elif message == "Missing data for required field.":
            message = "is required"
        raise InvalidInput(f"{where}: {message}", field=where) from None


def refuse(field: str, message: str) -> InvalidInput:
    """An InvalidInput for a rule no single field checks (overlaps, gaps, order)."""
    return InvalidInput(f"{field}: {message}", field=field)


def plain(number: Decimal) -> str:
    """A decimal in plain notation, as a document keeps it: ``180``, not ``1.8E+2``."""
    return format(number, "f")


def check_bounds(items: list[Any], name: str, noun: str, unit: str) -> None:
    """Refuse ladder bounds out of order: each ``upto`` (cumulative ``unit``) above the one before,
    only the last open-ended (``upto: null``). ``name`` is the list's field, ``noun`` one item."""
    last = len(items) - 1
    previous: Decimal | None = None
    for i, item in enumerate(items):
        upto = item["upto"]
        if i == last:
            if upto is not None:
                raise refuse(
                    f"{name}[{i}].upto",
                    f"the last {noun} is open-ended (upto: null), not {plain(upto)}",
                )
        elif upto is None:
            raise refuse(
                f"{name}[{i}].upto",
                f"only the last {noun} is open-ended; give the cumulative {unit} where this "
                f"{noun} ends",
            )
        elif previous is not None and upto <= previous:
            raise refuse(
                f"{name}[{i}].upto",
                f"must be greater than {name}[{i - 1}].upto ({plain(previous)}), got {plain(upto)}",
            )
        previous = upto
