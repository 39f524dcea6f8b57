"""onecard-heat: prepaid heat meters, billed by heated area and heat volume."""

from __future__ import annotations

from decimal import Decimal

from onecard import UtilityRegistry, hookimpl
from onecard_heat.card import LAYOUT

__version__ = "0.1.0"

#: kWh in one GJ: 10**9 J / 3.6 * 10**6 J = 277.777..., stated to the hundredth as tariffs print it.
KWH_PER_GJ = Decimal("277.78")


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
