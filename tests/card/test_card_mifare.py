"""The MIFARE Classic chip model: geometry, access bits, the datasheet's permission tables."""

from __future__ import annotations

import itertools

import pytest

from onecard.card.mifare import (
    BLOCK_SIZE,
    DATA_ANY,
    DATA_B_ONLY,
    DATA_READ_AB_WRITE_B,
    DEFAULT_KEY,
    GEOMETRY_1K,
    GEOMETRY_4K,
    TRAILER_B_MANAGES,
    TRAILER_TRANSPORT,
    TRANSPORT_ACCESS,
    access_group,
    data_allowed,
    decode_access_bits,
    encode_access_bits,
    geometry,
    key_b_readable,
    make_trailer,
    trailer_allowed,
)


def test_geometry_1k() -> None:
    g = geometry("1k")
    assert g is GEOMETRY_1K
    assert (g.size, g.sectors, g.total_blocks, g.total_bytes) == ("1k", 16, 64, 1024)
    assert [g.first_block(s) for s in (0, 1, 15)] == [0, 4, 60]
    assert [g.trailer_block(s) for s in (0, 1, 15)] == [3, 7, 63]
    assert g.sector_of(7) == 1 and g.sector_of(8) == 2
    assert g.is_trailer(3) and g.is_trailer(63) and not g.is_trailer(4)
    assert g.data_blocks(0) == [1, 2]
    assert g.data_blocks(1) == [4, 5, 6]
    assert g.blocks_in_sector(15) == 4
    with pytest.raises(ValueError, match="block 64"):
        g.sector_of(64)
    with pytest.raises(ValueError, match="sector 16"):
        g.first_block(16)


def test_geometry_4k() -> None:
    g = geometry("4K")
    assert g is GEOMETRY_4K
    assert (g.sectors, g.total_blocks, g.total_bytes) == (40, 256, 4096)
    assert g.first_block(31) == 124 and g.trailer_block(31) == 127
    assert g.first_block(32) == 128 and g.trailer_block(32) == 143
    assert g.first_block(39) == 240 and g.trailer_block(39) == 255
    assert g.blocks_in_sector(32) == 16
    assert g.sector_of(143) == 32 and g.sector_of(144) == 33
    assert g.is_trailer(143) and not g.is_trailer(131)
    assert g.data_blocks(39) == list(range(240, 255))
    # every block lies in exactly one sector, and the trailers are where the sectors end
    for sector in range(g.sectors):
        blocks = range(g.first_block(sector), g.trailer_block(sector) + 1)
        assert all(g.sector_of(b) == sector for b in blocks)
    assert sum(g.blocks_in_sector(s) for s in range(g.sectors)) == g.total_blocks


def test_unknown_size() -> None:
    with pytest.raises(ValueError, match="'2k'"):
        geometry("2k")


def test_transport_access_bits() -> None:
    assert decode_access_bits(TRANSPORT_ACCESS) == (0, 0, 0, TRAILER_TRANSPORT)
    assert encode_access_bits((0, 0, 0, 0b001)) == bytes.fromhex("FF078069")
    assert bytes.fromhex("FF078069") == TRANSPORT_ACCESS


def test_key_b_managed_access_bits() -> None:
    # a common issuance: data free with either key, trailer managed by key B
    assert decode_access_bits(bytes.fromhex("7F078869")) == (0, 0, 0, TRAILER_B_MANAGES)
    assert encode_access_bits((0, 0, 0, 0b011)) == bytes.fromhex("7F078869")
    # read with A or B, write with B (groups 0-2: 100), trailer 011: bytes 78 77 88
    assert encode_access_bits((4, 4, 4, 3)) == bytes.fromhex("78778869")
    # the datasheet's all-000 (data and trailer) example: FF 0F 00
    assert encode_access_bits((0, 0, 0, 0), gpb=0) == bytes.fromhex("FF0F0000")


def test_access_bits_round_trip() -> None:
    seen = set()
    for conds in itertools.product(range(8), repeat=4):
        raw = encode_access_bits(conds, gpb=0x42)  # type: ignore[arg-type]
        assert raw[3] == 0x42
        assert decode_access_bits(raw) == conds
        assert decode_access_bits(raw[:3]) == conds
        seen.add(raw)
    assert len(seen) == 8**4


