"""The card map: record layouts declared as data, the header sector, and slot allocation.

A record layout is a list of fields ``(name, offset, type, length)`` with an optional ``scale``
(decimal places of a fixed-point number); one declaration both encodes and decodes. Plugins
declare a :class:`SlotLayout` (a purchase record the office writes and a return record the meter
writes) and set it on their utility kind; the core owns everything else on the card:

=========  ========================================================================================
sector 0   block 0 is the manufacturer block (UID); blocks 1-2 unused
sector 1   the header (48 bytes, :data:`HEADER`): readable by anyone with the public key A, written
           only by the office
2 ..       the slots of the card's profile, in profile order, each ``purchase_blocks`` then
           ``return_blocks`` data blocks; a slot may run on into the next sector (trailers are
           skipped). Tool cards keep their payload here instead.
=========  ========================================================================================

Every record ends in an 8-byte MAC: AES-CMAC under the card's MAC key (diversified from its UID)
of ``uid || start block || record without its MAC``, so a record copied to another card, moved to
another slot or edited in one bit no longer verifies.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from onecard.card.mifare import BLOCK_SIZE, Geometry, geometry
from onecard.errors import InvalidInput, PluginError

FIELD_TYPES = ("uint", "int", "bcd", "ascii", "bytes", "time")
MAC_LENGTH = 8
HEADER_SECTOR = 1
FIRST_SLOT_SECTOR = 2
MAX_SLOTS = 15
MAGIC = "OC"
FORMAT = 1

#: Card types as the header stores them.
CARD_TYPES = {
    "user": 1,
    "system": 2,
    "manager": 3,
    "settings": 4,
    "reset": 5,
    "clear": 6,
    "check": 7,
}
CARD_TYPE_NAMES = {number: name for name, number in CARD_TYPES.items()}

#: Fields every purchase and every return record must declare (the core reads them).
PURCHASE_REQUIRED = ("meter_serial", "seq", "amount", "time", "mac")
RETURN_REQUIRED = ("meter_serial", "last_seq", "cumulative", "remaining", "status", "time", "mac")

#: Status flags of a return record.
STATUS_FLAGS = {
    "relay_open": 0x01,
    "tamper": 0x02,
    "battery_low": 0x04,
    "alarm1": 0x08,
    "alarm2": 0x10,
    "exhausted": 0x20,
    "refused": 0x40,
}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def flags_of(status: int) -> list[str]:
    """The names of the status flags set in ``status``."""
    return [name for name, bit in STATUS_FLAGS.items() if status & bit]


@dataclass(frozen=True)
class Field:
    """One field of a record: ``length`` bytes at ``offset``, big-endian where numeric.

    ``uint``/``int``: unsigned/two's-complement integers, scaled by ``10**-scale`` when ``scale``
    is set (the value is then a :class:`~decimal.Decimal`); ``bcd``: decimal digits, two per byte
    (a string); ``ascii``: text padded with NUL; ``bytes``: raw; ``time``: unsigned seconds since
    1970-01-01 UTC (4 bytes).
    """

    name: str
    offset: int
    type: str
    length: int
    scale: int = 0

    @classmethod
    def of(cls, spec: Field | Mapping[str, Any] | Sequence[Any]) -> Field:
        """A field from a declaration: a Field, a mapping, or ``(name, offset, type, length)``."""
        if isinstance(spec, Field):
            return spec
        if isinstance(spec, Mapping):
            return cls(**spec)
        return cls(*spec)

    def check(self, where: str) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise PluginError(f"{where}: field name {self.name!r} must be lower_snake_case")
        if self.type not in FIELD_TYPES:
            raise PluginError(f"{where}: field {self.name!r} has unknown type {self.type!r}")
        if not isinstance(self.offset, int) or self.offset < 0:
            raise PluginError(f"{where}: field {self.name!r} needs a non-negative offset")
        limits = {"uint": 8, "int": 8, "bcd": 10, "ascii": 48, "bytes": 48, "time": 4}
        if not isinstance(self.length, int) or not 1 <= self.length <= limits[self.type]:
            raise PluginError(
                f"{where}: field {self.name!r} of type {self.type} cannot be "
                f"{self.length} bytes long (1 to {limits[self.type]})"
            )
        if self.type == "time" and self.length != 4:
            raise PluginError(f"{where}: time field {self.name!r} must be 4 bytes")
        if self.scale and self.type not in ("uint", "int"):
            raise PluginError(f"{where}: only uint and int fields take a scale ({self.name!r})")
        if not isinstance(self.scale, int) or not 0 <= self.scale <= 6:
            raise PluginError(f"{where}: field {self.name!r} scale must be 0 to 6")

    @property
    def end(self) -> int:
        return self.offset + self.length

    def encode(self, value: Any) -> bytes:
        """The bytes of ``value``; InvalidInput naming the field if it does not fit."""
        try:
            return self._encode(value)
        except (ValueError, TypeError, InvalidOperation, OverflowError) as exc:
            raise InvalidInput(
                f"{self.name}: {value!r} cannot be written as {self.type}[{self.length}]: {exc}",
                field=self.name,
            ) from None

    def _encode(self, value: Any) -> bytes:
        if self.type in ("uint", "int"):
            number = self._integer(value)
            signed = self.type == "int"
            return number.to_bytes(self.length, "big", signed=signed)
        if self.type == "bcd":
            digits = str(value)
            if not digits.isdigit() or len(digits) > 2 * self.length:
                raise ValueError(f"needs up to {2 * self.length} decimal digits")
            return bytes.fromhex(digits.rjust(2 * self.length, "0"))
        if self.type == "ascii":
            raw = str(value).encode("ascii")
            if len(raw) > self.length:
                raise ValueError(f"longer than {self.length} characters")
            return raw.ljust(self.length, b"\0")
        if self.type == "bytes":
            raw = bytes(value)
            if len(raw) != self.length:
                raise ValueError(f"needs exactly {self.length} bytes")
            return raw
        # time
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise ValueError("a time must carry its time zone")
            value = int((value - _EPOCH).total_seconds())
        return int(value).to_bytes(4, "big")

    def _integer(self, value: Any) -> int:
        if isinstance(value, bool):
            raise TypeError("not a number")
        if self.scale:
            scaled = Decimal(str(value)).scaleb(self.scale)
            if scaled != scaled.to_integral_value():
                raise ValueError(f"has more than {self.scale} decimal places")
            return int(scaled)
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise ValueError("is not a whole number")
            return int(value)
        if not isinstance(value, int):
            raise TypeError("not a whole number")
        return value

    def decode(self, data: bytes) -> Any:
        raw = data[self.offset : self.end]
        if self.type in ("uint", "int"):
            number = int.from_bytes(raw, "big", signed=self.type == "int")
            return Decimal(number).scaleb(-self.scale) if self.scale else number
        if self.type == "bcd":
            text = raw.hex()
            if not text.isdigit():
                raise InvalidInput(f"{self.name}: {text} is not BCD", field=self.name)
            return text.lstrip("0") or "0"
        if self.type == "ascii":
            return raw.rstrip(b"\0").decode("ascii", errors="replace")
        if self.type == "bytes":
            return bytes(raw)
        return _EPOCH + dt.timedelta(seconds=int.from_bytes(raw, "big"))


class RecordLayout:
    """A fixed-size record made of :class:`Field` declarations, checked when declared."""

    def __init__(
        self,
        name: str,
        fields: Iterable[Field | Mapping[str, Any] | Sequence[Any]],
        size: int,
        *,
        required: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.size = size
        self.fields = tuple(Field.of(f) for f in fields)
        self.by_name = {f.name: f for f in self.fields}
        self._check(required)

    def _check(self, required: Sequence[str]) -> None:
        where = self.name
        if len(self.by_name) != len(self.fields):
            raise PluginError(f"{where}: a field name is declared twice")
        used: list[Field] = []
        for f in sorted(self.fields, key=lambda f: f.offset):
            f.check(where)
            if f.end > self.size:
                raise PluginError(
                    f"{where}: field {f.name!r} ends at byte {f.end}, past the record's "
                    f"{self.size} bytes"
                )
            if used and used[-1].end > f.offset:
                raise PluginError(f"{where}: fields {used[-1].name!r} and {f.name!r} overlap")
            used.append(f)
        missing = [n for n in required if n not in self.by_name]
        if missing:
            raise PluginError(f"{where}: required fields missing: {', '.join(missing)}")
        mac = self.by_name.get("mac")
        if mac is not None and (mac.type != "bytes" or mac.length != MAC_LENGTH):
            raise PluginError(f"{where}: the mac field must be bytes[{MAC_LENGTH}]")
        if mac is not None and any(f.end > mac.offset for f in self.fields if f is not mac):
            raise PluginError(f"{where}: the mac field must come after every other field")

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """The record's bytes (``size`` long); unknown or missing fields name themselves."""
        unknown = set(values) - set(self.by_name)
        if unknown:
            raise InvalidInput(
                f"{self.name}: unknown fields {', '.join(sorted(unknown))}",
                field=sorted(unknown)[0],
            )
        out = bytearray(self.size)
        for f in self.fields:
            if f.name not in values:
                if f.name == "mac":
                    continue
                raise InvalidInput(f"{self.name}: field {f.name!r} is missing", field=f.name)
            out[f.offset : f.end] = f.encode(values[f.name])
        return bytes(out)

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < self.size:
            raise InvalidInput(f"{self.name}: {len(data)} bytes, needs {self.size}")
        return {f.name: f.decode(data) for f in self.fields}

    def signed_part(self, data: bytes) -> bytes:
        """The bytes the MAC covers: everything before the MAC field."""
        return bytes(data[: self.by_name["mac"].offset])

    def with_mac(self, data: bytes, mac: bytes) -> bytes:
        f = self.by_name["mac"]
        return bytes(data[: f.offset]) + mac + bytes(data[f.end :])

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": f.name, "offset": f.offset, "type": f.type, "length": f.length}
            | ({"scale": f.scale} if f.scale else {})
            for f in self.fields
        ]


