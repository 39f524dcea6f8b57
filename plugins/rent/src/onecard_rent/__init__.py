"""onecard-rent: rent, property fees and public-area apportionment (money only, no meter units)."""

from __future__ import annotations

from onecard import UtilityRegistry, hookimpl

__version__ = "0.1.0"


@hookimpl
def onecard_register_utilities(registry: UtilityRegistry) -> None:
    registry.add("rent", names={"zh-CN": "房租物业费", "en": "Rent and fees"}, unit=None)