def test_inconsistent_access_bits() -> None:
    with pytest.raises(ValueError, match="inverted"):
        decode_access_bits(bytes.fromhex("FF078169"))
    with pytest.raises(ValueError, match="3-bit"):
        encode_access_bits((0, 0, 8, 1))


def test_make_trailer() -> None:
    key_a, key_b = bytes(range(6)), bytes(range(10, 16))
    trailer = make_trailer(key_a, (0, 0, 0, 3), key_b)
    assert len(trailer) == BLOCK_SIZE
    assert trailer == key_a + bytes.fromhex("7F078869") + key_b
    assert make_trailer(DEFAULT_KEY, (0, 0, 0, 1), DEFAULT_KEY)[6:10] == TRANSPORT_ACCESS
    with pytest.raises(ValueError, match="6 bytes"):
        make_trailer(b"\x00" * 5, (0, 0, 0, 1), DEFAULT_KEY)


def test_access_groups() -> None:
    assert [access_group(i, 4) for i in range(4)] == [0, 1, 2, 3]
    assert [access_group(i, 16) for i in range(16)] == [0] * 5 + [1] * 5 + [2] * 5 + [3]
    with pytest.raises(ValueError):
        access_group(4, 4)


# The datasheet's table 8: data blocks; (read, write, increment, decrement) -> keys
DATA_TABLE = {
    0b000: ("AB", "AB", "AB", "AB"),
    0b010: ("AB", "", "", ""),
    0b100: ("AB", "B", "", ""),
    0b110: ("AB", "B", "B", "AB"),
    0b001: ("AB", "", "", "AB"),
    0b011: ("B", "B", "", ""),
    0b101: ("B", "", "", ""),
    0b111: ("", "", "", ""),
}

# table 7: trailers; (key A read, write, access read, write, key B read, write) -> keys
TRAILER_TABLE = {
    0b000: ("", "A", "A", "", "A", "A"),
    0b010: ("", "", "A", "", "A", ""),
    0b100: ("", "B", "AB", "", "", "B"),
    0b110: ("", "", "AB", "", "", ""),
    0b001: ("", "A", "A", "A", "A", "A"),
    0b011: ("", "B", "AB", "B", "", "B"),
    0b101: ("", "", "AB", "B", "", ""),
    0b111: ("", "", "AB", "", "", ""),
}


@pytest.mark.parametrize("cond", range(8))
def test_data_permissions_match_the_datasheet(cond: int) -> None:
    for op, keys in zip(("read", "write", "increment", "decrement"), DATA_TABLE[cond], strict=True):
        for key in "AB":
            assert data_allowed(cond, op, key) is (key in keys), (bin(cond), op, key)


@pytest.mark.parametrize("cond", range(8))
def test_trailer_permissions_match_the_datasheet(cond: int) -> None:
    cells = iter(TRAILER_TABLE[cond])
    for part in ("key_a", "access", "key_b"):
        for op in ("read", "write"):
            keys = next(cells)
            for key in "AB":
                assert trailer_allowed(cond, part, op, key) is (key in keys), (cond, part, op, key)


def test_readable_key_b_is_no_key_for_data() -> None:
    assert [c for c in range(8) if key_b_readable(c)] == [0b000, 0b001, 0b010]
    # transport trailer: key B is readable, so it may not read even a free data block
    assert data_allowed(DATA_ANY, "read", "B")
    assert not data_allowed(DATA_ANY, "read", "B", trailer_cond=TRAILER_TRANSPORT)
    assert data_allowed(DATA_ANY, "read", "A", trailer_cond=TRAILER_TRANSPORT)
    assert data_allowed(DATA_ANY, "write", "B", trailer_cond=TRAILER_B_MANAGES)


def test_named_conditions() -> None:
    assert data_allowed(DATA_READ_AB_WRITE_B, "read", "A")
    assert not data_allowed(DATA_READ_AB_WRITE_B, "write", "A")
    assert data_allowed(DATA_READ_AB_WRITE_B, "write", "B")
    assert not data_allowed(DATA_B_ONLY, "read", "A")
    assert data_allowed(DATA_B_ONLY, "write", "B")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="'C'"):
        data_allowed(0, "read", "C")
    with pytest.raises(ValueError, match="'erase'"):
        data_allowed(0, "erase", "A")
    with pytest.raises(ValueError, match="'gpb'"):
        trailer_allowed(0, "gpb", "read", "A")