@dataclass(frozen=True)
class ParamSpec:
    """A parameter a card meter takes from each purchase (a price, an alarm level ...)."""

    default: Decimal
    minimum: Decimal = Decimal(0)
    maximum: Decimal | None = None
    unit: str = ""


@dataclass
class SlotLayout:
    """What a utility kind keeps in its slot of the one-card (a plugin's declaration).

    ``amount`` says whether the purchase carries money (fen) or units (the kind's smallest unit);
    ``params`` are the purchase fields a card meter needs beyond the core's own, with their
    defaults and limits. Implements :class:`onecard.interfaces.CardSlotLayout`.
    """

    purchase_blocks: int
    return_blocks: int
    purchase: RecordLayout = field(init=False)
    returned: RecordLayout = field(init=False)
    purchase_spec: Sequence[Any] = ()
    return_spec: Sequence[Any] = ()
    amount: str = "money"
    params: Mapping[str, ParamSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.amount not in ("money", "units"):
            raise PluginError(
                f"slot layout: amount must be 'money' or 'units', not {self.amount!r}"
            )
        for name, blocks in (("purchase", self.purchase_blocks), ("return", self.return_blocks)):
            if not isinstance(blocks, int) or not 1 <= blocks <= 6:
                raise PluginError(f"slot layout: {name}_blocks must be 1 to 6")
        self.purchase = RecordLayout(
            "purchase record",
            self.purchase_spec,
            self.purchase_blocks * BLOCK_SIZE,
            required=PURCHASE_REQUIRED,
        )
        self.returned = RecordLayout(
            "return record",
            self.return_spec,
            self.return_blocks * BLOCK_SIZE,
            required=RETURN_REQUIRED,
        )
        for name in (*PURCHASE_REQUIRED, *RETURN_REQUIRED):
            layout = self.purchase if name in self.purchase.by_name else self.returned
            f = layout.by_name.get(name)
            if f is not None and name == "meter_serial" and (f.offset, f.type) != (0, "bcd"):
                raise PluginError(f"{layout.name}: meter_serial must be BCD at offset 0")
        unknown = [p for p in self.params if p not in self.purchase.by_name]
        if unknown:
            raise PluginError(f"slot layout: params {unknown} are not purchase record fields")
        core = {"meter_serial", "seq", "amount", "time", "mac"}
        undeclared = [
            f.name for f in self.purchase.fields if f.name not in core and f.name not in self.params
        ]
        if undeclared:
            raise PluginError(
                f"slot layout: purchase fields {undeclared} need a ParamSpec in params "
                "(a default and limits)"
            )

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> SlotLayout:
        """A layout from plain data (as a plugin might load it from JSON or TOML)."""
        params = {
            name: ParamSpec(
                default=Decimal(str(p["default"])),
                minimum=Decimal(str(p.get("minimum", 0))),
                maximum=Decimal(str(p["maximum"])) if "maximum" in p else None,
                unit=str(p.get("unit", "")),
            )
            for name, p in spec.get("params", {}).items()
        }
        return cls(
            purchase_blocks=spec["purchase"]["blocks"],
            return_blocks=spec["return"]["blocks"],
            purchase_spec=spec["purchase"]["fields"],
            return_spec=spec["return"]["fields"],
            amount=spec.get("amount", "money"),
            params=params,
        )

    # The CardSlotLayout interface.
    @property
    def blocks(self) -> int:
        return self.purchase_blocks + self.return_blocks

    @property
    def purchase_fields(self) -> Sequence[Field]:
        return self.purchase.fields

    @property
    def return_fields(self) -> Sequence[Field]:
        return self.returned.fields

    def resolve_params(self, given: Mapping[str, Any] | None) -> dict[str, Decimal]:
        """The purchase parameters: given values checked against their limits, else defaults."""
        given = dict(given or {})
        unknown = set(given) - set(self.params)
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidInput(
                f"unknown card meter parameter {name!r} (known: {', '.join(self.params)})",
                field=name,
            )
        out: dict[str, Decimal] = {}
        for name, spec in self.params.items():
            raw = given.get(name, spec.default)
            try:
                value = Decimal(str(raw))
            except InvalidOperation:
                raise InvalidInput(f"{name}: {raw!r} is not a number", field=name) from None
            if not value.is_finite() or value < spec.minimum:
                raise InvalidInput(f"{name} must be at least {spec.minimum}", field=name)
            if spec.maximum is not None and value > spec.maximum:
                raise InvalidInput(f"{name} must be at most {spec.maximum}", field=name)
            self.purchase.by_name[name].encode(value)  # fits the field, with its scale
            out[name] = value
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "blocks": self.blocks,
            "purchase_blocks": self.purchase_blocks,
            "return_blocks": self.return_blocks,
            "amount": self.amount,
            "purchase": self.purchase.describe(),
            "return": self.returned.describe(),
            "params": {
                k: {"default": str(v.default), "unit": v.unit} for k, v in self.params.items()
            },
        }


