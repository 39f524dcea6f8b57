"""CJ/T 188-2004 frames (household water, heat and gas meters) and a protocol base class.

A frame on the wire::

    FE .. FE   68  T  A0 .. A6  C  L  DI0 DI1 SER  PAYLOAD  CS  16
    (wake-up,      |  address   |  |  data (L bytes)         sum of 68..data mod 256
     optional)     |  14 BCD digits, lowest byte first
                   meter type: 10H-19H water, 20H-29H heat, 30H-39H gas, AAH any

The control code ``C``: bit 7 set in a meter's reply, bit 6 set in an abnormal reply (whose data
is then ``SER ST ST``), bits 5-0 the function (01H read data, 03H read address, 04H write data,
15H write address, 16H write the mechanical register). The data identifier DI is two bytes sent
lowest byte first: the standard's own example of reading the current data (DI 901FH) is
``68 10 44 33 22 11 00 33 78 01 03 1F 90 00 80 16`` (quoted as "from the standard" in
syntropic's unit tests, test_cjt188.c, and used by FoxEdge's CJT188 demo). Many meters and tools
send ``90 1F`` instead (for instance the "universal read" ``FE FE FE 68 10 AA .. AA 01 03 90 1F
01 D2 16`` in LuatOS scripts, and Friendcom's FrameCJT188_2004 samples); so a reply's DI is
accepted in either order, and a meter model can make us send it high byte first.

Values are BCD, lowest byte first (``00 77 66 55`` with two decimals is 556677.00); a quantity
is followed by a unit code (:data:`UNITS`). The real time is seven BCD bytes, ``ss mm hh DD MM
YY YY`` (lowest first: ``31 01 22 11 05 15 20`` is 2015-05-11 22:01:31 in the standard's example
reply). The status word ST is two bytes; in the first, bits 0-1 are the valve (00 open, 01
closed, 11 abnormal) and bit 2 the battery (1: low); the rest is the maker's.

The utility plugins own the meter type bytes and the layout of the current-data payload (water
and gas: flow totals; heat: heat, power, flow, temperatures); they build a :class:`Cjt188Protocol`
with them. Nothing here knows a utility kind.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from onecard.errors import InvalidInput
from onecard.remote.types import (
    BadChecksum,
    BadFrame,
    Frame,
    MeterRef,
    MeterRefused,
    RemoteReading,
    Unsupported,
)

START = 0x68
END = 0x16
WAKE = 0xFE
ANY_TYPE = 0xAA  # the meter type a master uses when it does not know it
BROADCAST = "AAAAAAAAAAAAAA"  # the address of "whichever meter is on this line"
HEADER = 11  # 68 T A0..A6 C L
MIN_FRAME = 13

# Control codes (function in bits 5-0).
READ_DATA = 0x01
READ_ADDRESS = 0x03
WRITE_DATA = 0x04
READ_KEY_VERSION = 0x09
WRITE_ADDRESS = 0x15
WRITE_MECHANICAL = 0x16
REPLY = 0x80  # D7: sent by the meter
ABNORMAL = 0x40  # D6: abnormal reply (data: SER ST ST)
FUNCTION = 0x3F

# Data identifiers used here (CJ/T 188-2004 tables of read and write data).
DI_CURRENT = 0x901F  # read: current metering data
DI_PURCHASE = 0x8105  # read: purchase serial, this purchase, total purchased, remaining, ST
DI_ADDRESS = 0x810A  # read address
DI_WRITE_PURCHASE = 0xA013  # write: purchase serial (1 byte), amount (4 BCD bytes, yuan)
DI_WRITE_TIME = 0xA015  # write standard time
DI_VALVE = 0xA017  # write valve control: 55H open, 99H close

VALVE_OPEN = 0x55
VALVE_CLOSE = 0x99
SERIAL_MODULUS = 256  # the purchase serial is one byte: recharge counts wrap at 256

#: Valve states in ST bits 0-1.
VALVE_STATES = {0b00: "open", 0b01: "closed", 0b11: "abnormal"}


@dataclass(frozen=True)
class Unit:
    """A CJ/T 188 unit code: its symbol, what it measures and its size in the base unit
    (energy in joules, power in watts, volume in m³, flow in m³/h)."""

    code: int
    symbol: str
    dimension: str
    scale: Decimal


_KWH = Decimal(3_600_000)
#: The unit codes of CJ/T 188-2004 (the same table in libcj188.h, KingDa's CJT-188-2004.h and
#: other implementations).
UNITS: dict[int, Unit] = {
    u.code: u
    for u in (
        Unit(0x01, "J", "energy", Decimal(1)),
        Unit(0x02, "Wh", "energy", Decimal(3600)),
        Unit(0x05, "kWh", "energy", _KWH),
        Unit(0x08, "MWh", "energy", _KWH * 1000),
        Unit(0x0A, "MWh×100", "energy", _KWH * 100_000),
        Unit(0x0B, "kJ", "energy", Decimal(1000)),
        Unit(0x0E, "MJ", "energy", Decimal(10) ** 6),
        Unit(0x11, "GJ", "energy", Decimal(10) ** 9),
        Unit(0x13, "GJ×100", "energy", Decimal(10) ** 11),
        Unit(0x14, "W", "power", Decimal(1)),
        Unit(0x17, "kW", "power", Decimal(1000)),
        Unit(0x1A, "MW", "power", Decimal(10) ** 6),
        Unit(0x29, "L", "volume", Decimal("0.001")),
        Unit(0x2C, "m³", "volume", Decimal(1)),
        Unit(0x32, "L/h", "flow", Decimal("0.001")),
        Unit(0x35, "m³/h", "flow", Decimal(1)),
    )
}
_BY_SYMBOL = {u.symbol: u for u in UNITS.values()} | {"m3": UNITS[0x2C], "m3/h": UNITS[0x35]}


def unit(symbol_or_code: str | int) -> Unit:
    """The unit with this symbol (``kWh``, ``m³`` or ``m3`` ...) or code; KeyError if none."""
    if isinstance(symbol_or_code, int):
        return UNITS[symbol_or_code]
    return _BY_SYMBOL[symbol_or_code]


@dataclass(frozen=True)
class Quantity:
    """A value read with its unit code."""

    value: Decimal
    unit_code: int

    @property
    def unit(self) -> Unit:
        try:
            return UNITS[self.unit_code]
        except KeyError:
            raise BadFrame(f"unknown CJ/T 188 unit code {self.unit_code:02X}H") from None

    def to(self, target: str) -> Decimal:
        """The value in the unit ``target`` (same dimension), exactly."""
        to = unit(target)
        if to.dimension != self.unit.dimension:
            raise BadFrame(f"{self.unit.symbol} cannot be given in {to.symbol}")
        return self.value * self.unit.scale / to.scale

    def describe(self) -> str:
        symbol = (
            UNITS[self.unit_code].symbol if self.unit_code in UNITS else f"{self.unit_code:02X}H"
        )
        return f"{self.value} {symbol}"


# BCD ------------------------------------------------------------------------------------------


def bcd_decode(data: bytes, decimals: int = 0) -> Decimal:
    """BCD bytes, lowest first, to a Decimal with ``decimals`` places; BadFrame if not BCD."""
    digits = ""
    for byte in reversed(data):
        high, low = byte >> 4, byte & 0x0F
        if high > 9 or low > 9:
            raise BadFrame(f"not BCD: {data.hex(' ')}")
        digits += f"{high}{low}"
    return Decimal(int(digits or "0")).scaleb(-decimals)


def bcd_encode(value: Decimal | int, size: int, decimals: int = 0, *, wrap: bool = False) -> bytes:
    """A non-negative value as ``size`` BCD bytes, lowest first, truncated to ``decimals``.

    ``wrap`` drops the digits that do not fit (a register rolling over) instead of raising.
    """
    scaled = (Decimal(value).scaleb(decimals)).to_integral_value(rounding=ROUND_DOWN)
    if scaled < 0:
        raise ValueError(f"{value} is negative: BCD fields hold no sign")
    number = int(scaled)
    limit = 10 ** (2 * size)
    if number >= limit:
        if not wrap:
            raise ValueError(f"{value} does not fit in {size} BCD bytes with {decimals} decimals")
        number %= limit
    text = f"{number:0{2 * size}d}"
    return bytes(int(text[i : i + 2], 16) for i in range(2 * size - 2, -1, -2))


def decode_time(data: bytes) -> dt.datetime | None:
    """The 7-byte real time (``ss mm hh DD MM YY YY``, lowest first) as a naive datetime.

    Some meters send it highest first (``YY YY MM DD hh mm ss``); that order is tried when the
    standard one is not a date of 1990-2099. None when neither is (an unset clock, all zeros).
    """
    if len(data) != 7:
        raise BadFrame(f"a real time has 7 bytes, not {len(data)}")
    try:
        v = [int(bcd_decode(bytes([b]))) for b in data]
    except BadFrame:
        return None
    for second, minute, hour, day, month, year in (
        (v[0], v[1], v[2], v[3], v[4], v[6] * 100 + v[5]),
        (v[6], v[5], v[4], v[3], v[2], v[0] * 100 + v[1]),
    ):
        if not 1990 <= year <= 2099:
            continue
        try:
            return dt.datetime(year, month, day, hour, minute, second)
        except ValueError:
            continue
    return None


def encode_time(when: dt.datetime) -> bytes:
    """A datetime as the 7-byte real time, lowest first."""
    parts = (when.second, when.minute, when.hour, when.day, when.month)
    year = when.year
    return bytes(bcd_encode(p, 1)[0] for p in (*parts, year % 100, year // 100))


@dataclass(frozen=True)
class Status:
    """The status word ST (two bytes)."""

    raw: int  # first byte in the low 8 bits

    @property
    def valve(self) -> str:
        return VALVE_STATES.get(self.raw & 0x03, "abnormal")

    @property
    def battery_low(self) -> bool:
        return bool(self.raw & 0x04)

    @property
    def relay(self) -> str | None:
        """The valve as the core models a relay: an open valve lets the supply through
        ('closed'), a closed valve cuts it ('open'); None when the valve reports abnormal."""
        return {"open": "closed", "closed": "open"}.get(self.valve)

    def values(self) -> dict[str, Any]:
        return {"status": f"{self.raw:04X}", "valve": self.valve, "battery_low": self.battery_low}

    @classmethod
    def decode(cls, data: bytes) -> Status:
        if len(data) != 2:
            raise BadFrame(f"a status word has 2 bytes, not {len(data)}")
        return cls(data[0] | data[1] << 8)

    @classmethod
    def of(cls, *, valve_open: bool, battery_low: bool = False) -> Status:
        return cls((0b00 if valve_open else 0b01) | (0x04 if battery_low else 0))

    def encode(self) -> bytes:
        return bytes([self.raw & 0xFF, self.raw >> 8 & 0xFF])


class Reader:
    """Reads a payload field by field (for the plugins' payload layouts)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise BadFrame(
                f"payload too short: {len(self.data)} bytes, need {self.pos + n} "
                f"({self.data.hex(' ')})"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def bcd(self, size: int, decimals: int = 0) -> Decimal:
        return bcd_decode(self.take(size), decimals)

    def quantity(self, size: int = 4, decimals: int = 2) -> Quantity:
        value = self.bcd(size, decimals)
        return Quantity(value, self.take(1)[0])

    def time(self) -> dt.datetime | None:
        return decode_time(self.take(7))

    def status(self) -> Status:
        return Status.decode(self.take(2))

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)


