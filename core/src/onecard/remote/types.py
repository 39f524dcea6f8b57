"""What the core and the plugins' meter protocols exchange when they talk to remote meters.

A protocol (attached to a utility kind by its plugin, see :class:`onecard.interfaces.MeterProtocol`)
reads a meter into a :class:`RemoteReading` and sends it commands, over the :class:`Bus` the core
opened to the meter's gateway. Failures are :class:`MeterError` subclasses, so the reading service
can report, retry and mark stale without knowing the protocol.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

#: The relay commands a protocol may support: open the relay, close it, hold it closed whatever
#: the credit says ("keep power", 保电), and release that hold.
RELAY_COMMANDS = ("trip", "close", "keep", "release")
#: What a reading says of the relay.
RELAY_STATES = ("closed", "open")


class MeterError(Exception):
    """A remote meter could not be read or commanded; ``code`` says how, for reports."""

    code = "error"

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class GatewayOffline(MeterError):
    """The gateway (TCP host or serial device) cannot be reached: nothing on it can be read."""

    code = "offline"


class MeterTimeout(MeterError):
    """The meter did not answer in time (absent, powered off, or too slow)."""

    code = "timeout"


class BadFrame(MeterError):
    """The answer is not a valid frame of the protocol (garbage, truncated, wrong address)."""

    code = "garbage"


class BadChecksum(BadFrame):
    """The answer's checksum (CRC, CS byte) does not match its content."""

    code = "checksum"


class MeterRefused(MeterError):
    """The meter answered with an error (Modbus exception, DL/T 645 abnormal reply, NAK)."""

    code = "refused"


class Unsupported(MeterError):
    """The protocol or the meter model cannot do this (no relay, no remote recharge ...)."""

    code = "unsupported"

    def __init__(self, message: str) -> None:
        super().__init__(message, retry=False)


@dataclass(frozen=True)
class GatewayLink:
    """How to reach a gateway: a TCP host and port, or a serial device with its line settings.

    ``framer`` is how Modbus frames travel on it: ``socket`` (Modbus TCP, MBAP header) or ``rtu``
    (RTU frames with CRC, on a serial line or through a transparent TCP gateway). Protocols that
    speak their own frames (DL/T 645, CJ/T 188) ignore it.
    """

    code: str
    transport: str  # "tcp" or "serial"
    host: str | None = None
    port: int | None = None
    device: str | None = None
    baudrate: int = 9600
    parity: str = "N"  # N, E or O
    bytesize: int = 8
    stopbits: int = 1
    framer: str = "socket"
    timeout: float = 1.0  # seconds to wait for one answer

    def describe(self) -> str:
        if self.transport == "tcp":
            return f"tcp://{self.host}:{self.port}"
        return f"{self.device} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True)
class MeterRef:
    """The meter a protocol is asked to talk to: its address on the bus and its model."""

    meter_id: int
    serial: str
    kind: str
    address: str  # protocol-specific: Modbus unit id "17", DL/T 645 "000012345678", ...
    model: str = ""  # the register map / model name, where the protocol has several


@dataclass(frozen=True)
class RemoteReading:
    """One answer of a meter, in the kind's unit and in yuan.

    ``cumulative`` is the total register (kWh, m³, GJ or kWh of heat ...). ``bands`` holds the
    cumulative registers of time-of-use bands where the meter keeps them (``sharp``, ``peak``,
    ``flat``, ``valley``: the tariff's band names). ``remaining`` and ``recharge_count`` are for
    meters that keep their own credit; ``recharge_count_modulus`` is where the meter's counter
    wraps (256 for a one-byte count; None: it does not), and the server reads the count as the
    full count nearest the one it issued (:func:`unwrap_count`). ``values`` holds everything else
    read (voltage, current, power, temperatures, status words), JSON-able, for display.
    """

    cumulative: Decimal
    bands: Mapping[str, Decimal] = field(default_factory=dict)
    relay: str | None = None
    keep_power: bool | None = None
    remaining: Decimal | None = None
    recharge_count: int | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    meter_time: dt.datetime | None = None
    recharge_count_modulus: int | None = None


def unwrap_count(read: int, modulus: int | None, near: int) -> int:
    """The full recharge count that a meter's wrapping counter ``read`` stands for: the count
    congruent to it modulo ``modulus`` that lies nearest ``near`` (the count the server issued),
    as serial-number arithmetic does (RFC 1982). ``read`` itself when the counter does not wrap.

    A meter is never more than half its counter's range away from what was issued: behind by the
    pushes still pending, or ahead by pushes from elsewhere.
    """
    if not modulus:
        return read
    ahead = (read - near) % modulus
    return near + ahead if 2 * ahead < modulus else near + ahead - modulus


@dataclass(frozen=True)
class Frame:
    """What an emulated bus's responder made of the bytes at the start of its input buffer.

    ``consumed`` bytes are dropped from the buffer; ``response`` (None: stay silent, as a meter
    does for a frame addressed to another) is sent back; ``meter`` is the emulated meter it
    concerned, whose fault setting the port applies (silence, garbage, bad checksum, delay).
    """

    consumed: int
    response: bytes | None
    meter: Any = None
