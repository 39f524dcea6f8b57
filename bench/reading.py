"""Remote meter reading: read, price and store N emulated meters, beside a bare pymodbus loop.

What it measures
----------------
The fleet emulator (:mod:`onecard.fleet.server`) serves N Acrel DDSY1352 meters (the electric
plugin's Modbus map: one 39-register read per meter) on P Modbus TCP ports on 127.0.0.1, at most
``--per-port`` meters a port (default 200, under the 247 unit ids of a bus). It runs in a
*separate process*, so that it does not share the reader's GIL. A fresh, migrated SQLite database
holds N customers, each with one remote electric meter and its wallet (bulk inserts of the rows
``open_account`` and ``inventory.attach`` make, and one opening sale of 100 yuan a wallet, posted
per gateway), P gateways and a flat tariff (0.50 yuan/kWh). Every meter's priced baseline is the
emulator's start, so the measured cycle prices and posts every meter.

bare
    one pymodbus ``AsyncModbusTcpClient`` per port, the same registers (same count) of every
    meter, one after another on each connection, all connections at once: what the emulator and
    pymodbus alone allow on this machine;
service
    the emulator moves on one simulated hour (each meter uses 1 kWh); then
    ``ReadingService.cycle_all()`` reads every gateway on the same number of connections, stores
    each reading, prices the hour and posts it to the wallet (one ledger transaction per meter),
    in batches on the service's database thread while the buses read on.

``ratio`` is service reads/s over bare reads/s (the target is at least 0.5, and 100,000 meters read,
priced and stored in under 60 s). The ledger must verify at the end.

The RS485 wire ceiling: at 9600 baud 8N1 (ten bits a byte) a 10-register read is an 8-byte
request and a 25-byte answer (RTU), plus a 3.5-character silence after each frame: 24 reads/s a
bus. Beside it, one emulated bus at ``wire_baud=9600`` (RTU framing over TCP; the emulator delays
each answer by the bytes' time on the wire, without the silences) is read for a fixed time with
10-register reads, and read once by the service (the full 39-register map) on its own gateway.

Run
---
From the repository root::

    .venv/bin/python bench/reading.py                   # 10,000 meters, under a minute
    .venv/bin/python bench/reading.py --meters 100000   # the target: under 60 s for the cycle
    .venv/bin/python bench/reading.py --quick           # 400 meters, a smoke run
    .venv/bin/python bench/reading.py --profile         # where the service cycle's time goes

The last line is ``RESULT name=value ...`` (rates in reads per second, times in seconds, CPU in
milliseconds a read: ``*_cpu_ms``, of this process and of the emulator process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import functools
import io
import multiprocessing
import pstats
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from onecard import offices as off
from onecard import tariffs
from onecard.audit import Actor
from onecard.db import create_db_engine, session_factory, upgrade
from onecard.fleet.sim import SimClock
from onecard.ledger import accounts as acc
from onecard.ledger import core as ledger_core
from onecard.ledger.verify import verify
from onecard.models import (
    AuditEvent,
    Customer,
    Gateway,
    LedgerAccount,
    LedgerTransaction,
    Meter,
    MeterReading,
    Premises,
    RemoteMeter,
)
from onecard.plugins import load_plugins
from onecard.remote import inventory
from onecard.remote.fees import Policy, smallest
from onecard.remote.service import CycleReport, ReadingService

ACTOR = Actor(name="bench")
START = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)
KIND = "electric"
MODEL = "acrel-ddsy1352"
START_KWH = Decimal(1000)
RATE = Decimal(1)  # kWh an hour
PRICE = "0.5"  # yuan per kWh
OPENING_FEN = 10_000  # each wallet's opening sale: 100 yuan
WIRE_BAUD = 9600
WIRE_REGISTERS = 10  # the reference read
WIRE_PORT = "wire"
TIMEOUT = 5.0  # seconds: any single wait of the benchmark


# The RS485 wire ceiling --------------------------------------------------------------------------


def rtu_read_bytes(registers: int) -> tuple[int, int]:
    """The RTU request and answer sizes of a function-3 read of ``registers`` registers."""
    return 8, 5 + 2 * registers  # unit fc addr(2) count(2) crc(2); unit fc n data crc(2)


def wire_ceiling(baud: int, registers: int) -> float:
    """Reads a second one RS485 bus carries at ``baud`` 8N1: both frames plus a 3.5-character
    silence after each, and nothing else (a real meter also takes time to answer)."""
    request, answer = rtu_read_bytes(registers)
    characters = request + answer + 2 * 3.5
    return baud / 10 / characters


# The emulator, in its own process ----------------------------------------------------------------


def _sim_meters(count: int) -> list[Any]:
    from onecard.fleet.sim import SimMeter

    return [
        SimMeter(address=str(unit), kind=KIND, model=MODEL, cumulative=START_KWH, rate=RATE)
        for unit in range(1, count + 1)
    ]


def _emulator(conn: Connection, layout: Sequence[int], wire_meters: int) -> None:
    """The child process: serve the fleet, answer the parent's requests until told to stop."""
    from onecard.fleet.server import Fleet

    protocol = load_plugins().utilities.get(KIND).protocols.get("modbus")
    fleet = Fleet(SimClock(START))
    for i, count in enumerate(layout):
        fleet.add_port(f"bus{i:04d}", protocol, meters=_sim_meters(count))
    if wire_meters:
        fleet.add_port(
            WIRE_PORT, protocol, framer="rtu", wire_baud=WIRE_BAUD, meters=_sim_meters(wire_meters)
        )
    try:
        with fleet.running():
            conn.send({name: port.port for name, port in fleet.ports.items()})
            while True:
                what, arg = conn.recv()
                if what == "advance":
                    conn.send(fleet.advance(dt.timedelta(hours=arg)))
                elif what == "cpu":
                    conn.send(time.process_time())
                elif what == "frames":
                    conn.send({name: port.frames for name, port in fleet.ports.items()})
                else:
                    break
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.send("stopped")


