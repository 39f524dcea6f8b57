"""The plugin system: entry-point discovery, selection, registry validation, attachment points."""

from __future__ import annotations

import ast
import datetime as dt
import json
import subprocess
import sys
import types
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import click
import pytest
from click.testing import CliRunner
from conftest import BUILTIN_PLUGINS

from onecard import UtilityRegistry, hookimpl
from onecard.errors import NotFound, PluginError
from onecard.plugins import entry_points, load_plugins
from onecard.pricing import Line, Usage

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {
    "electric": ["electric"],
    "gas": ["gas"],
    "heat": ["heat"],
    "rent": ["rent"],
    "water": ["water.cold", "water.hot", "water.purified", "water.recycled"],
}


def plugin(name: str, **hooks: object) -> types.ModuleType:
    module = types.ModuleType(f"onecard_{name}")
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))  # type: ignore[call-overload]
    return module


def test_builtin_plugins_are_found_through_entry_points_of_their_own_distributions() -> None:
    eps = {ep.name: ep for ep in entry_points()}
    assert set(EXPECTED) <= set(eps)
    for name in EXPECTED:
        assert eps[name].dist is not None
        assert eps[name].dist.name == f"onecard-{name}"
        assert eps[name].value == f"onecard_{name}"


def test_loading_from_entry_points_registers_every_kind() -> None:
    loaded = load_plugins(env={})
    by_plugin = {p["name"]: [k["code"] for k in p["kinds"]] for p in loaded.describe()}
    for name, kinds in EXPECTED.items():
        assert by_plugin[name] == kinds
    assert {p.distribution for p in loaded.info} >= {f"onecard-{n}" for n in EXPECTED}


def test_onecard_plugins_restricts_and_disabled_blocks() -> None:
    only = load_plugins(env={"ONECARD_PLUGINS": "electric, water"})
    assert only.utilities.codes() == ["electric", *EXPECTED["water"]]
    blocked = load_plugins(env={"ONECARD_DISABLED_PLUGINS": "rent"})
    assert "rent" not in blocked.utilities and "gas" in blocked.utilities
    nothing = load_plugins(env={"ONECARD_PLUGINS": ""})
    assert len(nothing.utilities) == 0


def test_unknown_plugin_name_is_a_clear_error() -> None:
    with pytest.raises(PluginError, match="not installed: nosuch"):
        load_plugins(env={"ONECARD_PLUGINS": "electric,nosuch"})


def test_cli_plugins_json_lists_the_five_plugins() -> None:
    """The installed console script, through real entry points, as a user runs it."""
    exe = Path(sys.executable).with_name("onecard")
    out = subprocess.run(
        [str(exe), "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    listed = {p["name"]: p for p in json.loads(out.stdout)}
    for name, kinds in EXPECTED.items():
        assert listed[name]["distribution"] == f"onecard-{name}"
        assert [k["code"] for k in listed[name]["kinds"]] == kinds


def test_onecard_register_utilities_records_the_registering_plugin() -> None:
    loaded = load_plugins(BUILTIN_PLUGINS)
    heat = loaded.utilities.get("heat")
    assert heat.plugin == "heat"
    assert heat.unit == "GJ" and heat.alt_units == {"kWh": Decimal("277.78")}
    assert heat.to_units(Decimal("277.78"), "kWh") == 1
    assert loaded.utilities.get("rent").money_only
    assert loaded.utilities.get("water.hot").family == "water"
    assert loaded.utilities.get("electric").name("en") == "Electricity"
    with pytest.raises(NotFound, match="unknown utility kind 'steam'"):
        loaded.utilities.get("steam")


def test_check_pending_rejects_a_misspelt_hook() -> None:
    bad = plugin("typo", onecard_register_utilitys=lambda registry: None)
    with pytest.raises(PluginError, match="unknown hook"):
        load_plugins([bad])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"code": "Electric", "names": {"zh-CN": "x", "en": "x"}, "unit": "kWh"}, "lower-case"),
        ({"code": "a.b.c", "names": {"zh-CN": "x", "en": "x"}, "unit": "kWh"}, "at most one dot"),
        ({"code": "steam", "names": {"en": "Steam"}, "unit": "t"}, "display name in \\['zh-CN'\\]"),
        (
            {"code": "steam", "names": {"zh-CN": "x", "en": "x"}, "unit": "t", "unit_decimals": 9},
            "unit_decimals",
        ),
        (
            {
                "code": "steam",
                "names": {"zh-CN": "x", "en": "x"},
                "unit": "t",
                "alt_units": {"kg": 0},
            },
            "positive",
        ),
        (
            {
                "code": "fee",
                "names": {"zh-CN": "x", "en": "x"},
                "unit": None,
                "alt_units": {"kg": 1},
            },
            "money-only",
        ),
    ],
)
def test_registry_refuses_bad_kinds(kwargs: dict[str, object], message: str) -> None:
    def register(registry: UtilityRegistry) -> None:
        registry.add(**kwargs)  # type: ignore[arg-type]

    with pytest.raises(PluginError, match=message):
        load_plugins([plugin("bad", onecard_register_utilities=register)])


