"""CJ/T 188-2004 for water meters: the meter type bytes and the current-data payload.

Types (CJ/T 188-2004 T field): 10H cold water, 11H domestic hot water, 12H direct drinking
(purified) water, 13H recycled water (中水). The current-data reply (DI 901FH) is the flow-meter
layout of :class:`onecard.remote.cjt188.VolumePayload`: the cumulative flow (2CH m³, 29H L ...),
the flow on the settlement day (``settlement_flow``), real time and status.

The frame codec, valve control and the emulator are the core's
(:mod:`onecard.remote.cjt188`); this module only knows the water payload.
"""

from __future__ import annotations

from onecard.remote.cjt188 import Cjt188Protocol, VolumePayload

#: The CJ/T 188 meter type byte of each water kind.
METER_TYPES = {
    "water.cold": 0x10,
    "water.hot": 0x11,
    "water.purified": 0x12,
    "water.recycled": 0x13,
}
UNIT = "m³"
PAYLOAD = VolumePayload("settlement_flow", UNIT)
#: The 901FH payload of a water meter as a reading in m³.
decode_current = PAYLOAD.decode
#: What an emulated water meter answers (in the unit ``sim.values['unit']`` names, m³ by default).
encode_current = PAYLOAD.encode


def protocol(kind: str) -> Cjt188Protocol:
    """The CJ/T 188 protocol for one water kind (its meter type byte)."""
    return Cjt188Protocol(
        meter_type=METER_TYPES[kind],
        decode_current=decode_current,
        encode_current=encode_current,
        title=f"CJ/T 188-2004 water meter, type {METER_TYPES[kind]:02X}H",
    )