class Writer:
    """Builds a payload field by field (for the emulator's answers)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def bcd(self, value: Decimal | int, size: int, decimals: int = 0) -> Writer:
        self.parts.append(bcd_encode(value, size, decimals, wrap=True))
        return self

    def quantity(
        self, value: Decimal, symbol: str, size: int = 4, decimals: int = 2, *, base: str = ""
    ) -> Writer:
        """``value`` (in ``base``, or already in ``symbol``) written in unit ``symbol``."""
        u = unit(symbol)
        if base:
            value = value * unit(base).scale / u.scale
        self.bcd(value, size, decimals)
        self.parts.append(bytes([u.code]))
        return self

    def time(self, when: dt.datetime) -> Writer:
        self.parts.append(encode_time(when))
        return self

    def status(self, status: Status) -> Writer:
        self.parts.append(status.encode())
        return self

    def raw(self, data: bytes) -> Writer:
        self.parts.append(data)
        return self

    def build(self) -> bytes:
        return b"".join(self.parts)


# Frames ---------------------------------------------------------------------------------------


def address_bytes(address: str) -> bytes:
    """A 14-digit address (or the broadcast AA..AA) as the 7 address bytes, lowest first."""
    if address.upper() == BROADCAST:
        return bytes([0xAA] * 7)
    if len(address) != 14 or not address.isdigit():
        raise ValueError(f"a CJ/T 188 address has 14 digits, not {address!r}")
    return bytes.fromhex(address)[::-1]


def address_text(data: bytes) -> str:
    """The 7 address bytes (lowest first) as the 14-character address printed on the meter."""
    if data == bytes([0xAA] * 7):
        return BROADCAST
    return data[::-1].hex().upper()


def di_bytes(di: int, *, high_first: bool = False) -> bytes:
    """A data identifier as sent: DI0 (low byte) first, or high byte first for such meters."""
    pair = bytes([di & 0xFF, di >> 8])
    return pair[::-1] if high_first else pair


@dataclass(frozen=True)
class Cjt188Frame:
    """A decoded frame (without its wake-up bytes)."""

    meter_type: int
    address: str
    control: int
    data: bytes = b""

    @property
    def is_reply(self) -> bool:
        return bool(self.control & REPLY)

    @property
    def abnormal(self) -> bool:
        return bool(self.control & ABNORMAL)

    @property
    def function(self) -> int:
        return self.control & FUNCTION

    def di(self) -> tuple[int, bool] | None:
        """The data identifier and whether it came high byte first; None without one.

        The order is guessed from the known identifiers (their high byte is 8xH, 9xH, AxH or
        DxH, never their low byte in practice)."""
        if len(self.data) < 2:
            return None
        low_first = self.data[0] | self.data[1] << 8
        high_first = self.data[1] | self.data[0] << 8
        if self.data[1] >> 4 in (0x8, 0x9, 0xA, 0xD):
            return low_first, False
        if self.data[0] >> 4 in (0x8, 0x9, 0xA, 0xD):
            return high_first, True
        return low_first, False

    def encode(self, *, preamble: int = 0) -> bytes:
        if len(self.data) > 255:
            raise ValueError("a CJ/T 188 frame holds at most 255 data bytes")
        body = (
            bytes([START, self.meter_type])
            + address_bytes(self.address)
            + bytes([self.control, len(self.data)])
            + self.data
        )
        return bytes([WAKE] * preamble) + body + bytes([sum(body) & 0xFF, END])


def _start(buffer: bytes) -> int:
    i = 0
    while i < len(buffer) and buffer[i] == WAKE:
        i += 1
    return i


def frame_length(buffer: bytes) -> int | None:
    """For :meth:`Bus.exchange`: the length of the frame at the start of ``buffer`` (wake-up
    bytes included), None while incomplete; BadFrame for bytes that cannot be one, BadChecksum
    for a wrong CS."""
    i = _start(buffer)
    if i == len(buffer):
        return None
    if buffer[i] != START:
        raise BadFrame(f"not a CJ/T 188 frame: {buffer[:32].hex(' ')}")
    if len(buffer) < i + HEADER:
        return None
    total = i + MIN_FRAME + buffer[i + 10]
    if len(buffer) < total:
        return None
    if buffer[total - 1] != END:
        raise BadFrame(f"a CJ/T 188 frame must end in 16H: {buffer[i:total].hex(' ')}")
    if sum(buffer[i : total - 2]) & 0xFF != buffer[total - 2]:
        raise BadChecksum(f"bad CJ/T 188 checksum: {buffer[i:total].hex(' ')}")
    return total


def decode_frame(buffer: bytes) -> Cjt188Frame:
    """Decode one complete frame (wake-up bytes allowed in front, nothing after)."""
    n = frame_length(buffer)
    if n is None or n != len(buffer):
        raise BadFrame(f"not one complete CJ/T 188 frame: {buffer[:64].hex(' ')}")
    i = _start(buffer)
    return Cjt188Frame(
        meter_type=buffer[i + 1],
        address=address_text(buffer[i + 2 : i + 9]),
        control=buffer[i + 9],
        data=bytes(buffer[i + HEADER : n - 2]),
    )


def corrupt(frame: bytes) -> bytes:
    """The same frame with a wrong checksum."""
    return frame[:-2] + bytes([(frame[-2] + 1) & 0xFF]) + frame[-1:]


# The protocol ---------------------------------------------------------------------------------

#: Decodes the current-data payload (after DI and SER) of a 901FH reply.
PayloadDecoder = Callable[[bytes], RemoteReading]


class VolumePayload:
    """The current-data (901FH) payload of a flow meter: CJ/T 188 gives water and gas meters the
    same layout after DI and SER::

        current cumulative volume  4 BCD bytes XXXXXX.XX + unit (2CH m³, 29H L ...)
        volume on settlement day   4 BCD bytes XXXXXX.XX + unit
        real time                  7 BCD bytes ss mm hh DD MM YY YY
        status ST                  2 bytes (valve, battery)

    ``settlement`` names the settlement-day volume in the reading's values. Readings are in
    ``base``; an emulated meter answers in the unit ``sim.values['unit']`` names (``base`` by
    default), with ``sim.values[settlement]`` and ``sim.values['battery_low']``.
    """

    def __init__(self, settlement: str, base: str = "m³") -> None:
        self.settlement = settlement
        self.base = base

    def decode(self, payload: bytes) -> RemoteReading:
        r = Reader(payload)
        current = r.quantity(4, 2)
        settlement = r.quantity(4, 2)
        when = r.time()
        status = r.status()
        return RemoteReading(
            cumulative=current.to(self.base),
            relay=status.relay,
            meter_time=when,
            values={
                self.settlement: str(settlement.to(self.base)),
                "unit_sent": current.unit.symbol,
                **status.values(),
            },
        )

    def encode(self, sim: Any, now: dt.datetime) -> bytes:
        sent = sim.values.get("unit", self.base)
        settlement = Decimal(str(sim.values.get(self.settlement, 0)))
        status = Status.of(
            valve_open=bool(sim.relay_closed), battery_low=bool(sim.values.get("battery_low"))
        )
        return (
            Writer()
            .quantity(sim.cumulative, sent, base=self.base)
            .quantity(settlement, sent, base=self.base)
            .time(now)
            .status(status)
            .build()
        )


#: Encodes the current-data payload an emulated meter answers (SimMeter, its clock's now).
PayloadEncoder = Callable[[Any, dt.datetime], bytes]

#: Meter models: how a meter differs from the standard. ``prepaid`` meters keep their credit
#: (purchase data read with 8105H, recharge with A013H); ``swapped-di`` meters want the data
#: identifier high byte first (``90 1F``).
MODELS = ("standard", "prepaid", "swapped-di", "prepaid-swapped-di")


@dataclass
class Cjt188Protocol:
    """CJ/T 188 for one meter type (the plugin gives the type byte and the payload layout)."""

    meter_type: int
    decode_current: PayloadDecoder
    encode_current: PayloadEncoder
    title: str = ""
    #: Meter type bytes accepted in replies (default: the whole family, e.g. 10H-19H).
    accept_types: Sequence[int] = ()
    preamble: int = 2  # wake-up bytes sent before a request
    name: str = "cjt188"
    link: str = "stream"
    _ser: Any = field(default_factory=lambda: itertools.cycle(range(256)), repr=False)

    def __post_init__(self) -> None:
        if not self.accept_types:
            family = self.meter_type & 0xF0
            self.accept_types = tuple(range(family, family + 10))

    # Configuration --------------------------------------------------------------------------

    def describe(self) -> Mapping[str, Any]:
        return {
            "protocol": self.name,
            "title": self.title or "CJ/T 188-2004",
            "link": self.link,
            "meter_type": f"{self.meter_type:02X}H",
            "address": "14 digits as printed on the meter (A6..A0), zero-padded",
            "line": "serial RS485/M-Bus, usually 2400 baud 8E1, or a transparent TCP gateway",
            "models": list(MODELS),
            "commands": ["trip (close the valve)", "close (open the valve)"],
            "recharge": "prepaid models: DI A013H with the purchase serial (count mod 256)",
        }

    def models(self) -> Sequence[str]:
        return MODELS

    def check_address(self, address: str) -> str:
        text = str(address).strip()
        if text.upper() == BROADCAST:
            return BROADCAST
        if not text.isdigit() or not 1 <= len(text) <= 14:
            raise InvalidInput(
                f"a CJ/T 188 address is up to 14 digits, not {address!r}", field="address"
            )
        return text.zfill(14)

    def _model(self, meter: MeterRef) -> tuple[bool, bool]:
        model = meter.model or "standard"
        if model not in MODELS:
            raise InvalidInput(
                f"unknown CJ/T 188 model {model!r} (known: {', '.join(MODELS)})", field="model"
            )
        return "prepaid" in model, "swapped-di" in model

    # Talking to meters ----------------------------------------------------------------------

    async def _ask(
        self, bus: Any, meter: MeterRef, control: int, di: int, payload: bytes = b""
    ) -> bytes:
        """Send a request and return the reply's payload (after DI and SER)."""
        _, high_first = self._model(meter)
        address = self.check_address(meter.address)
        ser = next(self._ser)
        data = di_bytes(di, high_first=high_first) + bytes([ser]) + payload
        request = Cjt188Frame(self.meter_type, address, control, data).encode(
            preamble=self.preamble
        )
        answer = decode_frame(await bus.exchange(request, frame_length))
        where = f"meter {address}"
        if not answer.is_reply or answer.function != control:
            raise BadFrame(f"{where}: answer with control code {answer.control:02X}H")
        if address != BROADCAST and answer.address != address:
            raise BadFrame(f"{where}: answer from address {answer.address}")
        if answer.meter_type not in self.accept_types:
            raise BadFrame(f"{where}: answer from meter type {answer.meter_type:02X}H")
        if answer.abnormal:
            data = answer.data
            status = Status.decode(data[-2:]) if len(data) >= 2 else None
            detail = f" (ST {status.raw:04X}, valve {status.valve})" if status else ""
            raise MeterRefused(f"{where} refused DI {di:04X}H{detail}", retry=False)
        got = answer.di()
        if got is None or got[0] != di:
            raise BadFrame(f"{where}: answer for another data identifier ({answer.data[:2].hex()})")
        if len(answer.data) < 3:
            raise BadFrame(f"{where}: answer without a serial number")
        if answer.data[2] != ser:
            raise BadFrame(f"{where}: answer to another request (SER {answer.data[2]} not {ser})")
        return answer.data[3:]

    async def read(self, bus: Any, meter: MeterRef) -> RemoteReading:
        prepaid, _ = self._model(meter)
        reading = self.decode_current(await self._ask(bus, meter, READ_DATA, DI_CURRENT))
        if not prepaid:
            return reading
        purchase = decode_purchase(await self._ask(bus, meter, READ_DATA, DI_PURCHASE))
        return RemoteReading(
            cumulative=reading.cumulative,
            bands=reading.bands,
            relay=reading.relay,
            keep_power=reading.keep_power,
            remaining=purchase["remaining"],
            recharge_count=purchase["serial"],
            values={**reading.values, **{f"purchase_{k}": str(v) for k, v in purchase.items()}},
            meter_time=reading.meter_time,
            recharge_count_modulus=SERIAL_MODULUS,
        )

    async def command(self, bus: Any, meter: MeterRef, command: str) -> None:
        if command == "trip":
            operation = VALVE_CLOSE
        elif command == "close":
            operation = VALVE_OPEN
        elif command in ("keep", "release"):
            raise Unsupported(
                f"CJ/T 188 has no keep-supply (保电) command: {command!r} cannot be sent"
            )
        else:
            raise Unsupported(f"unknown relay command {command!r}")
        # The normal reply (84H) acknowledges the command; its ST may still show the old valve
        # state (a valve takes seconds to turn), so the caller reads the state back, as for any
        # relay, to catch a valve that did not move.
        await self._ask(bus, meter, WRITE_DATA, DI_VALVE, bytes([operation]))

    async def recharge(self, bus: Any, meter: MeterRef, amount: Decimal, count: int) -> None:
        prepaid, _ = self._model(meter)
        if not prepaid:
            raise Unsupported(
                f"meter {meter.address} (model {meter.model or 'standard'}) keeps no credit: "
                "use a prepaid model for remote recharge"
            )
        if amount <= 0 or amount != amount.quantize(Decimal("0.01")):
            raise InvalidInput(
                f"a recharge is a positive amount in fen, not {amount}", field="amount"
            )
        if count < 1:
            raise InvalidInput(f"recharge counts start at 1, not {count}", field="count")
        serial = count % SERIAL_MODULUS
        try:
            data = bytes([serial]) + bcd_encode(amount, 4, 2)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="amount") from exc
        payload = await self._ask(bus, meter, WRITE_DATA, DI_WRITE_PURCHASE, data)
        if payload[:1] and payload[0] != serial:
            raise MeterRefused(
                f"meter {meter.address} answered purchase serial {payload[0]}, not {serial}"
            )

    # Emulation ------------------------------------------------------------------------------

    def responder(
        self, meters: Mapping[str, Any], framer: str = "", clock: Any = None
    ) -> Cjt188Responder:
        return Cjt188Responder(self, meters, clock)


