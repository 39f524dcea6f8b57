"""What a plugin attaches to a utility kind: the interfaces the core calls.

The core never imports a plugin; it only calls these interfaces on the objects that plugins
attached to their :class:`~onecard.utility.UtilityKind` in ``onecard_register_utilities``.
Each is a ``typing.Protocol``: any object with these members will do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TariffModel(Protocol):
    """A price model (flat, time-of-use, tiered ...) of one utility kind.

    ``name`` is the value of the ``model`` field in a tariff document. The core stores tariff
    documents (versioned, with an effective-from time) and asks the model to validate and to quote.
    """

    name: str

    def validate(self, document: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return the normalised document, or raise InvalidInput naming the bad field."""
        ...

    def quote(self, document: Mapping[str, Any], request: Mapping[str, Any]) -> Mapping[str, Any]:
        """Price a request (money or units, with the meter's position) as an itemised breakdown."""
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
    """A way to talk to a remote meter of this kind (Modbus map, DL/T 645, CJ/T 188 ...)."""

    name: str

    def describe(self) -> Mapping[str, Any]:
        """Return what an operator needs to configure a meter on this protocol."""
        ...


@runtime_checkable
class Report(Protocol):
    """A report a utility kind offers (name, title, and how to compute its rows)."""

    name: str
    title: Mapping[str, str]

    def rows(self, session: Any, params: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        """Return the report's rows; the caller owns the session."""
        ...
