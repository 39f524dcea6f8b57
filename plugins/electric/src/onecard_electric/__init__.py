"""onecard-electric: prepaid electricity (single-phase and three-phase meters)."""

from __future__ import annotations

from onecard import UtilityRegistry, hookimpl

__version__ = "0.1.0"


@hookimpl
def onecard_register_utilities(registry: UtilityRegistry) -> None:
    registry.add(
        "electric",
        names={"zh-CN": "电", "en": "Electricity"},
        unit="kWh",
        unit_decimals=2,
    )