def decode_purchase(payload: bytes) -> dict[str, Any]:
    """The 8105H payload: purchase serial, this purchase, total purchased, remaining (yuan)."""
    r = Reader(payload)
    serial = r.take(1)[0]
    result: dict[str, Any] = {
        "serial": serial,
        "this_purchase": r.bcd(4, 2),
        "total_purchased": r.bcd(4, 2),
        "remaining": r.bcd(4, 2),
    }
    return result


class Cjt188Responder:
    """Answers requests as the emulated meters (SimMeters by 14-digit address) would."""

    def __init__(self, protocol: Cjt188Protocol, meters: Mapping[str, Any], clock: Any) -> None:
        self.protocol = protocol
        self.meters = meters
        self.clock = clock
        self.purchases: dict[str, tuple[Decimal, Decimal]] = {}  # last amount, total

    def _now(self) -> dt.datetime:
        now: dt.datetime = self.clock.now() if self.clock is not None else dt.datetime.now(dt.UTC)
        return now.replace(tzinfo=None)

    def corrupt(self, response: bytes) -> bytes:
        return corrupt(response)

    def feed(self, buffer: bytes) -> Frame | None:
        i = _start(buffer)
        if i == len(buffer):
            return None
        if buffer[i] != START:
            return Frame(consumed=i + 1, response=None)
        try:
            n = frame_length(buffer)
        except BadFrame:
            return Frame(consumed=i + 1, response=None)
        if n is None:
            return None
        request = decode_frame(buffer[:n])
        if request.is_reply:
            return Frame(consumed=n, response=None)
        if request.address == BROADCAST:
            if len(self.meters) != 1:
                return Frame(consumed=n, response=None)
            sim = next(iter(self.meters.values()))
        else:
            sim = self.meters.get(request.address)
        if sim is None or request.meter_type not in (*self.protocol.accept_types, ANY_TYPE):
            return Frame(consumed=n, response=None)
        return Frame(consumed=n, response=self._answer(request, sim).encode(), meter=sim)

    def _answer(self, request: Cjt188Frame, sim: Any) -> Cjt188Frame:
        meter_type = self.protocol.meter_type
        address = self.protocol.check_address(sim.address)
        function = request.function
        got = request.di()
        ser = request.data[2] if len(request.data) >= 3 else 0
        status = Status.of(valve_open=bool(sim.relay_closed))

        def reply(payload: bytes) -> Cjt188Frame:
            return Cjt188Frame(meter_type, address, function | REPLY, request.data[:3] + payload)

        def refuse() -> Cjt188Frame:
            data = bytes([ser]) + status.encode()
            return Cjt188Frame(meter_type, address, function | REPLY | ABNORMAL, data)

        if got is None or len(request.data) < 3:
            return refuse()
        di, _ = got
        if function == READ_DATA and di == DI_CURRENT:
            return reply(self.protocol.encode_current(sim, self._now()))
        if function == READ_DATA and di == DI_PURCHASE and sim.remaining is not None:
            last, total = self.purchases.get(address, (Decimal(0), Decimal(0)))
            remaining = max(Decimal(0), sim.remaining)
            payload = (
                bytes([sim.recharge_count % SERIAL_MODULUS])
                + bcd_encode(last, 4, 2, wrap=True)
                + bcd_encode(total, 4, 2, wrap=True)
                + bcd_encode(remaining, 4, 2, wrap=True)
                + status.encode()
            )
            return reply(payload)
        if function == READ_ADDRESS and di == DI_ADDRESS:
            return reply(b"")
        if function == WRITE_DATA and di == DI_VALVE and len(request.data) == 4:
            operation = request.data[3]
            if operation not in (VALVE_OPEN, VALVE_CLOSE):
                return refuse()
            if not sim.command("close" if operation == VALVE_OPEN else "trip"):
                return refuse()
            return reply(Status.of(valve_open=bool(sim.relay_closed)).encode())
        if function == WRITE_DATA and di == DI_WRITE_PURCHASE and len(request.data) == 8:
            if sim.remaining is None:
                return refuse()
            serial = request.data[3]
            try:
                amount = bcd_decode(request.data[4:8], 2)
            except BadFrame:
                return refuse()
            count = sim.recharge_count + 1
            if serial != count % SERIAL_MODULUS or not sim.recharge(amount, count):
                return refuse()
            _, total = self.purchases.get(address, (Decimal(0), Decimal(0)))
            self.purchases[address] = (amount, total + amount)
            return reply(bytes([serial]) + Status.of(valve_open=bool(sim.relay_closed)).encode())
        return refuse()
