"""onecard-gas: prepaid gas meters."""

from __future__ import annotations

from onecard import UtilityRegistry, hookimpl
from onecard.remote.modbus import ModbusProtocol
from onecard_gas import cjt188
from onecard_gas.card import LAYOUT
from onecard_gas.tariff import FlatModel, TieredModel

__version__ = "0.1.0"


@hookimpl
def onecard_register_utilities(registry: UtilityRegistry) -> None:
    kind = registry.add("gas", names={"zh-CN": "燃气", "en": "Gas"}, unit="m³", unit_decimals=2)
    kind.set_card_layout(LAYOUT)
    kind.tariffs.add("tiered", TieredModel())
    kind.tariffs.add("flat", FlatModel())
    kind.protocols.add("cjt188", cjt188.protocol())
    kind.protocols.add("modbus", ModbusProtocol.from_package("onecard_gas"))