# The header sector ------------------------------------------------------------------------------

HEADER = RecordLayout(
    "card header",
    [
        ("magic", 0, "ascii", 2),
        ("format", 2, "uint", 1),
        ("card_type", 3, "uint", 1),
        ("site_id", 4, "uint", 4),
        ("card_serial", 8, "uint", 4),
        ("customer_no", 12, "uint", 4),
        ("profile", 16, "uint", 2),
        ("key_version", 18, "uint", 1),
        ("reissue_count", 19, "uint", 1),
        ("issued_at", 20, "time", 4),
        ("slot_count", 24, "uint", 1),
        ("slot_starts", 25, "bytes", MAX_SLOTS),
        ("mac", 40, "bytes", MAC_LENGTH),
    ],
    3 * BLOCK_SIZE,
)


@dataclass(frozen=True)
class Header:
    """The decoded header of a onecard card."""

    card_type: str
    site_id: int
    card_serial: int
    customer_no: int
    profile: int
    key_version: int
    reissue_count: int
    issued_at: dt.datetime
    slot_starts: tuple[int, ...]

    def values(self) -> dict[str, Any]:
        starts = bytes(self.slot_starts).ljust(MAX_SLOTS, b"\0")
        return {
            "magic": MAGIC,
            "format": FORMAT,
            "card_type": CARD_TYPES[self.card_type],
            "site_id": self.site_id,
            "card_serial": self.card_serial,
            "customer_no": self.customer_no,
            "profile": self.profile,
            "key_version": self.key_version,
            "reissue_count": self.reissue_count,
            "issued_at": self.issued_at.replace(microsecond=0),
            "slot_count": len(self.slot_starts),
            "slot_starts": starts,
        }

    def encode(self) -> bytes:
        return HEADER.encode(self.values())

    @classmethod
    def decode(cls, data: bytes) -> Header | None:
        """The header in ``data``, or None when it is not a onecard header at all."""
        values = HEADER.decode(data)
        if values["magic"] != MAGIC or values["format"] != FORMAT:
            return None
        card_type = CARD_TYPE_NAMES.get(values["card_type"])
        count = values["slot_count"]
        if card_type is None or count > MAX_SLOTS:
            return None
        return cls(
            card_type=card_type,
            site_id=values["site_id"],
            card_serial=values["card_serial"],
            customer_no=values["customer_no"],
            profile=values["profile"],
            key_version=values["key_version"],
            reissue_count=values["reissue_count"],
            issued_at=values["issued_at"],
            slot_starts=tuple(values["slot_starts"][:count]),
        )


