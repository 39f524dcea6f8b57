"""Water tariff models: quota steps (阶梯水价) and a flat price, with itemized surcharges.

``steps`` prices cumulative use in one to six quota steps that reset monthly or annually; ``flat``
is one price. Both carry ``components``: surcharges per m³ such as the sewage treatment fee
(污水处理费) and the water resource fee (水资源费), each priced on every step (a step may override
it) and itemized on its own line. A price per water kind is a separate tariff document per kind.

Body of ``steps``::

    reset: annual            # monthly | annual (required with more than one step)
    anchor: "01-01"          # annual only: the day each year the quota starts again
    label: water             # what the receipt calls the water price itself
    steps:
      - {upto: 180, price: "2.07"}                         # cumulative m³ where the step ends
      - {upto: 260, price: "4.07"}
      - {upto: null, price: "6.07", components: {sewage: "1.36"}}   # last: open-ended
    components:
      - {id: resource, label: water resource fee, price: "1.57"}
      - {id: sewage, label: sewage treatment fee, price: "1.36"}

Body of ``flat``: ``price``, ``label`` and ``components`` (no per-step overrides).

Lines: per step (in order) the water line (``item="energy"``, label ``tier N · <label>``), then one
line per component (``item="component"``, label ``tier N · <component label>``); a component whose
price at that step is 0 is left out. ``flat`` labels are ``<label>`` and ``<component label>``.
Amounts are exact; the core rounds once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from onecard.pricing import Charge, Line, Usage, calendar_period, exact, ladder
from onecard.tariffs.fields import Exact, MonthDay, check_bounds, load, plain, refuse

MIN_STEPS = 1
MAX_STEPS = 6
DEFAULT_LABEL = "water"
_ID = r"^[a-z][a-z0-9_]{0,31}$"


class ComponentSchema(Schema):
    id = fields.String(
        required=True,
        validate=validate.Regexp(
            _ID, error="must be lower-case letters, digits and _, like sewage"
        ),
    )
    label = fields.String(load_default=None, validate=validate.Length(min=1, max=40))
    price = Exact(required=True)


class StepSchema(Schema):
    upto = Exact(load_default=None, allow_none=True, positive=True, maximum=None)
    price = Exact(required=True)
    components = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict)


class StepsSchema(Schema):
    reset = fields.String(load_default=None, validate=validate.OneOf(["monthly", "annual"]))
    anchor = MonthDay(load_default=None)
    label = fields.String(load_default=DEFAULT_LABEL, validate=validate.Length(min=1, max=40))
    steps = fields.List(fields.Nested(StepSchema), required=True)
    components = fields.List(fields.Nested(ComponentSchema), load_default=list)


class FlatSchema(Schema):
    price = Exact(required=True)
    label = fields.String(load_default=DEFAULT_LABEL, validate=validate.Length(min=1, max=40))
    components = fields.List(fields.Nested(ComponentSchema), load_default=list)


@dataclass(frozen=True)
class Step:
    """One quota step, compiled: where it ends, its water price, and each component's price."""

    upto: Decimal | None
    price: Decimal
    components: tuple[tuple[str, str, Decimal], ...]  # (id, label, price), zero prices left out


@dataclass(frozen=True)
class WaterPrice:
    """A compiled water body (``flat`` is one open-ended step without a ladder)."""

    reset: str | None
    anchor: tuple[int, int]
    label: str
    steps: tuple[Step, ...]
    tiered: bool

    @property
    def bounds(self) -> list[Decimal | None]:
        return [s.upto for s in self.steps]


def _components(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check component ids are unique; fill in labels (default: the id)."""
    seen: dict[str, int] = {}
    out = []
    for j, comp in enumerate(raw):
        if comp["id"] in seen:
            raise refuse(
                f"components[{j}].id",
                f"{comp['id']!r} is already components[{seen[comp['id']]}].id",
            )
        seen[comp["id"]] = j
        out.append({"id": comp["id"], "label": comp["label"] or comp["id"], "price": comp["price"]})
    return out


def _check_steps(steps: list[dict[str, Any]]) -> None:
    """Refuse a wrong number of steps, bounds out of order, or an end that is not open."""
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:
        raise refuse("steps", f"a water tariff has one to six steps, got {len(steps)}")
    check_bounds(steps, "steps", "step", "m³")


def _overrides(
    steps: list[dict[str, Any]], components: list[dict[str, Any]]
) -> list[dict[str, Decimal]]:
    """Each step's component overrides, checked: known ids, prices as component prices."""
    known = [c["id"] for c in components]
    price_field = Exact()
    out = []
    for i, step in enumerate(steps):
        checked: dict[str, Decimal] = {}
        for cid, value in step["components"].items():
            where = f"steps[{i}].components.{cid}"
            if cid not in known:
                have = ", ".join(known) or "none"
                raise refuse(where, f"is not a component of this tariff (components: {have})")
            try:
                checked[cid] = price_field.deserialize(value)
            except ValidationError as exc:
                raise refuse(where, str(exc.messages[0])) from None
        out.append(checked)
    return out


def _total(
    price: Decimal, components: list[dict[str, Any]], overrides: Mapping[str, Decimal]
) -> Decimal:
    with exact():
        return price + sum((overrides.get(c["id"], c["price"]) for c in components), Decimal(0))


def _component_json(components: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"id": c["id"], "label": c["label"], "price": plain(c["price"])} for c in components]


