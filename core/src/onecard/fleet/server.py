"""The fleet server: serves emulated meters on TCP ports and on serial ptys made with ``socat``.

A port is one bus: one protocol (a plugin's :class:`~onecard.interfaces.MeterProtocol`), one
framing, many meters by address. The protocol's responder speaks the wire format; the port does
the I/O and the faults (a silent, garbage-answering, wrong-checksum or slow meter; a port that
goes offline). ``wire_baud`` makes a port as slow as an RS485 line at that baud rate (8N1: ten
bits a byte, both ways), for measuring what a real bus would reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import tty
from collections.abc import Iterable, Iterator
from typing import Any

from onecard.fleet.sim import FAULTS, SimClock, SimMeter


class Port:
    """One emulated bus. ``host``/``port`` (TCP) or ``device`` (the client end of the pty pair)
    say where clients connect once the fleet has started."""

    def __init__(
        self,
        name: str,
        protocol: Any,
        *,
        framer: str = "socket",
        transport: str = "tcp",
        meters: Iterable[SimMeter] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        wire_baud: int | None = None,
    ) -> None:
        if transport not in ("tcp", "pty"):
            raise ValueError(f"port {name}: transport must be tcp or pty, not {transport!r}")
        self.name = name
        self.protocol = protocol
        self.framer = framer
        self.transport = transport
        self.meters: dict[str, SimMeter] = {}
        for meter in meters:
            self.add_meter(meter)
        self.responder = protocol.responder(self.meters, framer)
        self.host = host
        self.port = port
        self.device: str | None = None
        self.wire_baud = wire_baud
        self.offline = False
        self.frames = 0  # answered frames, for the benchmark
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._socat: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self._dir: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def add_meter(self, meter: SimMeter) -> SimMeter:
        address = self.protocol.check_address(meter.address)
        if address in self.meters:
            raise ValueError(f"port {self.name}: two meters at address {address}")
        meter.address = address
        self.meters[address] = meter
        return meter

    def describe(self) -> dict[str, Any]:
        where: dict[str, Any] = (
            {"host": self.host, "port": self.port}
            if self.transport == "tcp"
            else {"device": self.device}
        )
        return {
            "name": self.name,
            "protocol": getattr(self.protocol, "name", "?"),
            "framer": self.framer,
            "transport": self.transport,
            "meters": len(self.meters),
            "offline": self.offline,
            "frames": self.frames,
            **where,
        }

    # Answering --------------------------------------------------------------------------------

    async def _answer(self, buffer: bytearray, send: Any) -> None:
        """Answer every complete frame at the start of ``buffer`` (consumed from it)."""
        while buffer:
            frame = self.responder.feed(bytes(buffer))
            if frame is None:
                return
            del buffer[: max(1, frame.consumed)]
            response = frame.response
            meter: SimMeter | None = frame.meter
            if response is None:
                continue
            fault = meter.fault if meter is not None else None
            if fault == "silent":
                continue
            if fault == "slow" and meter is not None:
                await asyncio.sleep(meter.delay)
            elif fault == "garbage":
                response = bytes(random.randrange(256) for _ in range(max(4, len(response))))
            elif fault == "checksum":
                response = self.responder.corrupt(response)
            if self.wire_baud:
                await asyncio.sleep((frame.consumed + len(response)) * 10 / self.wire_baud)
            if self.offline:
                return
            self.frames += 1
            send(response)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        buffer = bytearray()
        try:
            while not self.offline:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                buffer += chunk
                await self._answer(buffer, writer.write)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    # Start and stop ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.transport == "tcp":
            self._server = await asyncio.start_server(self._client, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        else:
            await self._start_pty()

    async def _start_pty(self) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed (apt-get install socat)")
        self._dir = tempfile.mkdtemp(prefix=f"onecard-fleet-{self.name}-")
        meter_end = os.path.join(self._dir, "meter")
        self.device = os.path.join(self._dir, "client")
        self._socat = subprocess.Popen(
            [
                socat,
                f"pty,raw,echo=0,link={meter_end}",
                f"pty,raw,echo=0,link={self.device}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while not (os.path.exists(meter_end) and os.path.exists(self.device)):
            if time.monotonic() > deadline or self._socat.poll() is not None:
                raise RuntimeError(f"socat did not make the pty pair for port {self.name}")
            await asyncio.sleep(0.01)
        fd = os.open(meter_end, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        self._fd = fd
        buffer = bytearray()
        loop = asyncio.get_running_loop()
        busy = asyncio.Lock()

        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    time.sleep(0.001)
                    continue
                view = view[n:]

        async def answer() -> None:
            async with busy:
                await self._answer(buffer, write)

        def readable() -> None:
            try:
                chunk = os.read(fd, 4096)
            except (BlockingIOError, OSError):
                return
            if self.offline:
                return
            buffer.extend(chunk)
            task = loop.create_task(answer())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.add_reader(fd, readable)

    async def set_offline(self, offline: bool) -> None:
        """Take the port off the network (connections dropped, none accepted) or back on."""
        if offline == self.offline:
            return
        self.offline = offline
        if self.transport != "tcp":
            return
        if offline:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            for writer in list(self._writers):
                writer.close()
        else:
            self._server = await asyncio.start_server(self._client, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._socat is not None:
            self._socat.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._socat.wait(2)
            self._socat = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class Fleet:
    """Many ports of emulated meters on one event loop, sharing one simulated clock."""

    def __init__(self, clock: SimClock | None = None) -> None:
        self.clock = clock or SimClock()
        self.ports: dict[str, Port] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def add_port(self, name: str, protocol: Any, **options: Any) -> Port:
        if name in self.ports:
            raise ValueError(f"a port named {name!r} already exists")
        port = Port(name, protocol, **options)
        if hasattr(port.responder, "clock"):  # meters that answer with their own clock
            port.responder.clock = self.clock
        self.ports[name] = port
        return port

    def meters(self) -> Iterator[tuple[Port, SimMeter]]:
        for port in self.ports.values():
            for meter in port.meters.values():
                yield port, meter

    def meter(self, port: str, address: str) -> SimMeter:
        p = self.ports[port]
        return p.meters[p.protocol.check_address(address)]

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        """Move simulated time on by ``delta``: every meter uses what its rate says."""
        start = self.clock.now()
        end = start + delta
        for _, meter in self.meters():
            meter.advance(start, end)
        self.clock.set(end)
        return end

    def set_fault(self, port: str, address: str, fault: str | None, delay: float = 0.0) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)} or none")
        meter = self.meter(port, address)
        meter.fault, meter.delay = fault, delay

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        for port in self.ports.values():
            await port.start()

    async def stop(self) -> None:
        for port in self.ports.values():
            await port.stop()

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the fleet's loop from another thread (``running()``) and wait."""
        assert self.loop is not None, "the fleet is not running"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def set_offline(self, port: str, offline: bool = True) -> None:
        self.call(self.ports[port].set_offline(offline))

    @contextlib.contextmanager
    def running(self) -> Iterator[Fleet]:
        """Serve in a background thread with its own event loop, for the duration of a block."""
        ready = threading.Event()
        stop: list[asyncio.Event] = []
        failure: list[BaseException] = []

        async def main() -> None:
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                await self.stop()
                return
            done = asyncio.Event()
            stop.append(done)
            ready.set()
            await done.wait()
            await self.stop()

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True, name="fleet")
        thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            if stop and self.loop is not None:
                self.loop.call_soon_threadsafe(stop[0].set)
            thread.join(10)
