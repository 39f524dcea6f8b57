"""What a plugin attaches to a utility kind: the interfaces the core calls.

The core never imports a plugin; it only calls these interfaces on the objects that plugins
attached to their :class:`~onecard.utility.UtilityKind` in ``onecard_register_utilities``.
Each is a ``typing.Protocol``: any object with these members will do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from onecard.pricing import Charge, Line, Usage
    from onecard.remote.types import MeterRef, RemoteReading


@runtime_checkable
class TariffModel(Protocol):
    """A price model (flat, time-of-use, tiered ...) of one utility kind, attached by a plugin.

    ``name`` is the value of the ``model`` field in a tariff document. The core stores the
    documents (versioned, with an effective-from time; see :mod:`onecard.tariffs`), splits a request
    across the versions and ladder periods it spans, sums the exact lines and rounds once. The model
    only validates its ``body`` and prices one piece; the arithmetic helpers are in
    :mod:`onecard.pricing`.
    """

    name: str

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised body (JSON-able), or raise InvalidInput naming the bad field."""
        ...

    def compile(self, body: Mapping[str, Any]) -> Any:
        """Turn a validated body into the object ``usage`` and ``fixed`` price with (cached)."""
        ...

    def ladder_period(self, priced: Any, at: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
        """Return the ladder period (month, year ...) holding ``at``, or None without a ladder."""
        ...

    def charge_period(self, priced: Any, on: dt.date) -> tuple[dt.date, dt.date] | None:
        """Return the billing period of the fixed charges holding ``on``, or None without any."""
        ...

    def usage(self, priced: Any, use: Usage) -> list[Line]:
        """Price a quantity used or bought, as exact lines (tier by tier, band by band)."""
        ...

    def fixed(self, priced: Any, charge: Charge) -> list[Line]:
        """Price the fixed charges of part of a billing period, prorated by days."""
        ...


@runtime_checkable
class CardSlotLayout(Protocol):
    """The bytes a utility kind keeps in its slot of the one-card, declared as data.

    ``purchase_fields`` and ``return_fields`` are sequences of field declarations
    (name, offset, type, length); one declaration both encodes and decodes. The core's
    :class:`onecard.card.layout.SlotLayout` is the implementation plugins use.
    """

    @property
    def blocks(self) -> int:
        """How many 16-byte data blocks the slot takes on the card."""
        ...

    @property
    def purchase_fields(self) -> Sequence[Any]:
        """The fields of the purchase record the office writes."""
        ...

    @property
    def return_fields(self) -> Sequence[Any]:
        """The fields of the return record the meter writes."""
        ...


@runtime_checkable
class MeterProtocol(Protocol):
    """A way to talk to remote meters of this kind (a Modbus register map, DL/T 645, CJ/T 188 ...).

    ``name`` is what a meter's ``protocol`` column holds. ``link`` says what the core's
    :class:`onecard.remote.bus.Bus` must give it: ``modbus`` (a connected pymodbus client, framed
    as the gateway says) or ``stream`` (raw bytes: :meth:`Bus.exchange`). Reads and commands are
    coroutines run on the bus's event loop, one at a time per bus; they raise
    :class:`onecard.remote.types.MeterError` subclasses. ``responder`` lets the fleet emulator
    (:mod:`onecard.fleet`) play meters of this protocol.
    """

    name: str
    link: str

    def describe(self) -> Mapping[str, Any]:
        """Return what an operator needs to configure a meter on this protocol."""
        ...

    def models(self) -> Sequence[str]:
        """Return the meter models (register maps) this protocol knows; empty if it needs none."""
        ...

    def check_address(self, address: str) -> str:
        """Return the meter's bus address normalised, or raise InvalidInput(field="address")."""
        ...

    async def read(self, bus: Any, meter: MeterRef) -> RemoteReading:
        """Read the meter's registers: totals, bands, relay, credit and the rest."""
        ...

    async def command(self, bus: Any, meter: MeterRef, command: str) -> None:
        """Send a relay command (one of ``RELAY_COMMANDS``); raise Unsupported if it has none."""
        ...

    async def recharge(self, bus: Any, meter: MeterRef, amount: Decimal, count: int) -> None:
        """Push ``amount`` yuan as recharge number ``count`` to a meter that keeps its credit."""
        ...

    def responder(self, meters: Mapping[str, Any], framer: str) -> Any:
        """Return an emulator responder for these SimMeters (by address) framed as ``framer``."""
        ...


@runtime_checkable
class Report(Protocol):
    """A report a utility kind offers (name, title, and how to compute its rows)."""

    name: str
    title: Mapping[str, str]

    def rows(self, session: Any, params: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        """Return the report's rows; the caller owns the session."""
        ...