def header_blocks(geo: Geometry) -> list[int]:
    return geo.data_blocks(HEADER_SECTOR)


# Slot allocation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlacedSlot:
    """A slot placed on the card: its kind, label and physical blocks."""

    index: int
    kind: str
    label: str
    layout: SlotLayout
    purchase_blocks: tuple[int, ...]
    return_blocks: tuple[int, ...]

    @property
    def start_block(self) -> int:
        return self.purchase_blocks[0]


@dataclass(frozen=True)
class CardMap:
    """Where everything of one profile lies on a card."""

    profile: str
    geometry: Geometry
    slots: tuple[PlacedSlot, ...]

    @property
    def slot_starts(self) -> tuple[int, ...]:
        return tuple(s.start_block for s in self.slots)

    def sectors(self) -> list[int]:
        return sorted({self.geometry.sector_of(b) for s in self.slots for b in _all(s)})

    def slot(self, index: int) -> PlacedSlot:
        return self.slots[index]


def _all(slot: PlacedSlot) -> tuple[int, ...]:
    return slot.purchase_blocks + slot.return_blocks


def slot_data_blocks(geo: Geometry) -> list[int]:
    """The data blocks the slots may use: every data block from sector 2 on."""
    return [b for s in range(FIRST_SLOT_SECTOR, geo.sectors) for b in geo.data_blocks(s)]


