"""A MIFARE Classic card behind an ACR122U-class reader, answering the reader's pseudo-APDUs.

``MifareClassicCard.transmit`` takes what an application sends to an ACR122U through PC/SC and
answers what the reader would: the data and the status word. It enforces the keys and access
bits stored in the card's own sector trailers, as the chip does.

Supported pseudo-APDUs (class FF):

* ``FF CA 00 00 00``: the UID;
* ``FF 82 00 <slot> 06 <key>``: load a key into reader slot 0 or 1 (volatile);
* ``FF 86 00 00 05 01 00 <block> <60|61> <slot>``: authenticate with key A (60) or B (61);
  the obsolete ``FF 88 00 <block> <60|61> <slot>`` too;
* ``FF B0 00 <block> 10``: read a block; ``FF D6 00 <block> 10 <16 bytes>``: write one.

Refusals answer ``63 00`` as the reader does. Like the chip, the card then leaves the
authenticated state (a refused command halts it): only a new successful authentication lets it
read or write again.
"""

from __future__ import annotations

import threading
from pathlib import Path

from onecard.card.mifare import (
    BLOCK_SIZE,
    DEFAULT_KEY,
    KEY_SIZE,
    TRANSPORT_ACCESS,
    Geometry,
    access_bits_valid,
    access_group,
    data_allowed,
    decode_access_bits,
    geometry,
    key_b_readable,
    trailer_allowed,
)

SW_OK = b"\x90\x00"
SW_FAILED = b"\x63\x00"
SW_WRONG_LENGTH = b"\x67\x00"
SW_WRONG_P1P2 = b"\x6b\x00"
SW_BAD_INS = b"\x6d\x00"
SW_BAD_CLA = b"\x6e\x00"
SW_NOT_SUPPORTED = b"\x6a\x81"

_KEY_TYPES = {0x60: "A", 0x61: "B"}
_SAK = {"1k": 0x08, "4k": 0x18}
_ATQA = {"1k": b"\x04\x00", "4k": b"\x02\x00"}
_MANUFACTURER = bytes.fromhex("6263646566676869")  # what NXP writes varies; any fixed filler


def _atr(size: str) -> bytes:
    """The PC/SC part 3 ATR of a contactless storage card (RID A000000306, SS 03 = ISO 14443A-3)."""
    card_name = b"\x00\x01" if size == "1k" else b"\x00\x02"
    body = bytes.fromhex("8F8001804F0CA000000306") + b"\x03" + card_name + b"\x00\x00\x00\x00"
    tck = 0
    for byte in body:
        tck ^= byte
    return b"\x3b" + body + bytes((tck,))


def _block0(uid: bytes, size: str) -> bytes:
    if len(uid) == 4:
        bcc = uid[0] ^ uid[1] ^ uid[2] ^ uid[3]
        head = uid + bytes((bcc, _SAK[size])) + _ATQA[size]
    else:
        head = uid + bytes((_SAK[size],)) + _ATQA[size]
    return (head + _MANUFACTURER)[:BLOCK_SIZE]


def _check_uid(uid: bytes) -> bytes:
    uid = bytes(uid)
    if len(uid) not in (4, 7):
        raise ValueError(f"a MIFARE Classic UID has 4 or 7 bytes, not {len(uid)}")
    return uid


