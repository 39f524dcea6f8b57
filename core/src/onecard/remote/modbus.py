"""Modbus RTU and Modbus TCP meters whose registers are declared as data.

A meter model is a *register map*: a YAML file in a plugin's ``maps`` folder that names each
register (address, type, scale, unit, access, function code) and says which registers mean what to
onecard (its *roles*: the cumulative total, time-of-use bands, relay state and command, the credit a
prepaid meter keeps, its recharge count and the registers a remote recharge writes). A new meter
model is a new file, not new code; see ``docs/protocols/modbus.md`` for the format.

:class:`ModbusProtocol` is the :class:`onecard.interfaces.MeterProtocol` a plugin attaches to its
utility kinds (``ModbusProtocol.from_package("onecard_xxx")``). It plans each model's reads once
(contiguous blocks of at most 125 registers, small gaps read through, so a typical meter is read
with one request), decodes with :class:`~decimal.Decimal` scales, maps pymodbus failures onto
:mod:`onecard.remote.types` errors, and supplies the fleet emulator's responder for MBAP
(``socket``) and RTU (CRC-16) framing. Nothing here knows a utility: the maps are the plugins'.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import yaml

from onecard.errors import InvalidInput
from onecard.remote.types import (
    RELAY_COMMANDS,
    BadChecksum,
    BadFrame,
    Frame,
    GatewayOffline,
    MeterError,
    MeterRef,
    MeterRefused,
    MeterTimeout,
    RemoteReading,
    Unsupported,
    unwrap_count,
)

#: Register types and how many 16-bit words each takes.
TYPES: dict[str, int] = {
    "uint16": 1,
    "int16": 1,
    "uint32": 2,
    "int32": 2,
    "float32": 2,
    "bcd16": 1,
    "bcd32": 2,
}
ACCESS = ("r", "w", "rw")
FUNCTIONS = {"holding": 3, "input": 4, 3: 3, 4: 4}
BANDS = ("sharp", "peak", "flat", "valley")
MAX_READ = 125  # registers in one read request (the Modbus limit)
MAX_WRITE = 123  # registers in one function-16 write
DEFAULT_GAP = 8  # unlisted registers a read may span to save a request
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
}
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


# The register map ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Register:
    """One named value in a meter's register space."""

    name: str
    address: int
    type: str
    scale: Decimal = Decimal(1)
    unit: str = ""
    access: str = "r"
    function: int = 3
    default: Decimal | None = None  # what the emulator serves when nothing else says
    assumed: bool = False  # not from the cited manual: a guess the docs own up to

    @property
    def words(self) -> int:
        return TYPES[self.type]

    @property
    def readable(self) -> bool:
        return "r" in self.access

    @property
    def writable(self) -> bool:
        return "w" in self.access


@dataclass(frozen=True)
class Switch:
    """A role that is one register whose values mean states or commands."""

    register: str
    values: Mapping[str, int]


@dataclass(frozen=True)
class Roles:
    cumulative: tuple[str, ...]
    bands: Mapping[str, str] = field(default_factory=dict)
    relay_state: Switch | None = None
    keep_power: Switch | None = None
    relay_command: Switch | None = None
    remaining: str | None = None
    recharge_count: str | None = None
    recharge: tuple[str, str] | None = None  # amount register, count register


@dataclass(frozen=True)
class Block:
    """One read request of a plan: ``count`` registers from ``start`` with function ``function``."""

    function: int
    start: int
    count: int
    members: tuple[tuple[Register, int], ...]  # (register, word offset in the block)


@dataclass(frozen=True)
class _Shape:
    cumulative: tuple[str, ...]
    bands: tuple[tuple[str, str], ...]  # (band, register)
    relay: tuple[str, Decimal, Mapping[int, str]] | None  # register, scale, raw -> state
    keep: tuple[str, Decimal, int] | None  # register, scale, raw of "on"
    modulus: int | None  # where the recharge count wraps
    others: tuple[tuple[str, str], ...]  # (register, unit): the values shown as they are


@dataclass(frozen=True)
class RegisterMap:
    """A meter model's register map, validated."""

    model: str
    titles: Mapping[str, str]
    manufacturer: str
    source: str
    registers: Mapping[str, Register]
    roles: Roles
    word_order: str = "big"  # big: high word first
    byte_order: str = "big"  # big: high byte of each word first
    function: int = 3
    max_gap: int = DEFAULT_GAP
    notes: str = ""
    file: str = ""

    @functools.cached_property
    def plan(self) -> tuple[Block, ...]:
        return plan_reads(self.registers.values(), max_gap=self.max_gap)

    @functools.cached_property
    def decoders(self) -> tuple[tuple[tuple[str, int, Decoder], ...], ...]:
        """For each block of :attr:`plan`: (register name, word offset, :func:`decoder`)."""
        return tuple(
            tuple(
                (reg.name, offset, decoder(reg, self.word_order, self.byte_order))
                for reg, offset in block.members
            )
            for block in self.plan
        )

    @functools.cached_property
    def shape(self) -> _Shape:
        """What :meth:`ModbusProtocol._reading` needs of the roles, worked out once."""
        roles = self.roles
        used = set(roles.cumulative) | set(roles.bands.values())
        relay = keep = None
        if roles.relay_state is not None:
            name = roles.relay_state.register
            used.add(name)
            states = {v: s for s, v in reversed(list(roles.relay_state.values.items()))}
            relay = (name, self.registers[name].scale, states)
        if roles.keep_power is not None:
            name = roles.keep_power.register
            used.add(name)
            keep = (name, self.registers[name].scale, roles.keep_power.values["on"])
        if roles.remaining is not None:
            used.add(roles.remaining)
        modulus = None
        if roles.recharge_count is not None:
            used.add(roles.recharge_count)
            modulus = count_modulus(self.registers[roles.recharge_count])
        others = tuple(
            (reg.name, reg.unit)
            for block in self.plan
            for reg, _ in block.members
            if reg.name not in used
        )
        return _Shape(
            tuple(roles.cumulative), tuple(roles.bands.items()), relay, keep, modulus, others
        )

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "titles": dict(self.titles),
            "manufacturer": self.manufacturer,
            "source": self.source,
            "requests_per_read": len(self.plan),
            "roles": sorted(self._role_names()),
            "assumed": sorted(r.name for r in self.registers.values() if r.assumed),
        }

    def _role_names(self) -> list[str]:
        roles = self.roles
        names = ["cumulative"]
        if roles.bands:
            names.append("bands")
        names.extend(
            name
            for name in (
                "relay_state",
                "keep_power",
                "relay_command",
                "remaining",
                "recharge_count",
            )
            if getattr(roles, name) is not None
        )
        if roles.recharge is not None:
            names.append("recharge")
        return names


