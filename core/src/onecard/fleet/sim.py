"""The physical state of an emulated meter, advanced over simulated time.

Protocol responders (in the plugins) read and write these objects; nothing here knows a wire
format. A meter uses ``rate`` units per simulated hour while its relay is closed. A meter that
keeps its own credit (``remaining`` not None) pays ``price`` yuan per unit from it and opens its
own relay when it runs out, unless "keep power" is set. Faults make it misbehave on the wire.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

#: Faults an emulated meter can show on the wire: say nothing, answer random bytes, answer a frame
#: with a wrong checksum, or answer after ``delay`` seconds.
FAULTS = ("silent", "garbage", "checksum", "slow")


def default_band(when: dt.datetime) -> str:
    """A common time-of-use day: valley 23-07, peak 08-11 and 18-23 (sharp 19-21), else flat."""
    h = when.hour
    if h >= 23 or h < 7:
        return "valley"
    if 19 <= h < 21:
        return "sharp"
    if 8 <= h < 11 or 18 <= h < 23:
        return "peak"
    return "flat"


class SimClock:
    """Simulated time: ``now()`` is ``start`` plus whatever was advanced (thread-safe)."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def set(self, when: dt.datetime) -> None:
        with self._lock:
            self._now = when


@dataclass
class SimMeter:
    """One emulated meter. Quantities are Decimals in the kind's unit; money is yuan."""

    address: str
    kind: str = ""
    model: str = ""
    serial: str = ""
    cumulative: Decimal = Decimal(0)
    bands: dict[str, Decimal] = field(default_factory=dict)
    rate: Decimal = Decimal(1)  # units per simulated hour while the relay is closed
    relay_closed: bool = True
    keep_power: bool = False
    relay_stuck: bool = False  # a bypassed relay: trip commands are acknowledged, nothing opens
    remaining: Decimal | None = None  # credit the meter keeps itself (yuan), or None
    price: Decimal = Decimal(0)  # yuan per unit, for a meter that keeps its own credit
    recharge_count: int = 0
    fault: str | None = None
    delay: float = 0.0
    values: dict[str, Any] = field(default_factory=dict)  # voltage, current, temperatures ...
    band_of: Callable[[dt.datetime], str] = default_band
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def advance(self, start: dt.datetime, end: dt.datetime) -> None:
        """Use ``rate`` per hour from ``start`` to ``end``, hour by hour onto the bands."""
        with self.lock:
            cursor = start
            while cursor < end:
                step = min(
                    end, cursor.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
                )
                if not self.relay_closed:
                    break
                hours = Decimal((step - cursor).total_seconds()) / Decimal(3600)
                used = self.rate * hours
                if self.remaining is not None and self.price > 0 and not self.keep_power:
                    affordable = self.remaining / self.price
                    if used >= affordable:
                        used = max(Decimal(0), affordable)
                        self._use(used, cursor)
                        self.remaining = Decimal(0)
                        self.relay_closed = self.relay_stuck
                        break
                self._use(used, cursor)
                cursor = step

    def _use(self, used: Decimal, when: dt.datetime) -> None:
        self.cumulative += used
        band = self.band_of(when)
        self.bands[band] = self.bands.get(band, Decimal(0)) + used
        if self.remaining is not None and self.price > 0:
            self.remaining -= used * self.price

    def command(self, command: str) -> bool:
        """Obey a relay command (trip, close, keep, release); False when it is refused."""
        with self.lock:
            if command == "trip":
                if self.keep_power:
                    return False
                self.relay_closed = self.relay_stuck
            elif command == "close":
                if self.remaining is not None and self.remaining <= 0 and not self.keep_power:
                    return False
                self.relay_closed = True
            elif command == "keep":
                self.keep_power = True
                self.relay_closed = True
            elif command == "release":
                self.keep_power = False
            else:
                return False
            return True

    def recharge(self, amount: Decimal, count: int) -> bool:
        """Accept ``amount`` yuan only as the next recharge (``count`` = last count + 1)."""
        with self.lock:
            if self.remaining is None or count != self.recharge_count + 1 or amount <= 0:
                return False
            self.recharge_count = count
            self.remaining += amount
            if self.remaining > 0:
                self.relay_closed = True
            return True

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "address": self.address,
                "kind": self.kind,
                "model": self.model,
                "serial": self.serial,
                "cumulative": str(self.cumulative),
                "bands": {k: str(v) for k, v in self.bands.items()},
                "rate": str(self.rate),
                "relay": "closed" if self.relay_closed else "open",
                "keep_power": self.keep_power,
                "relay_stuck": self.relay_stuck,
                "remaining": None if self.remaining is None else str(self.remaining),
                "price": str(self.price),
                "recharge_count": self.recharge_count,
                "fault": self.fault,
                "delay": self.delay,
            }
