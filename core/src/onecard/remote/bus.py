"""A bus: the one connection to a gateway (TCP host or serial line) that its meters share.

Meters on a bus are talked to strictly one at a time, as an RS485 wire requires; the reading
service runs many buses concurrently on one event loop. A protocol gets either a connected pymodbus
client (:meth:`Bus.modbus`) or raw frames (:meth:`Bus.exchange`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from onecard.remote.types import BadFrame, GatewayLink, GatewayOffline, MeterTimeout

#: ``frame_length(buffer)``: the length of the complete frame at the start of ``buffer`` (after
#: the caller's preamble, if any, is included in the count), None if more bytes are needed; raise
#: BadFrame for bytes that can never become a valid frame.
FrameLength = Callable[[bytes], int | None]


class Bus:
    """One gateway's link; opened lazily, reopened after a failure."""

    def __init__(self, link: GatewayLink) -> None:
        self.link = link
        self._client: Any = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()  # one exchange at a time on the wire

    # Modbus ---------------------------------------------------------------------------------

    async def modbus(self) -> Any:
        """A connected pymodbus async client for this gateway (TCP or serial, MBAP or RTU)."""
        if self._client is not None and self._client.connected:
            return self._client
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        from pymodbus.framer import FramerType

        link = self.link
        framer = FramerType.RTU if link.framer == "rtu" else FramerType.SOCKET
        if link.transport == "tcp":
            client: Any = AsyncModbusTcpClient(
                link.host or "127.0.0.1",
                port=link.port or 502,
                framer=framer,
                timeout=link.timeout,
                retries=0,
                reconnect_delay=0,
            )
        else:
            client = AsyncModbusSerialClient(
                link.device or "",
                framer=FramerType.RTU,
                baudrate=link.baudrate,
                parity=link.parity,
                bytesize=link.bytesize,
                stopbits=link.stopbits,
                timeout=link.timeout,
                retries=0,
                reconnect_delay=0,
            )
        try:
            ok = await asyncio.wait_for(client.connect(), timeout=max(link.timeout, 1.0) * 2)
        except (OSError, TimeoutError) as exc:
            client.close()
            raise GatewayOffline(f"gateway {link.code} ({link.describe()}): {exc}") from exc
        if not ok:
            client.close()
            raise GatewayOffline(f"gateway {link.code} ({link.describe()}) does not connect")
        self._client = client
        return client

    # Raw frames -----------------------------------------------------------------------------

    async def _stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None and not self._writer.is_closing():
            return self._reader, self._writer
        link = self.link
        try:
            if link.transport == "tcp":
                opening = asyncio.open_connection(link.host or "127.0.0.1", link.port or 0)
            else:
                import serial_asyncio_fast

                opening = serial_asyncio_fast.open_serial_connection(
                    url=link.device,
                    baudrate=link.baudrate,
                    parity=link.parity,
                    bytesize=link.bytesize,
                    stopbits=link.stopbits,
                )
            reader, writer = await asyncio.wait_for(opening, timeout=max(link.timeout, 1.0) * 2)
        except (OSError, TimeoutError, ValueError) as exc:
            raise GatewayOffline(f"gateway {link.code} ({link.describe()}): {exc}") from exc
        except Exception as exc:  # pyserial's SerialException is not an OSError
            raise GatewayOffline(f"gateway {link.code} ({link.describe()}): {exc}") from exc
        self._reader, self._writer = reader, writer
        return reader, writer

    async def exchange(
        self, request: bytes, frame_length: FrameLength, *, timeout: float | None = None
    ) -> bytes:
        """Send ``request`` and return the complete answer frame (without what follows it).

        Bytes left over from an earlier, late answer are discarded first. Raises MeterTimeout
        when no complete frame arrives in time, BadFrame for bytes that cannot be a frame, and
        GatewayOffline when the link drops.
        """
        wait = self.link.timeout if timeout is None else timeout
        reader, writer = await self._stream()
        self._drain(reader)
        try:
            writer.write(request)
            await writer.drain()
        except OSError as exc:
            await self.close()
            raise GatewayOffline(f"gateway {self.link.code}: {exc}") from exc
        buffer = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                n = frame_length(buffer)
            except BadFrame:
                self._drain(reader)
                raise
            if n is not None:
                return buffer[:n]
            left = deadline - loop.time()
            if left <= 0:
                if buffer:
                    raise BadFrame(f"an incomplete answer ({len(buffer)} bytes: {buffer.hex()})")
                raise MeterTimeout(f"no answer within {wait:g} s")
            try:
                chunk = await asyncio.wait_for(reader.read(4096), timeout=left)
            except TimeoutError:
                continue
            except OSError as exc:
                await self.close()
                raise GatewayOffline(f"gateway {self.link.code}: {exc}") from exc
            if not chunk:
                await self.close()
                raise GatewayOffline(f"gateway {self.link.code} closed the connection")
            buffer += chunk

    @staticmethod
    def _drain(reader: asyncio.StreamReader) -> None:
        buffered = getattr(reader, "_buffer", None)
        if buffered:
            buffered.clear()

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
                await self._writer.wait_closed()
        self._reader = self._writer = None
