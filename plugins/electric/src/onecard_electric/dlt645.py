"""DL/T 645-2007: read energy, time-of-use bands, the relay and line values; trip and close.

:class:`Dlt645Protocol` talks raw frames (see :mod:`onecard_electric.dlt645_codec`) over the
core's :class:`onecard.remote.bus.Bus`, on an RS485 line or through a transparent TCP gateway.
:class:`Dlt645Responder` plays DL/T 645 meters for the fleet emulator from
:class:`onecard.fleet.sim.SimMeter` state.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
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
from onecard_electric import dlt645_codec as c

#: onecard's relay commands to the N1 byte of a relay control frame. ``close`` closes directly
#: (1CH), not "close allowed" (1BH, which waits for the customer's button).
RELAY_CODES = {
    "trip": c.RELAY_TRIP,
    "close": c.RELAY_CLOSE,
    "keep": c.RELAY_KEEP,
    "release": c.RELAY_KEEP_RELEASE,
}

#: What the line values are read from: data identifier, bytes, decimals, signed.
VALUES = {
    "voltage": (c.DI_VOLTAGE, 2, 1, False),
    "current": (c.DI_CURRENT, 3, 3, True),
    "power": (c.DI_POWER, 3, 4, True),
}

_HEX8 = re.compile(r"^[0-9A-Fa-f]{8}$")


def _hex4(value: str, field: str) -> bytes:
    if not isinstance(value, str) or not _HEX8.match(value):
        raise InvalidInput(f"{field} must be 8 hexadecimal digits, not {value!r}", field=field)
    return bytes.fromhex(value)


class Dlt645Protocol:
    """DL/T 645-2007 over a raw byte stream (``link = "stream"``).

    ``password`` is the 4 bytes PA P0 P1 P2 as they go on the wire, in hex, the permission level
    first (``02000000``: level 02, password 000000); ``operator`` the operator code C0-C3
    (``00000000``). Relay commands are valid for ``command_validity`` after the moment they are
    sent (the meter's clock; ``now`` gives that moment, local time by default).
    """

    name = "dlt645"
    link = "stream"

    def __init__(
        self,
        *,
        password: str = "02000000",
        operator: str = "00000000",
        command_validity: dt.timedelta = dt.timedelta(minutes=30),
        values: Sequence[str] = ("voltage", "current", "power"),
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.password = _hex4(password, "password")
        self.operator = _hex4(operator, "operator")
        unknown = [v for v in values if v not in VALUES]
        if unknown:
            raise InvalidInput(f"unknown line values: {', '.join(unknown)}", field="values")
        self.values = tuple(values)
        self.command_validity = command_validity
        self.now = now or dt.datetime.now
        self._no_block: set[str] = set()  # meters that refused the 0001FF00 block read

    # Configuration ----------------------------------------------------------------------------

    def describe(self) -> Mapping[str, Any]:
        return {
            "name": self.name,
            "link": self.link,
            "standard": "DL/T 645-2007",
            "address": "the meter's communication address: up to 12 decimal digits "
            "(printed on the nameplate; zero-padded on the left)",
            "gateway": "an RS485 line (usually 2400 baud 8E1) or a transparent TCP gateway",
            "reads": {
                "cumulative": "forward active energy total 00010000 (kWh)",
                "bands": "tariffs 1-4 of 0001FF00 (sharp, peak, flat, valley)",
                "relay": "status word 3 (04000503), bit 4; keep power bit 12",
                "values": {name: f"{VALUES[name][0]:08X}" for name in self.values},
            },
            "commands": {name: f"{code:02X}" for name, code in RELAY_CODES.items()},
            "password": self.password.hex().upper(),
            "operator": self.operator.hex().upper(),
            "recharge": "unsupported (vendor-specific, through the meter's ESAM)",
        }

    def models(self) -> Sequence[str]:
        return ()

    def check_address(self, address: str) -> str:
        text = str(address).strip() if address is not None else ""
        if not text or not text.isdigit() or not text.isascii():
            raise InvalidInput(
                f"a DL/T 645 address is up to 12 decimal digits, not {address!r}", field="address"
            )
        if len(text) > 12:
            raise InvalidInput(
                f"a DL/T 645 address has at most 12 digits, not {len(text)}", field="address"
            )
        text = text.zfill(12)
        if text == c.BROADCAST:
            raise InvalidInput(
                "999999999999 is the broadcast address, no meter's own", field="address"
            )
        return text

    # Talking to a meter -----------------------------------------------------------------------

    async def _exchange(self, bus: Any, address: str, request: bytes, function: int) -> bytes:
        raw = await bus.exchange(request, c.frame_length)
        answer = c.decode_frame(raw)
        if not answer.is_reply or answer.function != function:
            raise BadFrame(
                f"expected a reply to {function:02X}H, got control {answer.control:02X}H"
            )
        if answer.address != address:
            raise BadFrame(f"an answer from meter {answer.address}, not {address}")
        if answer.is_abnormal:
            code = answer.error or 0
            raise MeterRefused(
                f"meter {address} refused ({code:02X}H: {c.describe_error(code)})", retry=False
            )
        return answer.data

    async def read_di(self, bus: Any, address: str, di: int, size: int = 0) -> bytes:
        """The value bytes (after the echoed DI) of data identifier ``di``, at least ``size``."""
        data = await self._exchange(bus, address, c.read_request(address, di), c.Control.READ_DATA)
        if data[:4] != c.di_bytes(di):
            raise BadFrame(f"asked for {di:08X}, the answer is for {data[:4][::-1].hex().upper()}")
        if len(data) - 4 < size:
            raise BadFrame(f"{di:08X} has {size} bytes, the answer {len(data) - 4}")
        return data[4:]

    async def _energy(self, bus: Any, address: str) -> tuple[Decimal, dict[str, Decimal]]:
        if address not in self._no_block:
            try:
                block = await self.read_di(bus, address, c.DI_FORWARD_BLOCK)
            except MeterRefused:
                self._no_block.add(address)
            else:
                if len(block) < 4 or len(block) % 4:
                    raise BadFrame(f"an energy block of {len(block)} bytes")
                total = c.decode_decimal(block[:4], 2)
                bands = {
                    band: c.decode_decimal(block[4 + 4 * i : 8 + 4 * i], 2)
                    for i, band in enumerate(c.TARIFF_BANDS)
                    if len(block) >= 8 + 4 * i
                }
                return total, bands
        total = c.decode_decimal((await self.read_di(bus, address, c.DI_FORWARD_TOTAL, 4))[:4], 2)
        bands = {}
        for band, di in zip(c.TARIFF_BANDS, c.DI_FORWARD_TARIFFS, strict=True):
            try:
                bands[band] = c.decode_decimal((await self.read_di(bus, address, di, 4))[:4], 2)
            except MeterRefused:
                continue
        return total, bands

    async def read(self, bus: Any, meter: MeterRef) -> RemoteReading:
        address = self.check_address(meter.address)
        total, bands = await self._energy(bus, address)
        relay: str | None = None
        keep: bool | None = None
        values: dict[str, Any] = {}
        status: int | None = None
        try:
            raw = await self.read_di(bus, address, c.DI_STATUS3, 2)
            status = int.from_bytes(raw[:2], "little")
        except MeterRefused:
            pass
        if status is not None:
            relay = "open" if status & c.STATUS3_RELAY_OPEN else "closed"
            keep = bool(status & c.STATUS3_KEEP_POWER)
            values["status3"] = f"{status:04X}"
        for name in self.values:
            di, size, decimals, signed = VALUES[name]
            try:
                raw = await self.read_di(bus, address, di, size)
            except MeterRefused:
                continue
            values[name] = float(c.decode_decimal(raw[:size], decimals, signed=signed))
        return RemoteReading(
            cumulative=total, bands=bands, relay=relay, keep_power=keep, values=values
        )

    async def command(self, bus: Any, meter: MeterRef, command: str) -> None:
        if command not in RELAY_CODES:
            raise InvalidInput(
                f"a relay command is one of {', '.join(RELAY_CODES)}, not {command!r}",
                field="command",
            )
        address = self.check_address(meter.address)
        request = c.relay_request(
            address,
            RELAY_CODES[command],
            password=self.password,
            operator=self.operator,
            valid_until=self.now() + self.command_validity,
        )
        try:
            await self._exchange(bus, address, request, c.Control.RELAY)
        except MeterRefused as exc:
            raise MeterRefused(f"{command}: {exc}", retry=False) from exc

    async def recharge(self, bus: Any, meter: MeterRef, amount: Decimal, count: int) -> None:
        raise Unsupported(
            "DL/T 645-2007 has no plain remote recharge: prepaid meters take purchases through "
            "their ESAM security module with vendor-specific, encrypted frames"
        )

    def responder(self, meters: Mapping[str, Any], framer: str = "") -> Dlt645Responder:
        return Dlt645Responder(meters, password=self.password)


# The emulator's side ---------------------------------------------------------------------------


def _span(buffer: bytes) -> int:
    """The length of a frame whose checksum is wrong (to drop it whole)."""
    i = len(buffer) - len(buffer.lstrip(bytes([c.WAKE])))
    return i + 12 + buffer[i + 9]


def _decimal(value: Any, default: Decimal) -> Decimal:
    if value is None:
        return default
    return value if isinstance(value, Decimal) else Decimal(str(value))


class Dlt645Responder:
    """Answers DL/T 645 frames for emulated meters (SimMeters by their 12-digit address).

    A frame for an unknown address, a broadcast, a reply or a frame with a wrong checksum gets no
    answer, as on a real bus. Reads answer from the meter's state; relay commands call
    ``SimMeter.command`` and answer normally, or abnormally (error 01H) when it refuses; a wrong
    password gets error 04H; an unknown data identifier error 02H.
    """

    def __init__(self, meters: Mapping[str, Any], *, password: bytes = b"\x02\x00\x00\x00"):
        self.meters = meters
        self.password = password

    def corrupt(self, response: bytes) -> bytes:
        return c.corrupt(response)

    def _meter(self, address: str) -> tuple[str, Any] | None:
        sim = self.meters.get(address)
        if sim is not None:
            return address, sim
        if "A" not in address:
            return None
        # Reduced addressing: the low digits given, the high bytes AAH; answered if one matches.
        found = [
            (a, m)
            for a, m in self.meters.items()
            if all(w == "A" or w == d for w, d in zip(address, a, strict=True))
        ]
        return found[0] if len(found) == 1 else None

    def feed(self, buffer: bytes) -> Frame | None:
        try:
            n = c.frame_length(buffer)
        except BadChecksum:
            return Frame(consumed=_span(buffer), response=None)
        except BadFrame:
            return Frame(consumed=1, response=None)
        if n is None:
            return None
        try:
            request = c.decode_frame(buffer[:n])
        except BadFrame:
            return Frame(consumed=n, response=None)
        if request.is_reply or request.address == c.BROADCAST:
            return Frame(consumed=n, response=None)
        if request.function == c.Control.READ_ADDRESS:
            if request.address != c.WILDCARD or len(self.meters) != 1:
                return Frame(consumed=n, response=None)
            address, sim = next(iter(self.meters.items()))
            data = c.encode_address(address)
            return Frame(n, c.reply(request, data, address=address), sim)
        found = self._meter(request.address)
        if found is None:
            return Frame(consumed=n, response=None)
        address, sim = found
        if request.function == c.Control.READ_DATA:
            response = self._read(request, address, sim)
        elif request.function == c.Control.RELAY:
            response = self._relay(request, address, sim)
        else:
            response = c.abnormal_reply(request, 0x01, address=address)
        return Frame(consumed=n, response=response, meter=sim)

    # Reads ----------------------------------------------------------------------------------

    def _state(self, sim: Any) -> dict[int, bytes]:
        with sim.lock:
            closed = bool(sim.relay_closed)
            keep = bool(sim.keep_power)
            total = Decimal(sim.cumulative) % Decimal(1000000)
            bands = [Decimal(sim.bands.get(b, 0)) % Decimal(1000000) for b in c.TARIFF_BANDS]
            given = dict(sim.values)
            rate = Decimal(sim.rate)
            prepaid = sim.remaining is not None
        voltage = _decimal(given.get("voltage"), Decimal("220.0"))
        power = _decimal(given.get("power"), rate if closed else Decimal(0))
        current = _decimal(
            given.get("current"),
            (power * 1000 / voltage) if closed and voltage else Decimal(0),
        )
        status = 0
        if not closed:
            status |= c.STATUS3_RELAY_OPEN | c.STATUS3_RELAY_COMMAND_OPEN
        if keep:
            status |= c.STATUS3_KEEP_POWER
        if prepaid:
            status |= 0b10 << 8  # meter type: prepaid by money (电费型)
        energy = [c.encode_decimal(v, 4, 2) for v in (total, *bands)]
        return {
            c.DI_COMBINED_TOTAL: energy[0],
            c.DI_FORWARD_TOTAL: energy[0],
            **{di: energy[1 + i] for i, di in enumerate(c.DI_FORWARD_TARIFFS)},
            c.DI_FORWARD_BLOCK: b"".join(energy),
            c.DI_VOLTAGE: c.encode_decimal(voltage, 2, 1),
            c.DI_CURRENT: c.encode_decimal(current, 3, 3, signed=True),
            c.DI_POWER: c.encode_decimal(power, 3, 4, signed=True),
            c.DI_STATUS3: status.to_bytes(2, "little"),
        }

    def _read(self, request: c.Dlt645Frame, address: str, sim: Any) -> bytes:
        if len(request.data) < 4:
            return c.abnormal_reply(request, 0x02, address=address)
        di = int.from_bytes(request.data[:4], "little")
        value = self._state(sim).get(di)
        if value is None:
            return c.abnormal_reply(request, 0x02, address=address)
        return c.reply(request, request.data[:4] + value, address=address)

    # Relay ----------------------------------------------------------------------------------

    def _relay(self, request: c.Dlt645Frame, address: str, sim: Any) -> bytes:
        data = request.data
        if len(data) != 16:
            return c.abnormal_reply(request, 0x01, address=address)
        if data[:4] != self.password:
            return c.abnormal_reply(request, 0x04, address=address)
        try:
            c.decode_time(data[10:16])
        except BadFrame:
            return c.abnormal_reply(request, 0x01, address=address)
        code = data[8]
        commands = {
            c.RELAY_TRIP: "trip",
            c.RELAY_CLOSE: "close",
            c.RELAY_CLOSE_ALLOWED: "close",  # the emulated customer presses the button at once
            c.RELAY_KEEP: "keep",
            c.RELAY_KEEP_RELEASE: "release",
        }
        if code in (c.RELAY_ALARM, c.RELAY_ALARM_RELEASE):
            return c.reply(request, address=address)
        command = commands.get(code)
        if command is None or not sim.command(command):
            return c.abnormal_reply(request, 0x01, address=address)
        return c.reply(request, address=address)