def test_a_kind_code_longer_than_its_column_is_refused() -> None:
    def register(registry: UtilityRegistry) -> None:
        registry.add("w" * 33, names={"zh-CN": "x", "en": "x"}, unit="t")

    with pytest.raises(PluginError, match="at most 32 characters"):
        load_plugins([plugin("long", onecard_register_utilities=register)])


def test_a_hook_with_a_wrong_argument_name_names_the_plugin() -> None:
    bad = plugin("wrongarg", onecard_register_utilities=lambda registy: None)
    with pytest.raises(PluginError, match="plugin 'wrongarg' has an invalid hook implementation"):
        load_plugins([bad])


def test_two_plugins_registering_one_kind_name_both() -> None:
    def register(registry: UtilityRegistry) -> None:
        registry.add("electric", names={"zh-CN": "电", "en": "Power"}, unit="kWh")

    with pytest.raises(
        PluginError, match="rival: utility kind 'electric' is already registered by electric"
    ):
        load_plugins([*BUILTIN_PLUGINS, plugin("rival", onecard_register_utilities=register)])


class FlatModel:
    name = "flat"

    def validate(self, body):  # type: ignore[no-untyped-def]
        return dict(body)

    def compile(self, body):  # type: ignore[no-untyped-def]
        return Decimal(body["price"])

    def ladder_period(self, priced, at):  # type: ignore[no-untyped-def]
        return None

    def charge_period(self, priced, on):  # type: ignore[no-untyped-def]
        return None

    def usage(self, priced, use):  # type: ignore[no-untyped-def]
        return [Line("energy", "flat", use.quantity * priced, use.quantity, use.unit, priced)]

    def fixed(self, priced, charge):  # type: ignore[no-untyped-def]
        return []


class Layout:
    blocks = 3
    purchase_fields = (("serial", 0, "bcd", 6),)
    return_fields = (("serial", 0, "bcd", 6),)


class Modbus:
    name = "modbus-example"
    link = "modbus"

    def describe(self):  # type: ignore[no-untyped-def]
        return {"registers": 2}

    def models(self):  # type: ignore[no-untyped-def]
        return []

    def check_address(self, address):  # type: ignore[no-untyped-def]
        return address

    async def read(self, bus, meter):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    async def command(self, bus, meter, command):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    async def recharge(self, bus, meter, amount, count):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def responder(self, meters, framer):  # type: ignore[no-untyped-def]
        raise NotImplementedError


class Daily:
    name = "daily"
    title: ClassVar[dict[str, str]] = {"zh-CN": "日报", "en": "Daily"}

    def rows(self, session, params):  # type: ignore[no-untyped-def]
        return [{"day": params["day"]}]


def test_attachment_points_take_objects_of_their_interface() -> None:
    def register(registry: UtilityRegistry) -> None:
        kind = registry.add(
            "steam", names={"zh-CN": "蒸汽", "en": "Steam"}, unit="t", unit_decimals=3
        )
        kind.tariffs.add("flat", FlatModel())
        kind.protocols.add("modbus-example", Modbus())
        kind.reports.add("daily", Daily())
        kind.set_card_layout(Layout())

    loaded = load_plugins([plugin("steam", onecard_register_utilities=register)])
    steam = loaded.utilities.get("steam")
    flat = steam.tariffs.get("flat")
    use = Usage(Decimal(2), Decimal(0), dt.datetime(2026, 1, 1, tzinfo=dt.UTC), unit="t")
    assert flat.usage(flat.compile({"price": "3"}), use)[0].amount == 6
    assert steam.protocols.names() == ["modbus-example"]
    assert steam.reports.get("daily").rows(None, {"day": 1}) == [{"day": 1}]
    assert steam.card_layout is not None and steam.card_layout.blocks == 3
    assert steam.describe()["tariff_models"] == ["flat"]
    with pytest.raises(NotFound, match="steam has no tariff model 'tiered' \\(known: flat\\)"):
        steam.tariffs.get("tiered")
    with pytest.raises(PluginError, match="frozen"):  # nothing is attached after start-up
        steam.tariffs.add("late", FlatModel())
    with pytest.raises(PluginError, match="frozen"):
        steam.set_card_layout(Layout())