class CpuMeter:
    """CPU seconds (all threads) of this process and of the emulator's, lap by lap."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.last = (time.process_time(), emulator.ask("cpu"))

    def lap(self) -> tuple[float, float]:
        now = (time.process_time(), self.emulator.ask("cpu"))
        own, emu = now[0] - self.last[0], now[1] - self.last[1]
        self.last = now
        return own, emu


class Emulator:
    """The fleet emulator in a child process (forked: it inherits the imports)."""

    def __init__(self, layout: Sequence[int], wire_meters: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_emulator, args=(child, list(layout), wire_meters), daemon=True
        )
        self.process.start()
        child.close()
        self.ports: dict[str, int] = self._answer(60)

    def _answer(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"the emulator process did not answer within {timeout:g} s")
        return self.conn.recv()

    def ask(self, what: str, arg: Any = None, timeout: float = 60) -> Any:
        self.conn.send((what, arg))
        return self._answer(timeout)

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            self.conn.send(("stop", None))
            self._answer(10)
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()


# The installation --------------------------------------------------------------------------------


def flat_tariff() -> dict[str, Any]:
    return {
        "kind": KIND,
        "name": "flat",
        "model": "flat",
        "effective_from": "2026-01-01T00:00:00+08:00",
        "timezone": "Asia/Shanghai",
        "title": {"zh-CN": "平价", "en": "Flat"},
        "body": {"price": PRICE},
    }


def _next_id(session: Session, column: Any) -> int:
    return int(session.scalar(select(func.max(column))) or 0) + 1


class Site:
    """A fresh SQLite installation: one office, a flat tariff, gateways, customers with one remote
    meter and wallet each, and the opening credit."""

    def __init__(self, folder: Path) -> None:
        self.engine = create_db_engine(f"sqlite:///{folder / 'bench.db'}")
        upgrade(self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.plugins = load_plugins()
        self.protocol = self.plugins.utilities.get(KIND).protocols.get("modbus")
        self.serials = 0
        with self.sessions() as s, s.begin():
            self.office_id = off.create_office(s, ACTOR, code="E01", name="Bench office").id
            tariffs.add_version(s, ACTOR, self.plugins.utilities, flat_tariff(), allow_past=True)

    def add_gateway(
        self, code: str, port: int, meters: int, *, framer: str = "socket", enabled: bool = True
    ) -> int:
        """A gateway on 127.0.0.1:``port`` with ``meters`` meters at unit ids 1..meters."""
        with self.sessions() as s, s.begin():
            gateway = inventory.add_gateway(
                s,
                ACTOR,
                code=code,
                transport="tcp",
                host="127.0.0.1",
                port=port,
                framer=framer,
                timeout_ms=1000,
                retries=1,
            )
            gateway.enabled = enabled
            self._add_meters(s, gateway.id, meters)
            return gateway.id

    def _add_meters(self, s: Session, gateway_id: int, count: int) -> None:
        """What ``open_account`` (one electric meter) and ``inventory.attach`` write, in bulk,
        and one opening sale into the new wallets."""
        now = dt.datetime.now(dt.UTC)
        cid = _next_id(s, Customer.id)
        pid = _next_id(s, Premises.id)
        mid = _next_id(s, Meter.id)
        kind = self.plugins.utilities.get(KIND)
        baseline = smallest(kind.unit_decimals, START_KWH)
        customers, premises, meters, wallets, audits, remotes = [], [], [], [], [], []
        for i in range(count):
            self.serials += 1
            serial = f"{730000000000 + self.serials}"
            number = f"E01-{cid + i:06d}"
            customers.append(
                {
                    "id": cid + i,
                    "number": number,
                    "name": f"Bench {self.serials}",
                    "category": "residential",
                    "office_id": self.office_id,
                    "status": "active",
                    "created_at": now,
                }
            )
            premises.append(
                {
                    "id": pid + i,
                    "customer_id": cid + i,
                    "office_id": self.office_id,
                    "building": "",
                    "unit": "",
                    "address": "",
                }
            )
            meters.append(
                {
                    "id": mid + i,
                    "kind": KIND,
                    "serial": serial,
                    "model": MODEL,
                    "protocol": "modbus",
                    "state": "active",
                    "premises_id": pid + i,
                    "installed_at": now,
                }
            )
            wallets.append(
                {
                    "code": acc.meter_wallet_code(mid + i),
                    "type": "liability",
                    "purpose": "wallet",
                    "name": f"{KIND} {serial}",
                    "utility_kind": KIND,
                    "office_id": self.office_id,
                    "customer_id": cid + i,
                    "meter_id": mid + i,
                    "balance": 0,
                    "overdraft": 0,
                    "created_at": now,
                }
            )
            audits.append(
                {
                    "at": now,
                    "actor": ACTOR.name,
                    "action": "customer.open",
                    "objects": [f"customer:{cid + i}", f"meter:{KIND}:{serial}"],
                    "detail": {"number": number, "meters": 1},
                    "office_id": self.office_id,
                    "customer_id": cid + i,
                }
            )
            remotes.append(
                {
                    "meter_id": mid + i,
                    "gateway_id": gateway_id,
                    "address": self.protocol.check_address(str(i + 1)),
                    "billing": "server",
                    "priced_cumulative": baseline,
                    "priced_at": START,
                    "priced_bands": {},
                }
            )
        for model, rows in (
            (Customer, customers),
            (Premises, premises),
            (Meter, meters),
            (LedgerAccount, wallets),
            (AuditEvent, audits),
            (RemoteMeter, remotes),
        ):
            s.execute(insert(model), rows)
        till = acc.office_account_code("cash", self.office_id)
        ledger_core.post(
            s,
            idempotency_key=f"bench-opening:gateway:{gateway_id}",
            kind="sale",
            postings=[(till, OPENING_FEN * count)]
            + [(str(w["code"]), -OPENING_FEN) for w in wallets],
            memo=f"opening credit of {count} wallets",
            office_id=self.office_id,
        )

    def service(self, clock: SimClock) -> ReadingService:
        return ReadingService(
            self.sessions,
            self.plugins.utilities,
            policy=Policy(alarm1=2000, alarm2=500),
            clock=clock.now,
            backoff=0.01,
        )

    def counts(self) -> dict[str, int]:
        with self.sessions() as s:
            return {
                "readings": s.scalar(select(func.count()).select_from(MeterReading)) or 0,
                "consumed": s.scalar(
                    select(func.count())
                    .select_from(LedgerTransaction)
                    .where(LedgerTransaction.kind == "consume")
                )
                or 0,
            }

    def verify(self) -> Any:
        with self.sessions() as s:
            return verify(s)

    def gateway_ids(self) -> dict[str, int]:
        with self.sessions() as s:
            return {code: id_ for code, id_ in s.execute(select(Gateway.code, Gateway.id))}


# The bare loop -----------------------------------------------------------------------------------


async def bare_read(ports: Sequence[tuple[int, int]], count: int) -> float:
    """Read ``count`` registers of every unit 1..n of each (port, n), sequentially on each
    connection, all connections at once; the seconds it took (connecting included)."""
    from pymodbus.client import AsyncModbusTcpClient

    async def one(port: int, units: int) -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT, retries=0)
        try:
            if not await client.connect():
                raise RuntimeError(f"port {port} does not connect")
            for unit in range(1, units + 1):
                answer = await client.read_holding_registers(0, count=count, device_id=unit)
                if answer.isError() or len(answer.registers) != count:
                    raise RuntimeError(f"port {port} unit {unit}: {answer}")
        finally:
            client.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(port, units) for port, units in ports))
    return time.perf_counter() - started


async def bare_for(port: int, units: int, count: int, seconds: float, framer: str) -> int:
    """Read ``count`` registers round the units of one port for ``seconds``; reads done."""
    from pymodbus.client import AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    client = AsyncModbusTcpClient(
        "127.0.0.1",
        port=port,
        timeout=TIMEOUT,
        retries=0,
        framer=FramerType.RTU if framer == "rtu" else FramerType.SOCKET,
    )
    done = 0
    try:
        if not await client.connect():
            raise RuntimeError(f"port {port} does not connect")
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            unit = done % units + 1
            answer = await client.read_holding_registers(0, count=count, device_id=unit)
            if answer.isError() or len(answer.registers) != count:
                raise RuntimeError(f"port {port} unit {unit}: {answer}")
            done += 1
    finally:
        client.close()
    return done


# Where the service's time goes (--profile) -------------------------------------------------------


@dataclass
class Sections:
    """Wall time spent in named functions, summed over every thread that called them."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # first start, last end
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, owner: Any, attr: str, name: str) -> Callable[[], None]:
        original = getattr(owner, attr)
        if asyncio.iscoroutinefunction(original):

            @functools.wraps(original)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self._add(name, t0, time.perf_counter())

            setattr(owner, attr, timed_async)
        else:

            @functools.wraps(original)
            def timed(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self._add(name, t0, time.perf_counter())

            setattr(owner, attr, timed)
        return lambda: setattr(owner, attr, original)

    def _add(self, name: str, start: float, end: float) -> None:
        with self.lock:
            self.seconds[name] += end - start
            self.calls[name] += 1
            first, last = self.spans.get(name, (start, end))
            self.spans[name] = (min(first, start), max(last, end))


@contextlib.contextmanager
def sections_timed(protocol: Any) -> Iterator[Sections]:
    """Time the parts of a cycle: reading (the protocol's read, awaited on the event loop), and in
    the worker threads the batch store, the per-meter store, pricing, ledger posting, inserts."""
    from onecard.ledger import operations
    from onecard.remote import fees
    from onecard.remote import service as service_module

    found = Sections()
    undo = [
        found.wrap(type(protocol), "read", "read (protocol.read, awaited: overlapping)"),
        found.wrap(ReadingService, "_store_in", "store batch (thread: lease check+store)"),
        found.wrap(service_module, "store_outcomes", "  store_outcomes"),
        found.wrap(fees, "_store_one", "    _store_one (per meter: store, price)"),
        found.wrap(fees, "_price", "      _price (tariff)"),
        found.wrap(fees, "quote_units", "        quote_units"),
        found.wrap(operations, "consume_many", "    ledger consume_many (per batch)"),
        found.wrap(fees, "_conclude", "    _conclude (per meter: alarm, relay)"),
        found.wrap(ReadingService, "_begin_in", "lease take + meters to read (thread)"),
        found.wrap(ReadingService, "_release_in", "lease release (thread)"),
    ]
    try:
        yield found
    finally:
        for restore in reversed(undo):
            restore()


def _sessions_commit_timer(found: Sections) -> Callable[[], None]:
    return found.wrap(Session, "commit", "commit (all sessions)")


@contextlib.contextmanager
def store_profiled() -> Iterator[list[cProfile.Profile]]:
    """cProfile each batch store (each runs in a worker thread, where the loop's profiler does
    not see); the profiles are merged when printed."""
    profiles: list[cProfile.Profile] = []
    original = ReadingService._store_in

    @functools.wraps(original)
    def profiled(self: ReadingService, *args: Any, **kwargs: Any) -> Any:
        profiler = cProfile.Profile()
        profiles.append(profiler)
        return profiler.runcall(original, self, *args, **kwargs)

    ReadingService._store_in = profiled  # type: ignore[method-assign]
    try:
        yield profiles
    finally:
        ReadingService._store_in = original  # type: ignore[method-assign]


# The run -----------------------------------------------------------------------------------------


def layout_of(meters: int, per_port: int) -> list[int]:
    ports = -(-meters // per_port)
    base, extra = divmod(meters, ports)
    return [base + (1 if i < extra else 0) for i in range(ports)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--meters", type=int, default=10_000, help="meters (default 10,000)")
    parser.add_argument(
        "--per-port", type=int, default=200, help="meters a port, at most 247 (default 200)"
    )
    parser.add_argument(
        "--db-threads",
        type=int,
        default=0,
        help="worker threads of the service's event loop (asyncio.to_thread: the lease and batch "
        "stores); 0: asyncio's default (default 0)",
    )
    parser.add_argument("--wire-seconds", type=float, default=3.0, help="the 9600-baud bus run")
    parser.add_argument("--quick", action="store_true", help="400 meters: a smoke run")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="cprofile",
        choices=("sections", "cprofile"),
        help="time the service cycle's parts (sections), and cProfile it too (cprofile, the "
        "default; it slows the cycle down about twice)",
    )
    parser.add_argument(
        "--sort", choices=("tottime", "cumulative"), default="tottime", help="cProfile's order"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.meters, args.wire_seconds = 400, 1.0
    if not 1 <= args.per_port <= 247:
        parser.error("--per-port must be between 1 and 247 (the unit ids of one bus)")
    if args.meters < 1:
        parser.error("--meters must be at least 1")
    return args


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    layout = layout_of(args.meters, args.per_port)
    wire_seconds = max(0.5, args.wire_seconds)
    wire_meters = max(4, min(60, round(wire_seconds * 10)))  # about one service pass a bus
    register_count = sum(b.count for b in _plan())
    total_started = time.perf_counter()
    emulator = Emulator(layout, wire_meters)
    try:
        with tempfile.TemporaryDirectory(prefix="onecard-bench-reading-") as tmp:
            out = run(args, layout, wire_meters, wire_seconds, register_count, emulator, Path(tmp))
    finally:
        emulator.stop()
    out["total_seconds"] = time.perf_counter() - total_started
    print(
        f"whole run (setup, both loops, the wire, the ledger check): {out['total_seconds']:.1f} s"
    )
    result = [
        f"meters={args.meters}",
        f"ports={len(layout)}",
        f"bare_reads_per_s={out['bare_rate']:.0f}",
        f"service_reads_per_s={out['service_rate']:.0f}",
        f"ratio={out['ratio']:.2f}",
        f"service_seconds={out['service_seconds']:.2f}",
        f"bare_cpu_ms={out['bare_cpu_ms']:.3f}",
        f"service_cpu_ms={out['service_cpu_ms']:.3f}",
        f"emulator_cpu_ms={out['emulator_cpu_ms']:.3f}",
        f"priced={out['priced']}",
        f"posted_fen={out['posted_fen']}",
        f"wire_ceiling_per_bus={out['ceiling']:.1f}",
        f"emulated_bus_9600={out['wire_bare']:.1f}",
        f"service_bus_9600={out['wire_service']:.1f}",
        f"ledger_ok={'yes' if out['ledger_ok'] else 'no'}",
    ]
    print("RESULT " + " ".join(result), flush=True)
    return 0 if out["ledger_ok"] else 1


def _plan() -> Sequence[Any]:
    protocol: Any = load_plugins().utilities.get(KIND).protocols.get("modbus")
    return protocol.register_map(MODEL).plan  # type: ignore[no-any-return]


def run(
    args: argparse.Namespace,
    layout: Sequence[int],
    wire_meters: int,
    wire_seconds: float,
    registers: int,
    emulator: Emulator,
    folder: Path,
) -> dict[str, Any]:
    n = args.meters
    t0 = time.perf_counter()
    site = Site(folder)
    names = [f"bus{i:04d}" for i in range(len(layout))]
    for name, count in zip(names, layout, strict=True):
        site.add_gateway(name, emulator.ports[name], count)
    site.add_gateway(WIRE_PORT, emulator.ports[WIRE_PORT], wire_meters, framer="rtu", enabled=False)
    print(
        f"{_fmt(n)} meters on {len(layout)} ports (up to {max(layout)} a port), "
        f"{registers} registers a read; database set up in {time.perf_counter() - t0:.1f} s"
    )

    ports = [(emulator.ports[name], count) for name, count in zip(names, layout, strict=True)]
    cpu = CpuMeter(emulator)
    bare_seconds = asyncio.run(bare_read(ports, registers))
    bare_rate = n / bare_seconds
    bare_cpu = cpu.lap()

    clock = SimClock(START)
    clock.set(emulator.ask("advance", 1))  # one simulated hour: 1 kWh a meter
    service = site.service(clock)
    profiler: cProfile.Profile | None = None
    found: Sections | None = None
    stores: list[cProfile.Profile] = []
    with contextlib.ExitStack() as stack:
        if args.profile:
            if args.profile == "cprofile":
                stores = stack.enter_context(store_profiled())
            found = stack.enter_context(sections_timed(site.protocol))
            stack.callback(_sessions_commit_timer(found))
            if args.profile == "cprofile":
                profiler = cProfile.Profile()
        started_cycle = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        reports = asyncio.run(cycle_all(service, args.db_threads))
        if profiler is not None:
            profiler.disable()
        service_seconds = time.perf_counter() - started_cycle
    service_cpu = cpu.lap()
    service_rate = n / service_seconds
    summary = summarise(reports)
    counts = site.counts()

    ceiling = wire_ceiling(WIRE_BAUD, WIRE_REGISTERS)
    ceiling_map = wire_ceiling(WIRE_BAUD, registers)
    wire_port = emulator.ports[WIRE_PORT]
    wire_reads = asyncio.run(bare_for(wire_port, wire_meters, WIRE_REGISTERS, wire_seconds, "rtu"))
    wire_bare = wire_reads / wire_seconds
    wire_gateway = site.gateway_ids()[WIRE_PORT]
    clock.set(emulator.ask("advance", 1))
    started = time.perf_counter()
    wire_report = asyncio.run(service.cycle(wire_gateway))
    wire_service = wire_report.read / (time.perf_counter() - started)

    t0 = time.perf_counter()
    report = site.verify()
    verify_seconds = time.perf_counter() - t0
    site.engine.dispose()

    print(f"{'':<40}{'reads':>9}{'seconds':>9}{'reads/s':>9}")
    print(f"{'bare pymodbus loop':<40}{n:>9}{bare_seconds:>9.2f}{bare_rate:>9.0f}")
    print(
        f"{'service: read, price, post, store':<40}{summary['read']:>9}"
        f"{service_seconds:>9.2f}{service_rate:>9.0f}"
    )
    print(f"service / bare: {service_rate / bare_rate:.2f}")
    print("CPU a read (ms):      this process  emulator")
    for label, (own, emu) in (("bare", bare_cpu), ("service", service_cpu)):
        print(f"  {label:<20}{own / n * 1000:>12.3f}{emu / n * 1000:>10.3f}")
    print(
        f"priced {summary['priced']} meters, posted {summary['posted_fen'] / 100:,.2f} yuan; "
        f"{counts['readings']} readings and {counts['consumed']} use transactions stored; "
        f"errors {dict(summary['errors']) or 'none'}"
    )
    print(
        f"RS485 at {WIRE_BAUD} baud 8N1: {ceiling:.1f} reads/s a bus for {WIRE_REGISTERS} "
        f"registers, {ceiling_map:.1f} for the map's {registers}"
    )
    print(
        f"one emulated {WIRE_BAUD}-baud bus: {wire_bare:.1f} reads/s of {WIRE_REGISTERS} registers "
        f"(bare, {wire_seconds:g} s), {wire_service:.1f} reads/s through the service "
        f"({wire_report.read} meters, {registers} registers)"
    )
    print(
        f"ledger verify: {'ok' if report.ok else 'FAILED'} ({report.transactions} transactions, "
        f"{verify_seconds:.1f} s)"
    )
    if not report.ok:
        for problem in report.problems[:5]:
            print(f"  {problem}")
    if summary["read"] != n or summary["priced"] != n:
        print(f"WARNING: {n} meters, but {summary['read']} read and {summary['priced']} priced")
    if found is not None:
        print_profile(started_cycle, found, profiler, stores, service_seconds, args.sort)
    return {
        "bare_rate": bare_rate,
        "service_rate": service_rate,
        "ratio": service_rate / bare_rate,
        "service_seconds": service_seconds,
        "priced": summary["priced"],
        "posted_fen": summary["posted_fen"],
        "ceiling": ceiling,
        "wire_bare": wire_bare,
        "wire_service": wire_service,
        "ledger_ok": report.ok and summary["priced"] == n,
        "bare_cpu_ms": bare_cpu[0] / n * 1000,
        "service_cpu_ms": service_cpu[0] / n * 1000,
        "emulator_cpu_ms": service_cpu[1] / n * 1000,
    }


async def cycle_all(service: ReadingService, threads: int) -> list[CycleReport]:
    if threads:
        executor = ThreadPoolExecutor(threads, thread_name_prefix="db")
        asyncio.get_running_loop().set_default_executor(executor)
    return await service.cycle_all()


def summarise(reports: Sequence[CycleReport]) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    for r in reports:
        errors.update(r.errors)
        if r.busy:
            errors["busy"] += 1
    return {
        "read": sum(r.read for r in reports),
        "priced": sum(r.priced for r in reports),
        "posted_fen": sum(r.posted_fen for r in reports),
        "errors": errors,
    }


def print_profile(
    started: float,
    found: Sections,
    profiler: cProfile.Profile | None,
    stores: Sequence[cProfile.Profile],
    wall: float,
    sort: str,
) -> None:
    print(f"\nwhere the service cycle's {wall:.2f} s go (wall time summed over calls and threads;")
    print("from/to: seconds after the cycle started of the first call's start, the last's end):")
    print(f"  {'':<46}{'seconds':>9}{'calls':>8}{'from':>8}{'to':>8}")
    for name, seconds in found.seconds.items():
        first, last = found.spans[name]
        print(
            f"  {name:<46}{seconds:>9.2f}{found.calls[name]:>8}"
            f"{first - started:>8.2f}{last - started:>8.2f}"
        )
    for title, profiles in (
        ("the event loop's thread", [profiler] if profiler is not None else []),
        (f"the {len(stores)} batch stores (worker threads, merged)", list(stores)),
    ):
        if not profiles:
            continue
        text = io.StringIO()
        stats = pstats.Stats(profiles[0], stream=text)
        for more in profiles[1:]:
            stats.add(more)
        stats.sort_stats(sort).print_stats(30)
        print(f"\ncProfile of {title}, by {sort} time:")
        print("\n".join(line for line in text.getvalue().splitlines()[3:50] if line.strip()))


if __name__ == "__main__":
    sys.exit(main())
