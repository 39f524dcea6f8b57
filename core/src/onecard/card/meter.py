"""A card meter emulator: what a prepaid meter does with a onecard card, for tests and the demo.

One class serves every utility kind with a card slot layout (electric, water.*, heat, gas): it
reads the kind's :class:`~onecard.card.layout.SlotLayout` and never names a utility. The meter
holds its credit, its purchase count and its register, meters simulated use, raises its two
alarms, opens its relay (or valve) when the credit is gone, and handles the user card and every
tool card the way the office (:mod:`onecard.card.service`) writes them.

Units
    ``credit`` is a :class:`~decimal.Decimal` in the record's unit: fen for a ``money`` layout,
    the kind's smallest unit (``10**-unit_decimals``) for a ``units`` layout. It keeps fractions
    (a money meter never rounds a step's cost), and the return record carries it floored to an
    integer. ``cumulative`` is the register in smallest units. Prices, alarm levels and overdraft
    are in the units of the layout's parameters: yuan (per unit) for money meters, the kind's
    unit for units meters; the meter converts them to the credit's unit.

Levels
    ``alarm1`` is raised when credit <= alarm1, ``alarm2`` when credit <= alarm2, and the meter is
    *exhausted* when credit <= -overdraft: its relay opens and it meters nothing more. Each
    crossing is recorded once in :attr:`CardMeter.events`; a load, a settings card or a clear card
    re-evaluates the levels. A tamper also holds the relay open until a reset card clears it.

Inserting a card (:meth:`CardMeter.insert`)
    1. The header is read with the public key A. No onecard header: ``not_our_card``; the header
       names another site than the meter's security module (SAM): ``foreign_site``.
    2. The card must prove it holds the keys the SAM derives from its UID: the meter
       authenticates the first slot sector with the derived data key A. A card that does not
       (a clone copied onto another UID, or a card keyed by someone else) is ``wrong_key``.
       This comes before the header MAC, so a plain clone is named for what it is.
    3. The header MAC (CMAC over ``b"OCHDR" || uid || header``) must verify: ``cloned_or_edited``.
    4. By card type: a user card loads this meter's purchase (below); tool cards commission
       (system), change parameters (settings), clear a tamper (reset), zero the purchase count and
       credit (clear), or collect the meter's state (check); a manager card is ``not_for_meters``.
       Every tool payload's MAC is checked like a purchase record's (``edited``).

    A user card: the meter finds its slot by the meter serial at the start of each slot listed in
    the header, checks the purchase record's MAC (``edited``), then applies the sequence rule:
    amount or seq 0 is an empty slot (``nothing_to_load``), ``seq == last_seq`` was loaded before
    (``already_loaded``), ``last_seq + 1`` is loaded (``loaded``), an older one is a ``replay``,
    a newer one leaves a ``sequence_gap``. On every acceptance it writes its return record (key A,
    sealed) and reads it back; on a refusal it writes nothing and changes nothing but its event log.

Commissioning
    A meter is *commissioned* once a system card of its SAM's site taught it the site id and the
    phases setting. A fresh meter still accepts user cards of its SAM's site: the SAM can only
    derive the keys of that one site, so no other site's card could be loaded anyway, and a
    meter installed before the system card came round must not leave the customer without
    supply. Accepting a user card does not commission it.

Meter state is saved and loaded as JSON (:meth:`CardMeter.save`, :meth:`CardMeter.load`); the
SAM (keys) is never saved.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from onecard.card.cardio import CardIO, check_seal, is_blank, seal
from onecard.card.keys import CardKeys
from onecard.card.layout import (
    FIRST_SLOT_SECTOR,
    SETTINGS_MASK,
    STATUS_FLAGS,
    TOOL_LAYOUTS,
    Field,
    Header,
    RecordLayout,
    SlotLayout,
    slot_bytes,
    slot_data_blocks,
    split_blocks,
    tool_blocks,
)
from onecard.card.mifare import GEOMETRY_1K, GEOMETRY_4K
from onecard.card.reader import MifareReader
from onecard.errors import CardError, InvalidInput, WrongKey
from onecard.models import utcnow
from onecard.money import format_fen
from onecard.utility import UtilityKind

STATE_FORMAT = 1
#: The parameters the meter acts on; any others a purchase carries are kept as settings.
UNDERSTOOD_PARAMS = ("price", "alarm1", "alarm2", "overdraft")
#: Plausible readings for the extra return-record fields some layouts declare (heat meters).
SUPPLY_TEMP = Decimal("75.0")
RETURN_TEMP = Decimal("50.0")
IDLE_TEMP = Decimal("20.0")
#: Specific heat of water (J/(kg*K)) and its density (kg/m3), for the flow volume of heat use.
WATER_HEAT_CAPACITY = Decimal(4186)
WATER_DENSITY = Decimal(1000)
_GJ_PER_UNIT = {
    "GJ": Decimal(1),
    "MJ": Decimal("0.001"),
    "MWh": Decimal("3.6"),
    "kWh": Decimal("0.0036"),
}
_PRECISION = 60  # exact Decimal arithmetic: no step's cost is ever rounded


@dataclass(frozen=True)
class MeterSam:
    """The meter's security module: its site, and the card keys it derives from a UID.

    ``keys_for(uid, key_version)`` returns the keys of the card ``uid`` at that key version (tests
    build it from a :class:`~onecard.card.keys.KeyStore` and a session). It may raise for a key
    version it does not hold; the meter then refuses the card as ``wrong_key``.
    """

    site_id: int
    keys_for: Callable[[bytes, int], CardKeys]


@dataclass(frozen=True)
class Visit:
    """What happened when a card was inserted into the meter.

    ``loaded`` is the amount loaded (fen for money meters, smallest units for units meters),
    ``seq`` the purchase number on the card (user cards), ``card_type`` the header's card type
    (None when there is no onecard header), and ``returned`` whether the meter wrote its record
    (return record or check entry) and read it back as written.

    Codes of an accepted card: ``loaded``, ``already_loaded``, ``nothing_to_load`` (user card),
    ``commissioned``, ``settings_applied``, ``reset``, ``cleared``, ``checked`` (tool cards).
    Codes of a refused one (nothing written, nothing changed): ``not_our_card``, ``foreign_site``,
    ``wrong_key``, ``cloned_or_edited``, ``not_my_card``, ``edited``, ``replay``,
    ``sequence_gap``, ``wrong_kind`` (settings card of another kind), ``wrong_meter`` (clear card
    of another meter), ``check_card_full``, ``not_for_meters`` (manager card), ``card_error``
    (the card could not be read, e.g. pulled out).
    """

    accepted: bool
    code: str
    message: str
    loaded: int = 0
    seq: int | None = None
    card_type: str | None = None
    returned: bool = False


@dataclass(frozen=True)
class MeterEvent:
    """One entry of the meter's event log."""

    time: dt.datetime
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"time": self.time.isoformat(), "code": self.code, "message": self.message}

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> MeterEvent:
        return cls(dt.datetime.fromisoformat(data["time"]), data["code"], data["message"])