def _compile_components(
    components: list[dict[str, Any]], overrides: Mapping[str, Any]
) -> tuple[tuple[str, str, Decimal], ...]:
    out = []
    for c in components:
        price = Decimal(str(overrides.get(c["id"], c["price"])))
        if price != 0:
            out.append((c["id"], c["label"], price))
    return tuple(out)


def _lines(priced: WaterPrice, use: Usage) -> list[Line]:
    lines: list[Line] = []
    with exact():
        for i, qty in ladder(priced.bounds, use.used_before, use.quantity):
            step = priced.steps[i]
            tier = i + 1 if priced.tiered else None
            prefix = f"tier {i + 1} · " if priced.tiered else ""
            lines.append(
                Line(
                    "energy",
                    f"{prefix}{priced.label}",
                    qty * step.price,
                    qty,
                    use.unit,
                    step.price,
                    tier=tier,
                )
            )
            lines.extend(
                Line(
                    "component",
                    f"{prefix}{label}",
                    qty * price,
                    qty,
                    use.unit,
                    price,
                    tier=tier,
                    component=cid,
                )
                for cid, label, price in step.components
            )
    return lines


class StepsModel:
    """Quota steps (one to six) reset monthly or annually, with per-m³ components."""

    name = "steps"

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        data = load(StepsSchema(), body)
        steps = data["steps"]
        _check_steps(steps)
        components = _components(data["components"])
        overrides = _overrides(steps, components)
        reset = data["reset"]
        if reset is None and len(steps) > 1:
            raise refuse("reset", "is required with more than one step: monthly or annual")
        if data["anchor"] is not None and reset != "annual":
            raise refuse("anchor", "only an annual reset has an anchor (the day the year starts)")
        last = len(steps) - 1
        if _total(steps[last]["price"], components, overrides[last]) == 0:
            raise refuse(
                f"steps[{last}].price",
                "the open-ended last step must cost something per m³ (price plus components)",
            )
        out: dict[str, Any] = {"reset": reset}
        if reset == "annual":
            month, day = data["anchor"] or (1, 1)
            out["anchor"] = f"{month:02d}-{day:02d}"
        out["label"] = data["label"]
        out["steps"] = [
            {
                "upto": None if s["upto"] is None else plain(s["upto"]),
                "price": plain(s["price"]),
                **({"components": {k: plain(v) for k, v in o.items()}} if o else {}),
            }
            for s, o in zip(steps, overrides, strict=True)
        ]
        out["components"] = _component_json(components)
        return out

    def compile(self, body: Mapping[str, Any]) -> WaterPrice:
        """Turn a validated body into exact steps."""
        anchor = body.get("anchor") or "01-01"
        components = list(body.get("components", []))
        return WaterPrice(
            reset=body.get("reset"),
            anchor=(int(anchor[:2]), int(anchor[3:])),
            label=body.get("label", DEFAULT_LABEL),
            steps=tuple(
                Step(
                    upto=None if s["upto"] is None else Decimal(s["upto"]),
                    price=Decimal(s["price"]),
                    components=_compile_components(components, s.get("components", {})),
                )
                for s in body["steps"]
            ),
            tiered=True,
        )

    def ladder_period(
        self, priced: WaterPrice, at: dt.datetime
    ) -> tuple[dt.datetime, dt.datetime] | None:
        """Return the month or the year (from the anchor) holding ``at``; None without reset."""
        if priced.reset is None:
            return None
        return calendar_period(at, priced.reset, priced.anchor)

    def charge_period(self, priced: WaterPrice, on: dt.date) -> tuple[dt.date, dt.date] | None:
        """Return None: water has no fixed charges."""
        return None

    def usage(self, priced: WaterPrice, use: Usage) -> list[Line]:
        """Price the quantity step by step: the water line, then each component line."""
        return _lines(priced, use)

    def fixed(self, priced: WaterPrice, charge: Charge) -> list[Line]:
        """Return no lines: water has no fixed charges."""
        return []


class FlatModel:
    """One price per m³, with per-m³ components (sewage, water resource fee ...)."""

    name = "flat"

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body, or raise InvalidInput naming the bad field."""
        data = load(FlatSchema(), body)
        components = _components(data["components"])
        if _total(data["price"], components, {}) == 0:
            raise refuse("price", "water must cost something per m³ (price plus components)")
        return {
            "price": plain(data["price"]),
            "label": data["label"],
            "components": _component_json(components),
        }

    def compile(self, body: Mapping[str, Any]) -> WaterPrice:
        """Turn a validated body into one open-ended step without a ladder."""
        components = list(body.get("components", []))
        step = Step(None, Decimal(body["price"]), _compile_components(components, {}))
        return WaterPrice(
            reset=None,
            anchor=(1, 1),
            label=body.get("label", DEFAULT_LABEL),
            steps=(step,),
            tiered=False,
        )

    def ladder_period(
        self, priced: WaterPrice, at: dt.datetime
    ) -> tuple[dt.datetime, dt.datetime] | None:
        """Return None: a flat price has no ladder."""
        return None

    def charge_period(self, priced: WaterPrice, on: dt.date) -> tuple[dt.date, dt.date] | None:
        """Return None: water has no fixed charges."""
        return None

    def usage(self, priced: WaterPrice, use: Usage) -> list[Line]:
        """Price the quantity: the water line, then each component line."""
        return _lines(priced, use)

    def fixed(self, priced: WaterPrice, charge: Charge) -> list[Line]:
        """Return no lines: water has no fixed charges."""
        return []


__all__ = ["FlatModel", "StepsModel", "WaterPrice"]
