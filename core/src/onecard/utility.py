"""The utility-type registry: what kinds of metered (or billed) things this installation knows.

Plugins receive a :class:`UtilityRegistry` in ``onecard_register_utilities`` and add their kinds
to it. A :class:`UtilityKind` is the one object the rest of onecard looks up by code, and the
place where a plugin attaches its tariff models, card slot layout, meter protocols and reports.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

from onecard.errors import NotFound, PluginError
from onecard.interfaces import CardSlotLayout, MeterProtocol, Report, TariffModel

T = TypeVar("T")

_CODE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")
MAX_CODE_LENGTH = 32  # the width of the kind columns
REQUIRED_LANGUAGES = ("zh-CN", "en")


class Attachments(Generic[T]):
    """A named set of things of one interface attached to a utility kind."""

    def __init__(self, owner: str, what: str, interface: type) -> None:
        self._owner = owner
        self._what = what
        self._interface = interface
        self._items: dict[str, T] = {}
        self._frozen = False

    def add(self, name: str, item: T) -> T:
        """Attach ``item`` under ``name``; a name can be attached once."""
        if self._frozen:
            raise PluginError(f"{self._owner}: {self._what} are frozen after start-up")
        if not name or not isinstance(name, str):
            raise PluginError(f"{self._owner}: a {self._what[:-1]} needs a non-empty name")
        if name in self._items:
            raise PluginError(f"{self._owner}: {self._what[:-1]} {name!r} is attached twice")
        item_name = getattr(item, "name", name)
        if isinstance(item_name, str) and item_name != name:
            raise PluginError(
                f"{self._owner}: {self._what[:-1]} attached as {name!r} calls itself {item_name!r}"
            )
        if not isinstance(item, self._interface):
            raise PluginError(
                f"{self._owner}: {self._what[:-1]} {name!r} does not provide the "
                f"{self._interface.__name__} interface"
            )
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise NotFound(
                f"{self._owner} has no {self._what[:-1]} {name!r} (known: {known})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def freeze(self) -> None:
        self._frozen = True


@dataclass
class UtilityKind:
    """One utility kind, such as ``electric`` or ``water.cold``.

    ``unit`` is the unit of measure (``None`` for money-only kinds such as rent) and
    ``unit_decimals`` its resolution: quantities are kept as integers of 10**-unit_decimals units.
    ``alt_units`` maps other units to how many of them make one ``unit`` (heat: kWh per GJ).
    """

    code: str
    names: Mapping[str, str]
    unit: str | None
    unit_decimals: int = 0
    alt_units: Mapping[str, Decimal] = field(default_factory=dict)
    plugin: str | None = None
    tariffs: Attachments[TariffModel] = field(init=False)
    protocols: Attachments[MeterProtocol] = field(init=False)
    reports: Attachments[Report] = field(init=False)
    card_layout: CardSlotLayout | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tariffs = Attachments(self.code, "tariff models", TariffModel)
        self.protocols = Attachments(self.code, "meter protocols", MeterProtocol)
        self.reports = Attachments(self.code, "reports", Report)
        self._frozen = False

    @property
    def family(self) -> str:
        """The part before the dot: ``water`` for ``water.cold``."""
        return self.code.split(".", 1)[0]

    @property
    def money_only(self) -> bool:
        return self.unit is None

    def name(self, language: str = "zh-CN") -> str:
        return self.names.get(language) or self.names["en"]

    def set_card_layout(self, layout: CardSlotLayout) -> None:
        """Declare the slot layout this kind keeps on the one-card."""
        if self._frozen:
            raise PluginError(f"{self.code}: the card layout is frozen after start-up")
        if self.card_layout is not None:
            raise PluginError(f"{self.code}: a card layout is set twice")
        if not isinstance(layout, CardSlotLayout):
            raise PluginError(f"{self.code}: the card layout does not provide CardSlotLayout")
        self.card_layout = layout

    def to_units(self, quantity: Decimal, unit: str) -> Decimal:
        """Convert ``quantity`` given in ``unit`` (the kind's unit or an alt unit) to the unit."""
        if unit == self.unit:
            return quantity
        try:
            return quantity / self.alt_units[unit]
        except KeyError:
            raise NotFound(f"{self.code} has no unit {unit!r}", field="unit") from None

    def freeze(self) -> None:
        self._frozen = True
        for attachments in (self.tariffs, self.protocols, self.reports):
            attachments.freeze()

    def describe(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "names": dict(self.names),
            "unit": self.unit,
            "unit_decimals": self.unit_decimals,
            "alt_units": {k: str(v) for k, v in self.alt_units.items()},
            "plugin": self.plugin,
            "tariff_models": self.tariffs.names(),
            "meter_protocols": self.protocols.names(),
            "reports": self.reports.names(),
            "card_layout": self.card_layout is not None,
        }


class UtilityRegistry:
    """The registry handed to ``onecard_register_utilities``.

    The plugin manager sets :attr:`current_plugin` while each plugin registers, so every kind
    records the plugin that registered it.
    """

    def __init__(self) -> None:
        self._kinds: dict[str, UtilityKind] = {}
        self.current_plugin: str | None = None
        self._frozen = False

    def add(
        self,
        code: str,
        *,
        names: Mapping[str, str],
        unit: str | None,
        unit_decimals: int = 0,
        alt_units: Mapping[str, Decimal | str | int] | None = None,
    ) -> UtilityKind:
        """Register a utility kind and return it, for attaching tariffs, layout and the rest."""
        who = self.current_plugin or "a plugin"
        if self._frozen:
            raise PluginError(f"{who}: utility kinds can only be registered at start-up")
        if not isinstance(code, str) or not _CODE.match(code) or len(code) > MAX_CODE_LENGTH:
            raise PluginError(
                f"{who}: utility code {code!r} must be lower-case letters, digits and _, "
                "with at most one dot (like 'water.cold'), at most 32 characters"
            )
        if code in self._kinds:
            first = self._kinds[code].plugin
            raise PluginError(f"{who}: utility kind {code!r} is already registered by {first}")
        missing = [lang for lang in REQUIRED_LANGUAGES if not names.get(lang)]
        if missing:
            raise PluginError(f"{who}: utility kind {code!r} needs a display name in {missing}")
        if not isinstance(unit_decimals, int) or not 0 <= unit_decimals <= 6:
            raise PluginError(f"{who}: {code!r} unit_decimals must be an integer from 0 to 6")
        alt = {k: Decimal(str(v)) for k, v in (alt_units or {}).items()}
        if any(v <= 0 for v in alt.values()):
            raise PluginError(f"{who}: {code!r} alt_units factors must be positive")
        if alt and unit is None:
            raise PluginError(f"{who}: money-only kind {code!r} cannot have alt_units")
        kind = UtilityKind(
            code=code,
            names=dict(names),
            unit=unit,
            unit_decimals=unit_decimals,
            alt_units=alt,
            plugin=self.current_plugin,
        )
        self._kinds[code] = kind
        return kind

    def get(self, code: str) -> UtilityKind:
        try:
            return self._kinds[code]
        except KeyError:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise NotFound(
                f"unknown utility kind {code!r} (known: {known})", field="kind"
            ) from None

    def __contains__(self, code: object) -> bool:
        return code in self._kinds

    def __iter__(self) -> Iterator[UtilityKind]:
        return iter(sorted(self._kinds.values(), key=lambda k: k.code))

    def __len__(self) -> int:
        return len(self._kinds)

    def codes(self) -> list[str]:
        return sorted(self._kinds)

    def by_plugin(self, plugin: str) -> list[UtilityKind]:
        return [k for k in self if k.plugin == plugin]

    def freeze(self) -> None:
        self._frozen = True
        for kind in self._kinds.values():
            kind.freeze()
