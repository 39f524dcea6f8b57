"""The emulated card and reader firmware, driven directly with pseudo-APDUs (no PC/SC)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onecard.card.emulator import MifareClassicCard
from onecard.card.mifare import (
    DATA_ANY,
    DATA_B_ONLY,
    DATA_READ_AB_WRITE_B,
    DEFAULT_KEY,
    TRAILER_B_MANAGES,
    TRANSPORT_ACCESS,
    make_trailer,
)
from onecard.card.reader import MifareReader
from onecard.errors import ReaderError, WrongKey

UID = bytes.fromhex("A1B2C3D4")
KEY_A = bytes.fromhex("A0A1A2A3A4A5")
KEY_B = bytes.fromhex("B0B1B2B3B4B5")
OK = bytes.fromhex("9000")
FAIL = bytes.fromhex("6300")
DATA = bytes(range(16))


def load(card: MifareClassicCard, slot: int, key: bytes) -> bytes:
    return card.transmit(bytes((0xFF, 0x82, 0x00, slot, 0x06)) + key)


def auth(card: MifareClassicCard, block: int, key_type: str = "A", slot: int = 0) -> bytes:
    code = 0x60 if key_type == "A" else 0x61
    return card.transmit(bytes((0xFF, 0x86, 0, 0, 5, 1, 0, block, code, slot)))


def read(card: MifareClassicCard, block: int) -> bytes:
    return card.transmit(bytes((0xFF, 0xB0, 0x00, block, 0x10)))


def write(card: MifareClassicCard, block: int, data: bytes) -> bytes:
    return card.transmit(bytes((0xFF, 0xD6, 0x00, block, 0x10)) + data)


def issued_card(
    data_cond: int = DATA_READ_AB_WRITE_B, size: str = "1k", sector: int = 1
) -> MifareClassicCard:
    """A card whose ``sector`` has keys KEY_A/KEY_B, trailer 011 and ``data_cond`` on data."""
    card = MifareClassicCard(UID, size)
    trailer = card.geometry.trailer_block(sector)
    card.poke(
        trailer, make_trailer(KEY_A, (data_cond, data_cond, data_cond, TRAILER_B_MANAGES), KEY_B)
    )
    return card


def test_blank_card() -> None:
    card = MifareClassicCard(UID)
    block0 = card.block(0)
    assert block0[:4] == UID
    assert block0[4] == 0xA1 ^ 0xB2 ^ 0xC3 ^ 0xD4
    assert block0[5] == 0x08  # SAK of a 1K
    for sector in range(16):
        assert card.block(sector * 4 + 3) == DEFAULT_KEY + TRANSPORT_ACCESS + DEFAULT_KEY
    assert card.block(1) == bytes(16)
    assert len(card.memory) == 1024 and card.size == "1k" and card.uid == UID


def test_atr() -> None:
    atr_1k = MifareClassicCard(UID).atr
    assert atr_1k == bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")
    atr_4k = MifareClassicCard(UID, "4k").atr
    assert atr_4k[:15] == atr_1k[:13] + b"\x00\x02"
    check = 0
    for byte in atr_4k[1:]:
        check ^= byte
    assert check == 0  # TCK makes the XOR of T0..TCK zero
    assert atr_4k.hex().upper() == "3B8F8001804F0CA0000003060300020000000069"


def test_uid_and_status_words() -> None:
    card = MifareClassicCard(UID)
    assert card.transmit(bytes.fromhex("FFCA000000")) == UID + OK
    assert card.transmit(bytes.fromhex("00A4040000")) == bytes.fromhex("6E00")
    assert card.transmit(bytes.fromhex("FFEE000000")) == bytes.fromhex("6D00")
    assert card.transmit(bytes.fromhex("FFB000040F")) == bytes.fromhex("6700")
    assert card.transmit(bytes.fromhex("FFD6000410") + bytes(15)) == bytes.fromhex("6700")
    assert card.transmit(bytes.fromhex("FF82000005") + bytes(5)) == bytes.fromhex("6700")
    assert card.transmit(bytes.fromhex("FF820002 06") + DEFAULT_KEY) == bytes.fromhex("6B00")
    assert card.apdu_count == 7
    seven = MifareClassicCard(bytes.fromhex("04112233445566"))
    assert seven.transmit(bytes.fromhex("FFCA000000")) == bytes.fromhex("04112233445566") + OK


def test_transport_card_read_write() -> None:
    card = MifareClassicCard(UID)
    assert read(card, 4) == FAIL  # not authenticated
    assert load(card, 0, DEFAULT_KEY) == OK
    assert auth(card, 4) == OK
    assert write(card, 5, DATA) == OK
    assert read(card, 5) == DATA + OK
    # the trailer reads with key A as zeros, access bits, and key B (readable in 001)
    assert read(card, 7) == bytes(6) + TRANSPORT_ACCESS + DEFAULT_KEY + OK
    assert read(card, 8) == FAIL  # another sector ...
    assert read(card, 5) == FAIL  # ... halted the card
    assert auth(card, 4) == OK
    assert read(card, 5) == DATA + OK


def test_obsolete_authenticate() -> None:
    card = MifareClassicCard(UID)
    load(card, 1, DEFAULT_KEY)
    assert card.transmit(bytes.fromhex("FF8800086001")) == OK
    assert read(card, 9) == bytes(16) + OK


def test_wrong_key_halts_the_card() -> None:
    card = MifareClassicCard(UID)
    load(card, 0, DEFAULT_KEY)
    load(card, 1, KEY_A)
    assert auth(card, 4, slot=0) == OK
    assert auth(card, 4, slot=1) == FAIL
    assert read(card, 4) == FAIL  # the earlier authentication is gone too
    assert auth(card, 4, slot=0) == OK
    assert read(card, 4) == bytes(16) + OK


def test_empty_key_slot() -> None:
    card = MifareClassicCard(UID)
    assert auth(card, 4, slot=1) == FAIL


def test_key_b_is_useless_while_readable() -> None:
    card = MifareClassicCard(UID)  # transport: key B = FF..FF and readable
    load(card, 0, DEFAULT_KEY)
    assert auth(card, 4, "B") == OK
    assert read(card, 4) == FAIL
    assert auth(card, 4, "B") == OK
    assert write(card, 4, DATA) == FAIL


def test_write_with_key_b_only() -> None:
    card = issued_card(DATA_READ_AB_WRITE_B)
    load(card, 0, KEY_A)
    load(card, 1, KEY_B)
    assert auth(card, 4, "A", 0) == OK
    assert read(card, 4) == bytes(16) + OK
    assert write(card, 4, DATA) == FAIL
    assert card.block(4) == bytes(16)
    assert auth(card, 4, "B", 1) == OK
    assert write(card, 4, DATA) == OK
    assert read(card, 4) == DATA + OK
    # keys never read back: key A always zeros, key B not readable in 011
    assert read(card, 7) == bytes(6) + card.block(7)[6:10] + bytes(6) + OK


def test_data_readable_with_key_b_only() -> None:
    card = issued_card(DATA_B_ONLY)
    load(card, 0, KEY_A)
    load(card, 1, KEY_B)
    assert auth(card, 5, "A", 0) == OK
    assert read(card, 5) == FAIL
    assert auth(card, 5, "B", 1) == OK
    assert write(card, 5, DATA) == OK
    assert read(card, 5) == DATA + OK


def test_trailer_write_keeps_what_the_key_may_not_change() -> None:
    card = issued_card(DATA_ANY)  # trailer 011: key B writes keys and access bits
    load(card, 0, KEY_A)
    load(card, 1, KEY_B)
    new_a, new_b = bytes.fromhex("111111111111"), bytes.fromhex("222222222222")
    new = make_trailer(new_a, (DATA_ANY, DATA_ANY, DATA_ANY, 0b011), new_b)
    assert auth(card, 4, "A", 0) == OK
    assert write(card, 7, new) == FAIL  # key A may write nothing of a 011 trailer
    assert card.block(7)[:6] == KEY_A
    assert auth(card, 4, "B", 1) == OK
    assert write(card, 7, new) == OK
    assert card.block(7) == new

    # trailer 100: key B writes the keys, but the access bits are frozen
    frozen = make_trailer(KEY_A, (DATA_ANY, DATA_ANY, DATA_ANY, 0b100), KEY_B)
    card.poke(11, frozen)
    assert auth(card, 8, "B", 1) == OK
    attempt = make_trailer(new_a, (DATA_ANY, DATA_ANY, DATA_ANY, 0b001), new_b)
    assert write(card, 11, attempt) == OK
    assert card.block(11) == new_a + frozen[6:10] + new_b


def test_transport_trailer_key_a_writes_everything() -> None:
    card = MifareClassicCard(UID)
    load(card, 0, DEFAULT_KEY)
    assert auth(card, 60) == OK
    trailer = make_trailer(KEY_A, (DATA_ANY, DATA_ANY, DATA_B_ONLY, TRAILER_B_MANAGES), KEY_B)
    assert write(card, 63, trailer) == OK
    assert card.block(63) == trailer
    assert auth(card, 60) == FAIL  # the old key is gone


def test_block_0_is_read_only() -> None:
    card = MifareClassicCard(UID)
    load(card, 0, DEFAULT_KEY)
    assert auth(card, 0) == OK
    assert write(card, 0, bytes(16)) == FAIL
    assert card.block(0)[:4] == UID
    assert auth(card, 0) == OK
    assert read(card, 0) == card.block(0) + OK


def test_corrupt_access_bits_block_the_sector() -> None:
    card = MifareClassicCard(UID)
    card.poke(7, DEFAULT_KEY + bytes.fromhex("FF078169") + DEFAULT_KEY)
    load(card, 0, DEFAULT_KEY)
    assert auth(card, 4) == FAIL


def test_4k_sixteen_block_sectors() -> None:
    card = issued_card(DATA_READ_AB_WRITE_B, size="4k", sector=39)
    g = card.geometry
    assert len(card.memory) == 4096 and card.block(0)[5] == 0x18
    assert g.trailer_block(39) == 255
    trailer = make_trailer(KEY_A, (DATA_ANY, DATA_READ_AB_WRITE_B, DATA_B_ONLY, 0b011), KEY_B)
    card.poke(255, trailer)
    load(card, 0, KEY_A)
    load(card, 1, KEY_B)
    assert auth(card, 240, "A", 0) == OK
    assert write(card, 244, DATA) == OK  # group 0: blocks 240-244
    assert write(card, 245, DATA) == FAIL  # group 1: write with B only
    assert auth(card, 250, "A", 0) == OK
    assert read(card, 249) == bytes(16) + OK
    assert read(card, 250) == FAIL  # group 2: B only
    assert auth(card, 250, "B", 1) == OK
    assert write(card, 254, DATA) == OK
    assert read(card, 254) == DATA + OK
    assert read(card, 255) == bytes(6) + trailer[6:10] + bytes(6) + OK
    assert read(card, 239) == FAIL  # sector 38
    # sectors 0..31 of a 4K are 4 blocks, as on a 1K
    assert load(card, 0, DEFAULT_KEY) == OK
    assert auth(card, 127, "A", 0) == OK
    assert read(card, 124) == bytes(16) + OK


def test_save_load_and_clone(tmp_path: Path) -> None:
    card = MifareClassicCard(UID)
    card.poke(5, DATA)
    path = tmp_path / "card.mfd"
    card.save(path)
    assert path.stat().st_size == 1024
    again = MifareClassicCard.load(path)
    assert again.uid == UID and again.memory == card.memory

    seven = MifareClassicCard(bytes.fromhex("04112233445566"), "4k")
    seven.save(tmp_path / "seven.mfd")
    assert MifareClassicCard.load(tmp_path / "seven.mfd").uid == seven.uid

    clone = card.clone_to(bytes.fromhex("01020304"))
    assert clone.uid == bytes.fromhex("01020304")
    assert clone.transmit(bytes.fromhex("FFCA000000")) == bytes.fromhex("01020304") + OK
    assert clone.block(0)[:5] == bytes.fromhex("0102030404")
    assert clone.memory[16:] == card.memory[16:]

    (tmp_path / "bad.mfd").write_bytes(bytes(100))
    with pytest.raises(ValueError, match="1024 or 4096"):
        MifareClassicCard.load(tmp_path / "bad.mfd")


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="4 or 7"):
        MifareClassicCard(b"\x01\x02")
    with pytest.raises(ValueError, match="'2k'"):
        MifareClassicCard(UID, "2k")
    with pytest.raises(ValueError, match="1024"):
        MifareClassicCard(UID, "1k", bytes(4096))


def test_driver_over_the_emulator() -> None:
    """MifareReader speaks to the emulator directly: it is a Transport."""
    card = issued_card(DATA_READ_AB_WRITE_B)
    reader = MifareReader(card)
    assert reader.uid() == UID
    reader.ensure_auth(4, "B", KEY_B)
    for block in (4, 5, 6):
        reader.write_block(block, DATA)
    assert [reader.read_block(b) for b in (4, 5, 6)] == [DATA] * 3
    assert reader.apdu_count == 1 + 2 + 6  # uid, one load, one auth, 6 block operations

    reader.ensure_auth(4, "A", KEY_A)  # another key: load it into the other slot, authenticate
    reader.ensure_auth(5, "B", KEY_B)  # KEY_B still in its slot: authenticate only
    assert reader.apdu_count == 9 + 2 + 1
    with pytest.raises(WrongKey, match="sector 2") as err:
        reader.ensure_auth(8, "A", KEY_A)
    assert KEY_A.hex() not in str(err.value).lower()
    with pytest.raises(ReaderError, match=r"block 4.*6300"):
        reader.write_block(4, DATA)  # not authenticated any more
    reader.ensure_auth(4, "A", KEY_A)
    with pytest.raises(ReaderError, match=r"block 5.*6300"):
        reader.write_block(5, DATA)  # key A may not write here
    reader.ensure_auth(4, "A", KEY_A)  # the refusal halted the card: authenticate again
    assert reader.read_block(5) == DATA


def test_apdu_log_redacts_keys() -> None:
    card = MifareClassicCard(UID)
    reader = MifareReader(card)
    reader.ensure_auth(4, "A", DEFAULT_KEY)
    trailer = make_trailer(KEY_A, (0, 0, 0, TRAILER_B_MANAGES), KEY_B)
    reader.write_block(7, trailer)
    text = " ".join(reader.apdus) + repr(reader)
    for key in (DEFAULT_KEY, KEY_A, KEY_B):
        assert key.hex().upper() not in text
    assert reader.apdus[0] == "FF82000006" + "XX" * 6
    assert reader.apdus[-1] == "FFD6000710" + "XX" * 6 + "7F078869" + "XX" * 6
    with pytest.raises(ValueError, match="invalid access bits"):
        reader.write_block(11, KEY_A + bytes(4) + KEY_B)
