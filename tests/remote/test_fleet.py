"""The fleet emulator server: simulated time, relays, offline ports, many ports at once.

Meters are read back with real pymodbus clients through onecard's Bus and the electricity plugin's
Modbus register map (Acrel DDSY1352), over TCP on 127.0.0.1 and over a socat pty pair.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from onecard.fleet.server import Fleet
from onecard.fleet.sim import SimClock, SimMeter
from onecard.remote.bus import Bus
from onecard.remote.modbus import ModbusProtocol
from onecard.remote.types import GatewayLink, GatewayOffline, MeterRef

ELECTRIC = ModbusProtocol.from_package("onecard_electric")
MODEL = "acrel-ddsy1352"
START = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)


def ref(address: str) -> MeterRef:
    return MeterRef(meter_id=int(address), serial="s", kind="x", address=address, model=MODEL)


def link(port: Any, timeout: float = 0.5) -> GatewayLink:
    if port.transport == "tcp":
        return GatewayLink(port.name, "tcp", host=port.host, port=port.port, timeout=timeout)
    return GatewayLink(port.name, "serial", device=port.device, framer="rtu", timeout=timeout)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_simulated_time_moves_registers_and_bands() -> None:
    async def body() -> None:
        fleet = Fleet(SimClock(START))
        port = fleet.add_port("a", ELECTRIC, meters=[SimMeter("1", model=MODEL, rate=Decimal("2"))])
        await fleet.start()
        bus = Bus(link(port))
        try:
            first = await ELECTRIC.read(bus, ref("1"))
            assert first.cumulative == 0 and first.bands.get("valley") == 0
            fleet.advance(dt.timedelta(hours=24))  # one whole day at 2 kWh an hour
            day = await ELECTRIC.read(bus, ref("1"))
            assert day.cumulative == Decimal("48.00")
            # the default day: valley 23-07 (8 h), sharp 19-21 (2 h), peak 08-11 and 18-19, 21-23
            assert day.bands == {
                "valley": Decimal("16.00"),
                "sharp": Decimal("4.00"),
                "peak": Decimal("12.00"),
                "flat": Decimal("16.00"),
            }
            assert sum(day.bands.values()) == day.cumulative
            assert fleet.clock.now() == START + dt.timedelta(hours=24)
            # a tripped relay stops use
            await ELECTRIC.command(bus, ref("1"), "trip")
            fleet.advance(dt.timedelta(hours=5))
            assert (await ELECTRIC.read(bus, ref("1"))).cumulative == Decimal("48.00")
            await ELECTRIC.command(bus, ref("1"), "close")
            fleet.advance(dt.timedelta(minutes=30))
            assert (await ELECTRIC.read(bus, ref("1"))).cumulative == Decimal("49.00")
        finally:
            await bus.close()
            await fleet.stop()

    run(body())


def test_meter_kept_credit_runs_out_and_a_recharge_closes_the_relay() -> None:
    async def body() -> None:
        fleet = Fleet(SimClock(START))
        sim = SimMeter(
            "7", model=MODEL, rate=Decimal("1"), remaining=Decimal("5"), price=Decimal("0.5")
        )
        port = fleet.add_port("a", ELECTRIC, meters=[sim])
        await fleet.start()
        bus = Bus(link(port))
        try:
            fleet.advance(dt.timedelta(hours=12))  # 10 kWh are affordable, then the meter trips
            reading = await ELECTRIC.read(bus, ref("7"))
            assert reading.cumulative == Decimal("10.00") and reading.remaining == 0
            assert reading.relay == "open"
            await ELECTRIC.recharge(bus, ref("7"), Decimal("20"), 1)
            reading = await ELECTRIC.read(bus, ref("7"))
            assert reading.relay == "closed" and reading.remaining == Decimal("20.00")
            assert reading.recharge_count == 1
        finally:
            await bus.close()
            await fleet.stop()

    run(body())


def test_offline_and_back_online() -> None:
    fleet = Fleet()
    port = fleet.add_port("a", ELECTRIC, meters=[SimMeter("1", model=MODEL)])

    async def read() -> Any:
        bus = Bus(link(port, timeout=0.3))
        try:
            return await ELECTRIC.read(bus, ref("1"))
        finally:
            await bus.close()

    with fleet.running():
        assert asyncio.run(read()).relay == "closed"
        fleet.set_offline("a")
        with pytest.raises(GatewayOffline):
            asyncio.run(read())
        assert port.describe()["offline"] is True
        fleet.set_offline("a", False)
        assert asyncio.run(read()).relay == "closed"


def test_many_ports_tcp_and_pty() -> None:
    async def body() -> None:
        fleet = Fleet(SimClock(START))
        ports = []
        for p in range(4):
            meters = [
                SimMeter(str(u), model=MODEL, rate=Decimal(p + 1), serial=f"{p}-{u}")
                for u in range(1, 11)
            ]
            ports.append(fleet.add_port(f"tcp{p}", ELECTRIC, meters=meters))
        rtu = fleet.add_port(
            "rtu", ELECTRIC, framer="rtu", transport="pty", meters=[SimMeter("5", model=MODEL)]
        )
        await fleet.start()
        assert len({p.port for p in ports}) == 4
        fleet.advance(dt.timedelta(hours=1))
        buses = [Bus(link(p)) for p in [*ports, rtu]]
        try:

            async def read_bus(i: int, bus: Bus) -> list[Decimal]:
                units = ["5"] if i == 4 else [str(u) for u in range(1, 11)]
                return [(await ELECTRIC.read(bus, ref(u))).cumulative for u in units]

            results = await asyncio.gather(*(read_bus(i, b) for i, b in enumerate(buses)))
            for p in range(4):
                assert results[p] == [Decimal(p + 1).quantize(Decimal("0.01"))] * 10
            assert results[4] == [Decimal("1.00")]
            assert sum(p.frames for p in ports) == 40 and rtu.frames == 1
            assert len(list(fleet.meters())) == 41
        finally:
            for bus in buses:
                await bus.close()
            await fleet.stop()

    run(body())


def test_port_errors() -> None:
    fleet = Fleet()
    port = fleet.add_port("a", ELECTRIC, meters=[SimMeter("1", model=MODEL)])
    with pytest.raises(ValueError):
        fleet.add_port("a", ELECTRIC)
    with pytest.raises(ValueError):
        port.add_meter(SimMeter("01", model=MODEL))  # the same unit id, normalised
    with pytest.raises(ValueError):
        fleet.set_fault("a", "1", "on fire")
    with pytest.raises(ValueError):
        fleet.add_port("b", ELECTRIC, transport="carrier pigeon")
