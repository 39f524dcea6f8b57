"""The reader driver: PC/SC access (pyscard) and the MIFARE commands of ACR122U-class readers.

:class:`PcscTransport` carries APDUs to a reader through pcscd and turns PC/SC failures into
onecard's card errors. :class:`MifareReader` speaks the reader's MIFARE pseudo-APDUs (load key,
authenticate, read, write) over any :class:`Transport`, the emulator included, and avoids
repeating key loads and authentications a sector does not need.

Keys never appear in logs, reprs, exception messages or the APDU log: load-key APDUs and the key
bytes of trailer writes are recorded as ``XX``, and the driver keeps only a salted hash of the
keys it loaded (to know which slot holds which key).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from typing import Any, Literal, Protocol, cast

from smartcard import scard  # type: ignore[import-untyped]

from onecard.card.mifare import (
    BLOCK_SIZE,
    GEOMETRY_4K,
    KEY_SIZE,
    access_bits_valid,
    is_trailer_block,
)
from onecard.errors import CardRemoved, NoCard, NoReader, ReaderError, WrongKey

log = logging.getLogger(__name__)

KeyType = Literal["A", "B"]
SW_OK = b"\x90\x00"
SW_FAILED = b"\x63\x00"
APDU_LOG_SIZE = 10_000

# PC/SC results that mean the card went away (or was swapped) under an open connection. pcscd
# answers SCARD_E_NOT_TRANSACTED when the reader driver lost the card during the exchange.
_GONE = frozenset(
    {
        scard.SCARD_W_REMOVED_CARD,
        scard.SCARD_W_RESET_CARD,
        scard.SCARD_E_NO_SMARTCARD,
        scard.SCARD_E_NOT_TRANSACTED,
        scard.SCARD_E_READER_UNAVAILABLE,
        scard.SCARD_E_UNKNOWN_READER,
        scard.SCARD_E_COMM_DATA_LOST,
        scard.SCARD_F_COMM_ERROR,
        scard.SCARD_W_UNRESPONSIVE_CARD,
        scard.SCARD_W_UNPOWERED_CARD,
        scard.SCARD_E_INVALID_HANDLE,
    }
)
_NO_CARD_ON_CONNECT = frozenset(
    {
        scard.SCARD_E_NO_SMARTCARD,
        scard.SCARD_W_REMOVED_CARD,
        scard.SCARD_W_UNRESPONSIVE_CARD,
        scard.SCARD_W_UNPOWERED_CARD,
        scard.SCARD_E_NOT_TRANSACTED,
        scard.SCARD_E_PROTO_MISMATCH,
    }
)
_NO_SERVICE = frozenset({scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED})


class Transport(Protocol):
    """Anything that carries one APDU to a reader and returns its answer (data + SW1 SW2)."""

    def transmit(self, apdu: bytes) -> bytes:
        """Send ``apdu``; return the response data followed by SW1 SW2."""
        ...


# PC/SC ------------------------------------------------------------------------------------------


def _message(hr: int) -> str:
    return f"{cast(str, scard.SCardGetErrorMessage(hr)).rstrip('. ')} (0x{hr & 0xFFFFFFFF:08X})"


def _establish() -> Any:
    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        if hr in _NO_SERVICE:
            raise NoReader("the PC/SC service (pcscd) is not running, so no card reader is seen")
        raise NoReader(f"cannot reach the PC/SC service: {_message(hr)}")
    return ctx


def _release(ctx: Any) -> None:
    scard.SCardReleaseContext(ctx)


def _list(ctx: Any) -> list[str]:
    hr, names = scard.SCardListReaders(ctx, [])
    if hr == scard.SCARD_E_NO_READERS_AVAILABLE:
        return []
    if hr != scard.SCARD_S_SUCCESS:
        raise NoReader(f"cannot list the card readers: {_message(hr)}")
    return [str(n) for n in names]


def list_readers() -> list[str]:
    """The names of the connected PC/SC readers; empty if there are none or pcscd is not running."""
    try:
        ctx = _establish()
    except NoReader:
        return []
    try:
        return _list(ctx)
    finally:
        _release(ctx)


def _card_present(ctx: Any, reader: str) -> bool:
    hr, states = scard.SCardGetStatusChange(ctx, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
    if hr != scard.SCARD_S_SUCCESS:
        return False
    return bool(states[0][1] & scard.SCARD_STATE_PRESENT)


def wait_for_card(reader: str, *, present: bool = True, timeout: float = 5.0) -> bool:
    """Wait until ``reader`` reports a card (or, with ``present=False``, none); True if it did.

    pcscd polls readers such as vpcd every 0.4 s, so an insertion or removal can take that long
    to show.
    """
    ctx = _establish()
    try:
        deadline = time.monotonic() + timeout
        state = scard.SCARD_STATE_UNAWARE
        while True:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            hr, states = scard.SCardGetStatusChange(ctx, left_ms, [(reader, state)])
            if hr == scard.SCARD_E_TIMEOUT:
                return False
            if hr != scard.SCARD_S_SUCCESS:
                raise NoReader(f"cannot watch reader {reader!r}: {_message(hr)}")
            state = states[0][1] & ~scard.SCARD_STATE_CHANGED
            if bool(state & scard.SCARD_STATE_PRESENT) == present:
                return True
            if time.monotonic() >= deadline:
                return False
    finally:
        _release(ctx)


def _select(requested: str | None, names: list[str], ctx: Any) -> str:
    available = ", ".join(repr(n) for n in names) or "none"
    if not names:
        raise NoReader("no card reader is connected")
    if requested is None:
        if len(names) == 1:
            return names[0]
        with_card = [n for n in names if _card_present(ctx, n)]
        if len(with_card) == 1:
            return with_card[0]
        raise NoReader(f"several card readers are connected; name one of: {available}")
    if requested in names:
        return requested
    matches = [n for n in names if requested.lower() in n.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NoReader(f"no card reader {requested!r}; connected: {available}", field="reader")
    raise NoReader(
        f"{requested!r} names several card readers: "
        + ", ".join(repr(n) for n in matches)
        + "; give more of the name",
        field="reader",
    )


class PcscTransport:
    """An open PC/SC connection to the card on one reader."""

    def __init__(self, ctx: Any, handle: Any, protocol: int, reader: str, atr: bytes) -> None:
        self._ctx = ctx
        self._handle = handle
        self._pci = (
            scard.SCARD_PCI_T0 if protocol == scard.SCARD_PROTOCOL_T0 else scard.SCARD_PCI_T1
        )
        self.reader = reader
        self.atr = atr
        """The card's ATR as the reader gave it (PC/SC part 3 for contactless cards)."""
        self.apdu_count = 0
        self.transmit_seconds = 0.0
        self._gone = False
        self._closed = False

    @classmethod
    def open(cls, reader: str | None = None, *, wait: float = 0.0) -> PcscTransport:
        """Connect to the card on ``reader`` (exact name or a unique part of it).

        Without a name, the only reader, or the only one holding a card, is used. ``wait`` gives
        the card that many seconds to arrive. Raises :class:`NoReader` (listing the readers) or
        :class:`NoCard`.
        """
        ctx = _establish()
        try:
            name = _select(reader, _list(ctx), ctx)
            if wait > 0 and not _card_present(ctx, name):
                wait_for_card(name, present=True, timeout=wait)
            hr, handle, protocol = scard.SCardConnect(
                ctx,
                name,
                scard.SCARD_SHARE_SHARED,
                scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
            )
            if hr != scard.SCARD_S_SUCCESS:
                if hr in _NO_CARD_ON_CONNECT:
                    raise NoCard(f"no card on reader {name!r}")
                if hr in (scard.SCARD_E_UNKNOWN_READER, scard.SCARD_E_READER_UNAVAILABLE):
                    raise NoReader(f"card reader {name!r} is gone: {_message(hr)}")
                raise ReaderError(f"cannot connect to the card on {name!r}: {_message(hr)}")
        except BaseException:
            _release(ctx)
            raise
        status = scard.SCardStatus(handle)
        atr = bytes(status[4]) if status[0] == scard.SCARD_S_SUCCESS else b""
        log.debug("connected to the card on %r, ATR %s", name, atr.hex().upper())
        return cls(ctx, handle, int(protocol), name, atr)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "card removed" if self._gone else "open"
        return f"PcscTransport({self.reader!r}, {state})"

    def transmit(self, apdu: bytes) -> bytes:
        """Send one APDU; :class:`CardRemoved` if the card left the reader."""
        if self._closed:
            raise ReaderError(f"the connection to {self.reader!r} is closed")
        if self._gone:
            raise CardRemoved(f"the card left reader {self.reader!r}")
        started = time.perf_counter()
        hr, response = scard.SCardTransmit(self._handle, self._pci, list(apdu))
        self.transmit_seconds += time.perf_counter() - started
        self.apdu_count += 1
        if hr != scard.SCARD_S_SUCCESS:
            if hr in _GONE:
                self._gone = True
                raise CardRemoved(f"the card left reader {self.reader!r} ({_message(hr)})")
            raise ReaderError(f"reader {self.reader!r} failed: {_message(hr)}")
        answer = bytes(response)
        if len(answer) < 2:
            # pcscd passes on an empty answer when the reader lost the card mid-exchange.
            self._gone = True
            raise CardRemoved(f"the card left reader {self.reader!r} during an exchange")
        return answer

    def close(self) -> None:
        """Disconnect (leaving the card powered) and release the PC/SC context."""
        if self._closed:
            return
        self._closed = True
        scard.SCardDisconnect(self._handle, scard.SCARD_LEAVE_CARD)
        _release(self._ctx)

    def __enter__(self) -> PcscTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# MIFARE commands of ACR122U-class readers -------------------------------------------------------