class _Refused(Exception):
    """A card the meter refuses: nothing is written, nothing changes."""

    def __init__(self, code: str, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.seq = seq


class CardMeter:
    """A prepaid card meter of one utility kind (see the module docstring)."""

    def __init__(
        self,
        kind: UtilityKind,
        serial: str,
        sam: MeterSam,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        layout = kind.card_layout
        if not isinstance(layout, SlotLayout):
            raise InvalidInput(f"utility kind {kind.code!r} has no card slot layout", field="kind")
        serial_field = layout.purchase.by_name["meter_serial"]
        serial = str(serial)
        if not serial.isdigit() or len(serial) > 2 * serial_field.length or not int(serial):
            raise InvalidInput(
                f"a card meter serial is 1 to {2 * serial_field.length} digits, not all zero: "
                f"{serial!r}",
                field="serial",
            )
        if layout.amount == "money" and "price" not in layout.params:
            raise InvalidInput(
                f"{kind.code}: a money card layout needs a price parameter", field="kind"
            )
        self.kind = kind
        self.layout: SlotLayout = layout
        self.serial = serial
        self.sam = sam
        self._clock = clock or utcnow
        self._serial_bytes = serial_field.encode(serial)
        #: The site id learned from a system card (None: not commissioned).
        self.site_id: int | None = None
        #: The phases setting of the system card (single, three, both).
        self.phases: str | None = None
        self.last_seq = 0
        #: Credit in fen (money) or smallest units (units); negative in overdraft.
        self.credit = Decimal(0)
        #: Exact use in the kind's unit; :attr:`cumulative` is its register.
        self.usage = Decimal(0)
        self.tamper = False
        self.battery_low = False
        #: The alarm raised: 0 none, 1 the first level, 2 the second.
        self.alarm = 0
        #: The parameters in force (price, alarm1, ... and whatever else the layout declares).
        self.params: dict[str, Decimal] = layout.resolve_params({})
        #: The highest rate (units per hour) seen by :meth:`run` since the last return record.
        self.peak_rate = Decimal(0)
        self.events: list[MeterEvent] = []
        self._exhausted = self.credit <= self.exhaustion_level

    def __repr__(self) -> str:
        return (
            f"CardMeter({self.kind.code} {self.serial}, credit {self.credit}, "
            f"seq {self.last_seq}, relay {'open' if self.relay_open else 'closed'})"
        )

    # Derived state ----------------------------------------------------------------------------

    @property
    def commissioned(self) -> bool:
        """Whether a system card has commissioned the meter."""
        return self.site_id is not None

    @property
    def money(self) -> bool:
        """Whether purchases carry money (fen) rather than units."""
        return self.layout.amount == "money"

    @property
    def resolution(self) -> Decimal:
        """The kind's smallest unit, in its unit (0.01 for kWh to the hundredth)."""
        return Decimal(1).scaleb(-self.kind.unit_decimals)

    @property
    def _param_factor(self) -> Decimal:
        """Credit units per parameter unit: fen per yuan, or smallest units per unit."""
        return Decimal(100) if self.money else Decimal(10) ** self.kind.unit_decimals

    @property
    def unit_cost(self) -> Decimal:
        """Credit taken by one unit of use: price in fen, or smallest units per unit."""
        if self.money:
            return self.params["price"] * 100
        return Decimal(10) ** self.kind.unit_decimals

    def _level(self, name: str) -> Decimal | None:
        value = self.params.get(name)
        return None if value is None else value * self._param_factor

    @property
    def alarm1_level(self) -> Decimal | None:
        """The first alarm level in credit units (None if the layout has no alarm1)."""
        return self._level("alarm1")

    @property
    def alarm2_level(self) -> Decimal | None:
        """The second alarm level in credit units (None if the layout has no alarm2)."""
        return self._level("alarm2")

    @property
    def exhaustion_level(self) -> Decimal:
        """The credit at or below which the relay opens: minus the overdraft."""
        return -(self._level("overdraft") or Decimal(0))

    @property
    def exhausted(self) -> bool:
        """Whether the credit is gone (down to the overdraft)."""
        return self._exhausted

    @property
    def relay_open(self) -> bool:
        """Whether supply is cut: the credit is exhausted or the meter was tampered with."""
        return self._exhausted or self.tamper

    @property
    def cumulative(self) -> int:
        """The register: total use in smallest units (what the return record carries)."""
        return int(self.usage.scaleb(self.kind.unit_decimals).to_integral_value(ROUND_FLOOR))

    @property
    def remaining(self) -> int:
        """The credit floored to a whole fen or smallest unit (what the return record carries)."""
        return int(self.credit.to_integral_value(ROUND_FLOOR))

    @property
    def status(self) -> int:
        """The status flags of the return record (:data:`~onecard.card.layout.STATUS_FLAGS`)."""
        flags = {
            "relay_open": self.relay_open,
            "tamper": self.tamper,
            "battery_low": self.battery_low,
            "alarm1": self.alarm >= 1,
            "alarm2": self.alarm >= 2,
            "exhausted": self._exhausted,
        }
        return sum(STATUS_FLAGS[name] for name, on in flags.items() if on)

    def describe_amount(self, amount: int | Decimal) -> str:
        """An amount in credit units as people read it: yuan, or the kind's unit."""
        if self.money:
            if isinstance(amount, int):
                return f"{format_fen(amount)} yuan"
            return f"{(Decimal(amount) / 100).quantize(Decimal('0.01'))} yuan"
        return f"{Decimal(amount).scaleb(-self.kind.unit_decimals)} {self.kind.unit}"

    # Events and levels ------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The meter's clock, to the second, in UTC."""
        return self._clock().astimezone(dt.UTC).replace(microsecond=0)

    def _event(self, code: str, message: str) -> None:
        self.events.append(MeterEvent(self.now(), code, message))

    def _level_for(self, credit: Decimal) -> int:
        a2, a1 = self.alarm2_level, self.alarm1_level
        if a2 is not None and credit <= a2:
            return 2
        if a1 is not None and credit <= a1:
            return 1
        return 0

    def _evaluate(self) -> None:
        """Re-evaluate alarms and the relay after the credit or the parameters changed."""
        level = self._level_for(self.credit)
        if level > self.alarm:
            for n in range(self.alarm + 1, level + 1):
                self._event(
                    f"alarm{n}",
                    f"credit {self.describe_amount(self.credit)} is at or below alarm level {n} "
                    f"({self.describe_amount(self._level(f'alarm{n}') or Decimal(0))})",
                )
        elif level < self.alarm:
            self._event("alarm_cleared", f"alarm {self.alarm} cleared (now {level or 'none'})")
        self.alarm = level
        exhausted = self.credit <= self.exhaustion_level
        was_open = self.relay_open
        if exhausted and not self._exhausted:
            self._exhausted = True
            self._event(
                "exhausted",
                f"credit {self.describe_amount(self.credit)} is exhausted: relay opened",
            )
        elif not exhausted and self._exhausted:
            self._exhausted = False
            if was_open and not self.relay_open:
                self._event("relay_closed", "credit restored: relay closed")

    def detect_tamper(self, what: str = "cover opened") -> None:
        """A tamper (a reset card clears it): the relay opens and stays open."""
        if not self.tamper:
            self.tamper = True
            self._event("tamper", f"tamper detected ({what}): relay opened")

    # Use --------------------------------------------------------------------------------------

    def consume(self, quantity: Decimal | int) -> Decimal:
        """Meter ``quantity`` of use (in the kind's unit, e.g. kWh); the quantity metered.

        Nothing is metered while the relay is open. Use stops at exhaustion: the quantity metered
        is capped at the first multiple of the kind's resolution that takes the credit to the
        exhaustion level, where the relay opens. Credit falls by quantity x price (in fen, no
        rounding) for money meters, by the quantity for units meters.
        """
        if isinstance(quantity, bool) or not isinstance(quantity, (int, Decimal)):
            raise TypeError("a quantity is an int or a Decimal")
        q = Decimal(quantity)
        if not q.is_finite() or q < 0:
            raise ValueError(f"a quantity of use must be finite and not negative, not {q}")
        if self.relay_open or q == 0:
            return Decimal(0)
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            cost = self.unit_cost
            metered = q
            if cost > 0:
                room = self.credit - self.exhaustion_level
                cap = (room / cost).quantize(self.resolution, rounding=ROUND_CEILING)
                metered = min(q, max(cap, Decimal(0)))
            self.usage += metered
            self.credit -= metered * cost
        self._evaluate()
        return metered

    def run(self, hours: float, rate: Decimal) -> Decimal:
        """Simulate ``hours`` of use at ``rate`` units per hour (kW for electric); the quantity
        metered (less than asked if the credit runs out on the way)."""
        if isinstance(hours, bool) or hours < 0:
            raise ValueError("hours must not be negative")
        rate = Decimal(rate)
        if not rate.is_finite() or rate < 0:
            raise ValueError("the rate must be finite and not negative")
        if not self.relay_open:
            self.peak_rate = max(self.peak_rate, rate)
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            quantity = Decimal(str(hours)) * rate
        return self.consume(quantity)

    # Inserting a card -------------------------------------------------------------------------

    def insert(self, reader: MifareReader) -> Visit:
        """Handle the card on ``reader`` as the meter would (see the module docstring)."""
        try:
            visit = self._visit(reader)
        except _Refused as refusal:
            visit = Visit(False, refusal.code, refusal.message, seq=refusal.seq)
        self._event(visit.code, visit.message)
        return visit

    def _visit(self, reader: MifareReader) -> Visit:
        try:
            io = CardIO(reader, self._keys_any, self.sam.site_id)
            io.geometry = GEOMETRY_4K  # block numbers agree on 1K and 4K; 4K allows them all
            raw = io.read_header_raw()
        except CardError as exc:
            raise _Refused("card_error", f"the card could not be read or written: {exc}") from None
        header = Header.decode(raw) if raw is not None else None
        if header is None:
            raise _Refused(
                "not_our_card", "this card carries no onecard header (blank, or another system's)"
            )
        if header.site_id != self.sam.site_id:
            raise _Refused(
                "foreign_site",
                f"this card belongs to site {header.site_id}, not to this meter's site "
                f"{self.sam.site_id}",
            )
        try:
            keys = self.sam.keys_for(io.uid, header.key_version)
        except Exception as exc:  # the SAM holds no such key version
            raise _Refused(
                "wrong_key",
                f"the meter's security module has no card keys of version "
                f"{header.key_version}: {exc}",
            ) from None
        self._prove_keys(io, keys)
        assert raw is not None
        if not io.header_mac_ok(raw, keys):
            raise _Refused(
                "cloned_or_edited",
                "the card header's MAC does not match this card: it was copied from another "
                "card (a clone) or edited",
            )
        return self._dispatch(io, header, keys)

    def _keys_any(self, uid: bytes, version: int | None) -> CardKeys:
        if version is None:
            raise WrongKey("the meter needs the card's key version")
        return self.sam.keys_for(uid, version)

    def _prove_keys(self, io: CardIO, keys: CardKeys) -> None:
        """The card must open the first slot sector with the key A the SAM derives for it."""
        block = GEOMETRY_1K.first_block(FIRST_SLOT_SECTOR)
        try:
            io.reader.ensure_auth(block, "A", keys.data_a)
        except WrongKey:
            raise _Refused(
                "wrong_key",
                "the card does not hold the keys this meter derives for its UID: a clone or "
                "a card keyed elsewhere",
            ) from None
        except CardError as exc:
            raise _Refused("card_error", f"the card could not be read or written: {exc}") from None

    def _dispatch(self, io: CardIO, header: Header, keys: CardKeys) -> Visit:
        kind = header.card_type
        try:
            if kind == "user":
                return self._user(io, header, keys)
            if kind == "manager":
                raise _Refused(
                    "not_for_meters", "a manager card authorises office corrections, not meters"
                )
            if kind == "check":
                return self._check(io, keys)
            if kind == "reset":
                return self._reset()
            values = self._tool_payload(io, keys, kind)
        except WrongKey:
            raise _Refused(
                "wrong_key", "the card refused the key this meter derives for it"
            ) from None
        except CardError as exc:
            raise _Refused("card_error", f"the card could not be read or written: {exc}") from None
        if kind == "system":
            return self._commission(header, values)
        if kind == "settings":
            return self._settings(values)
        return self._clear(values)

    # The user card ----------------------------------------------------------------------------

    def _runs(self, start: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """The purchase and return blocks of a slot starting at ``start`` (None if impossible)."""
        free = slot_data_blocks(GEOMETRY_4K)
        if start not in free:
            return None
        at = free.index(start)
        layout = self.layout
        if at + layout.blocks > len(free):
            return None
        purchase = tuple(free[at : at + layout.purchase_blocks])
        returned = tuple(free[at + layout.purchase_blocks : at + layout.blocks])
        return purchase, returned

    def _user(self, io: CardIO, header: Header, keys: CardKeys) -> Visit:
        candidates = []
        for start in header.slot_starts:
            runs = self._runs(start)
            if runs is None:
                continue
            first = io.read_blocks([start], "A", keys.data_a)[start]
            if first[: len(self._serial_bytes)] == self._serial_bytes:
                candidates.append(runs)
        if not candidates:
            raise _Refused("not_my_card", f"this card carries no slot for meter {self.serial}")
        layout = self.layout.purchase
        found: tuple[tuple[int, ...], tuple[int, ...], dict[str, Any]] | None = None
        for purchase_blocks, return_blocks in candidates:
            data = io.read_blocks(purchase_blocks, "A", keys.data_a)
            raw = slot_bytes(purchase_blocks, data)
            if _sealed(layout, raw, io.uid, purchase_blocks[0], keys.mac):
                found = (purchase_blocks, return_blocks, layout.decode(raw))
                break
        if found is None:
            raise _Refused(
                "edited",
                f"the purchase record for meter {self.serial} does not verify: it was edited",
            )
        _, return_blocks, values = found
        seq, amount = int(values["seq"]), int(values["amount"])
        if seq == 0 or amount == 0:
            code, loaded = "nothing_to_load", 0
            message = "the card carries no purchase for this meter"
        elif seq == self.last_seq:
            code, message, loaded = "already_loaded", f"purchase #{seq} was loaded before", 0
        elif seq < self.last_seq:
            raise _Refused(
                "replay", f"purchase #{seq} is older than the meter's #{self.last_seq}", seq=seq
            )
        elif seq > self.last_seq + 1:
            raise _Refused(
                "sequence_gap",
                f"a purchase between #{self.last_seq} and #{seq} was never loaded; ask the "
                "office to re-purchase",
                seq=seq,
            )
        else:
            self._load(seq, amount, values)
            code, loaded = "loaded", amount
            message = (
                f"loaded purchase #{seq}: {self.describe_amount(amount)}; credit now "
                f"{self.describe_amount(self.credit)}"
            )
        returned = self._write_return(io, keys, return_blocks)
        if not returned:
            message += "; the return record could not be written: insert the card again"
        return Visit(
            True, code, message, loaded=loaded, seq=seq, card_type="user", returned=returned
        )

    def _load(self, seq: int, amount: int, values: Mapping[str, Any]) -> None:
        self.last_seq = seq
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            self.credit += amount
        for name in self.layout.params:
            if name in values:
                self.params[name] = Decimal(values[name])
        self._evaluate()

    def _return_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "meter_serial": self.serial,
            "last_seq": self.last_seq,
            "cumulative": self.cumulative,
            "remaining": self.remaining,
            "status": self.status,
            "time": self.now(),
        }
        for f in self.layout.returned.fields:
            if f.name not in values and f.name != "mac":
                values[f.name] = self._simulated(f)
        return {
            f.name: _fit(f, values[f.name]) for f in self.layout.returned.fields if f.name in values
        }

    def _simulated(self, f: Field) -> Any:
        """A plausible value for an extra return field, by its name; zero for unknown ones."""
        flowing = not self.relay_open and self.usage > 0
        if f.name == "peak_power":
            return self.peak_rate
        if f.name == "supply_temp":
            return SUPPLY_TEMP if flowing else IDLE_TEMP
        if f.name == "return_temp":
            return RETURN_TEMP if flowing else IDLE_TEMP
        if f.name == "flow_volume":
            per_gj = _GJ_PER_UNIT.get(self.kind.unit or "")
            if per_gj is None:
                return Decimal(0)
            joules = self.usage * per_gj * Decimal(10) ** 9
            return joules / (WATER_HEAT_CAPACITY * (SUPPLY_TEMP - RETURN_TEMP) * WATER_DENSITY)
        if f.type == "time":
            return self.now()
        if f.type in ("ascii",):
            return ""
        if f.type == "bytes":
            return bytes(f.length)
        if f.type == "bcd":
            return "0"
        return Decimal(0)

    def _write_return(self, io: CardIO, keys: CardKeys, blocks: Sequence[int]) -> bool:
        raw = seal(self.layout.returned, self._return_values(), io.uid, blocks[0], keys.mac)
        data = split_blocks(raw, blocks)
        try:
            io.write_blocks(data, "A", keys.data_a)
            ok = not io.verify(data, "A", keys.data_a)
        except CardError:
            return False
        if ok:
            self.peak_rate = Decimal(0)
        return ok

    # Tool cards -------------------------------------------------------------------------------

    def _tool_payload(self, io: CardIO, keys: CardKeys, card_type: str) -> dict[str, Any]:
        layout = TOOL_LAYOUTS[card_type]
        entry = tool_blocks(GEOMETRY_1K, layout)[0]
        raw = slot_bytes(entry, io.read_blocks(entry, "A", keys.data_a))
        if is_blank(raw) or not _sealed(layout, raw, io.uid, entry[0], keys.mac):
            raise _Refused("edited", f"the {card_type} card's payload does not verify: edited")
        return layout.decode(raw)

    def _commission(self, header: Header, values: Mapping[str, Any]) -> Visit:
        self.site_id = header.site_id
        self.phases = str(values["phases"])
        return Visit(
            True,
            "commissioned",
            f"commissioned for site {header.site_id} (phases: {self.phases})",
            card_type="system",
        )

    def _settings(self, values: Mapping[str, Any]) -> Visit:
        if values["kind"] != self.kind.code:
            raise _Refused(
                "wrong_kind",
                f"this settings card is for {values['kind']} meters, not {self.kind.code}",
            )
        applied = {}
        for name in UNDERSTOOD_PARAMS:
            bit = SETTINGS_MASK.get(name, 0)
            if name in self.layout.params and values["mask"] & bit:
                self.params[name] = Decimal(values[name])
                applied[name] = format(Decimal(values[name]).normalize(), "f")
        self._evaluate()
        text = ", ".join(f"{k} {v}" for k, v in applied.items())
        return Visit(True, "settings_applied", f"settings applied: {text}", card_type="settings")

    def _reset(self) -> Visit:
        was = self.tamper
        self.tamper = False
        self._evaluate()
        state = "open" if self.relay_open else "closed"
        cleared = "tamper cleared" if was else "no tamper to clear"
        return Visit(True, "reset", f"{cleared}; relay {state}", card_type="reset")

    def _clear(self, values: Mapping[str, Any]) -> Visit:
        target = str(values["meter_serial"])
        if target != "0" and target != self.serial.lstrip("0"):
            raise _Refused(
                "wrong_meter", f"this clear card is for meter {target}, not {self.serial}"
            )
        self.last_seq = 0
        self.credit = Decimal(0)
        self.alarm = 0
        self._exhausted = self.credit <= self.exhaustion_level
        return Visit(
            True,
            "cleared",
            "purchase count and credit cleared (the register is kept: "
            f"{self.cumulative} x {self.resolution} {self.kind.unit})",
            card_type="clear",
        )

    def _check(self, io: CardIO, keys: CardKeys) -> Visit:
        layout = TOOL_LAYOUTS["check"]
        entries = tool_blocks(GEOMETRY_1K, layout)
        data = io.read_blocks([b for e in entries for b in e], "A", keys.data_a)
        blank = next((e for e in entries if is_blank(slot_bytes(e, data))), None)
        if blank is None:
            raise _Refused("check_card_full", "the check card has no blank entry left")
        values = {
            "kind": self.kind.code,
            "meter_serial": self.serial,
            "last_seq": self.last_seq,
            "cumulative": self.cumulative,
            "remaining": self.remaining,
            "status": self.status,
            "time": self.now(),
        }
        values = {f.name: _fit(f, values[f.name]) for f in layout.fields if f.name in values}
        raw = seal(layout, values, io.uid, blank[0], keys.mac)
        written = split_blocks(raw, blank)
        io.write_blocks(written, "A", keys.data_a)
        if io.verify(written, "A", keys.data_a):
            raise _Refused("write_failed", "the check entry did not read back as written")
        index = entries.index(blank) + 1
        return Visit(
            True,
            "checked",
            f"state written to entry {index} of the check card",
            card_type="check",
            returned=True,
            seq=self.last_seq,
        )

    # Saving -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The meter's state as JSON-able data (no keys)."""
        return {
            "format": STATE_FORMAT,
            "kind": self.kind.code,
            "serial": self.serial,
            "site_id": self.site_id,
            "phases": self.phases,
            "last_seq": self.last_seq,
            "credit": str(self.credit),
            "usage": str(self.usage),
            "tamper": self.tamper,
            "battery_low": self.battery_low,
            "alarm": self.alarm,
            "exhausted": self._exhausted,
            "params": {k: str(v) for k, v in self.params.items()},
            "peak_rate": str(self.peak_rate),
            "events": [e.to_json() for e in self.events],
        }

    def save(self, path: str | Path) -> None:
        """Write the state to ``path`` as JSON (atomically: a temporary file, then renamed)."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(self.state(), ensure_ascii=False, indent=2) + "\n", "utf-8")
        os.replace(tmp, target)

    def load(self, path: str | Path) -> None:
        """Restore the state saved by :meth:`save`; it must be of this meter (kind and serial)."""
        data = json.loads(Path(path).read_text("utf-8"))
        if data.get("format") != STATE_FORMAT:
            raise InvalidInput(f"{path}: not a card meter state of format {STATE_FORMAT}")
        if data["kind"] != self.kind.code or data["serial"] != self.serial:
            raise InvalidInput(
                f"{path} is the state of {data['kind']} meter {data['serial']}, not of "
                f"{self.kind.code} meter {self.serial}"
            )
        try:
            self.site_id = None if data["site_id"] is None else int(data["site_id"])
            self.phases = data["phases"]
            self.last_seq = int(data["last_seq"])
            self.credit = Decimal(data["credit"])
            self.usage = Decimal(data["usage"])
            self.tamper = bool(data["tamper"])
            self.battery_low = bool(data["battery_low"])
            self.alarm = int(data["alarm"])
            self._exhausted = bool(data["exhausted"])
            self.params = {k: Decimal(v) for k, v in data["params"].items()}
            self.peak_rate = Decimal(data["peak_rate"])
            self.events = [MeterEvent.from_json(e) for e in data["events"]]
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise InvalidInput(f"{path}: a damaged card meter state ({exc})") from None


def _sealed(layout: RecordLayout, raw: bytes, uid: bytes, start: int, mac_key: bytes) -> bool:
    """Whether the record's MAC verifies; False too when an edit left a field undecodable
    (``check_seal`` decodes the whole record, and a non-BCD nibble raises InvalidInput)."""
    try:
        return bool(check_seal(layout, raw, uid, start, mac_key))
    except InvalidInput:
        return False


def _fit(f: Field, value: Any) -> Any:
    """``value`` made to fit field ``f``: numbers quantized to its scale and clamped to range."""
    if f.type not in ("uint", "int"):
        return value
    bits = 8 * f.length
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if f.type == "int" else (0, 2**bits - 1)
    number = Decimal(value)
    steps = number.scaleb(f.scale).to_integral_value(ROUND_FLOOR)
    if f.type == "uint" and f.name == "cumulative":
        steps = steps % (hi + 1)  # a register rolls over
    steps = min(max(steps, Decimal(lo)), Decimal(hi))
    return steps.scaleb(-f.scale) if f.scale else int(steps)


__all__ = ["CardMeter", "MeterEvent", "MeterSam", "Visit"]