class _Checker:
    """Collects the file name for error messages; every error names the field path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, path: str, message: str) -> InvalidInput:
        return InvalidInput(f"{self.file}: {path}: {message}", field=path, file=self.file)

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, "must be a mapping")
        return value

    def text(self, value: Any, path: str, *, required: bool = True) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "must be a non-empty string")
        return value.strip()

    def integer(self, value: Any, path: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str):
                try:
                    value = int(value, 0)
                except ValueError:
                    raise self.fail(path, f"must be an integer, not {value!r}") from None
            else:
                raise self.fail(path, f"must be an integer, not {value!r}")
        if not low <= value <= high:
            raise self.fail(path, f"must be between {low} and {high}, not {value}")
        return int(value)

    def decimal(self, value: Any, path: str) -> Decimal:
        if isinstance(value, (bool, float)):
            raise self.fail(path, 'must be a decimal string such as "0.01" (not a float)')
        try:
            result = Decimal(str(value))
        except (InvalidOperation, ValueError):
            raise self.fail(path, f"must be a decimal number, not {value!r}") from None
        if not result.is_finite():
            raise self.fail(path, "must be finite")
        return result

    def choice(self, value: Any, path: str, choices: Iterable[Any]) -> Any:
        options = list(choices)
        if value not in options:
            raise self.fail(path, f"must be one of {', '.join(map(str, options))}, not {value!r}")
        return value

    def unknown(self, data: Mapping[str, Any], path: str, known: Iterable[str]) -> None:
        extra = sorted(set(map(str, data)) - set(known))
        if extra:
            where = f"{path}.{extra[0]}" if path else extra[0]
            raise self.fail(where, "is not a known field")


def _function(check: _Checker, value: Any, path: str) -> int:
    if value in FUNCTIONS:
        return FUNCTIONS[value]
    raise check.fail(path, f"must be holding (3) or input (4), not {value!r}")


def parse_map(data: Any, file: str = "<map>") -> RegisterMap:
    """Validate a register map loaded from YAML; errors name the file and the field path."""
    check = _Checker(file)
    top = check.mapping(data, "")
    check.unknown(
        top,
        "",
        (
            "model",
            "titles",
            "manufacturer",
            "source",
            "notes",
            "word_order",
            "byte_order",
            "function",
            "max_gap",
            "registers",
            "roles",
        ),
    )
    model = check.text(top.get("model"), "model")
    if not _MODEL.match(model):
        raise check.fail("model", "may hold letters, digits, '.', '_' and '-' (64 at most)")
    titles_raw = check.mapping(top.get("titles"), "titles")
    titles: dict[str, str] = {}
    for language in ("zh-CN", "en"):
        titles[language] = check.text(titles_raw.get(language), f"titles.{language}")
    for language, title in titles_raw.items():
        titles[str(language)] = check.text(title, f"titles.{language}")
    manufacturer = check.text(top.get("manufacturer"), "manufacturer")
    source = check.text(top.get("source"), "source")
    notes = check.text(top.get("notes"), "notes", required=False)
    word_order = check.choice(top.get("word_order", "big"), "word_order", ("big", "little"))
    byte_order = check.choice(top.get("byte_order", "big"), "byte_order", ("big", "little"))
    default_function = _function(check, top.get("function", "holding"), "function")
    max_gap = check.integer(top.get("max_gap", DEFAULT_GAP), "max_gap", 0, MAX_READ)

    registers: dict[str, Register] = {}
    raw_registers = check.mapping(top.get("registers"), "registers")
    if not raw_registers:
        raise check.fail("registers", "must name at least one register")
    for name, spec in raw_registers.items():
        path = f"registers.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise check.fail(path, "a register name is lower-case letters, digits and '_'")
        spec = check.mapping(spec, path)
        check.unknown(
            spec,
            path,
            ("address", "type", "scale", "unit", "access", "function", "default", "assumed"),
        )
        kind = check.choice(spec.get("type"), f"{path}.type", TYPES)
        address = check.integer(spec.get("address"), f"{path}.address", 0, 0xFFFF - TYPES[kind] + 1)
        scale = check.decimal(spec.get("scale", "1"), f"{path}.scale")
        if scale <= 0:
            raise check.fail(f"{path}.scale", "must be positive")
        unit = spec.get("unit", "")
        if not isinstance(unit, str):
            raise check.fail(f"{path}.unit", "must be a string")
        access = check.choice(spec.get("access", "r"), f"{path}.access", ACCESS)
        function = _function(check, spec.get("function", default_function), f"{path}.function")
        if "w" in access and function != 3:
            raise check.fail(f"{path}.function", "a writable register must be a holding register")
        default = None
        if spec.get("default") is not None:
            default = check.decimal(spec["default"], f"{path}.default")
        assumed = spec.get("assumed", False)
        if not isinstance(assumed, bool):
            raise check.fail(f"{path}.assumed", "must be true or false")
        registers[name] = Register(
            name, address, kind, scale, unit, access, function, default, assumed
        )
    _check_overlaps(check, registers)
    roles = _parse_roles(check, top.get("roles"), registers)
    return RegisterMap(
        model=model,
        titles=titles,
        manufacturer=manufacturer,
        source=source,
        registers=registers,
        roles=roles,
        word_order=word_order,
        byte_order=byte_order,
        function=default_function,
        max_gap=max_gap,
        notes=notes,
        file=file,
    )


def _check_overlaps(check: _Checker, registers: Mapping[str, Register]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for reg in registers.values():
        for word in range(reg.address, reg.address + reg.words):
            other = taken.get((reg.function, word))
            if other is not None:
                raise check.fail(
                    f"registers.{reg.name}.address",
                    f"overlaps register {other} at {word:#06x}",
                )
            taken[(reg.function, word)] = reg.name


def _parse_roles(check: _Checker, raw: Any, registers: Mapping[str, Register]) -> Roles:
    roles = check.mapping(raw, "roles")
    check.unknown(
        roles,
        "roles",
        (
            "cumulative",
            "bands",
            "relay_state",
            "keep_power",
            "relay_command",
            "remaining",
            "recharge_count",
            "recharge",
        ),
    )

    def ref(value: Any, path: str, *, readable: bool = True, writable: bool = False) -> str:
        name = check.text(value, path)
        reg = registers.get(name)
        if reg is None:
            raise check.fail(path, f"names no register ({name!r})")
        if readable and not reg.readable:
            raise check.fail(path, f"register {name} is not readable")
        if writable and not reg.writable:
            raise check.fail(path, f"register {name} is not writable")
        return name

    if "cumulative" not in roles:
        raise check.fail("roles.cumulative", "is required")
    raw_cumulative = roles["cumulative"]
    if isinstance(raw_cumulative, list):
        if not raw_cumulative:
            raise check.fail("roles.cumulative", "must name at least one register")
        cumulative = tuple(ref(v, f"roles.cumulative.{i}") for i, v in enumerate(raw_cumulative))
    else:
        cumulative = (ref(raw_cumulative, "roles.cumulative"),)

    bands: dict[str, str] = {}
    if roles.get("bands") is not None:
        raw_bands = check.mapping(roles["bands"], "roles.bands")
        check.unknown(raw_bands, "roles.bands", BANDS)
        for band, name in raw_bands.items():
            bands[str(band)] = ref(name, f"roles.bands.{band}")

    def switch(
        role: str, states: Sequence[str], required: Sequence[str], writable: bool
    ) -> Switch | None:
        if roles.get(role) is None:
            return None
        path = f"roles.{role}"
        spec = check.mapping(roles[role], path)
        check.unknown(spec, path, ("register", *states))
        name = ref(
            spec.get("register"), f"{path}.register", readable=not writable, writable=writable
        )
        values: dict[str, int] = {}
        for state in states:
            if state in spec:
                values[state] = check.integer(spec[state], f"{path}.{state}", 0, 0xFFFF)
            elif state in required:
                raise check.fail(f"{path}.{state}", "is required")
        if len(set(values.values())) != len(values):
            raise check.fail(path, "two states share one value")
        return Switch(name, values)

    relay_state = switch("relay_state", ("closed", "open"), ("closed", "open"), False)
    keep_power = switch("keep_power", ("on", "off"), ("on", "off"), False)
    relay_command = switch("relay_command", RELAY_COMMANDS, ("trip", "close"), True)
    remaining = ref(roles["remaining"], "roles.remaining") if roles.get("remaining") else None
    recharge_count = (
        ref(roles["recharge_count"], "roles.recharge_count")
        if roles.get("recharge_count")
        else None
    )
    recharge = None
    if roles.get("recharge") is not None:
        spec = check.mapping(roles["recharge"], "roles.recharge")
        check.unknown(spec, "roles.recharge", ("amount", "count"))
        amount = ref(spec.get("amount"), "roles.recharge.amount", readable=False, writable=True)
        count = ref(spec.get("count"), "roles.recharge.count", readable=False, writable=True)
        a, c = registers[amount], registers[count]
        low, high = sorted((a, c), key=lambda r: r.address)
        if low.address + low.words != high.address:
            raise check.fail(
                "roles.recharge",
                "amount and count must be adjacent registers (one function-16 write)",
            )
        if remaining is None or recharge_count is None:
            raise check.fail("roles.recharge", "needs the remaining and recharge_count roles too")
        recharge = (amount, count)
    return Roles(
        cumulative=cumulative,
        bands=bands,
        relay_state=relay_state,
        keep_power=keep_power,
        relay_command=relay_command,
        remaining=remaining,
        recharge_count=recharge_count,
        recharge=recharge,
    )


def load_map(text: str, file: str = "<map>") -> RegisterMap:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{file}: not valid YAML: {exc}", field="", file=file) from exc
    return parse_map(data, file)


def load_maps(package: str) -> dict[str, RegisterMap]:
    """Every ``*.yaml`` map in the ``maps`` folder of ``package``, by model name."""
    folder = importlib.resources.files(package) / "maps"
    maps: dict[str, RegisterMap] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith((".yaml", ".yml")):
            continue
        found = load_map(entry.read_text(encoding="utf-8"), f"{package}/maps/{entry.name}")
        if found.model in maps:
            raise InvalidInput(
                f"{package}/maps/{entry.name}: model {found.model} is defined twice",
                field="model",
            )
        maps[found.model] = found
    return maps


_package_maps = functools.cache(load_maps)


# Planning, decoding, encoding --------------------------------------------------------------


def plan_reads(registers: Iterable[Register], *, max_gap: int = DEFAULT_GAP) -> tuple[Block, ...]:
    """Merge the readable registers into as few read requests as possible.

    Registers of one function whose addresses lie within ``max_gap`` unlisted registers of each
    other share a request, as long as it stays within :data:`MAX_READ` registers.
    """
    blocks: list[Block] = []
    by_function: dict[int, list[Register]] = {}
    for reg in registers:
        if reg.readable:
            by_function.setdefault(reg.function, []).append(reg)
    for function in sorted(by_function):
        regs = sorted(by_function[function], key=lambda r: r.address)
        current: list[Register] = []
        start = end = 0
        for reg in regs:
            reg_end = reg.address + reg.words
            if current and reg.address - end <= max_gap and reg_end - start <= MAX_READ:
                current.append(reg)
                end = max(end, reg_end)
                continue
            if current:
                blocks.append(_block(function, start, end, current))
            current, start, end = [reg], reg.address, reg_end
        if current:
            blocks.append(_block(function, start, end, current))
    return tuple(blocks)


def _block(function: int, start: int, end: int, regs: list[Register]) -> Block:
    return Block(function, start, end - start, tuple((r, r.address - start) for r in regs))


def _to_bytes(words: Sequence[int], word_order: str, byte_order: str) -> bytes:
    ordered = list(words) if word_order == "big" else list(reversed(words))
    raw = struct.pack(f">{len(ordered)}H", *ordered)
    if byte_order == "little":
        raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
    return raw


def _from_bytes(raw: bytes, word_order: str, byte_order: str) -> list[int]:
    if byte_order == "little":
        raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
    words = list(struct.unpack(f">{len(raw) // 2}H", raw))
    return words if word_order == "big" else list(reversed(words))


def _bcd(value: int, digits: int) -> int:
    result = 0
    for i in range(digits):
        nibble = (value >> (4 * i)) & 0xF
        if nibble > 9:
            raise ValueError(f"not BCD: {value:#x}")
        result += nibble * 10**i
    return result


def _to_bcd(value: int, digits: int) -> int:
    result = 0
    for i in range(digits):
        result |= (value % 10) << (4 * i)
        value //= 10
    return result


_STRUCT = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "float32": ">f"}
_RANGE = {
    "uint16": (0, 0xFFFF),
    "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFFFFFF),
    "int32": (-0x80000000, 0x7FFFFFFF),
    "bcd16": (0, 9999),
    "bcd32": (0, 99999999),
}


def count_modulus(reg: Register) -> int | None:
    """Where a counter held in ``reg`` wraps (65536 for a uint16 or int16, 10000 for a bcd16);
    None for a float or a scaled register, which do not hold a wrapping count."""
    if reg.type not in _RANGE or reg.scale != 1:
        return None
    low, high = _RANGE[reg.type]
    return high + 1 if low == 0 else 2 * (high + 1)


def count_on_wire(reg: Register, count: int) -> int:
    """The value ``reg`` carries for the full count ``count``: wrapped round its modulus (and
    into the negative half for a signed type, as the counter's bits read)."""
    modulus = count_modulus(reg)
    if modulus is None:
        return count
    value = count % modulus
    return value - modulus if value > _RANGE[reg.type][1] else value


def decode(
    reg: Register, words: Sequence[int], word_order: str = "big", byte_order: str = "big"
) -> Decimal:
    """The value of ``reg`` from its raw words (as read, in wire order), scaled, as a Decimal."""
    raw = _to_bytes(
        _from_bytes(_to_bytes(words, "big", "big"), word_order, byte_order), "big", "big"
    )
    if reg.type in ("bcd16", "bcd32"):
        number = _bcd(int.from_bytes(raw, "big"), 4 * reg.words)
        return Decimal(number) * reg.scale
    (value,) = struct.unpack(_STRUCT[reg.type], raw)
    if reg.type == "float32":
        if value != value or value in (float("inf"), float("-inf")):
            raise BadFrame(f"register {reg.name}: not a finite number")
        return Decimal(_float32_text(value, raw)) * reg.scale
    return Decimal(value) * reg.scale


#: Reads a register's value from a block's words at a word offset.
Decoder = Callable[[Sequence[int], int], Decimal]


def decoder(reg: Register, word_order: str = "big", byte_order: str = "big") -> Decoder:
    """:func:`decode` for ``reg``, prepared once: a function of a block's words and the
    register's offset in them. Every read decodes every register of the map, so the common
    integer types in big-endian order are read straight from the words."""
    scale, count = reg.scale, reg.words
    if word_order != "big" or byte_order != "big" or reg.type not in _PLAIN:

        def general(words: Sequence[int], offset: int) -> Decimal:
            return decode(reg, words[offset : offset + count], word_order, byte_order)

        return general
    if reg.type == "uint16":
        return lambda words, offset: Decimal(words[offset]) * scale
    if reg.type == "int16":
        return lambda words, offset: (
            Decimal(words[offset] - ((words[offset] & 0x8000) << 1)) * scale
        )
    if reg.type == "uint32":
        return lambda words, offset: Decimal((words[offset] << 16) | words[offset + 1]) * scale

    def int32(words: Sequence[int], offset: int) -> Decimal:
        value = (words[offset] << 16) | words[offset + 1]
        return Decimal(value - ((value & 0x80000000) << 1)) * scale

    return int32


_PLAIN = frozenset({"uint16", "int16", "uint32", "int32"})


def _float32_text(value: float, raw: bytes) -> str:
    """The shortest decimal text that is the same float32 (123.45, not 123.44999694824219)."""
    for digits in range(6, 10):
        text = f"{value:.{digits}g}"
        if struct.pack(">f", float(text)) == raw:
            return text
    return str(value)


def encode(
    reg: Register, value: Decimal, word_order: str = "big", byte_order: str = "big"
) -> list[int]:
    """The raw words (wire order) that make ``reg`` read ``value``; out-of-range values clamp."""
    scaled = value / reg.scale
    if reg.type == "float32":
        raw = struct.pack(">f", float(scaled))
    else:
        number = int(scaled.to_integral_value(ROUND_HALF_EVEN))
        low, high = _RANGE[reg.type]
        number = min(high, max(low, number))
        if reg.type in ("bcd16", "bcd32"):
            raw = _to_bcd(number, 4 * reg.words).to_bytes(2 * reg.words, "big")
        else:
            raw = struct.pack(_STRUCT[reg.type], number)
    words = list(struct.unpack(f">{reg.words}H", raw))
    return _from_bytes(_to_bytes(words, word_order, byte_order), "big", "big")


# The protocol ------------------------------------------------------------------------------


class _Tap:
    """Records what a pymodbus client receives, to tell a garbled answer from silence."""

    def __init__(self, ctx: Any) -> None:
        self.raw = bytearray()
        self._received = ctx.data_received

        def data_received(data: bytes) -> None:
            self.raw += data
            self._received(data)

        ctx.data_received = data_received

    @staticmethod
    def of(client: Any) -> _Tap:
        ctx = client.ctx
        found = getattr(ctx, "_onecard_tap", None)
        if isinstance(found, _Tap):
            return found
        tap = _Tap(ctx)
        ctx._onecard_tap = tap
        # Silent meters are normal on a bus: never let pymodbus drop the connection for them.
        client.set_max_no_responses(1 << 30)
        ctx.count_until_disconnect = 1 << 30
        return tap


def crc16(data: bytes) -> int:
    """The Modbus RTU CRC-16 of ``data`` (sent low byte first)."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def _rtu_length(buffer: bytes | bytearray, *, request: bool) -> int | None:
    """The length of the RTU frame at the start of ``buffer``; None: not known yet; 0: never."""
    if len(buffer) < 2:
        return None
    fc = buffer[1]
    if fc & 0x80:
        return 5
    if request:
        if fc in (1, 2, 3, 4, 5, 6):
            return 8
        if fc in (15, 16):
            if len(buffer) < 7:
                return None
            return 9 + buffer[6]
        return 0
    if fc in (1, 2, 3, 4):
        if len(buffer) < 3:
            return None
        return 5 + buffer[2]
    if fc in (5, 6, 15, 16):
        return 8
    return 0


class ModbusProtocol:
    """Modbus meters described by register maps (see the module docstring)."""

    link = "modbus"

    def __init__(
        self, name: str = "modbus", maps: Mapping[str, RegisterMap] | Iterable[RegisterMap] = ()
    ) -> None:
        self.name = name
        items = maps.values() if isinstance(maps, Mapping) else maps
        self.maps: dict[str, RegisterMap] = {m.model: m for m in items}

    @classmethod
    def from_package(cls, package: str, name: str = "modbus") -> ModbusProtocol:
        """The protocol with every map in ``package``'s ``maps`` folder (each loaded once)."""
        return cls(name, _package_maps(package))

    # MeterProtocol ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        return sorted(self.maps)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "link": self.link,
            "address": "Modbus unit id, 1 to 247",
            "framers": ["socket", "rtu"],
            "models": [self.maps[m].describe() for m in self.models()],
        }

    def check_address(self, address: str) -> str:
        text = str(address).strip()
        try:
            unit = int(text, 10)
        except ValueError:
            raise InvalidInput(
                f"a Modbus unit id is a number from 1 to 247, not {address!r}", field="address"
            ) from None
        if not 1 <= unit <= 247:
            raise InvalidInput(
                f"a Modbus unit id is a number from 1 to 247, not {address!r}", field="address"
            )
        return str(unit)

    def register_map(self, model: str) -> RegisterMap:
        if model:
            found = self.maps.get(model)
            if found is None:
                known = ", ".join(self.models()) or "none"
                raise Unsupported(f"no Modbus register map for model {model!r} (known: {known})")
            return found
        if len(self.maps) == 1:
            return next(iter(self.maps.values()))
        raise Unsupported("the meter names no model and there are several Modbus register maps")

    async def read(self, bus: Any, meter: MeterRef) -> RemoteReading:
        rmap = self.register_map(meter.model)
        unit = int(self.check_address(meter.address))
        client = await bus.modbus()
        values: dict[str, Decimal] = {}
        for block, decoders in zip(rmap.plan, rmap.decoders, strict=True):
            words = await self._read_block(client, bus, block, unit)
            for name, offset, read_value in decoders:
                values[name] = read_value(words, offset)
        return self._reading(rmap, values)

    @staticmethod
    def _reading(rmap: RegisterMap, values: Mapping[str, Decimal]) -> RemoteReading:
        shape, roles = rmap.shape, rmap.roles
        cumulative = sum((values[n] for n in shape.cumulative), Decimal(0))
        relay = None
        if shape.relay is not None:
            name, scale, states = shape.relay
            raw = int(values[name] / scale)
            relay = states.get(raw)
            if relay is None:
                raise BadFrame(f"relay state register holds {raw}, which the map does not know")
        keep = None
        if shape.keep is not None:
            name, scale, on = shape.keep
            keep = int(values[name] / scale) == on
        count = None
        if roles.recharge_count is not None:
            count = int(values[roles.recharge_count])
        return RemoteReading(
            cumulative=cumulative,
            bands={band: values[name] for band, name in shape.bands},
            relay=relay,
            keep_power=keep,
            remaining=None if roles.remaining is None else values[roles.remaining],
            recharge_count=count,
            values={
                name: {"value": str(values[name]), "unit": unit} for name, unit in shape.others
            },
            recharge_count_modulus=shape.modulus,
        )

    async def command(self, bus: Any, meter: MeterRef, command: str) -> None:
        if command not in RELAY_COMMANDS:
            raise InvalidInput(f"unknown relay command {command!r}", field="command")
        rmap = self.register_map(meter.model)
        switch = rmap.roles.relay_command
        if switch is None or command not in switch.values:
            raise Unsupported(f"meter model {rmap.model} has no remote {command!r} command")
        unit = int(self.check_address(meter.address))
        reg = rmap.registers[switch.register]
        words = encode(
            reg, Decimal(switch.values[command]) * reg.scale, rmap.word_order, rmap.byte_order
        )
        client = await bus.modbus()
        await self._write(client, bus, reg.address, words, unit)

    async def recharge(self, bus: Any, meter: MeterRef, amount: Decimal, count: int) -> None:
        rmap = self.register_map(meter.model)
        if rmap.roles.recharge is None:
            raise Unsupported(f"meter model {rmap.model} takes no remote recharge")
        if amount <= 0:
            raise InvalidInput("a recharge amount must be positive", field="amount")
        amount_reg, count_reg = (rmap.registers[n] for n in rmap.roles.recharge)
        unit = int(self.check_address(meter.address))
        parts = sorted(
            [(amount_reg, Decimal(amount)), (count_reg, Decimal(count_on_wire(count_reg, count)))],
            key=lambda p: p[0].address,
        )
        words: list[int] = []
        for reg, value in parts:
            words += encode(reg, value, rmap.word_order, rmap.byte_order)
        client = await bus.modbus()
        await self._write(client, bus, parts[0][0].address, words, unit, multiple=True)

    def responder(self, meters: Mapping[str, Any], framer: str) -> ModbusResponder:
        return ModbusResponder(self, meters, framer)

    # pymodbus calls and their failures -------------------------------------------------------

    async def _read_block(self, client: Any, bus: Any, block: Block, unit: int) -> list[int]:
        call = client.read_holding_registers if block.function == 3 else client.read_input_registers
        response = await self._call(
            client, bus, unit, block.function, call, block.start, count=block.count, device_id=unit
        )
        registers = list(getattr(response, "registers", None) or [])
        if response.function_code != block.function or len(registers) != block.count:
            raise BadFrame(
                f"unit {unit}: asked for {block.count} registers with function {block.function}, "
                f"got {len(registers)} with function {response.function_code}"
            )
        return registers

    async def _write(
        self,
        client: Any,
        bus: Any,
        address: int,
        words: list[int],
        unit: int,
        multiple: bool = False,
    ) -> None:
        if len(words) == 1 and not multiple:
            function = 6
            response = await self._call(
                client, bus, unit, 6, client.write_register, address, words[0], device_id=unit
            )
        else:
            function = 16
            response = await self._call(
                client, bus, unit, 16, client.write_registers, address, words, device_id=unit
            )
        if response.function_code != function or getattr(response, "address", address) != address:
            raise BadFrame(f"unit {unit}: the answer does not acknowledge the write")

    async def _call(
        self, client: Any, bus: Any, unit: int, function: int, call: Any, *args: Any, **kwargs: Any
    ) -> Any:
        from pymodbus.exceptions import ConnectionException, ModbusException

        tap = _Tap.of(client)
        tap.raw.clear()
        try:
            response = await call(*args, **kwargs)
        except ConnectionException as exc:
            await bus.close()
            raise GatewayOffline(f"gateway {bus.link.code}: {exc}") from exc
        except ModbusException as exc:
            if not client.connected:
                await bus.close()
                raise GatewayOffline(f"gateway {bus.link.code}: the connection dropped") from exc
            found = _diagnose(bytes(tap.raw), bus.link.framer, unit, function)
            if isinstance(found, MeterError):
                raise found from exc
            if found is None:
                raise MeterTimeout(f"unit {unit}: no answer within {bus.link.timeout:g} s") from exc
            response = found
        except (OSError, TimeoutError) as exc:
            await bus.close()
            raise GatewayOffline(f"gateway {bus.link.code}: {exc}") from exc
        if response.isError():
            code = getattr(response, "exception_code", 0)
            name = EXCEPTION_NAMES.get(code, "unknown")
            raise MeterRefused(
                f"unit {unit}: Modbus exception {code} ({name}) to function {function}",
                retry=code not in (1, 2, 3),
            )
        return response


