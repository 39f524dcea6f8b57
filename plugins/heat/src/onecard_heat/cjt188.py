"""CJ/T 188-2004 for heat meters: the meter type byte and the current-data payload.

Type (CJ/T 188-2004 T field): 20H heat meter metering heat (21H would meter cooling). The
current-data reply (DI 901FH) carries, after DI and SER (46 bytes in all, as laid out in
libcj188.h's readData2029_s and in cj188.h of sdqr_energy_node)::

    heat on settlement day    4 BCD bytes XXXXXX.XX + unit (05H kWh, 08H MWh, 0EH MJ, 11H GJ ...)
    current heat              4 BCD bytes XXXXXX.XX + unit
    heat power                4 BCD bytes XXXXXX.XX + unit (14H W, 17H kW, 1AH MW)
    flow rate                 4 BCD bytes XXXX.XXXX + unit (35H m³/h, 32H L/h)
    cumulative flow           4 BCD bytes XXXXXX.XX + unit (2CH m³)
    supply temperature        3 BCD bytes XXXX.XX °C
    return temperature        3 BCD bytes XXXX.XX °C
    working hours             3 BCD bytes XXXXXX h
    real time                 7 BCD bytes ss mm hh DD MM YY YY
    status ST                 2 bytes

The reading's ``cumulative`` is the current heat in the kind's unit, GJ, converted exactly from
the unit the meter sent (1 kWh = 3.6 MJ = 0.0036 GJ).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from onecard.remote.cjt188 import Cjt188Protocol, Reader, Status, Writer
from onecard.remote.types import RemoteReading

METER_TYPE = 0x20
UNIT = "GJ"


def decode_current(payload: bytes) -> RemoteReading:
    """The 901FH payload of a heat meter as a reading in GJ."""
    r = Reader(payload)
    settlement = r.quantity(4, 2)
    current = r.quantity(4, 2)
    power = r.quantity(4, 2)
    flow = r.quantity(4, 4)
    volume = r.quantity(4, 2)
    supply = r.bcd(3, 2)
    back = r.bcd(3, 2)
    hours = r.bcd(3, 0)
    when = r.time()
    status = r.status()
    return RemoteReading(
        cumulative=current.to(UNIT),
        relay=status.relay,
        meter_time=when,
        values={
            "heat_sent": current.describe(),
            "settlement_heat_gj": str(settlement.to(UNIT)),
            "power_kw": str(power.to("kW")),
            "flow_m3h": str(flow.to("m³/h")),
            "volume_m3": str(volume.to("m³")),
            "supply_temp_c": str(supply),
            "return_temp_c": str(back),
            "hours": int(hours),
            **status.values(),
        },
    )


def _value(sim: Any, name: str, default: str) -> Decimal:
    return Decimal(str(sim.values.get(name, default)))


def encode_current(sim: Any, now: dt.datetime) -> bytes:
    """What an emulated heat meter answers: ``sim.cumulative`` GJ sent in ``heat_unit`` (kWh by
    default), and the values ``settlement_heat_gj``, ``power_kw``, ``flow_m3h``, ``volume_m3``,
    ``supply_temp_c``, ``return_temp_c``, ``hours``, ``battery_low``."""
    sent = sim.values.get("heat_unit", "kWh")
    status = Status.of(
        valve_open=bool(sim.relay_closed), battery_low=bool(sim.values.get("battery_low"))
    )
    return (
        Writer()
        .quantity(_value(sim, "settlement_heat_gj", "0"), sent, base=UNIT)
        .quantity(sim.cumulative, sent, base=UNIT)
        .quantity(_value(sim, "power_kw", "0"), "kW")
        .quantity(_value(sim, "flow_m3h", "0"), "m³/h", decimals=4)
        .quantity(_value(sim, "volume_m3", "0"), "m³")
        .bcd(_value(sim, "supply_temp_c", "60"), 3, 2)
        .bcd(_value(sim, "return_temp_c", "45"), 3, 2)
        .bcd(_value(sim, "hours", "0"), 3)
        .time(now)
        .status(status)
        .build()
    )


def protocol() -> Cjt188Protocol:
    """The CJ/T 188 protocol for heat meters."""
    return Cjt188Protocol(
        meter_type=METER_TYPE,
        decode_current=decode_current,
        encode_current=encode_current,
        title="CJ/T 188-2004 heat meter, type 20H",
    )
