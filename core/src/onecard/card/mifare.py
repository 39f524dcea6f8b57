"""The MIFARE Classic chip: memory geometry (1K and 4K) and access conditions.

Everything here follows the NXP MF1S50/MF1S70 datasheets. Access conditions are 3-bit integers
``C1C2C3`` with C1 the most significant bit: ``0b100`` means C1=1, C2=0, C3=0. A sector trailer
holds four of them, one per *access group*: groups 0, 1 and 2 govern the data blocks, group 3 the
trailer itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BLOCK_SIZE = 16
KEY_SIZE = 6

DEFAULT_KEY = b"\xff" * KEY_SIZE
TRANSPORT_ACCESS = bytes.fromhex("FF078069")
"""Bytes 6..9 of a trailer as delivered: data groups 000, trailer 001, general purpose byte 69."""

DATA_ANY = 0b000
"""Data block: read, write, increment and decrement with key A or B (transport)."""
DATA_READ_AB_WRITE_B = 0b100
"""Data block: read with key A or B, write with key B only."""
DATA_B_ONLY = 0b011
"""Data block: read and write with key B only."""
TRAILER_TRANSPORT = 0b001
"""Trailer: key A writes both keys and the access bits; key B is readable (transport)."""
TRAILER_B_MANAGES = 0b011
"""Trailer: key B writes both keys and the access bits; nothing secret is readable."""

KeyType = Literal["A", "B"]
DataOp = Literal["read", "write", "increment", "decrement"]
TrailerPart = Literal["key_a", "access", "key_b"]
TrailerOp = Literal["read", "write"]

Conditions = tuple[int, int, int, int]


@dataclass(frozen=True)
class Geometry:
    """Where the sectors and blocks of one card size lie."""

    size: str
    sectors: int
    total_blocks: int

    @property
    def total_bytes(self) -> int:
        """Memory size in bytes (1024 or 4096)."""
        return self.total_blocks * BLOCK_SIZE

    def _check_sector(self, sector: int) -> None:
        if not 0 <= sector < self.sectors:
            raise ValueError(
                f"sector {sector} is not on a {self.size} card (0..{self.sectors - 1})"
            )

    def _check_block(self, block: int) -> None:
        if not 0 <= block < self.total_blocks:
            raise ValueError(
                f"block {block} is not on a {self.size} card (0..{self.total_blocks - 1})"
            )

    def sector_of(self, block: int) -> int:
        """The sector holding ``block``."""
        self._check_block(block)
        return block // 4 if block < 128 else 32 + (block - 128) // 16

    def first_block(self, sector: int) -> int:
        """The first block of ``sector``."""
        self._check_sector(sector)
        return sector * 4 if sector < 32 else 128 + (sector - 32) * 16

    def blocks_in_sector(self, sector: int) -> int:
        """4, or 16 for the sectors 32..39 of a 4K card."""
        self._check_sector(sector)
        return 4 if sector < 32 else 16

    def trailer_block(self, sector: int) -> int:
        """The sector trailer (keys and access bits) of ``sector``."""
        return self.first_block(sector) + self.blocks_in_sector(sector) - 1

    def is_trailer(self, block: int) -> bool:
        """Whether ``block`` is a sector trailer."""
        return self.trailer_block(self.sector_of(block)) == block

    def data_blocks(self, sector: int) -> list[int]:
        """The blocks of ``sector`` that hold data: not the trailer, not block 0."""
        first = self.first_block(sector)
        return [b for b in range(first, self.trailer_block(sector)) if b != 0]


GEOMETRY_1K = Geometry(size="1k", sectors=16, total_blocks=64)
GEOMETRY_4K = Geometry(size="4k", sectors=40, total_blocks=256)
_GEOMETRIES = {"1k": GEOMETRY_1K, "4k": GEOMETRY_4K}


def geometry(size: str) -> Geometry:
    """The geometry of a card size, "1k" or "4k"."""
    try:
        return _GEOMETRIES[size.lower()]
    except KeyError:
        raise ValueError(f"unknown MIFARE Classic size {size!r}: use '1k' or '4k'") from None


def is_trailer_block(block: int) -> bool:
    """Whether ``block`` is a sector trailer on any card size (the numbering is shared)."""
    return GEOMETRY_4K.is_trailer(block)


# Access bits ------------------------------------------------------------------------------------


def _check_condition(cond: int) -> None:
    if not 0 <= cond <= 0b111:
        raise ValueError(f"access condition {cond!r} is not a 3-bit value C1C2C3")


def encode_access_bits(conditions: Conditions, gpb: int = 0x69) -> bytes:
    """Bytes 6..9 of a sector trailer for the four access groups and the general purpose byte."""
    if len(conditions) != 4:
        raise ValueError("four access conditions are needed: data groups 0, 1, 2 and the trailer")
    c1 = c2 = c3 = 0
    for group, cond in enumerate(conditions):
        _check_condition(cond)
        c1 |= ((cond >> 2) & 1) << group
        c2 |= ((cond >> 1) & 1) << group
        c3 |= (cond & 1) << group
    if not 0 <= gpb <= 0xFF:
        raise ValueError(f"general purpose byte {gpb!r} is not a byte")
    byte6 = ((~c2 & 0xF) << 4) | (~c1 & 0xF)
    byte7 = (c1 << 4) | (~c3 & 0xF)
    byte8 = (c3 << 4) | c2
    return bytes((byte6, byte7, byte8, gpb))


def access_bits_valid(b: bytes) -> bool:
    """Whether bytes 6..8 (of 3 or 4 given) carry consistent inverted copies."""
    if len(b) < 3:
        return False
    return (
        (b[0] & 0xF) == (~b[1] >> 4) & 0xF
        and (b[0] >> 4) == (~b[2]) & 0xF
        and (b[1] & 0xF) == (~b[2] >> 4) & 0xF
    )


def decode_access_bits(b: bytes) -> Conditions:
    """The four access conditions (groups 0, 1, 2, trailer) of trailer bytes 6..8 (or 6..9)."""
    if len(b) not in (3, 4):
        raise ValueError(f"access bits are 3 or 4 bytes, not {len(b)}")
    if not access_bits_valid(b):
        raise ValueError(f"access bits {b[:3].hex().upper()} are invalid: inverted copies differ")
    c1 = b[1] >> 4
    c2 = b[2] & 0xF
    c3 = b[2] >> 4
    conds = [(((c1 >> g) & 1) << 2) | (((c2 >> g) & 1) << 1) | ((c3 >> g) & 1) for g in range(4)]
    return (conds[0], conds[1], conds[2], conds[3])


def make_trailer(key_a: bytes, conditions: Conditions, key_b: bytes, gpb: int = 0x69) -> bytes:
    """A 16-byte sector trailer: key A, access bits, general purpose byte, key B."""
    if len(key_a) != KEY_SIZE or len(key_b) != KEY_SIZE:
        raise ValueError("MIFARE keys are 6 bytes")
    return bytes(key_a) + encode_access_bits(conditions, gpb) + bytes(key_b)


def access_group(block_index_in_sector: int, blocks_in_sector: int) -> int:
    """The access group (0, 1, 2, or 3 for the trailer) of a block by its index in its sector."""
    if blocks_in_sector == 4:
        if not 0 <= block_index_in_sector < 4:
            raise ValueError(f"block index {block_index_in_sector} is not in a 4-block sector")
        return block_index_in_sector
    if blocks_in_sector == 16:
        if not 0 <= block_index_in_sector < 16:
            raise ValueError(f"block index {block_index_in_sector} is not in a 16-block sector")
        return 3 if block_index_in_sector == 15 else block_index_in_sector // 5
    raise ValueError(f"a sector has 4 or 16 blocks, not {blocks_in_sector}")


# Permission tables (MF1S50 datasheet, tables 7 and 8) -------------------------------------------

_A, _B, _AB, _NEVER = frozenset("A"), frozenset("B"), frozenset("AB"), frozenset[str]()

# data condition -> (read, write, increment, decrement/transfer/restore)
_DATA_TABLE: dict[int, tuple[frozenset[str], ...]] = {
    0b000: (_AB, _AB, _AB, _AB),
    0b010: (_AB, _NEVER, _NEVER, _NEVER),
    0b100: (_AB, _B, _NEVER, _NEVER),
    0b110: (_AB, _B, _B, _AB),
    0b001: (_AB, _NEVER, _NEVER, _AB),
    0b011: (_B, _B, _NEVER, _NEVER),
    0b101: (_B, _NEVER, _NEVER, _NEVER),
    0b111: (_NEVER, _NEVER, _NEVER, _NEVER),
}
_DATA_OPS = ("read", "write", "increment", "decrement")

# trailer condition -> (key A read, key A write, access read, access write, key B read, write)
_TRAILER_TABLE: dict[int, tuple[frozenset[str], ...]] = {
    0b000: (_NEVER, _A, _A, _NEVER, _A, _A),
    0b010: (_NEVER, _NEVER, _A, _NEVER, _A, _NEVER),
    0b100: (_NEVER, _B, _AB, _NEVER, _NEVER, _B),
    0b110: (_NEVER, _NEVER, _AB, _NEVER, _NEVER, _NEVER),
    0b001: (_NEVER, _A, _A, _A, _A, _A),
    0b011: (_NEVER, _B, _AB, _B, _NEVER, _B),
    0b101: (_NEVER, _NEVER, _AB, _B, _NEVER, _NEVER),
    0b111: (_NEVER, _NEVER, _AB, _NEVER, _NEVER, _NEVER),
}
_TRAILER_PARTS = ("key_a", "access", "key_b")


def key_b_readable(trailer_cond: int) -> bool:
    """Whether key B can be read (conditions 000, 010, 001): then it is no key for access."""
    _check_condition(trailer_cond)
    return bool(_TRAILER_TABLE[trailer_cond][4])


def _check_key_type(key_type: str) -> None:
    if key_type not in ("A", "B"):
        raise ValueError(f"key type {key_type!r} is not 'A' or 'B'")


def data_allowed(cond: int, op: str, key_type: str, *, trailer_cond: int | None = None) -> bool:
    """Whether ``key_type`` may ``op`` (read, write, increment, decrement) a data block.

    Pass the sector's ``trailer_cond`` to apply the datasheet's rule that key B cannot be used for
    any access when it is readable (trailer conditions 000, 010, 001).
    """
    _check_condition(cond)
    _check_key_type(key_type)
    if op not in _DATA_OPS:
        raise ValueError(f"data operation {op!r} is not one of {', '.join(_DATA_OPS)}")
    if key_type == "B" and trailer_cond is not None and key_b_readable(trailer_cond):
        return False
    return key_type in _DATA_TABLE[cond][_DATA_OPS.index(op)]


def trailer_allowed(cond: int, part: str, op: str, key_type: str) -> bool:
    """Whether ``key_type`` may ``op`` (read, write) ``part`` (key_a, access, key_b) of a trailer.

    With conditions 000, 010 and 001 key B is readable and so allows nothing (the table gives it
    nothing there either).
    """
    _check_condition(cond)
    _check_key_type(key_type)
    if part not in _TRAILER_PARTS:
        raise ValueError(f"trailer part {part!r} is not one of {', '.join(_TRAILER_PARTS)}")
    if op not in ("read", "write"):
        raise ValueError(f"trailer operation {op!r} is not 'read' or 'write'")
    index = _TRAILER_PARTS.index(part) * 2 + (op == "write")
    return key_type in _TRAILER_TABLE[cond][index]
