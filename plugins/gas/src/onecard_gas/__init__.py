"""onecard-gas: prepaid gas meters."""

from __future__ import annotations

from onecard import UtilityRegistry, hookimpl
from onecard_gas.card import LAYOUT
from onecard_gas.tariff import FlatModel, TieredModel

__version__ = "0.1.0"


@hookimpl
def onecard_register_utilities(registry: UtilityRegistry) -> None:
    kind = registry.add("gas", names={"zh-CN": "燃气", "en": "Gas"}, unit="m³", unit_decimals=2)
    kind.set_card_layout(LAYOUT)
    kind.tariffs.add("tiered", TieredModel())
    kind.tariffs.add("flat", FlatModel())
