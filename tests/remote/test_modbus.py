"""Modbus register maps, planning, decoding, and real pymodbus clients against the fleet emulator.

Clients are real: pymodbus through onecard's Bus over TCP on 127.0.0.1 (MBAP framing) and over a
socat pty pair (RTU framing with CRC-16); ``mbpoll`` (Debian) reads the emulator in one test.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecard.errors import InvalidInput
from onecard.fleet.server import Fleet
from onecard.fleet.sim import SimMeter
from onecard.remote.bus import Bus
from onecard.remote.modbus import (
    TYPES,
    ModbusProtocol,
    Register,
    crc16,
    decode,
    decoder,
    encode,
    load_map,
    plan_reads,
)
from onecard.remote.types import (
    BadChecksum,
    BadFrame,
    GatewayLink,
    GatewayOffline,
    MeterRef,
    MeterRefused,
    MeterTimeout,
    Unsupported,
)

ELECTRIC = ModbusProtocol.from_package("onecard_electric")
GAS = ModbusProtocol.from_package("onecard_gas")
ACREL = "acrel-ddsy1352"

MINIMAL = """
model: test-meter
titles: {zh-CN: 测试表, en: Test meter}
manufacturer: nobody
source: this test
registers:
  total: {address: 0x10, type: uint32, scale: "0.01", unit: kWh}
roles:
  cumulative: total
"""


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def meter(address: str, **kw: Any) -> SimMeter:
    base: dict[str, Any] = {
        "model": ACREL,
        "cumulative": Decimal("1234.56"),
        "bands": {
            "sharp": Decimal("100.01"),
            "peak": Decimal("200.02"),
            "flat": Decimal("300.03"),
            "valley": Decimal("634.50"),
        },
        "remaining": Decimal("88.80"),
        "price": Decimal("0.5"),
        "recharge_count": 3,
    }
    base.update(kw)
    return SimMeter(address=address, **base)


def ref(address: str, model: str = ACREL) -> MeterRef:
    return MeterRef(
        meter_id=int(address), serial=f"S{address}", kind="x", address=address, model=model
    )


async def with_fleet(
    meters: list[SimMeter],
    body: Callable[[Fleet, Bus], Awaitable[Any]],
    *,
    framer: str = "socket",
    transport: str = "tcp",
    protocol: ModbusProtocol = ELECTRIC,
    timeout: float = 0.3,
) -> Any:
    fleet = Fleet()
    port = fleet.add_port("p", protocol, framer=framer, transport=transport, meters=meters)
    await fleet.start()
    if transport == "tcp":
        link = GatewayLink(
            "g", "tcp", host=port.host, port=port.port, framer=framer, timeout=timeout
        )
    else:
        link = GatewayLink(
            "g", "serial", device=port.device, framer="rtu", timeout=timeout, baudrate=115200
        )
    bus = Bus(link)
    try:
        return await body(fleet, bus)
    finally:
        await bus.close()
        await fleet.stop()


# The map format ----------------------------------------------------------------------------


def test_shipped_maps_load_and_plan_one_request_for_electricity() -> None:
    assert ELECTRIC.models() == [ACREL]
    rmap = ELECTRIC.maps[ACREL]
    assert len(rmap.plan) == 1  # the whole meter in one read
    assert rmap.registers["energy_total"].address == 0
    assert rmap.registers["power"].type == "int16"
    assert rmap.registers["relay_command"].assumed
    for package in ("onecard_water", "onecard_heat", "onecard_gas"):
        protocol = ModbusProtocol.from_package(package)
        assert protocol.models()
        for rmap in protocol.maps.values():
            assert rmap.source and rmap.titles["zh-CN"] and rmap.titles["en"]
    assert GAS.maps["generic-prepaid-gas"].roles.recharge is not None
    described = ELECTRIC.describe()
    assert described["models"][0]["requests_per_read"] == 1


def test_the_kinds_carry_the_protocol() -> None:
    from onecard.plugins import load_plugins

    plugins = load_plugins()
    registry = plugins.utilities
    for code in ("electric", "water.cold", "water.hot", "heat", "gas"):
        assert "modbus" in registry.get(code).protocols


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            ("total: {address: 0x10, type: uint32,", "total: {address: 0x10, type: uint64,"),
            "registers.total.type",
        ),
        (('scale: "0.01"', "scale: 0.01"), "registers.total.scale"),
        (('scale: "0.01"', 'scale: "-1"'), "registers.total.scale"),
        (("address: 0x10", "address: 70000"), "registers.total.address"),
        (("address: 0x10", "address: zz"), "registers.total.address"),
        (("cumulative: total", "cumulative: nothing"), "roles.cumulative"),
        (("cumulative: total", "bands: {}"), "roles.cumulative"),
        (("en: Test meter", "fr: Compteur"), "titles.en"),
        (("unit: kWh}", "unit: kWh, access: x}"), "registers.total.access"),
        (("unit: kWh}", "unit: kWh, colour: red}"), "registers.total.colour"),
        (("source: this test\n", ""), "source"),
        (("unit: kWh}", "unit: kWh, access: rw, function: input}"), "registers.total.function"),
    ],
)
def test_map_errors_name_the_file_and_field(change: tuple[str, str], field: str) -> None:
    text = MINIMAL.replace(*change)
    assert text != MINIMAL
    with pytest.raises(InvalidInput) as err:
        load_map(text, "broken.yaml")
    assert err.value.field == field
    assert "broken.yaml" in err.value.message and field in err.value.message


def test_role_errors() -> None:
    text = (
        MINIMAL
        + """
  relay_command: {register: total, trip: 1, close: 2}