@dataclass
class _Answer:
    """An RTU answer onecard found itself where pymodbus dropped it (see :func:`_diagnose`)."""

    function_code: int
    registers: list[int]
    address: int | None = None
    exception_code: int = 0

    def isError(self) -> bool:  # noqa: N802 - pymodbus's name
        return self.function_code & 0x80 != 0

    @classmethod
    def parse(cls, frame: bytes) -> _Answer:
        fc = frame[1]
        if fc & 0x80:
            return cls(fc, [], exception_code=frame[2])
        if fc in (3, 4):
            count = frame[2] // 2
            return cls(fc, list(struct.unpack(f">{count}H", frame[3 : 3 + 2 * count])))
        return cls(fc, [], address=int.from_bytes(frame[2:4], "big"))


def _diagnose(raw: bytes, framer: str, unit: int, function: int) -> MeterError | _Answer | None:
    """What the bytes received during a request that got no valid answer were.

    Complete frames of other requests (a late answer to an earlier, timed-out request) are
    skipped. An RTU answer of the right unit and function with a good CRC is returned: pymodbus's
    RTU framer drops whatever follows a frame in the same read, so a stale answer arriving in one
    chunk with the real one would otherwise hide it. A garbled or truncated answer is BadFrame, a
    wrong CRC BadChecksum. None: nothing but stale frames arrived (a timeout).
    """
    rest = raw
    if framer == "rtu":
        while rest:
            n = _rtu_length(rest, request=False)
            if n is None or n == 0 or len(rest) < n:
                break
            ours = rest[0] == unit and rest[1] & 0x7F == function
            if rest[n - 2 : n] == crc16(rest[: n - 2]).to_bytes(2, "little"):
                if ours:
                    return _Answer.parse(rest[: n - 2])
                rest = rest[n:]  # somebody else's (or a stale) answer
                continue
            if ours:
                return BadChecksum(f"unit {unit}: the answer's CRC is wrong ({rest[:n].hex()})")
            break
        if rest:
            return BadFrame(f"unit {unit}: a garbled answer ({rest[:32].hex()})")
        return None
    while len(rest) >= 8 and rest[2:4] == b"\x00\x00":
        n = 6 + int.from_bytes(rest[4:6], "big")
        if n < 8 or len(rest) < n:
            break
        rest = rest[n:]  # a complete frame pymodbus skipped: a stale transaction id
    if rest:
        return BadFrame(f"unit {unit}: a garbled or truncated answer ({rest[:32].hex()})")
    return None


