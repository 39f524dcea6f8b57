"""DL/T 645-2007 frames: encoding, decoding, BCD values and the data identifiers onecard reads.

A frame on the wire::

    FE FE FE FE   68  A0 .. A5  68  C  L  DATA(L bytes, each +33H)  CS  16
    (wake-up,      address      control   data                  sum of 68..DATA mod 256
     optional)     lowest byte first, 12 BCD digits

The control code ``C``: bit 7 set in a meter's reply, bit 6 set in an abnormal reply (the data
is then one error byte), bit 5 set when a follow-up frame holds more data, bits 4-0 the function
(11H read data, 13H read address, 1CH relay control ...). Values are BCD, lowest byte first; for
signed values (current, power) the top bit of the highest byte is the sign.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from enum import IntEnum

from onecard.remote.types import BadChecksum, BadFrame

START = 0x68
END = 0x16
WAKE = 0xFE
PREAMBLE = bytes([WAKE] * 4)
OFFSET = 0x33
#: The broadcast address (time sync, freeze: no reply expected).
BROADCAST = "999999999999"
#: The wildcard address a master uses to ask the one meter on a line for its address.
WILDCARD = "AAAAAAAAAAAA"


class Control(IntEnum):
    """Function codes (bits 4-0 of the control code)."""

    BROADCAST_TIME = 0x08
    READ_DATA = 0x11
    READ_FOLLOW = 0x12
    READ_ADDRESS = 0x13
    WRITE_DATA = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    CLEAR_DEMAND = 0x19
    CLEAR_METER = 0x1A
    CLEAR_EVENTS = 0x1B
    RELAY = 0x1C


REPLY = 0x80  # D7: sent by the meter
ABNORMAL = 0x40  # D6: the meter's abnormal reply (data: one error byte)
FOLLOW = 0x20  # D5: more data follows in another frame
FUNCTION = 0x1F

#: Bits of the error byte of an abnormal reply (DL/T 645-2007, error information word).
ERRORS = {
    0x01: "other error",
    0x02: "no data requested",
    0x04: "wrong password or not authorised",
    0x08: "baud rate cannot change",
    0x10: "too many year zones",
    0x20: "too many day periods",
    0x40: "too many tariffs",
}


def describe_error(code: int) -> str:
    names = [name for bit, name in ERRORS.items() if code & bit]
    return ", ".join(names) or "reserved error bits"


# Data identifiers (DI3 DI2 DI1 DI0, sent DI0 first) -------------------------------------------

DI_COMBINED_TOTAL = 0x00000000  # combined active energy, total (XXXXXX.XX kWh)
DI_FORWARD_TOTAL = 0x00010000  # forward active energy, total
DI_FORWARD_TARIFFS = (0x00010100, 0x00010200, 0x00010300, 0x00010400)  # tariff 1..4
DI_FORWARD_BLOCK = 0x0001FF00  # total and tariffs 1..n, 4 bytes each
DI_VOLTAGE = 0x02010100  # phase A voltage (XXX.X V)
DI_CURRENT = 0x02020100  # phase A current (XXX.XXX A, signed)
DI_POWER = 0x02030000  # total active power (XX.XXXX kW, signed)
DI_STATUS3 = 0x04000503  # meter running status word 3 (operation)

#: Tariff number (1..4) to the band names of onecard's tariffs (尖 峰 平 谷).
TARIFF_BANDS = ("sharp", "peak", "flat", "valley")

# Status word 3 bits (DL/T 645-2007 appendix, with the 2013 amendment's prepayment bits).
STATUS3_RELAY_OPEN = 1 << 4  # relay state: 0 closed (通), 1 open (断)
STATUS3_RELAY_COMMAND_OPEN = 1 << 6  # relay command state: 0 close, 1 trip
STATUS3_PRETRIP_ALARM = 1 << 7  # pre-trip alarm
STATUS3_KEEP_POWER = 1 << 12  # keep power (保电) in force

# Relay control (control code 1CH) commands, byte N1 of the data.
RELAY_TRIP = 0x1A  # 跳闸
RELAY_CLOSE_ALLOWED = 0x1B  # 合闸允许 (the customer closes it with the button)
RELAY_CLOSE = 0x1C  # 直接合闸
RELAY_ALARM = 0x2A  # 报警
RELAY_ALARM_RELEASE = 0x2B  # 报警解除
RELAY_KEEP = 0x3A  # 保电
RELAY_KEEP_RELEASE = 0x3B  # 保电解除


# Addresses -------------------------------------------------------------------------------------


def encode_address(address: str) -> bytes:
    """The 6 address bytes, lowest first, of a 12-character address (digits, or AA wildcards)."""
    text = address.upper()
    if len(text) != 12:
        raise ValueError(f"a DL/T 645 address has 12 digits, not {address!r}")
    out = bytearray()
    for i in range(10, -2, -2):
        pair = text[i : i + 2]
        if pair == "AA":
            out.append(0xAA)
        elif pair.isdigit() and pair.isascii():
            out.append(int(pair, 16))
        else:
            raise ValueError(f"a DL/T 645 address has decimal digits (or AA), not {address!r}")
    return bytes(out)


def decode_address(raw: bytes) -> str:
    """The 12-character address of 6 address bytes (lowest first)."""
    if len(raw) != 6:
        raise BadFrame(f"an address has 6 bytes, not {len(raw)}")
    for b in raw:
        if b != 0xAA and (b >> 4 > 9 or b & 0x0F > 9):
            raise BadFrame(f"address byte {b:02X} is not BCD")
    return bytes(reversed(raw)).hex().upper()


# BCD -------------------------------------------------------------------------------------------


def bcd_encode(value: int, size: int) -> bytes:
    """``value`` as ``size`` BCD bytes, lowest first."""
    if value < 0 or value >= 100**size:
        raise ValueError(f"{value} does not fit in {size} BCD bytes")
    digits = f"{value:0{size * 2}d}"
    return bytes(int(digits[i : i + 2], 16) for i in range(size * 2 - 2, -2, -2))


def bcd_decode(raw: bytes) -> int:
    """The number held by BCD bytes, lowest first; BadFrame for a nibble above 9."""
    value = 0
    for b in reversed(raw):
        hi, lo = b >> 4, b & 0x0F
        if hi > 9 or lo > 9:
            raise BadFrame(f"byte {b:02X} is not BCD")
        value = value * 100 + hi * 10 + lo
    return value


def encode_decimal(value: Decimal, size: int, decimals: int, *, signed: bool = False) -> bytes:
    """A quantity as fixed-point BCD (``decimals`` after the point), truncated, lowest first."""
    scaled = int((abs(value) * 10**decimals).to_integral_value(rounding=ROUND_DOWN))
    limit = 80 * 100 ** (size - 1) if signed else 100**size
    if scaled >= limit:
        raise ValueError(f"{value} does not fit in {size} BCD bytes with {decimals} decimals")
    raw = bytearray(bcd_encode(scaled, size))
    if signed and value < 0 and scaled:
        raw[-1] |= 0x80
    return bytes(raw)


def decode_decimal(raw: bytes, decimals: int, *, signed: bool = False) -> Decimal:
    negative = False
    if signed and raw and raw[-1] & 0x80:
        negative = True
        raw = raw[:-1] + bytes([raw[-1] & 0x7F])
    value = Decimal(bcd_decode(raw)).scaleb(-decimals)
    return -value if negative else value


def encode_time(when: dt.datetime) -> bytes:
    """ss mm hh DD MM YY, each one BCD byte (the relay command's valid-until time)."""
    fields = (when.second, when.minute, when.hour, when.day, when.month, when.year % 100)
    return bytes(bcd_encode(f, 1)[0] for f in fields)


def decode_time(raw: bytes) -> dt.datetime:
    if len(raw) != 6:
        raise BadFrame(f"a time has 6 bytes, not {len(raw)}")
    ss, mm, hh, day, month, yy = (bcd_decode(bytes([b])) for b in raw)
    try:
        return dt.datetime(2000 + yy, month, day, hh, mm, ss)
    except ValueError as exc:
        raise BadFrame(f"not a time: {raw.hex()}") from exc


def di_bytes(di: int) -> bytes:
    return di.to_bytes(4, "little")


# Frames ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dlt645Frame:
    """One decoded frame: ``data`` without the +33H offset."""

    address: str
    control: int
    data: bytes = b""

    @property
    def function(self) -> int:
        return self.control & FUNCTION

    @property
    def is_reply(self) -> bool:
        return bool(self.control & REPLY)

    @property
    def is_abnormal(self) -> bool:
        return bool(self.control & ABNORMAL)

    @property
    def has_follow(self) -> bool:
        return bool(self.control & FOLLOW)

    @property
    def error(self) -> int | None:
        """The error byte of an abnormal reply."""
        if not self.is_abnormal:
            return None
        return self.data[0] if self.data else 0

    def encode(self, *, preamble: bool = True) -> bytes:
        return encode_frame(self.address, self.control, self.data, preamble=preamble)


def checksum(body: bytes | bytearray) -> int:
    return sum(body) & 0xFF


def encode_frame(address: str, control: int, data: bytes = b"", *, preamble: bool = True) -> bytes:
    """A complete frame (with the four FE wake-up bytes unless ``preamble`` is False)."""
    if not 0 <= control <= 0xFF:
        raise ValueError(f"control code {control} is not a byte")
    if len(data) > 0xFF:
        raise ValueError(f"{len(data)} data bytes do not fit in one frame")
    body = bytearray([START, *encode_address(address), START, control, len(data)])
    body += bytes((b + OFFSET) & 0xFF for b in data)
    body += bytes([checksum(body), END])
    return (PREAMBLE if preamble else b"") + bytes(body)


def frame_length(buffer: bytes) -> int | None:
    """Length of the frame at the start of ``buffer``, counting any FE bytes before it.

    None while more bytes are needed; BadFrame for bytes that cannot start a frame; BadChecksum
    once a complete frame's CS byte does not match.
    """
    i = 0
    n = len(buffer)
    while i < n and buffer[i] == WAKE:
        i += 1
    if i == n:
        return None
    if buffer[i] != START:
        raise BadFrame(f"expected 68H at byte {i}, got {buffer[i]:02X}")
    if n > i + 7 and buffer[i + 7] != START:
        raise BadFrame(f"expected the second 68H at byte {i + 7}, got {buffer[i + 7]:02X}")
    if n < i + 10:
        return None
    total = i + 12 + buffer[i + 9]
    if n < total:
        return None
    if buffer[total - 1] != END:
        raise BadFrame(f"expected 16H at byte {total - 1}, got {buffer[total - 1]:02X}")
    cs = checksum(buffer[i : total - 2])
    if buffer[total - 2] != cs:
        raise BadChecksum(f"checksum {buffer[total - 2]:02X}, the frame sums to {cs:02X}")
    return total


def decode_frame(raw: bytes) -> Dlt645Frame:
    """Decode the complete frame at the start of ``raw`` (leading FE bytes allowed)."""
    total = frame_length(raw)
    if total is None:
        raise BadFrame(f"an incomplete frame ({len(raw)} bytes: {raw.hex()})")
    start = total - len(raw[:total].lstrip(bytes([WAKE])))
    length = raw[start + 9]
    data = bytes((b - OFFSET) & 0xFF for b in raw[start + 10 : start + 10 + length])
    return Dlt645Frame(decode_address(raw[start + 1 : start + 7]), raw[start + 8], data)


def corrupt(frame: bytes) -> bytes:
    """The same frame with its CS byte off by one (for the emulator's 'checksum' fault)."""
    if len(frame) < 2:
        return frame
    out = bytearray(frame)
    out[-2] = (out[-2] + 1) & 0xFF
    return bytes(out)


# Requests and replies --------------------------------------------------------------------------


def read_request(address: str, di: int) -> bytes:
    return encode_frame(address, Control.READ_DATA, di_bytes(di))


def relay_data(password: bytes, operator: bytes, command: int, valid_until: dt.datetime) -> bytes:
    """The 16 data bytes of a relay control frame: PA P0-P2, C0-C3, N1 N2, N3-N8 (time)."""
    if len(password) != 4 or len(operator) != 4:
        raise ValueError("the password and the operator code have 4 bytes each")
    return password + operator + bytes([command, 0x00]) + encode_time(valid_until)


def relay_request(
    address: str,
    command: int,
    *,
    password: bytes = b"\x02\x00\x00\x00",
    operator: bytes = b"\x00\x00\x00\x00",
    valid_until: dt.datetime,
) -> bytes:
    return encode_frame(
        address, Control.RELAY, relay_data(password, operator, command, valid_until)
    )


def reply(request: Dlt645Frame, data: bytes = b"", *, address: str | None = None) -> bytes:
    """The meter's normal reply to ``request``."""
    return encode_frame(address or request.address, request.function | REPLY, data)


def abnormal_reply(request: Dlt645Frame, error: int, *, address: str | None = None) -> bytes:
    """The meter's abnormal reply to ``request`` with error byte ``error``."""
    return encode_frame(
        address or request.address, request.function | REPLY | ABNORMAL, bytes([error])
    )
