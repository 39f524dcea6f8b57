"""CJ/T 188-2004 (water, heat and gas meters): the core's frame codec and protocol, each plugin's
payload layout, and our emulated meter.

Checked against example frames published by others (cited at each test), by round trips with
hypothesis, and over a real serial link: a ``socat`` pty pair at 2400 baud 8E1 served by the fleet
emulator, read and commanded through the core's Bus.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import termios
from collections.abc import Awaitable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

import onecard_gas
import onecard_heat
import onecard_water
from onecard.errors import InvalidInput
from onecard.fleet.server import Fleet
from onecard.fleet.sim import SimClock, SimMeter
from onecard.interfaces import MeterProtocol
from onecard.plugins import load_plugins
from onecard.remote import cjt188 as c
from onecard.remote.bus import Bus
from onecard.remote.types import (
    BadChecksum,
    BadFrame,
    GatewayLink,
    MeterRef,
    MeterRefused,
    MeterTimeout,
    RemoteReading,
    Unsupported,
)
from onecard_gas import cjt188 as gas
from onecard_heat import cjt188 as heat
from onecard_water import cjt188 as water

T = TypeVar("T")
ADDRESS = "00000012345678"
NOW = dt.datetime(2026, 11, 1, 8, 30, 15)


def run(coro: Awaitable[T], timeout: float = 15.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def ref(address: str = ADDRESS, kind: str = "water.cold", model: str = "") -> MeterRef:
    return MeterRef(meter_id=1, serial="W1", kind=kind, address=address, model=model)


def frame(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


# Published example frames -----------------------------------------------------------------------


def test_the_standards_example_read_request() -> None:
    # The read of current data (901FH) from CJ/T 188-2004, as quoted "from standard" in syntropic's
    # test_cjt188.c (68 10 44 33 22 11 00 33 78 01 03 1F 90 00, CS 80): DI low byte first.
    published = frame("68 10 44 33 22 11 00 33 78 01 03 1F 90 00 80 16")
    ours = c.Cjt188Frame(0x10, "78330011223344", c.READ_DATA, c.di_bytes(c.DI_CURRENT) + b"\x00")
    assert ours.encode() == published
    assert c.frame_length(b"\xfe\xfe\xfe\xfe" + published) == 20
    decoded = c.decode_frame(published)
    assert decoded.di() == (0x901F, False)
    assert (decoded.meter_type, decoded.function, decoded.is_reply) == (0x10, 0x01, False)


def test_the_standards_example_water_reply() -> None:
    # The reply to it, in FoxEdge's CJT188 Demo.java (fox-edge device protocol): 556677.00 m³ now
    # and on the settlement day, real time 2015-05-11 22:01:31 (ss mm hh DD MM YY YY), ST 84 21.
    published = frame(
        "68 10 44 33 22 11 00 33 78 81 16 1F 90 00 00 77 66 55 2C 00 77 66 55 2C"
        " 31 01 22 11 05 15 20 21 84 13 16"
    )
    decoded = c.decode_frame(published)
    assert decoded.address == "78330011223344"
    assert decoded.control == 0x81 and decoded.di() == (0x901F, False)
    reading = water.decode_current(decoded.data[3:])
    assert reading.cumulative == Decimal("556677.00")
    assert reading.values["settlement_flow"] == "556677.00"
    assert reading.meter_time == dt.datetime(2015, 5, 11, 22, 1, 31)
    # ST first byte 21H: valve bits 01 = closed (supply cut: the relay is "open").
    assert reading.values["valve"] == "closed" and reading.relay == "open"
    assert reading.values["battery_low"] is False


def test_a_real_meters_reply_with_the_di_high_byte_first() -> None:
    # FoxEdge Demo.java again: a meter at 00002020120218 answering 90 1F (high byte first),
    # 2.00 m³, real time unset (zeros), behind three wake-up bytes.
    published = frame(
        "FE FE FE 68 10 18 02 12 20 20 00 00 81 16 90 1F 00 00 02 00 00 2C 00 02 00 00 2C"
        " 00 00 00 00 00 00 00 00 FF 85 16"
    )
    assert c.frame_length(published) == len(published)
    decoded = c.decode_frame(published)
    assert decoded.address == "00002020120218"
    assert decoded.di() == (0x901F, True)
    reading = water.decode_current(decoded.data[3:])
    assert reading.cumulative == Decimal("2.00")
    assert reading.meter_time is None
    assert reading.relay == "closed"  # ST byte 00: valve open


def test_friendcoms_published_request_and_reply() -> None:
    # Friendcom.Protocol FrameCJT188_2004Sample.cs: read 901F (sent 90 1F) of meter
    # 00201510270588, SER 01, and its reply with real time 2017-01-09 17:20:06.
    request = frame("68 10 88 05 27 10 15 20 00 01 03 90 1F 01 25 16")
    ours = c.Cjt188Frame(
        0x10, "00201510270588", c.READ_DATA, c.di_bytes(c.DI_CURRENT, high_first=True) + b"\x01"
    )
    assert ours.encode() == request
    reply = frame(
        "68 10 88 05 27 10 15 20 00 81 16 90 1F 01 00 00 00 00 2C 00 00 00 00 2C"
        " 06 20 17 09 01 17 20 00 00 8E 16"
    )
    reading = water.decode_current(c.decode_frame(reply).data[3:])
    assert reading.cumulative == 0
    assert reading.meter_time == dt.datetime(2017, 1, 9, 17, 20, 6)
    # The same sample's frame with a wrong checksum (24 for 25) is rejected.
    with pytest.raises(BadChecksum):
        c.frame_length(frame("68 10 88 05 27 10 15 20 00 01 03 90 1F 01 24 16"))


def test_the_universal_read_to_the_broadcast_address() -> None:
    # LuatOS DTU script: "FE FE FE 68 10 AA AA AA AA AA AA AA 01 03 90 1F 01 D2 16 万能读表指令".
    published = frame("FE FE FE 68 10 AA AA AA AA AA AA AA 01 03 90 1F 01 D2 16")
    decoded = c.decode_frame(published)
    assert decoded.address == c.BROADCAST
    ours = c.Cjt188Frame(0x10, c.BROADCAST, 0x01, c.di_bytes(0x901F, high_first=True) + b"\x01")
    assert ours.encode(preamble=3) == published


def test_the_valve_command_layout() -> None:
    # syntropic test_cjt188.c (open valve): C 04, L 04, DI 17 A0 (low byte first), SER, 55H.
    sent = c.Cjt188Frame(
        0x10, "15059005690000", c.WRITE_DATA, c.di_bytes(c.DI_VALVE) + bytes([1, c.VALVE_OPEN])
    ).encode(preamble=4)
    assert sent[13:19] == bytes([0x04, 0x04, 0x17, 0xA0, 0x01, 0x55])
    assert sent[-1] == 0x16 and c.frame_length(sent) == len(sent) == 21


def test_the_unit_codes() -> None:
    # libcj188.h / KingDa CJT-188-2004.h: 05H kWh, 11H GJ, 2CH m³, 35H m³/h, 17H kW ...
    assert {code: u.symbol for code, u in c.UNITS.items() if code in (0x05, 0x11, 0x2C, 0x35)} == {
        0x05: "kWh",
        0x11: "GJ",
        0x2C: "m³",
        0x35: "m³/h",
    }
    assert c.Quantity(Decimal("1000.00"), 0x05).to("GJ") == Decimal("3.6")
    assert c.Quantity(Decimal("1.50"), 0x08).to("GJ") == Decimal("5.4")
    assert c.Quantity(Decimal("1234.56"), 0x29).to("m³") == Decimal("1.23456")
    with pytest.raises(BadFrame):
        c.Quantity(Decimal(1), 0x2C).to("GJ")
    with pytest.raises(BadFrame):
        _ = c.Quantity(Decimal(1), 0x77).unit


# Codec properties ---------------------------------------------------------------------------------

addresses = st.text(alphabet="0123456789", min_size=14, max_size=14) | st.just(c.BROADCAST)
frames = st.builds(
    c.Cjt188Frame,
    meter_type=st.integers(0, 255),
    address=addresses,
    control=st.integers(0, 255),
    data=st.binary(max_size=255),
)


@given(frames, st.integers(0, 4))
def test_frames_round_trip(f: c.Cjt188Frame, preamble: int) -> None:
    wire = f.encode(preamble=preamble)
    assert c.frame_length(wire) == len(wire)
    assert c.frame_length(wire + b"\x68\x10") == len(wire)
    assert c.decode_frame(wire) == f
    for cut in (0, preamble, len(wire) - 1):
        assert c.frame_length(wire[:cut]) is None
    with pytest.raises(BadChecksum):
        c.frame_length(c.corrupt(wire))


@given(st.binary(max_size=64))
def test_any_bytes_are_a_frame_more_bytes_or_bad(data: bytes) -> None:
    try:
        n = c.frame_length(data)
    except BadFrame:
        return
    assert n is None or 13 <= n <= len(data)


@given(st.integers(0, 10**8 - 1), st.integers(0, 4))
def test_bcd_round_trips(number: int, decimals: int) -> None:
    value = Decimal(number).scaleb(-decimals)
    assert c.bcd_decode(c.bcd_encode(value, 4, decimals), decimals) == value


def test_bcd_edges() -> None:
    assert c.bcd_encode(Decimal("556677.00"), 4, 2) == frame("00 77 66 55")
    assert c.bcd_encode(Decimal("1000000.00"), 4, 2, wrap=True) == frame("00 00 00 00")
    with pytest.raises(ValueError):
        c.bcd_encode(Decimal("1000000.00"), 4, 2)
    with pytest.raises(ValueError):
        c.bcd_encode(Decimal("-1"), 4, 2)
    with pytest.raises(BadFrame):
        c.bcd_decode(frame("1A 00"))


@given(st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2099, 12, 31)))
def test_real_time_round_trips(when: dt.datetime) -> None:
    when = when.replace(microsecond=0)
    assert c.decode_time(c.encode_time(when)) == when


def test_real_time_sent_highest_first_is_understood() -> None:
    assert c.decode_time(frame("20 26 11 01 08 30 15")) == NOW
    assert c.decode_time(bytes(7)) is None


def test_status_word() -> None:
    assert c.Status.decode(b"\x00\x00").relay == "closed"
    assert c.Status.decode(b"\x01\x00").relay == "open"
    closed_low = c.Status.decode(b"\x05\x00")
    assert (closed_low.valve, closed_low.battery_low) == ("closed", True)
    assert c.Status.decode(b"\x03\x00").valve == "abnormal"
    assert c.Status.decode(b"\x03\x00").relay is None
    assert c.Status.of(valve_open=False, battery_low=True).encode() == b"\x05\x00"


# Each utility's payload ---------------------------------------------------------------------------


def answer(protocol: c.Cjt188Protocol, sim: SimMeter) -> RemoteReading:
    return protocol.decode_current(protocol.encode_current(sim, NOW))


def test_water_payload() -> None:
    p = water.protocol("water.hot")
    sim = SimMeter(address=ADDRESS, cumulative=Decimal("123.456"), relay_closed=False)
    sim.values.update(settlement_flow="100.5", battery_low=True)
    payload = p.encode_current(sim, NOW)
    assert len(payload) == 19  # 4+1, 4+1, 7, 2 (plus DI and SER: L = 16H)
    reading = p.decode_current(payload)
    assert reading.cumulative == Decimal("123.45")  # the meter's register has two decimals
    assert reading.values["settlement_flow"] == "100.50"
    assert (reading.relay, reading.values["valve"]) == ("open", "closed")
    assert reading.values["battery_low"] is True
    assert reading.meter_time == NOW
    sim.values["unit"] = "L"  # a meter counting litres: still m³ in the reading
    assert answer(p, sim).cumulative == Decimal("123.456")
    assert answer(p, sim).values["unit_sent"] == "L"


def test_each_water_kind_has_its_meter_type() -> None:
    assert {k: water.protocol(k).meter_type for k in water.METER_TYPES} == {
        "water.cold": 0x10,
        "water.hot": 0x11,
        "water.purified": 0x12,
        "water.recycled": 0x13,
    }


def test_gas_payload() -> None:
    p = gas.protocol()
    assert p.meter_type == 0x30
    sim = SimMeter(address=ADDRESS, cumulative=Decimal("987.65"))
    sim.values["settlement_volume"] = "900"
    reading = answer(p, sim)
    assert reading.cumulative == Decimal("987.65")
    assert reading.values["settlement_volume"] == "900.00"
    assert reading.relay == "closed"


def test_heat_payload_and_units() -> None:
    p = heat.protocol()
    assert p.meter_type == 0x20
    sim = SimMeter(address=ADDRESS, cumulative=Decimal("36"))  # GJ = 10000 kWh
    sim.values.update(
        settlement_heat_gj="18",
        power_kw="12.34",
        flow_m3h="0.5678",
        volume_m3="432.10",
        supply_temp_c="65.43",
        return_temp_c="41.20",
        hours="1234",
    )
    payload = p.encode_current(sim, NOW)
    assert len(payload) == 43  # L = 2EH with DI and SER, as in CJ/T 188-2004
    assert payload[5:10] == frame("00 00 00 01 05")  # current heat: 10000.00 kWh
    reading = p.decode_current(payload)
    assert reading.cumulative == Decimal("36")
    assert reading.values["heat_sent"] == "10000.00 kWh"
    assert Decimal(reading.values["settlement_heat_gj"]) == 18
    assert Decimal(reading.values["power_kw"]) == Decimal("12.34")
    assert Decimal(reading.values["flow_m3h"]) == Decimal("0.5678")
    assert Decimal(reading.values["volume_m3"]) == Decimal("432.10")
    assert reading.values["supply_temp_c"] == "65.43"
    assert reading.values["return_temp_c"] == "41.20"
    assert reading.values["hours"] == 1234
    assert reading.meter_time == NOW and reading.relay == "closed"
    for unit, sent in (("GJ", "36.00 GJ"), ("MJ", "36000.00 MJ"), ("MWh", "10.00 MWh")):
        sim.values["heat_unit"] = unit
        got = answer(p, sim)
        assert (got.cumulative, got.values["heat_sent"]) == (Decimal(36), sent)


def test_payload_too_short_is_a_bad_frame() -> None:
    with pytest.raises(BadFrame):
        water.decode_current(frame("00 00 00 00 2C"))
    with pytest.raises(BadFrame):
        heat.decode_current(bytes(20))


# The protocol objects -----------------------------------------------------------------------------


def test_the_plugins_register_cjt188_on_their_kinds() -> None:
    plugins = load_plugins([onecard_water, onecard_heat, onecard_gas], env={})
    expected = {
        "water.cold": 0x10,
        "water.hot": 0x11,
        "water.purified": 0x12,
        "water.recycled": 0x13,
        "heat": 0x20,
        "gas": 0x30,
    }
    for kind, meter_type in expected.items():
        protocol = plugins.utilities.get(kind).protocols.get("cjt188")
        assert isinstance(protocol, MeterProtocol)
        assert (protocol.name, protocol.link, protocol.meter_type) == (
            "cjt188",
            "stream",
            meter_type,
        )
        assert "standard" in protocol.models()
        assert protocol.describe()["meter_type"] == f"{meter_type:02X}H"


def test_check_address() -> None:
    p = water.protocol("water.cold")
    assert p.check_address("12345678") == ADDRESS
    assert p.check_address(" 00000012345678 ") == ADDRESS
    assert p.check_address("aaaaaaaaaaaaaa") == c.BROADCAST
    for bad in ("", "123456789012345", "12AB", "-1"):
        with pytest.raises(InvalidInput) as err:
            p.check_address(bad)
        assert err.value.field == "address"


# The responder, fed bytes -------------------------------------------------------------------------


@pytest.fixture
def meters() -> dict[str, SimMeter]:
    return {ADDRESS: SimMeter(address=ADDRESS, kind="water.cold", cumulative=Decimal("12.34"))}


def request(di: int, *, control: int = c.READ_DATA, ser: int = 7, data: bytes = b"") -> bytes:
    payload = c.di_bytes(di) + bytes([ser]) + data
    return c.Cjt188Frame(0x10, ADDRESS, control, payload).encode(preamble=2)


def test_responder_answers_current_data(meters: dict[str, SimMeter]) -> None:
    p = water.protocol("water.cold")
    r = p.responder(meters, "", clock=SimClock(dt.datetime(2026, 11, 1, 8, 30, 15, tzinfo=dt.UTC)))
    wire = request(c.DI_CURRENT)
    assert r.feed(wire[:-1]) is None
    got = r.feed(wire + b"\xfe")
    assert got is not None and got.consumed == len(wire) and got.meter is meters[ADDRESS]
    assert got.response is not None
    reply = c.decode_frame(got.response)
    assert (reply.control, reply.address, reply.data[:3]) == (0x81, ADDRESS, frame("1F 90 07"))
    assert len(reply.data) == 0x16
    reading = p.decode_current(reply.data[3:])
    assert reading.cumulative == Decimal("12.34") and reading.meter_time == NOW
    with pytest.raises(BadChecksum):
        c.frame_length(r.corrupt(got.response))


def test_responder_echoes_the_di_order(meters: dict[str, SimMeter]) -> None:
    r = water.protocol("water.cold").responder(meters, "")
    payload = c.di_bytes(c.DI_CURRENT, high_first=True) + b"\x03"
    got = r.feed(c.Cjt188Frame(0x10, ADDRESS, c.READ_DATA, payload).encode())
    assert got is not None and got.response is not None
    assert c.decode_frame(got.response).data[:3] == frame("90 1F 03")


def test_responder_ignores_others_and_resyncs(meters: dict[str, SimMeter]) -> None:
    r = water.protocol("water.cold").responder(meters, "")
    other = c.Cjt188Frame(0x10, "00000000000001", 1, frame("1F 90 00")).encode()
    got = r.feed(other)
    assert got is not None and (got.consumed, got.response) == (len(other), None)
    gas_type = c.Cjt188Frame(0x30, ADDRESS, 1, frame("1F 90 00")).encode()
    got = r.feed(gas_type)
    assert got is not None and got.response is None  # a water meter does not answer type 30H
    got = r.feed(b"\x00garbage")
    assert got is not None and (got.consumed, got.response) == (1, None)
    got = r.feed(c.corrupt(request(c.DI_CURRENT)))
    assert got is not None and (got.consumed, got.response) == (3, None)
    assert r.feed(b"\xfe\xfe") is None
    # Any type (AAH) to the broadcast address: the one meter on the line answers.
    got = r.feed(c.Cjt188Frame(0xAA, c.BROADCAST, 1, frame("1F 90 00")).encode())
    assert got is not None and got.response is not None
    assert c.decode_frame(got.response).address == ADDRESS


def test_responder_refuses_unknown_data(meters: dict[str, SimMeter]) -> None:
    r = water.protocol("water.cold").responder(meters, "")
    got = r.feed(request(0xD120, ser=9))
    assert got is not None and got.response is not None
    reply = c.decode_frame(got.response)
    assert (reply.control, reply.data) == (0xC1, frame("09 00 00"))


def test_responder_obeys_the_valve(meters: dict[str, SimMeter]) -> None:
    r = water.protocol("water.cold").responder(meters, "")
    got = r.feed(request(c.DI_VALVE, control=c.WRITE_DATA, data=bytes([c.VALVE_CLOSE])))
    assert got is not None and got.response is not None
    assert c.decode_frame(got.response).control == 0x84
    assert c.decode_frame(got.response).data[3:] == frame("01 00")  # ST: valve closed
    assert meters[ADDRESS].relay_closed is False
    got = r.feed(request(c.DI_VALVE, control=c.WRITE_DATA, data=bytes([c.VALVE_OPEN])))
    assert got is not None and got.response is not None
    assert c.decode_frame(got.response).data[3:] == frame("00 00")
    assert meters[ADDRESS].relay_closed is True
    got = r.feed(request(c.DI_VALVE, control=c.WRITE_DATA, data=b"\x12"))
    assert got is not None and got.response is not None
    assert c.decode_frame(got.response).control == 0xC4


# Over a real serial link --------------------------------------------------------------------------


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    clock = SimClock(dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC))
    fleet = Fleet(clock)
    fleet.add_port(
        "water",
        water.protocol("water.cold"),
        transport="pty",
        meters=[
            SimMeter(address="12345678", kind="water.cold", cumulative=Decimal("100.25")),
            SimMeter(address="22", kind="water.cold", cumulative=Decimal("5")),
            SimMeter(
                address="33",
                kind="water.cold",
                cumulative=Decimal("7"),
                remaining=Decimal("10"),
                price=Decimal("2"),
            ),
        ],
    )
    heat_meter = SimMeter(address="44", kind="heat", cumulative=Decimal("12.6"))
    heat_meter.values.update(supply_temp_c="70.5", return_temp_c="50.25", power_kw="3.5")
    fleet.add_port("heat", heat.protocol(), transport="pty", meters=[heat_meter])
    for port in fleet.ports.values():  # the meters' clocks show simulated time
        port.responder.clock = clock
    with fleet.running():
        yield fleet


def serial_bus(fleet: Fleet, port: str, timeout: float = 0.5) -> Bus:
    device = fleet.ports[port].device
    assert device is not None
    link = GatewayLink(
        code="g",
        transport="serial",
        device=device,
        baudrate=2400,
        parity=_pty_parity(device),
        timeout=timeout,
    )
    return Bus(link)


def _pty_parity(device: str) -> str:
    """E (CJ/T 188 lines run 2400 8E1) where the pty takes it; some kernels' ptys refuse PARENB
    (EINVAL). A pty applies no parity anyway: the bytes are the same either way."""
    try:
        with serial.Serial(device, baudrate=2400, parity="E") as line:
            line.timeout = 0  # pyserial sets the line again: this is where a refusal shows
    except (serial.SerialException, termios.error):
        return "N"
    return "E"


def test_read_and_command_over_a_pty(fleet: Fleet) -> None:
    p = water.protocol("water.cold")

    async def go() -> tuple[RemoteReading, ...]:
        bus = serial_bus(fleet, "water")
        try:
            first = await p.read(bus, ref("12345678"))
            await p.command(bus, ref("12345678"), "trip")
            tripped = await p.read(bus, ref("12345678"))
            fleet.advance(dt.timedelta(hours=2))  # the valve is shut: nothing flows
            still = await p.read(bus, ref("12345678"))
            await p.command(bus, ref("12345678"), "close")
            fleet.advance(dt.timedelta(hours=2))  # open again: 1 m³ an hour
            later = await p.read(bus, ref("12345678"))
            other = await p.read(bus, ref("22"))
            return first, tripped, still, later, other
        finally:
            await bus.close()

    first, tripped, still, later, other = run(go())
    assert first.cumulative == Decimal("100.25") and first.relay == "closed"
    assert first.meter_time == dt.datetime(2026, 11, 1, 8, 0)
    assert tripped.relay == "open" and tripped.values["valve"] == "closed"
    assert still.cumulative == Decimal("100.25")
    assert later.relay == "closed" and later.cumulative == Decimal("102.25")
    assert later.meter_time == dt.datetime(2026, 11, 1, 12, 0)
    assert other.cumulative == Decimal("9")  # 5 m³ and 4 hours at 1 m³ an hour


def test_heat_over_a_pty(fleet: Fleet) -> None:
    p = heat.protocol()

    async def go() -> RemoteReading:
        bus = serial_bus(fleet, "heat")
        try:
            return await p.read(bus, ref("44", kind="heat"))
        finally:
            await bus.close()

    reading = run(go())
    # 12.6 GJ is sent as 3500.00 kWh and comes back as 12.6 GJ.
    assert reading.cumulative == Decimal("12.6")
    assert reading.values["heat_sent"] == "3500.00 kWh"
    assert reading.values["supply_temp_c"] == "70.50"
    assert Decimal(reading.values["power_kw"]) == Decimal("3.5")


def test_prepaid_read_and_recharge_over_a_pty(fleet: Fleet) -> None:
    p = water.protocol("water.cold")
    meter = ref("33", model="prepaid")

    async def go() -> tuple[RemoteReading, RemoteReading, Exception]:
        bus = serial_bus(fleet, "water")
        try:
            before = await p.read(bus, meter)
            await p.recharge(bus, meter, Decimal("25.50"), 1)
            after = await p.read(bus, meter)
            try:
                await p.recharge(bus, meter, Decimal("5"), 1)  # the same count again
            except MeterRefused as exc:
                refused: Exception = exc
            else:
                raise AssertionError("a repeated recharge count was accepted")
            return before, after, refused
        finally:
            await bus.close()

    before, after, refused = run(go())
    assert (before.remaining, before.recharge_count) == (Decimal("10.00"), 0)
    assert (after.remaining, after.recharge_count) == (Decimal("35.50"), 1)
    assert after.values["purchase_this_purchase"] == "25.50"
    assert fleet.meter("water", "33").remaining == Decimal("35.50")
    assert "refused" in str(refused)


def test_errors_over_a_pty(fleet: Fleet) -> None:
    p = water.protocol("water.cold")
    meter = ref("12345678")

    async def expect(kind: type[Exception], coro: Awaitable[Any]) -> Exception:
        with pytest.raises(kind) as err:
            await coro
        return err.value

    async def go() -> None:
        bus = serial_bus(fleet, "water", timeout=0.3)
        try:
            fleet.set_fault("water", "12345678", "checksum")
            await expect(BadChecksum, p.read(bus, meter))
            fleet.set_fault("water", "12345678", "garbage")
            await expect(BadFrame, p.read(bus, meter))
            fleet.set_fault("water", "12345678", "silent")
            await expect(MeterTimeout, p.read(bus, meter))
            fleet.set_fault("water", "12345678", None)
            await asyncio.sleep(0.1)  # let late bytes of the garbage drain
            assert (await p.read(bus, meter)).cumulative == Decimal("100.25")
            # An abnormal reply (C1H/C4H): recharge of a meter that keeps no credit.
            await expect(MeterRefused, p.recharge(bus, ref("22", model="prepaid"), Decimal(1), 1))
            # A valve that must stay open: keep power on the emulated meter refuses a trip.
            fleet.meter("water", "22").keep_power = True
            await expect(MeterRefused, p.command(bus, ref("22"), "trip"))
            await expect(MeterTimeout, p.read(bus, ref("99")))  # nobody at that address
            await expect(Unsupported, p.command(bus, meter, "keep"))
            await expect(Unsupported, p.command(bus, meter, "release"))
            await expect(Unsupported, p.recharge(bus, meter, Decimal(1), 1))
            await expect(InvalidInput, p.read(bus, ref("12345678", model="nonsense")))
        finally:
            await bus.close()

    run(go())