def allocate(profile: str, card_size: str, slots: Sequence[tuple[str, str, SlotLayout]]) -> CardMap:
    """Place ``slots`` (kind, label, layout) one after another; refuse what does not fit."""
    geo = geometry(card_size)
    if not slots:
        raise InvalidInput(f"profile {profile!r} has no slots", field="slots")
    if len(slots) > MAX_SLOTS:
        raise InvalidInput(
            f"profile {profile!r} has {len(slots)} slots; a card holds at most {MAX_SLOTS}",
            field="slots",
        )
    free = slot_data_blocks(geo)
    needed = sum(layout.blocks for _, _, layout in slots)
    if needed > len(free):
        raise InvalidInput(
            f"profile {profile!r} needs {needed} data blocks; a {card_size} card has "
            f"{len(free)} for slots",
            field="slots",
        )
    placed: list[PlacedSlot] = []
    position = 0
    for index, (kind, label, layout) in enumerate(slots):
        purchase = tuple(free[position : position + layout.purchase_blocks])
        position += layout.purchase_blocks
        ret = tuple(free[position : position + layout.return_blocks])
        position += layout.return_blocks
        placed.append(PlacedSlot(index, kind, label, layout, purchase, ret))
    seen: set[int] = set()
    for slot in placed:  # the invariant the start-up check relies on
        blocks = set(_all(slot))
        if blocks & seen or any(geo.is_trailer(b) for b in blocks):
            raise InvalidInput(f"profile {profile!r}: slot {slot.label} overlaps", field="slots")
        seen |= blocks
    return CardMap(profile, geo, tuple(placed))


