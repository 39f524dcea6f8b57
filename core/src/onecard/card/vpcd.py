"""A virtual card slot: serves an emulated card to pcscd through vsmartcard's vpcd driver.

The vpcd driver (``libifdvpcd.so``, loaded by pcscd) listens on a TCP port per reader slot; the
virtual card connects to it as a client. Every message either way is a 2-byte big-endian length
and a payload. A 1-byte payload from the driver is a control code (0 power off, 1 power on,
2 reset, 4 get the ATR; only 4 is answered); anything longer is an APDU to answer. Closing the
connection is pulling the card out of the reader.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from types import TracebackType

from onecard.card.emulator import MifareClassicCard

log = logging.getLogger(__name__)

_CTRL_OFF, _CTRL_ON, _CTRL_RESET, _CTRL_ATR = 0, 1, 2, 4
_SW_INTERNAL_ERROR = b"\x6f\x00"


class VirtualCardSlot:
    """One slot of a vpcd reader, into which a :class:`MifareClassicCard` can be inserted."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, quickack: bool = True) -> None:
        self.port = port
        self.host = host
        self.quickack = quickack
        self._card: MifareClassicCard | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._cut: tuple[int, bool] | None = None  # (APDUs left until the cut, execute it)
        self.cut_done = threading.Event()
        """Set when a cut armed with :meth:`cut_after` has happened."""

    def __repr__(self) -> str:
        state = f"card {self._card.uid.hex().upper()}" if self.present and self._card else "empty"
        return f"VirtualCardSlot({self.host}:{self.port}, {state})"

    @property
    def card(self) -> MifareClassicCard | None:
        """The card last inserted; kept after it was removed or cut, to look at its memory."""
        return self._card

    @property
    def present(self) -> bool:
        """Whether a card is in the slot (connected to the driver)."""
        return self._sock is not None

    def insert(self, card: MifareClassicCard, *, timeout: float = 5.0) -> None:
        """Put ``card`` in the slot: connect to the driver, retrying until it listens."""
        if self.present:
            raise RuntimeError(f"{self!r} already holds a card: remove() it first")
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise ConnectionError(
                        f"no vpcd reader listens on {self.host}:{self.port} (tried for "
                        f"{timeout:g} s: {exc.strerror or exc}); is pcscd running with a vpcd "
                        f"reader configured for this port?"
                    ) from exc
                time.sleep(0.05)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._card = card
            self._sock = sock
            self._cut = None
            self.cut_done.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(sock, card), name=f"vpcd-card-{self.port}", daemon=True
        )
        self._thread.start()

    def remove(self) -> None:
        """Pull the card out: close the connection; the reader then reports no card."""
        with self._lock:
            sock, self._sock = self._sock, None
            self._cut = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def cut_after(self, n: int, *, execute: bool) -> None:
        """Pull the card out at the ``n``-th APDU from now (1 = the next one).

        With ``execute=True`` the card executes that APDU (a write lands) but its answer is never
        sent; with ``execute=False`` the card is gone before executing it. The card then stays
        out until :meth:`insert` is called again.
        """
        if n < 1:
            raise ValueError("cut_after counts APDUs from 1 (the next one)")
        with self._lock:
            if self._sock is None:
                raise RuntimeError(f"{self!r} holds no card to cut")
            self._cut = (n, execute)
            self.cut_done.clear()

    def close(self) -> None:
        """Remove the card, if any."""
        self.remove()

    def __enter__(self) -> VirtualCardSlot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # The serving thread --------------------------------------------------------------------------

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            if self.quickack:
                # Linux resets quick-ack mode after a while; without it each APDU waits ~40 ms
                # for the delayed ACK of the previous answer.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _serve(self, sock: socket.socket, card: MifareClassicCard) -> None:
        try:
            while True:
                header = self._recv_exact(sock, 2)
                if header is None:
                    break
                (length,) = struct.unpack(">H", header)
                payload = self._recv_exact(sock, length) if length else b""
                if payload is None:
                    break
                if len(payload) == 1:
                    answer = self._control(card, payload[0])
                else:
                    cut = self._take_cut()
                    if cut is not None and not cut:
                        self._pull(sock)
                        break
                    answer = self._answer(card, payload)
                    if cut:
                        self._pull(sock)
                        break
                if answer is not None:
                    sock.sendall(struct.pack(">H", len(answer)) + answer)
        except OSError as exc:
            if self._sock is sock:
                log.warning("virtual card on port %d: connection lost: %s", self.port, exc)
        finally:
            with self._lock:
                if self._sock is sock:
                    self._sock = None
            sock.close()

    def _take_cut(self) -> bool | None:
        """None if this APDU is not cut; else whether to execute it before the cut."""
        with self._lock:
            if self._cut is None:
                return None
            left, execute = self._cut
            if left > 1:
                self._cut = (left - 1, execute)
                return None
            self._cut = None
            return execute

    def _pull(self, sock: socket.socket) -> None:
        with self._lock:
            if self._sock is sock:
                self._sock = None
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        self.cut_done.set()

    @staticmethod
    def _control(card: MifareClassicCard, code: int) -> bytes | None:
        if code == _CTRL_ATR:
            return card.atr
        if code in (_CTRL_OFF, _CTRL_ON, _CTRL_RESET):
            card.reset()
        else:
            log.warning("virtual card: unknown vpcd control code %d", code)
        return None

    @staticmethod
    def _answer(card: MifareClassicCard, apdu: bytes) -> bytes:
        try:
            return card.transmit(apdu)
        except Exception:
            log.exception("virtual card: the emulator failed on an APDU")
            return _SW_INTERNAL_ERROR
