"""CJ/T 188-2004 for water meters: the meter type bytes and the current-data payload.

Types (CJ/T 188-2004 T field): 10H cold water, 11H domestic hot water, 12H direct drinking
(purified) water, 13H recycled water (中水). The current-data reply (DI 901FH) carries, after DI
and SER::

    current cumulative flow   4 BCD bytes XXXXXX.XX + unit (2CH m³, 29H L)
    flow on settlement day    4 BCD bytes XXXXXX.XX + unit
    real time                 7 BCD bytes ss mm hh DD MM YY YY
    status ST                 2 bytes (valve, battery)

The frame codec, valve control and the emulator are the core's
(:mod:`onecard.remote.cjt188`); this module only knows the water payload.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from onecard.remote.cjt188 import Cjt188Protocol, Reader, Status, Writer
from onecard.remote.types import RemoteReading

#: The CJ/T 188 meter type byte of each water kind.
METER_TYPES = {
    "water.cold": 0x10,
    "water.hot": 0x11,
    "water.purified": 0x12,
    "water.recycled": 0x13,
}
UNIT = "m³"


def decode_current(payload: bytes) -> RemoteReading:
    """The 901FH payload of a water meter as a reading in m³."""
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
            "settlement_flow": str(settlement.to(UNIT)),
            "unit_sent": current.unit.symbol,
            **status.values(),
        },
    )


def encode_current(sim: Any, now: dt.datetime) -> bytes:
    """What an emulated water meter answers: ``sim.cumulative`` m³ (sent in the unit named by
    ``sim.values['unit']``, m³ by default), ``settlement_flow`` and ``battery_low`` values."""
    sent = sim.values.get("unit", UNIT)
    settlement = Decimal(str(sim.values.get("settlement_flow", 0)))
    status = Status.of(
        valve_open=bool(sim.relay_closed), battery_low=bool(sim.values.get("battery_low"))
    )
    return (
        Writer()
        .quantity(sim.cumulative, sent, base=UNIT)
        .quantity(settlement, sent, base=UNIT)
        .time(now)
        .status(status)
        .build()
    )


def protocol(kind: str) -> Cjt188Protocol:
    """The CJ/T 188 protocol for one water kind (its meter type byte)."""
    return Cjt188Protocol(
        meter_type=METER_TYPES[kind],
        decode_current=decode_current,
        encode_current=encode_current,
        title=f"CJ/T 188-2004 water meter, type {METER_TYPES[kind]:02X}H",
    )
