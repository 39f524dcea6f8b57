"""onecard-water: prepaid cold, hot, recycled (中水) and purified (纯净水) water meters."""

from __future__ import annotations

from onecard import UtilityRegistry, hookimpl
from onecard.remote.modbus import ModbusProtocol
from onecard_water import cjt188
from onecard_water.card import layout
from onecard_water.tariff import FlatModel, StepsModel

__version__ = "0.1.0"

KINDS = {
    "water.cold": {"zh-CN": "冷水", "en": "Cold water"},
    "water.hot": {"zh-CN": "热水", "en": "Hot water"},
    "water.recycled": {"zh-CN": "中水", "en": "Recycled water"},
    "water.purified": {"zh-CN": "纯净水", "en": "Purified water"},
}


@hookimpl
def onecard_register_utilities(registry: UtilityRegistry) -> None:
    for code, names in KINDS.items():
        kind = registry.add(code, names=names, unit="m³", unit_decimals=2)
        kind.set_card_layout(layout(code))
        kind.tariffs.add("steps", StepsModel())
        kind.tariffs.add("flat", FlatModel())
        kind.protocols.add("cjt188", cjt188.protocol(code))
        kind.protocols.add("modbus", ModbusProtocol.from_package("onecard_water"))
