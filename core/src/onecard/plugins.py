"""The plugin manager: finds plugins through the entry-point group ``onecard`` and runs them.

Built-in plugins (``onecard-electric`` and the others) are found exactly as a third-party plugin
is: through their distribution's entry point. Two environment variables choose what loads:

``ONECARD_PLUGINS=a,b``
    load only these entry points (an unknown name is an error);
``ONECARD_DISABLED_PLUGINS=a,b``
    never load these (the tox way of blocking a plugin that misbehaves).

Tests pass their plugin list explicitly, so nothing installed is loaded by accident.

The core's own hook implementations (:data:`BUILTINS`: the e-mail and SMS notification channels)
are registered with every manager, on both paths, before the plugins. They are not plugins a user
chooses, so they are not in :attr:`Plugins.info` and ``onecard plugins`` does not list them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from onecard import hookspecs
from onecard.errors import PluginError
from onecard.notify.registry import NotifierRegistry
from onecard.utility import UtilityRegistry

GROUP = "onecard"
ENV_ONLY = "ONECARD_PLUGINS"
ENV_DISABLED = "ONECARD_DISABLED_PLUGINS"
#: the core's built-in hook modules, registered under their module names
BUILTINS = ("onecard.notify.builtin",)


@dataclass(frozen=True)
class PluginInfo:
    """Where a loaded plugin came from."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None


@dataclass
class Plugins:
    """The loaded plugins, their manager, and the frozen registries they filled."""

    manager: pluggy.PluginManager
    utilities: UtilityRegistry
    info: list[PluginInfo] = field(default_factory=list)
    #: notification channels and SMS connectors (the core's and the plugins'), frozen
    notifiers: NotifierRegistry = field(default_factory=NotifierRegistry)

    @property
    def hook(self) -> Any:
        return self.manager.hook

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": p.name,
                "module": p.module,
                "distribution": p.distribution,
                "version": p.version,
                "kinds": [k.describe() for k in self.utilities.by_plugin(p.name)],
            }
            for p in self.info
        ]


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def entry_points() -> list[metadata.EntryPoint]:
    """The entry points of the group ``onecard``, one per name (the first one found wins)."""
    seen: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):
        seen.setdefault(ep.name, ep)
    return sorted(seen.values(), key=lambda ep: ep.name)


def _selected_entry_points(
    only: Sequence[str] | None, disabled: Sequence[str]
) -> list[metadata.EntryPoint]:
    eps = entry_points()
    names = {ep.name for ep in eps}
    if only is not None:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise PluginError(
                f"{ENV_ONLY} names plugins that are not installed: {', '.join(unknown)} "
                f"(installed: {', '.join(sorted(names)) or 'none'})"
            )
        eps = [ep for ep in eps if ep.name in only]
    return [ep for ep in eps if ep.name not in disabled]


def load_plugins(
    plugins: Iterable[ModuleType | object] | None = None,
    *,
    env: dict[str, str] | None = None,
) -> Plugins:
    """Load plugins and let them register; check the result before anything uses it.

    With ``plugins`` given, exactly those objects (modules or instances) are registered and no
    entry point is read. Otherwise the entry points of the group ``onecard`` are loaded,
    filtered by ``ONECARD_PLUGINS`` and ``ONECARD_DISABLED_PLUGINS``.
    """
    environ = os.environ if env is None else env
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    for builtin in BUILTINS:
        _register(pm, importlib.import_module(builtin), builtin)
    info: list[PluginInfo] = []
    if plugins is None:
        only_raw = environ.get(ENV_ONLY)
        only = _split(only_raw) if only_raw is not None else None
        for ep in _selected_entry_points(only, _split(environ.get(ENV_DISABLED))):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must name itself
                raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            _register(pm, obj, ep.name)
            dist = ep.dist
            info.append(
                PluginInfo(
                    name=ep.name,
                    module=getattr(obj, "__name__", type(obj).__name__),
                    distribution=dist.name if dist is not None else None,
                    version=dist.version if dist is not None else None,
                )
            )
    else:
        for obj in plugins:
            module = getattr(obj, "__name__", None) or type(obj).__name__
            name = module.rsplit(".", 1)[-1].removeprefix("onecard_")
            if pm.is_registered(obj) or pm.get_plugin(name) is not None:
                raise PluginError(f"plugin {name!r} is given twice")
            _register(pm, obj, name)
            info.append(PluginInfo(name=name, module=module))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
    names = [p.name for p in info]
    utilities = _register_utilities(pm, names)
    notifiers = _register_notifiers(pm, [*BUILTINS, *names])
    return Plugins(manager=pm, utilities=utilities, info=info, notifiers=notifiers)


def _register(pm: pluggy.PluginManager, obj: object, name: str) -> None:
    try:
        pm.register(obj, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} has an invalid hook implementation: {exc}") from exc


def _call_one(
    pm: pluggy.PluginManager, names: list[str], name: str, hook: str, doing: str, **kwargs: Any
) -> None:
    """Call ``hook`` of plugin ``name`` alone, so what it registers can be attributed to it."""
    others = [pm.get_plugin(n) for n in names if n != name]
    caller = pm.subset_hook_caller(hook, remove_plugins=others)
    try:
        caller(**kwargs)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {name!r} failed while {doing}: {exc}") from exc


def register_commands(plugins: Plugins, cli: Any) -> None:
    """Let plugins add commands; a plugin may not replace a command that is already there."""
    names = [p.name for p in plugins.info]
    before = dict(cli.commands)
    for name in names:
        _call_one(
            plugins.manager, names, name, "onecard_register_commands", "adding commands", cli=cli
        )
        replaced = [c for c, command in before.items() if cli.commands.get(c) is not command]
        if replaced:
            cli.commands.update({c: before[c] for c in replaced})
            raise PluginError(
                f"plugin {name!r} tried to replace the command(s) {', '.join(replaced)}"
            )
        before = dict(cli.commands)


def _register_utilities(pm: pluggy.PluginManager, names: list[str]) -> UtilityRegistry:
    """Call ``onecard_register_utilities`` plugin by plugin, so each kind knows its plugin."""
    registry = UtilityRegistry()
    for name in names:
        registry.current_plugin = name
        _call_one(
            pm,
            names,
            name,
            "onecard_register_utilities",
            "registering utilities",
            registry=registry,
        )
    registry.current_plugin = None
    registry.freeze()
    return registry


def _register_notifiers(pm: pluggy.PluginManager, names: list[str]) -> NotifierRegistry:
    """Call ``onecard_register_notifiers`` plugin by plugin (the core's built-ins first)."""
    registry = NotifierRegistry()
    for name in names:
        registry.current_plugin = None if name in BUILTINS else name
        _call_one(
            pm,
            names,
            name,
            "onecard_register_notifiers",
            "registering notifiers",
            registry=registry,
        )
    registry.current_plugin = None
    registry.freeze()
    return registry