def _sw(answer: bytes) -> str:
    return answer[-2:].hex().upper()


def _redacted(apdu: bytes) -> str:
    """The APDU in hex with key bytes replaced by XX."""
    if len(apdu) >= 5 and apdu[:2] == b"\xff\x82":
        return apdu[:5].hex().upper() + "XX" * (len(apdu) - 5)
    if len(apdu) == 5 + BLOCK_SIZE and apdu[:2] == b"\xff\xd6" and is_trailer_block(apdu[3]):
        data = apdu[5:]
        return apdu[:5].hex().upper() + "XX" * 6 + data[6:10].hex().upper() + "XX" * 6
    return apdu.hex().upper()


class MifareReader:
    """MIFARE Classic operations through an ACR122U-class reader (or its emulator)."""

    SLOTS = 2

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.apdu_count = 0
        self._apdus: deque[str] = deque(maxlen=APDU_LOG_SIZE)
        self._salt = os.urandom(16)
        self._slots: list[bytes | None] = [None] * self.SLOTS  # salted hashes of loaded keys
        self._lru: list[int] = list(range(self.SLOTS))  # least recently used first
        self._auth: tuple[int, str, bytes] | None = None  # (sector, key type, key hash)

    def __repr__(self) -> str:
        return f"MifareReader({self.transport!r}, {self.apdu_count} APDUs)"

    @property
    def apdus(self) -> list[str]:
        """The APDUs sent (the last 10 000), in hex, with key bytes shown as XX."""
        return list(self._apdus)

    def _fingerprint(self, key: bytes) -> bytes:
        return hashlib.blake2b(key, key=self._salt, digest_size=16).digest()

    def _send(self, apdu: bytes) -> bytes:
        text = _redacted(apdu)
        self._apdus.append(text)
        self.apdu_count += 1
        log.debug("> %s", text)
        try:
            answer = self.transport.transmit(apdu)
        except Exception:
            self._forget()
            raise
        log.debug("< %s", _sw(answer))
        return answer

    def _forget(self) -> None:
        """Forget the authentication (the card halted, or is gone)."""
        self._auth = None

    def _touch(self, slot: int) -> None:
        self._lru.remove(slot)
        self._lru.append(slot)

    def uid(self) -> bytes:
        """The card's UID (4 or 7 bytes)."""
        answer = self._send(b"\xff\xca\x00\x00\x00")
        if answer[-2:] != SW_OK or len(answer) not in (6, 9):
            raise ReaderError(f"the reader did not give the card's UID (SW {_sw(answer)})")
        return answer[:-2]

    def load_key(self, slot: int, key: bytes) -> None:
        """Load a 6-byte key into reader key slot 0 or 1."""
        if slot not in range(self.SLOTS):
            raise ValueError(f"reader key slot {slot} does not exist (0 or 1)")
        if len(key) != KEY_SIZE:
            raise ValueError(f"a MIFARE key has {KEY_SIZE} bytes")
        # A new key in a slot invalidates what the driver knew of that slot.
        self._slots[slot] = None
        answer = self._send(b"\xff\x82\x00" + bytes((slot, KEY_SIZE)) + bytes(key))
        if answer != SW_OK:
            raise ReaderError(
                f"the reader refused to load a key into slot {slot} (SW {_sw(answer)})"
            )
        self._slots[slot] = self._fingerprint(bytes(key))
        self._touch(slot)

    def authenticate(self, block: int, key_type: KeyType, slot: int) -> None:
        """Authenticate the sector of ``block`` with key A or B from reader key slot ``slot``."""
        if key_type not in ("A", "B"):
            raise ValueError(f"key type {key_type!r} is not 'A' or 'B'")
        if slot not in range(self.SLOTS):
            raise ValueError(f"reader key slot {slot} does not exist (0 or 1)")
        sector = GEOMETRY_4K.sector_of(block)
        self._auth = None
        code = 0x60 if key_type == "A" else 0x61
        answer = self._send(bytes((0xFF, 0x86, 0, 0, 5, 1, 0, block, code, slot)))
        if answer == SW_FAILED:
            raise WrongKey(
                f"the card refused key {key_type} for sector {sector}",
                sector=sector,
                key_type=key_type,
            )
        if answer != SW_OK:
            raise ReaderError(
                f"authentication of sector {sector} with key {key_type} failed (SW {_sw(answer)})"
            )
        fingerprint = self._slots[slot]
        if fingerprint is not None:
            self._auth = (sector, key_type, fingerprint)
            self._touch(slot)

    def ensure_auth(self, block: int, key_type: KeyType, key: bytes) -> None:
        """Be authenticated for the sector of ``block`` with this key, sending only what's needed.

        The key is loaded only if no reader slot holds it (the least recently used slot is
        replaced), and the sector is authenticated only if it is not already, with this key.
        """
        if len(key) != KEY_SIZE:
            raise ValueError(f"a MIFARE key has {KEY_SIZE} bytes")
        sector = GEOMETRY_4K.sector_of(block)
        fingerprint = self._fingerprint(bytes(key))
        if self._auth == (sector, key_type, fingerprint):
            return
        if fingerprint in self._slots:
            slot = self._slots.index(fingerprint)
        else:
            slot = self._lru[0]
            self.load_key(slot, key)
        self.authenticate(block, key_type, slot)

    def read_block(self, block: int) -> bytes:
        """The 16 bytes of ``block`` (the sector must be authenticated)."""
        self._check_block(block)
        answer = self._send(b"\xff\xb0\x00" + bytes((block, BLOCK_SIZE)))
        if answer[-2:] != SW_OK or len(answer) != BLOCK_SIZE + 2:
            self._forget()
            raise ReaderError(
                f"the card refused to read block {block} (SW {_sw(answer)})", block=block
            )
        return answer[:BLOCK_SIZE]

    def write_block(self, block: int, data: bytes) -> None:
        """Write 16 bytes to ``block`` (the sector must be authenticated with a key allowed to)."""
        self._check_block(block)
        if len(data) != BLOCK_SIZE:
            raise ValueError(f"a block has {BLOCK_SIZE} bytes, not {len(data)}")
        if is_trailer_block(block) and not access_bits_valid(data[6:9]):
            raise ValueError(
                f"refusing to write trailer block {block} with invalid access bits: "
                "the card would block the sector for good"
            )
        answer = self._send(b"\xff\xd6\x00" + bytes((block, BLOCK_SIZE)) + bytes(data))
        if answer != SW_OK:
            self._forget()
            raise ReaderError(
                f"the card refused to write block {block} (SW {_sw(answer)})", block=block
            )

    @staticmethod
    def _check_block(block: int) -> None:
        if not 0 <= block < GEOMETRY_4K.total_blocks:
            raise ValueError(f"block {block} does not exist on a MIFARE Classic card")