def place_from_starts(
    profile: str,
    card_size: str,
    slots: Sequence[tuple[str, str, SlotLayout]],
    starts: Sequence[int],
) -> CardMap:
    """The card map of a card whose header lists ``starts`` (as it was issued)."""
    geo = geometry(card_size)
    free = slot_data_blocks(geo)
    index_of = {b: i for i, b in enumerate(free)}
    placed = []
    for index, ((kind, label, layout), start) in enumerate(zip(slots, starts, strict=True)):
        if start not in index_of or index_of[start] + layout.blocks > len(free):
            raise InvalidInput(f"slot {index} starts at block {start}, outside the slot area")
        at = index_of[start]
        purchase = tuple(free[at : at + layout.purchase_blocks])
        ret = tuple(free[at + layout.purchase_blocks : at + layout.blocks])
        placed.append(PlacedSlot(index, kind, label, layout, purchase, ret))
    return CardMap(profile, geo, tuple(placed))


def slot_bytes(blocks: Sequence[int], read: dict[int, bytes]) -> bytes:
    return b"".join(read[b] for b in blocks)


def split_blocks(data: bytes, blocks: Sequence[int]) -> dict[int, bytes]:
    return {b: data[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE] for i, b in enumerate(blocks)}


# Tool cards -------------------------------------------------------------------------------------

#: What tool cards carry after their header, one record of three blocks each (core-owned).
#: A check card holds as many entries as its slot area has room for; each meter fills the next
#: blank one.
TOOL_LAYOUTS: dict[str, RecordLayout] = {
    "system": RecordLayout(
        "system card",
        [("phases", 0, "ascii", 8), ("time", 8, "time", 4), ("mac", 40, "bytes", MAC_LENGTH)],
        3 * BLOCK_SIZE,
    ),
    "settings": RecordLayout(
        "settings card",
        [
            ("kind", 0, "ascii", 16),
            ("price", 16, "uint", 4, 4),
            ("alarm1", 20, "uint", 4, 4),
            ("alarm2", 24, "uint", 4, 4),
            ("overdraft", 28, "uint", 4, 4),
            ("time", 32, "time", 4),
            ("mask", 36, "uint", 1),
            ("mac", 40, "bytes", MAC_LENGTH),
        ],
        3 * BLOCK_SIZE,
    ),
    "clear": RecordLayout(
        "clear card",
        [("meter_serial", 0, "bcd", 6), ("time", 6, "time", 4), ("mac", 40, "bytes", MAC_LENGTH)],
        3 * BLOCK_SIZE,
    ),
    "check": RecordLayout(
        "check card entry",
        [
            ("kind", 0, "ascii", 16),
            ("meter_serial", 16, "bcd", 6),
            ("last_seq", 22, "uint", 4),
            ("cumulative", 26, "uint", 4),
            ("remaining", 30, "int", 4),
            ("status", 34, "uint", 1),
            ("time", 35, "time", 4),
            ("mac", 40, "bytes", MAC_LENGTH),
        ],
        3 * BLOCK_SIZE,
    ),
}


#: Which parameters a settings card sets (its ``mask`` field); the others stay as they are.
SETTINGS_MASK = {"price": 0x01, "alarm1": 0x02, "alarm2": 0x04, "overdraft": 0x08}


def tool_blocks(geo: Geometry, layout: RecordLayout) -> list[tuple[int, ...]]:
    """The block runs of a tool card's records: one for most, as many as fit for a check card."""
    free = slot_data_blocks(geo)
    per = layout.size // BLOCK_SIZE
    runs = [tuple(free[i : i + per]) for i in range(0, len(free) - per + 1, per)]
    return runs if layout.name == "check card entry" else runs[:1]