# The emulator's responder ------------------------------------------------------------------

_UNITS = [str(i) for i in range(256)]
_DEFAULTS = {
    "V": Decimal("220.0"),
    "A": Decimal("1.50"),
    "kW": Decimal("0.330"),
    "kVA": Decimal("0.340"),
    "kvar": Decimal("0.050"),
    "Hz": Decimal("50.00"),
    "°C": Decimal("20.0"),
}


class _Served:
    """One emulated meter's compiled view: where each register's value comes from."""

    def __init__(self, rmap: RegisterMap) -> None:
        self.rmap = rmap
        self.spans: dict[int, tuple[int, int]] = {}
        for reg in rmap.registers.values():
            low, high = self.spans.get(reg.function, (reg.address, reg.address + reg.words))
            self.spans[reg.function] = (min(low, reg.address), max(high, reg.address + reg.words))
        roles = rmap.roles
        self.sources: list[tuple[Register, str, Any]] = []
        cumulative = [rmap.registers[n] for n in roles.cumulative]
        role_of: dict[str, tuple[str, Any]] = {}
        for i, reg in enumerate(cumulative):
            role_of[reg.name] = ("cumulative", (i, cumulative))
        for band, name in roles.bands.items():
            role_of[name] = ("band", band)
        if roles.relay_state is not None:
            role_of[roles.relay_state.register] = ("relay", roles.relay_state.values)
        if roles.keep_power is not None:
            role_of[roles.keep_power.register] = ("keep", roles.keep_power.values)
        if roles.remaining is not None:
            role_of[roles.remaining] = ("remaining", None)
        if roles.recharge_count is not None:
            role_of[roles.recharge_count] = ("count", None)
        self.write_only = {name for name, reg in rmap.registers.items() if not reg.readable}
        for reg in sorted(rmap.registers.values(), key=lambda r: r.address):
            kind, extra = role_of.get(reg.name, ("value", None))
            if reg.name in self.write_only:
                kind = "written"
            self.sources.append((reg, kind, extra))
        self.command_values = (
            {v: k for k, v in roles.relay_command.values.items()} if roles.relay_command else {}
        )
        self.command_reg = (
            rmap.registers[roles.relay_command.register] if roles.relay_command else None
        )
        self.recharge = (
            tuple(rmap.registers[n] for n in roles.recharge) if roles.recharge is not None else None
        )


