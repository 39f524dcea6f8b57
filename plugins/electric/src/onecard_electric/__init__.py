"""onecard-electric: prepaid electricity (single-phase and three-phase meters)."""

from __future__ import annotations

from onecard import UtilityRegistry, hookimpl
from onecard.remote.modbus import ModbusProtocol
from onecard_electric.card import LAYOUT
from onecard_electric.dlt645 import Dlt645Protocol
from onecard_electric.tariff import FlatModel, TieredModel, TieredTouModel, TouModel

__version__ = "0.1.0"


@hookimpl
def onecard_register_utilities(registry: UtilityRegistry) -> None:
    kind = registry.add(
        "electric",
        names={"zh-CN": "电", "en": "Electricity"},
        unit="kWh",
        unit_decimals=2,
    )
    kind.set_card_layout(LAYOUT)
    kind.tariffs.add("flat", FlatModel())
    kind.tariffs.add("tou", TouModel())
    kind.tariffs.add("tiered", TieredModel())
    kind.tariffs.add("tiered_tou", TieredTouModel())
    kind.protocols.add("dlt645", Dlt645Protocol())
    kind.protocols.add("modbus", ModbusProtocol.from_package("onecard_electric"))