@pytest.mark.parametrize(
    ("attach", "message"),
    [
        (lambda k: k.tariffs.add("flat", object()), "does not provide the TariffModel interface"),
        (
            lambda k: (k.tariffs.add("flat", FlatModel()), k.tariffs.add("flat", FlatModel())),
            "attached twice",
        ),
        (lambda k: k.protocols.add("x", object()), "MeterProtocol"),
        (
            lambda k: k.tariffs.add("tiered", FlatModel()),
            "attached as 'tiered' calls itself 'flat'",
        ),
        (lambda k: k.reports.add("", Daily()), "non-empty name"),
        (lambda k: (k.set_card_layout(Layout()), k.set_card_layout(Layout())), "set twice"),
        (lambda k: k.set_card_layout(object()), "CardSlotLayout"),
    ],
)
def test_attachment_points_refuse_wrong_objects(attach: object, message: str) -> None:
    def register(registry: UtilityRegistry) -> None:
        attach(registry.add("steam", names={"zh-CN": "蒸汽", "en": "Steam"}, unit="t"))  # type: ignore[operator]

    with pytest.raises(PluginError, match=message):
        load_plugins([plugin("steam", onecard_register_utilities=register)])


def test_a_plugin_that_raises_is_named() -> None:
    def register(registry: UtilityRegistry) -> None:
        raise RuntimeError("boom")

    with pytest.raises(
        PluginError, match="plugin 'broken' failed while registering utilities: boom"
    ):
        load_plugins([plugin("broken", onecard_register_utilities=register)])


def test_kinds_cannot_be_added_after_start_up() -> None:
    loaded = load_plugins(BUILTIN_PLUGINS)
    with pytest.raises(PluginError, match="only be registered at start-up"):
        loaded.utilities.add("late", names={"zh-CN": "x", "en": "x"}, unit=None)


def test_onecard_register_commands_adds_a_subcommand() -> None:
    def register(cli: click.Group) -> None:
        @cli.command("hello")
        def hello() -> None:
            click.echo("hello from a plugin")

    group = click.Group("onecard")
    load_plugins(
        [plugin("greeter", onecard_register_commands=register)]
    ).hook.onecard_register_commands(cli=group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0 and result.output == "hello from a plugin\n"


def test_a_plugin_may_not_replace_a_core_command() -> None:
    from onecard.plugins import register_commands

    def register(cli: click.Group) -> None:
        @cli.command("init")
        def init() -> None:
            click.echo("hijacked")

    group = click.Group("onecard")
    original = click.Command("init", callback=lambda: None)
    group.add_command(original)
    loaded = load_plugins([plugin("hijack", onecard_register_commands=register)])
    with pytest.raises(
        PluginError, match="plugin 'hijack' tried to replace the command\\(s\\) init"
    ):
        register_commands(loaded, group)
    assert group.commands["init"] is original


def test_a_plugin_command_hook_that_raises_is_named() -> None:
    from onecard.plugins import register_commands

    def register(cli: click.Group) -> None:
        raise KeyError("oops")

    loaded = load_plugins([plugin("crashy", onecard_register_commands=register)])
    with pytest.raises(PluginError, match="plugin 'crashy' failed while adding commands"):
        register_commands(loaded, click.Group("onecard"))


def test_the_core_has_no_utility_specific_code() -> None:
    """No built-in kind code appears in the core's code (docstrings and comments aside), and the
    core imports no plugin. Migrations may name kinds in the rows they seed (the built-in card
    profiles of migration 0002 are data: which kinds a four-, six- or eight-meter card carries)."""
    kinds = {k for ks in EXPECTED.values() for k in ks} | set(EXPECTED)
    offenders = []
    for path in (ROOT / "core" / "src" / "onecard").rglob("*.py"):
        seeds_data = path.parent.name == "versions"
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                )
                and node.value in kinds
                and not seeds_data
            ):
                offenders.append(f"{path.name}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                offenders += [
                    f"{path.name}:{node.lineno} imports {n}"
                    for n in names
                    if n.startswith("onecard_")
                ]
    assert offenders == []