class ModbusResponder:
    """Answers Modbus requests for emulated meters (``SimMeter`` by unit id) on one port."""

    def __init__(self, protocol: ModbusProtocol, meters: Mapping[str, Any], framer: str) -> None:
        if framer not in ("socket", "rtu"):
            raise InvalidInput(f"Modbus framing is socket or rtu, not {framer!r}", field="framer")
        self.protocol = protocol
        self.meters = meters
        self.framer = framer
        self._compiled: dict[str, _Served] = {}
        self._state: dict[
            int, dict[tuple[int, int], tuple[int, ...]]
        ] = {}  # id(sim) -> written words

    # framing ---------------------------------------------------------------------------------

    def feed(self, buffer: bytes) -> Frame | None:
        if self.framer == "socket":
            return self._feed_socket(buffer)
        return self._feed_rtu(buffer)

    def _feed_socket(self, buffer: bytes) -> Frame | None:
        if len(buffer) < 8:
            if len(buffer) >= 4 and buffer[2:4] != b"\x00\x00":
                return Frame(consumed=1, response=None)
            return None
        length = (buffer[4] << 8) | buffer[5]
        if buffer[2:4] != b"\x00\x00" or not 2 <= length <= 254:
            return Frame(consumed=1, response=None)
        n = 6 + length
        if len(buffer) < n:
            return None
        unit = buffer[6]
        sim = self.meters.get(_UNITS[unit])
        if sim is None:
            return Frame(consumed=n, response=None)
        pdu = self._answer(sim, buffer[7:n])
        return Frame(
            consumed=n,
            response=buffer[0:4] + (len(pdu) + 1).to_bytes(2, "big") + bytes((unit,)) + pdu,
            meter=sim,
        )

    def _feed_rtu(self, buffer: bytes) -> Frame | None:
        n = _rtu_length(buffer, request=True)
        if n is None:
            return None
        if n == 0:  # an unknown function: find its end by the CRC, if it is all here
            for end in range(4, len(buffer) + 1):
                if buffer[end - 2 : end] == crc16(buffer[: end - 2]).to_bytes(2, "little"):
                    n = end
                    break
            else:
                return Frame(consumed=1, response=None) if len(buffer) > 256 else None
        if len(buffer) < n:
            return None
        if buffer[n - 2 : n] != crc16(buffer[: n - 2]).to_bytes(2, "little"):
            return Frame(consumed=1, response=None)
        unit = buffer[0]
        sim = self.meters.get(_UNITS[unit]) if unit else None
        if sim is None:
            return Frame(consumed=n, response=None)
        frame = bytes((unit,)) + self._answer(sim, buffer[1 : n - 2])
        return Frame(consumed=n, response=frame + crc16(frame).to_bytes(2, "little"), meter=sim)

    def corrupt(self, response: bytes) -> bytes:
        """The same answer made invalid: a wrong CRC (rtu) or a wrong MBAP length (socket)."""
        if self.framer == "rtu":
            return response[:-1] + bytes((response[-1] ^ 0xFF,))
        length = int.from_bytes(response[4:6], "big") + 1
        return response[:4] + length.to_bytes(2, "big") + response[6:]

    # the meter -------------------------------------------------------------------------------

    def _served(self, sim: Any) -> _Served:
        model = getattr(sim, "model", "")
        served = self._compiled.get(model)
        if served is None:
            try:
                rmap = self.protocol.register_map(model)
            except Unsupported as exc:
                raise InvalidInput(str(exc), field="model") from exc
            served = self._compiled[model] = _Served(rmap)
        return served

    def _answer(self, sim: Any, pdu: bytes) -> bytes:
        fc = pdu[0] if pdu else 0
        try:
            if fc in (3, 4):
                if len(pdu) != 5:
                    return bytes((fc | 0x80, 3))
                start, count = struct.unpack(">HH", pdu[1:5])
                if not 1 <= count <= MAX_READ:
                    return bytes((fc | 0x80, 3))
                words = self._read(sim, fc, start, count)
                if words is None:
                    return bytes((fc | 0x80, 2))
                return bytes((fc, 2 * count)) + struct.pack(f">{count}H", *words)
            if fc == 6:
                if len(pdu) != 5:
                    return bytes((fc | 0x80, 3))
                address, value = struct.unpack(">HH", pdu[1:5])
                code = self._write(sim, address, [value])
                return bytes((fc | 0x80, code)) if code else pdu
            if fc == 16:
                if len(pdu) < 6:
                    return bytes((fc | 0x80, 3))
                address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
                if not 1 <= count <= MAX_WRITE or nbytes != 2 * count or len(pdu) != 6 + nbytes:
                    return bytes((fc | 0x80, 3))
                values = list(struct.unpack(f">{count}H", pdu[6:]))
                code = self._write(sim, address, values)
                return bytes((fc | 0x80, code)) if code else pdu[:5]
        except InvalidInput:
            return bytes(((fc | 0x80) & 0xFF, 4))
        return bytes(((fc | 0x80) & 0xFF, 1))

    def _read(self, sim: Any, fc: int, start: int, count: int) -> list[int] | None:
        served = self._served(sim)
        span = served.spans.get(fc)
        if span is None or start < span[0] or start + count > span[1]:
            return None
        image = [0] * count
        written = self._state.get(id(sim), {})
        rmap = served.rmap
        end = start + count
        with sim.lock:
            for reg, kind, extra in served.sources:
                if reg.function != fc or reg.address + reg.words <= start or reg.address >= end:
                    continue
                words: Sequence[int] | None = written.get((reg.address, reg.words))
                if words is None or kind != "written":
                    words = self._words(sim, reg, kind, extra, rmap, written)
                for i, word in enumerate(words):
                    at = reg.address + i - start
                    if 0 <= at < count:
                        image[at] = word
        return image

    @staticmethod
    def _words(
        sim: Any,
        reg: Register,
        kind: str,
        extra: Any,
        rmap: RegisterMap,
        written: Mapping[tuple[int, int], Any],
    ) -> list[int]:
        wo, bo = rmap.word_order, rmap.byte_order
        if kind == "cumulative":
            index, parts = extra
            value = sim.cumulative
            for part in parts[:index]:
                value -= (value / part.scale).to_integral_value(ROUND_FLOOR) * part.scale
            if index < len(parts) - 1:
                value = (value / reg.scale).to_integral_value(ROUND_FLOOR) * reg.scale
            return encode(reg, value, wo, bo)
        if kind == "band":
            return encode(reg, sim.bands.get(extra, Decimal(0)), wo, bo)
        if kind == "relay":
            state = "closed" if sim.relay_closed else "open"
            return encode(reg, Decimal(extra[state]) * reg.scale, wo, bo)
        if kind == "keep":
            return encode(
                reg, Decimal(extra["on" if sim.keep_power else "off"]) * reg.scale, wo, bo
            )
        if kind == "remaining":
            return encode(reg, sim.remaining if sim.remaining is not None else Decimal(0), wo, bo)
        if kind == "count":
            return encode(reg, Decimal(count_on_wire(reg, sim.recharge_count)) * reg.scale, wo, bo)
        if kind == "written":
            return [0] * reg.words
        stored = written.get((reg.address, reg.words))
        if stored is not None:
            return list(stored)
        value = sim.values.get(reg.name)
        if value is None:
            value = reg.default if reg.default is not None else _DEFAULTS.get(reg.unit, Decimal(0))
        return encode(reg, Decimal(str(value)), wo, bo)

    def _write(self, sim: Any, address: int, values: list[int]) -> int:
        """Apply a write; 0 when done, else the Modbus exception code."""
        served = self._served(sim)
        rmap = served.rmap
        end = address + len(values)
        touched = [
            reg
            for reg in rmap.registers.values()
            if reg.function == 3 and reg.address < end and reg.address + reg.words > address
        ]
        covered = sum(reg.words for reg in touched)
        if not touched or covered != len(values) or any(not reg.writable for reg in touched):
            return 2
        if any(reg.address < address or reg.address + reg.words > end for reg in touched):
            return 2
        words = {
            reg.name: values[reg.address - address : reg.address - address + reg.words]
            for reg in touched
        }
        if served.recharge is not None and any(reg in served.recharge for reg in touched):
            amount_reg, count_reg = served.recharge
            if amount_reg.name not in words or count_reg.name not in words:
                return 3
            amount = decode(amount_reg, words[amount_reg.name], rmap.word_order, rmap.byte_order)
            count = unwrap_count(
                int(decode(count_reg, words[count_reg.name], rmap.word_order, rmap.byte_order)),
                count_modulus(count_reg),
                sim.recharge_count + 1,
            )
            if not sim.recharge(amount, count):
                return 4
        if served.command_reg is not None and served.command_reg in touched:
            raw = int(
                decode(
                    served.command_reg,
                    words[served.command_reg.name],
                    rmap.word_order,
                    rmap.byte_order,
                )
                / served.command_reg.scale
            )
            command = served.command_values.get(raw)
            if command is None:
                return 3
            if not sim.command(command):
                return 4
        state = self._state.setdefault(id(sim), {})
        for reg in touched:
            state[(reg.address, reg.words)] = tuple(words[reg.name])
        return 0
