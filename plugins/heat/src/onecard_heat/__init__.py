"""onecard-heat: prepaid heat meters, billed by heated area and heat volume."""

from __future__ import annotations

from onecard import UtilityRegistry, hookimpl
from onecard.remote.modbus import ModbusProtocol
from onecard_heat import cjt188
from onecard_heat.card import LAYOUT
from onecard_heat.tariff import KWH_PER_GJ, AreaOnlyModel, TwoPartModel

__all__ = ["KWH_PER_GJ", "onecard_register_utilities"]
__version__ = "0.1.0"


@hookimpl
def onecard_register_utilities(registry: UtilityRegistry) -> None:
    kind = registry.add(
        "heat",
        names={"zh-CN": "热量", "en": "Heat"},
        unit="GJ",
        unit_decimals=3,
        alt_units={"kWh": KWH_PER_GJ},
    )
    kind.set_card_layout(LAYOUT)
    kind.tariffs.add(TwoPartModel.name, TwoPartModel())
    kind.tariffs.add(AreaOnlyModel.name, AreaOnlyModel())
    kind.protocols.add("cjt188", cjt188.protocol())
    kind.protocols.add("modbus", ModbusProtocol.from_package("onecard_heat"))