class MifareClassicCard:
    """An emulated MIFARE Classic 1K or 4K card with the firmware of an ACR122U in front of it."""

    def __init__(self, uid: bytes, size: str = "1k", memory: bytes | None = None) -> None:
        self._geo: Geometry = geometry(size)
        self._uid = _check_uid(uid)
        if memory is None:
            mem = bytearray(self._geo.total_bytes)
            for sector in range(self._geo.sectors):
                trailer = self._geo.trailer_block(sector) * BLOCK_SIZE
                mem[trailer : trailer + BLOCK_SIZE] = DEFAULT_KEY + TRANSPORT_ACCESS + DEFAULT_KEY
            mem[0:BLOCK_SIZE] = _block0(self._uid, self._geo.size)
        else:
            if len(memory) != self._geo.total_bytes:
                raise ValueError(
                    f"a {self._geo.size} card has {self._geo.total_bytes} bytes of memory, "
                    f"not {len(memory)}"
                )
            mem = bytearray(memory)
            if mem[: len(self._uid)] != self._uid:
                raise ValueError("block 0 of the memory does not start with the UID")
        self._mem = mem
        self._key_slots: list[bytes | None] = [None, None]
        self._auth: tuple[int, str] | None = None  # (sector, key type)
        self._lock = threading.Lock()
        self.apdu_count = 0
        self.atr = _atr(self._geo.size)

    # Properties and test helpers ----------------------------------------------------------------

    @property
    def uid(self) -> bytes:
        """The UID (4 or 7 bytes)."""
        return self._uid

    @property
    def size(self) -> str:
        """ "1k" or "4k"."""
        return self._geo.size

    @property
    def geometry(self) -> Geometry:
        """The card's geometry."""
        return self._geo

    @property
    def memory(self) -> bytes:
        """A copy of the whole memory, keys included."""
        with self._lock:
            return bytes(self._mem)

    def block(self, block: int) -> bytes:
        """The raw content of ``block``, bypassing keys (for tests)."""
        self._geo.sector_of(block)
        with self._lock:
            return bytes(self._mem[block * BLOCK_SIZE : (block + 1) * BLOCK_SIZE])

    def poke(self, block: int, data: bytes) -> None:
        """Write raw memory, bypassing keys and access bits (for tests); block 0 too."""
        self._geo.sector_of(block)
        if len(data) != BLOCK_SIZE:
            raise ValueError(f"a block has {BLOCK_SIZE} bytes, not {len(data)}")
        with self._lock:
            self._mem[block * BLOCK_SIZE : (block + 1) * BLOCK_SIZE] = data

    def reset(self) -> None:
        """Power cycle the chip: it forgets the authentication (the reader keeps its key slots)."""
        with self._lock:
            self._auth = None

    def save(self, path: str | Path) -> None:
        """Write a raw dump (1024 or 4096 bytes, block 0 with the UID) as nfc-mfclassic does."""
        Path(path).write_bytes(self.memory)

    @classmethod
    def load(cls, path: str | Path, *, uid: bytes | None = None) -> MifareClassicCard:
        """A card from a raw dump; the UID comes from block 0 (4 bytes if the BCC fits, else 7)."""
        data = Path(path).read_bytes()
        sizes = {1024: "1k", 4096: "4k"}
        if len(data) not in sizes:
            raise ValueError(
                f"{path}: a MIFARE Classic dump has 1024 or 4096 bytes, not {len(data)}"
            )
        if uid is None:
            bcc = data[0] ^ data[1] ^ data[2] ^ data[3]
            uid = data[:4] if data[4] == bcc else data[:7]
        return cls(uid, sizes[len(data)], data)

    def clone_to(self, uid: bytes) -> MifareClassicCard:
        """A card with another UID carrying this card's memory in every block but block 0."""
        uid = _check_uid(uid)
        mem = bytearray(self.memory)
        mem[0:BLOCK_SIZE] = _block0(uid, self.size)
        return MifareClassicCard(uid, self.size, bytes(mem))

    def __repr__(self) -> str:
        return f"MifareClassicCard(uid={self._uid.hex().upper()}, size={self.size!r})"

    # The reader firmware -----------------------------------------------------------------------

    def transmit(self, apdu: bytes) -> bytes:
        """Answer one pseudo-APDU as an ACR122U with this card on it: data + SW1 SW2."""
        with self._lock:
            self.apdu_count += 1
            return self._dispatch(bytes(apdu))

    def _dispatch(self, apdu: bytes) -> bytes:
        if len(apdu) < 4:
            return SW_WRONG_LENGTH
        cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
        if cla != 0xFF:
            return SW_BAD_CLA
        body = apdu[4:]
        if ins == 0xCA:
            return self._get_data(p1, p2, body)
        if ins == 0x82:
            return self._load_key(p1, p2, body)
        if ins == 0x86:
            return self._authenticate_apdu(p1, p2, body)
        if ins == 0x88:
            return self._authenticate_obsolete(p1, p2, body)
        if ins == 0xB0:
            return self._read(p1, p2, body)
        if ins == 0xD6:
            return self._write(p1, p2, body)
        return SW_BAD_INS

    def _get_data(self, p1: int, p2: int, body: bytes) -> bytes:
        if len(body) != 1:
            return SW_WRONG_LENGTH
        if p2 != 0:
            return SW_WRONG_P1P2
        if p1 != 0:  # 01 asks for the ATS, which a MIFARE Classic has not
            return SW_NOT_SUPPORTED
        le = body[0] or 256
        return self._uid[:le] + SW_OK

    def _load_key(self, p1: int, p2: int, body: bytes) -> bytes:
        if len(body) != 1 + KEY_SIZE or body[0] != KEY_SIZE:
            return SW_WRONG_LENGTH
        if p1 != 0 or p2 not in (0, 1):
            return SW_WRONG_P1P2
        self._key_slots[p2] = body[1:]
        return SW_OK

    def _authenticate_apdu(self, p1: int, p2: int, body: bytes) -> bytes:
        if len(body) != 6 or body[0] != 5:
            return SW_WRONG_LENGTH
        if p1 != 0 or p2 != 0 or body[1] != 0x01 or body[2] != 0x00:
            return SW_WRONG_P1P2
        return self._authenticate(body[3], body[4], body[5])

    def _authenticate_obsolete(self, p1: int, p2: int, body: bytes) -> bytes:
        if len(body) != 2:
            return SW_WRONG_LENGTH
        if p1 != 0:
            return SW_WRONG_P1P2
        return self._authenticate(p2, body[0], body[1])

    def _fail(self) -> bytes:
        """A refusal: the chip answers NAK and halts, so the authentication is gone."""
        self._auth = None
        return SW_FAILED

    def _trailer_conditions(self, sector: int) -> tuple[int, int, int, int] | None:
        trailer = self._geo.trailer_block(sector) * BLOCK_SIZE
        bits = bytes(self._mem[trailer + 6 : trailer + 10])
        return decode_access_bits(bits) if access_bits_valid(bits) else None

    def _authenticate(self, block: int, key_code: int, slot: int) -> bytes:
        key_type = _KEY_TYPES.get(key_code)
        if key_type is None or slot not in (0, 1) or block >= self._geo.total_blocks:
            return self._fail()
        key = self._key_slots[slot]
        sector = self._geo.sector_of(block)
        trailer = self._geo.trailer_block(sector) * BLOCK_SIZE
        offset = trailer if key_type == "A" else trailer + 10
        stored = self._mem[offset : offset + KEY_SIZE]
        # A sector whose access bits are corrupt is blocked for good, as on the chip.
        if key is None or key != stored or self._trailer_conditions(sector) is None:
            return self._fail()
        self._auth = (sector, key_type)
        return SW_OK

    def _read(self, p1: int, p2: int, body: bytes) -> bytes:
        if len(body) != 1 or body[0] != BLOCK_SIZE:
            return SW_WRONG_LENGTH
        if p1 != 0 or p2 >= self._geo.total_blocks:
            return self._fail()
        block = p2
        permitted = self._permission(block)
        if permitted is None:
            return self._fail()
        sector, key_type, conds = permitted
        index = block - self._geo.first_block(sector)
        group = access_group(index, self._geo.blocks_in_sector(sector))
        raw = bytes(self._mem[block * BLOCK_SIZE : (block + 1) * BLOCK_SIZE])
        if group != 3:
            if not data_allowed(conds[group], "read", key_type, trailer_cond=conds[3]):
                return self._fail()
            return raw + SW_OK
        cond = conds[3]
        if not trailer_allowed(cond, "access", "read", key_type):
            return self._fail()
        key_b = raw[10:16] if trailer_allowed(cond, "key_b", "read", key_type) else bytes(6)
        return bytes(6) + raw[6:10] + key_b + SW_OK

    def _write(self, p1: int, p2: int, body: bytes) -> bytes:
        if len(body) != 1 + BLOCK_SIZE or body[0] != BLOCK_SIZE:
            return SW_WRONG_LENGTH
        if p1 != 0 or p2 >= self._geo.total_blocks or p2 == 0:
            return self._fail()
        block, data = p2, body[1:]
        permitted = self._permission(block)
        if permitted is None:
            return self._fail()
        sector, key_type, conds = permitted
        index = block - self._geo.first_block(sector)
        group = access_group(index, self._geo.blocks_in_sector(sector))
        start = block * BLOCK_SIZE
        if group != 3:
            if not data_allowed(conds[group], "write", key_type, trailer_cond=conds[3]):
                return self._fail()
            self._mem[start : start + BLOCK_SIZE] = data
            return SW_OK
        cond = conds[3]
        parts = {
            "key_a": (0, 6),
            "access": (6, 10),
            "key_b": (10, 16),
        }
        writable = [p for p in parts if trailer_allowed(cond, p, "write", key_type)]
        if not writable:
            return self._fail()
        for part in writable:
            lo, hi = parts[part]
            self._mem[start + lo : start + hi] = data[lo:hi]
        return SW_OK

    def _permission(self, block: int) -> tuple[int, str, tuple[int, int, int, int]] | None:
        """(sector, key type, conditions) if ``block`` lies in the authenticated sector."""
        if self._auth is None:
            return None
        sector, key_type = self._auth
        if self._geo.sector_of(block) != sector:
            return None
        conds = self._trailer_conditions(sector)
        if conds is None:
            return None
        if key_type == "B" and key_b_readable(conds[3]):
            return None  # key B is readable here, so the card refuses every access with it
        return sector, key_type, conds
