"""CJ/T 188-2004 for gas meters: the meter type byte and the current-data payload.

Type (CJ/T 188-2004 T field): 30H gas (30H-39H the gas family). The current-data reply (DI
901FH) has the same layout as a water meter's, after DI and SER::

    current cumulative volume  4 BCD bytes XXXXXX.XX + unit (2CH m³)
    volume on settlement day   4 BCD bytes XXXXXX.XX + unit
    real time                  7 BCD bytes ss mm hh DD MM YY YY
    status ST                  2 bytes (valve, battery)

The frame codec, valve control and the emulator are the core's
(:mod:`onecard.remote.cjt188`); this module only knows the gas payload.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from onecard.remote.cjt188 import Cjt188Protocol, Reader, Status, Writer
from onecard.remote.types import RemoteReading

METER_TYPE = 0x30
UNIT = "m³"


def decode_current(payload: bytes) -> RemoteReading:
    """The 901FH payload of a gas meter as a reading in m³."""
    r = Reader(payload)
    current = r.quantity(4, 2)
    settlement = r.quantity(4, 2)
    when = r.time()
    status = r.status()
    return RemoteReading(
        cumulative=current.to(UNIT),
        relay=status.relay,
        meter_time=when,
        values={
            "settlement_volume": str(settlement.to(UNIT)),
            "unit_sent": current.unit.symbol,
            **status.values(),
        },
    )


def encode_current(sim: Any, now: dt.datetime) -> bytes:
    """What an emulated gas meter answers: ``sim.cumulative`` m³, the ``settlement_volume``
    and ``battery_low`` values."""
    settlement = Decimal(str(sim.values.get("settlement_volume", 0)))
    status = Status.of(
        valve_open=bool(sim.relay_closed), battery_low=bool(sim.values.get("battery_low"))
    )
    return (
        Writer()
        .quantity(sim.cumulative, UNIT)
        .quantity(settlement, UNIT)
        .time(now)
        .status(status)
        .build()
    )


def protocol() -> Cjt188Protocol:
    """The CJ/T 188 protocol for gas meters."""
    return Cjt188Protocol(
        meter_type=METER_TYPE,
        decode_current=decode_current,
        encode_current=encode_current,
        title="CJ/T 188-2004 gas meter, type 30H",
    )
