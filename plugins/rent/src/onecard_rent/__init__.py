"""onecard-rent: rent, property fees and public-area apportionment (money only, no meter units)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onecard import UtilityRegistry, hookimpl
from onecard_rent.tariff import MonthlyModel

if TYPE_CHECKING:
    import click

__version__ = "0.1.0"


@hookimpl
def onecard_register_utilities(registry: UtilityRegistry) -> None:
    kind = registry.add("rent", names={"zh-CN": "房租物业费", "en": "Rent and fees"}, unit=None)
    kind.tariffs.add("monthly", MonthlyModel())


@hookimpl
def onecard_register_commands(cli: click.Group) -> None:
    from onecard_rent.cli import rent

    cli.add_command(rent)
