"""Hook specifications of onecard. Only the specs live here; see ``docs/plugin_hooks.md``.

Plugins implement these with :data:`onecard.hookimpl`. Behaviour is registered once, on objects
handed to a ``register_*`` hook; there are no per-utility dispatch hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from onecard.notify import NotifierRegistry
    from onecard.utility import UtilityRegistry

hookspec = pluggy.HookspecMarker("onecard")


@hookspec
def onecard_register_utilities(registry: UtilityRegistry) -> None:
    """Register utility kinds, and attach their tariffs, card layout, protocols and reports."""


@hookspec
def onecard_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``onecard`` command line."""


@hookspec
def onecard_register_notifiers(registry: NotifierRegistry) -> None:
    """Register notification channels (e-mail, SMS gateways) and SMS connectors."""