"""
    )
    with pytest.raises(InvalidInput) as err:
        load_map(text, "x.yaml")
    assert err.value.field == "roles.relay_command.register"  # not writable
    text = (
        MINIMAL.replace(
            "registers:\n",
            "registers:\n  amount: {address: 0, type: uint32, access: w}\n"
            "  number: {address: 3, type: uint16, access: w}\n  left: {address: 5, type: int32}\n"
            "  count: {address: 7, type: uint16}\n",
        )
        + "  remaining: left\n  recharge_count: count\n"
        + "  recharge: {amount: amount, count: number}\n"
    )
    with pytest.raises(InvalidInput) as err:
        load_map(text, "x.yaml")
    assert err.value.field == "roles.recharge"  # not adjacent: no single write
    overlap = MINIMAL.replace("registers:\n", "registers:\n  low: {address: 0x11, type: uint16}\n")
    with pytest.raises(InvalidInput) as err:
        load_map(overlap, "x.yaml")
    assert "overlaps" in err.value.message


def test_planning_merges_blocks_with_small_gaps() -> None:
    regs = [
        Register("a", 0, "uint32"),
        Register("b", 4, "uint16"),  # gap of 2: same request
        Register("c", 40, "uint16"),  # far: a new request
        Register("d", 41, "float32"),
        Register("e", 0, "uint16", function=4),  # input registers: their own request
        Register("w", 5, "uint16", access="w"),  # write-only: never read
    ]
    plan = plan_reads(regs, max_gap=8)
    assert [(b.function, b.start, b.count) for b in plan] == [(3, 0, 5), (3, 40, 3), (4, 0, 1)]
    wide = [Register(f"r{i}", i * 10, "uint16") for i in range(30)]
    plan = plan_reads(wide, max_gap=10)
    assert all(b.count <= 125 for b in plan) and len(plan) == 3
    assert len(plan_reads(wide, max_gap=0)) == 30


#: Any register: its type, raw content, scale and word and byte order.
REGISTERS = {
    "kind": st.sampled_from(sorted(TYPES)),
    "raw": st.integers(min_value=0, max_value=2**32 - 1),
    "scale": st.sampled_from(["1", "0.1", "0.01", "0.001", "10"]),
    "word_order": st.sampled_from(["big", "little"]),
    "byte_order": st.sampled_from(["big", "little"]),
}


def register_words(kind: str, raw: int, scale: str) -> tuple[Register, list[int]]:
    """A register of ``kind`` and its words (big-endian) holding ``raw``."""
    reg = Register("x", 0, kind, Decimal(scale))
    if kind.startswith("bcd"):  # BCD registers hold decimal digits only
        raw = int(str(raw)[-4 * reg.words :], 16)
    return reg, [raw & 0xFFFF] if reg.words == 1 else [raw >> 16, raw & 0xFFFF]


@settings(max_examples=300, deadline=None)
@given(**REGISTERS)
def test_decode_encode_round_trip(
    kind: str, raw: int, scale: str, word_order: str, byte_order: str
) -> None:
    """Any raw register content decodes to a Decimal that encodes back to the same words."""
    reg, words = register_words(kind, raw, scale)
    if kind == "float32":
        number = struct.unpack(">f", raw.to_bytes(4, "big"))[0]
        if number != number or abs(number) == float("inf"):
            return
    wire = encode(reg, decode(reg, words, "big", "big"), word_order, byte_order)
    value = decode(reg, wire, word_order, byte_order)
    assert isinstance(value, Decimal)
    assert value == decode(reg, words, "big", "big")
    assert encode(reg, value, word_order, byte_order) == wire


@settings(max_examples=300, deadline=None)
@given(**REGISTERS, offset=st.integers(min_value=0, max_value=3))
def test_a_prepared_decoder_reads_what_decode_reads(
    kind: str, raw: int, scale: str, word_order: str, byte_order: str, offset: int
) -> None:
    """The per-register decoders a read uses agree with :func:`decode` on any words, at any
    offset in a block."""
    reg, own = register_words(kind, raw, scale)
    block = [0xFFFF] * offset + own + [0x1234]
    try:
        expected = decode(reg, own, word_order, byte_order)
    except BadFrame:  # a float32 that is not a finite number
        with pytest.raises(BadFrame):
            decoder(reg, word_order, byte_order)(block, offset)
        return
    got = decoder(reg, word_order, byte_order)(block, offset)
    assert got == expected and str(got) == str(expected)


def test_decode_examples() -> None:
    total = Register("t", 0, "uint32", Decimal("0.01"))
    assert decode(total, [0x0001, 0xE240]) == Decimal("1234.56")
    assert decode(total, [0xE240, 0x0001], "little") == Decimal("1234.56")
    power = Register("p", 0, "int16", Decimal("0.001"))
    assert decode(power, [0xFFFF]) == Decimal("-0.001")
    heat = Register("h", 0, "float32")
    assert decode(heat, encode(heat, Decimal("123.45"))) == Decimal("123.45")  # not 123.4499969...
    bcd = Register("b", 0, "bcd32", Decimal("0.01"))
    assert decode(bcd, [0x0012, 0x3456]) == Decimal("1234.56")
    assert crc16(bytes.fromhex("010300000002")).to_bytes(2, "little") == bytes.fromhex("c40b")


def test_addresses() -> None:
    assert ELECTRIC.check_address(" 017 ") == "17"
    for bad in ("0", "248", "x", ""):
        with pytest.raises(InvalidInput) as err:
            ELECTRIC.check_address(bad)
        assert err.value.field == "address"


# The responder, fed bytes directly ---------------------------------------------------------


def test_responder_frames_and_exceptions() -> None:
    sim = meter("5")
    rtu = ELECTRIC.responder({"5": sim}, "rtu")
    request = bytes.fromhex("0503000000") + bytes([2])
    frame = rtu.feed(request + crc16(request).to_bytes(2, "little"))
    assert frame is not None and frame.meter is sim and frame.consumed == 8
    body = frame.response
    assert body is not None and body[:3] == bytes.fromhex("050304")
    assert int.from_bytes(body[3:7], "big") == 123456
    assert rtu.corrupt(body)[:-1] == body[:-1] and rtu.corrupt(body) != body
    assert rtu.feed(request) is None  # incomplete
    bad = rtu.feed(request + b"\x00\x00")
    assert bad is not None and bad.consumed == 1 and bad.response is None  # resync
    other = bytes.fromhex("0603000000") + bytes([2])
    silent = rtu.feed(other + crc16(other).to_bytes(2, "little"))
    assert silent is not None and silent.response is None and silent.consumed == 8

    tcp = ELECTRIC.responder({"5": sim}, "socket")

    def ask(pdu: bytes, unit: int = 5) -> bytes:
        frame = tcp.feed(
            b"\x12\x34\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu
        )
        assert frame is not None and frame.response is not None
        assert frame.response[:2] == b"\x12\x34"
        return frame.response[7:]

    assert ask(bytes.fromhex("2b0e0100")) == bytes.fromhex("ab01")  # function 43: illegal function
    assert ask(bytes.fromhex("0300c80001")) == bytes.fromhex("8302")  # outside the map
    assert ask(bytes.fromhex("0400000001")) == bytes.fromhex("8402")  # no input registers
    assert ask(bytes.fromhex("0600000001")) == bytes.fromhex("8602")  # read-only register
    assert ask(bytes.fromhex("0600220009")) == bytes.fromhex("8603")  # no such relay command
    assert ask(bytes.fromhex("0600220001")) == bytes.fromhex("0600220001")  # trip
    assert not sim.relay_closed
    wrong = tcp.corrupt(b"\x00\x01\x00\x00\x00\x03\x05\x83\x02")
    assert wrong[4:6] == b"\x00\x04"


# Real pymodbus clients against the fleet ---------------------------------------------------


@pytest.mark.parametrize("framer", ["socket", "rtu"])
def test_reads_commands_and_recharge(framer: str) -> None:
    meters = [meter("1"), meter("17", cumulative=Decimal("5.00"), bands={}), meter("247")]

    async def body(fleet: Fleet, bus: Bus) -> None:
        reading = await ELECTRIC.read(bus, ref("1"))
        assert reading.cumulative == Decimal("1234.56")
        assert reading.bands == {
            "sharp": Decimal("100.01"),
            "peak": Decimal("200.02"),
            "flat": Decimal("300.03"),
            "valley": Decimal("634.50"),
        }
        assert reading.relay == "closed" and reading.keep_power is False
        assert reading.remaining == Decimal("88.80") and reading.recharge_count == 3
        assert reading.values["voltage"] == {"value": "220.0", "unit": "V"}
        assert reading.values["power"]["value"] == "0.330"
        assert (await ELECTRIC.read(bus, ref("17"))).cumulative == Decimal("5.00")
        # relay commands, read back
        await ELECTRIC.command(bus, ref("247"), "trip")
        assert (await ELECTRIC.read(bus, ref("247"))).relay == "open"
        await ELECTRIC.command(bus, ref("247"), "keep")
        after = await ELECTRIC.read(bus, ref("247"))
        assert after.relay == "closed" and after.keep_power is True
        with pytest.raises(MeterRefused):  # a kept meter refuses to trip
            await ELECTRIC.command(bus, ref("247"), "trip")
        await ELECTRIC.command(bus, ref("247"), "release")
        await ELECTRIC.command(bus, ref("247"), "trip")
        await ELECTRIC.command(bus, ref("247"), "close")
        assert (await ELECTRIC.read(bus, ref("247"))).relay == "closed"
        # recharge: only the next count is accepted
        with pytest.raises(MeterRefused):
            await ELECTRIC.recharge(bus, ref("1"), Decimal("50"), 3)
        with pytest.raises(MeterRefused):
            await ELECTRIC.recharge(bus, ref("1"), Decimal("50"), 5)
        await ELECTRIC.recharge(bus, ref("1"), Decimal("50.25"), 4)
        again = await ELECTRIC.read(bus, ref("1"))
        assert again.remaining == Decimal("139.05") and again.recharge_count == 4
        sim = fleet.meter("p", "1")
        assert sim.remaining == Decimal("139.05") and sim.recharge_count == 4

    transport = "tcp" if framer == "socket" else "pty"
    run(with_fleet(meters, body, framer=framer, transport=transport))


def test_rtu_over_tcp_gateway_and_input_registers() -> None:
    """RTU frames through a transparent TCP gateway; the gas map reads input + holding blocks."""
    meters = [
        SimMeter(
            "3",
            model="generic-prepaid-gas",
            cumulative=Decimal("77.7"),
            remaining=Decimal("20"),
            price=Decimal("3"),
        )
    ]

    async def body(fleet: Fleet, bus: Bus) -> None:
        reading = await GAS.read(bus, ref("3", "generic-prepaid-gas"))
        assert reading.cumulative == Decimal("77.70") and reading.remaining == Decimal("20.00")
        assert reading.values["temperature"]["value"] == "18.0"
        await GAS.command(bus, ref("3", "generic-prepaid-gas"), "trip")
        assert (await GAS.read(bus, ref("3", "generic-prepaid-gas"))).relay == "open"
        with pytest.raises(Unsupported):
            await GAS.command(bus, ref("3", "generic-prepaid-gas"), "keep")
        await GAS.recharge(bus, ref("3", "generic-prepaid-gas"), Decimal("10"), 1)
        assert fleet.meter("p", "3").remaining == Decimal("30")

    run(with_fleet(meters, body, framer="rtu", protocol=GAS))


def test_unsupported_roles() -> None:
    water = ModbusProtocol.from_package("onecard_water")

    async def body(fleet: Fleet, bus: Bus) -> None:
        m = ref("9", "dynaflox-ultrad")
        reading = await water.read(bus, m)
        assert reading.cumulative == Decimal("12.345678")
        with pytest.raises(Unsupported):
            await water.command(bus, m, "trip")
        with pytest.raises(Unsupported):
            await water.recharge(bus, m, Decimal(1), 1)
        with pytest.raises(Unsupported):
            await water.read(bus, ref("9", "no-such-model"))

    sim = SimMeter("9", model="dynaflox-ultrad", cumulative=Decimal("12.345678"))
    run(with_fleet([sim], body, protocol=water))


@pytest.mark.parametrize(
    ("framer", "fault", "error"),
    [
        ("socket", "silent", MeterTimeout),
        ("socket", "slow", MeterTimeout),
        ("socket", "garbage", BadFrame),
        ("socket", "checksum", BadFrame),
        ("rtu", "silent", MeterTimeout),
        ("rtu", "slow", MeterTimeout),
        ("rtu", "garbage", BadFrame),
        ("rtu", "checksum", BadChecksum),
    ],
)
def test_faults_are_reported_and_do_not_poison_the_bus(
    framer: str, fault: str, error: type
) -> None:
    meters = [
        meter("1"),
        meter("2", cumulative=Decimal("2.00")),
        meter("3", cumulative=Decimal("3.00")),
    ]

    async def body(fleet: Fleet, bus: Bus) -> None:
        assert (await ELECTRIC.read(bus, ref("1"))).cumulative == Decimal("1234.56")
        fleet.set_fault("p", "2", fault, delay=0.5)
        for _ in range(2):
            with pytest.raises(error) as err:
                await ELECTRIC.read(bus, ref("2"))
            if error is BadFrame:
                assert not isinstance(err.value, BadChecksum)
            # the next meter on the same connection reads fine, even with a late answer in flight
            assert (await ELECTRIC.read(bus, ref("3"))).cumulative == Decimal("3.00")
            assert (await ELECTRIC.read(bus, ref("1"))).cumulative == Decimal("1234.56")
        if fault == "slow":
            await asyncio.sleep(0.6)  # the late answers have all arrived by now
        fleet.set_fault("p", "2", None)
        assert (await ELECTRIC.read(bus, ref("2"))).cumulative == Decimal("2.00")

    transport = "tcp" if framer == "socket" else "pty"
    run(with_fleet(meters, body, framer=framer, transport=transport))


def test_many_silent_meters_do_not_drop_the_connection() -> None:
    meters = [meter(str(i)) for i in range(1, 8)]

    async def body(fleet: Fleet, bus: Bus) -> None:
        for i in range(1, 7):
            fleet.set_fault("p", str(i), "silent")
        for i in range(1, 7):
            with pytest.raises(MeterTimeout):
                await ELECTRIC.read(bus, ref(str(i)))
        assert (await ELECTRIC.read(bus, ref("7"))).cumulative == Decimal("1234.56")

    run(with_fleet(meters, body, timeout=0.1))


def test_offline_gateway() -> None:
    async def body(fleet: Fleet, bus: Bus) -> None:
        assert (await ELECTRIC.read(bus, ref("1"))).cumulative == Decimal("1234.56")
        await fleet.ports["p"].set_offline(True)
        await asyncio.sleep(0.05)
        with pytest.raises(GatewayOffline):
            await ELECTRIC.read(bus, ref("1"))
        with pytest.raises(GatewayOffline):
            await ELECTRIC.command(bus, ref("1"), "trip")
        await fleet.ports["p"].set_offline(False)
        assert (await ELECTRIC.read(bus, ref("1"))).cumulative == Decimal("1234.56")

    run(with_fleet([meter("1")], body))


def test_nothing_listening_is_offline() -> None:
    async def body() -> None:
        bus = Bus(GatewayLink("g", "tcp", host="127.0.0.1", port=1, timeout=0.3))
        with pytest.raises(GatewayOffline):
            await ELECTRIC.read(bus, ref("1"))
        await bus.close()

    run(body())


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll is not installed")
def test_mbpoll_reads_the_emulator() -> None:
    fleet = Fleet()
    sim = meter("3", cumulative=Decimal("4321.09"))
    port = fleet.add_port("p", ELECTRIC, framer="socket", transport="tcp", meters=[sim])
    with fleet.running():
        out = subprocess.run(
            [
                "mbpoll",
                "-m",
                "tcp",
                "-a",
                "3",
                "-r",
                "1",
                "-c",
                "14",
                "-t",
                "4",
                "-1",
                "-p",
                str(port.port),
                "-o",
                "2",
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    # mbpoll prints "[ref]: \tvalue" (with "(signed)" after values over 32767); references are
    # 1-based: reference 1 is register address 0.
    values = {int(m[1]) - 1: int(m[2]) for m in re.finditer(r"^\[(\d+)\]:\s+(-?\d+)", out, re.M)}
    assert len(values) == 14, out
    assert (values[0] << 16) | values[1] == 432109  # total energy, 0.01 kWh
    assert (values[2] << 16) | values[3] == 10001  # sharp
    assert (values[8] << 16) | values[9] == 63450  # valley
    assert values[11] == 2200  # voltage, 0.1 V
    assert values[12] == 150  # current, 0.01 A
    assert values[13] == 330  # power, 0.001 kW


def test_responder_speed() -> None:
    """The responder alone: far faster than any client (the benchmark reads 10,000+ meters)."""
    meters = {str(i): meter(str(i)) for i in range(1, 248)}
    responder = ELECTRIC.responder(meters, "socket")
    frames = [
        b"\x00\x01\x00\x00\x00\x06" + bytes([i]) + bytes.fromhex("0300000027")
        for i in range(1, 248)
    ]
    start = time.perf_counter()
    n = 0
    while n < 5000:
        for frame in frames:
            assert responder.feed(frame) is not None
            n += 1
    rate = n / (time.perf_counter() - start)
    print(f"responder: {rate:,.0f} reads/s")
    assert rate > 5000


def test_reading_from_decoded_values() -> None:
    """The reading is built from the map's roles: what is left over is shown as it is, in the
    order it is read; a relay state the map does not know is a bad frame."""
    rmap = ELECTRIC.register_map(ACREL)
    roles = rmap.roles
    values = {reg.name: Decimal(0) for block in rmap.plan for reg, _ in block.members}
    values[roles.cumulative[0]] = Decimal("12.34")
    assert roles.relay_state is not None and roles.keep_power is not None
    relay = roles.relay_state.register
    values[relay] = roles.relay_state.values["open"] * rmap.registers[relay].scale
    keep = roles.keep_power.register
    values[keep] = roles.keep_power.values["on"] * rmap.registers[keep].scale
    reading = ELECTRIC._reading(rmap, values)
    assert reading.cumulative == Decimal("12.34")
    assert (reading.relay, reading.keep_power) == ("open", True)
    role_registers = {relay, keep, *roles.cumulative, *roles.bands.values()}
    role_registers |= {n for n in (roles.remaining, roles.recharge_count) if n}
    assert list(reading.values) == [n for n in values if n not in role_registers]
    assert reading.values["voltage"] == {"value": "0", "unit": "V"}
    assert reading.recharge_count_modulus == 65536
    values[relay] = Decimal(77) * rmap.registers[relay].scale
    with pytest.raises(BadFrame, match="relay state register holds 77"):
        ELECTRIC._reading(rmap, values)
