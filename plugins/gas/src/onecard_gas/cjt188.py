"""CJ/T 188-2004 for gas meters: the meter type byte and the current-data payload.

Type (CJ/T 188-2004 T field): 30H gas (30H-39H the gas family). The current-data reply (DI
901FH) is the flow-meter layout a water meter has too
(:class:`onecard.remote.cjt188.VolumePayload`): the cumulative volume (2CH m³), the volume on
the settlement day (``settlement_volume``), real time and status.

The frame codec, valve control and the emulator are the core's
(:mod:`onecard.remote.cjt188`); this module only knows the gas payload.
"""

from __future__ import annotations

from onecard.remote.cjt188 import Cjt188Protocol, VolumePayload

METER_TYPE = 0x30
UNIT = "m³"
PAYLOAD = VolumePayload("settlement_volume", UNIT)
#: The 901FH payload of a gas meter as a reading in m³.
decode_current = PAYLOAD.decode
#: What an emulated gas meter answers: ``sim.cumulative`` m³, ``settlement_volume``,
#: ``battery_low``.
encode_current = PAYLOAD.encode


def protocol() -> Cjt188Protocol:
    """The CJ/T 188 protocol for gas meters."""
    return Cjt188Protocol(
        meter_type=METER_TYPE,
        decode_current=decode_current,
        encode_current=encode_current,
        title="CJ/T 188-2004 gas meter, type 30H",
    )
