"""The reader driver through the real PC/SC stack: pyscard -> pcscd -> vpcd -> the emulator."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from onecard.card.emulator import MifareClassicCard
from onecard.card.mifare import (
    DATA_READ_AB_WRITE_B,
    DEFAULT_KEY,
    TRAILER_B_MANAGES,
    make_trailer,
)
from onecard.card.pcscd import PcscdService
from onecard.card.reader import MifareReader, PcscTransport, list_readers, wait_for_card
from onecard.card.vpcd import VirtualCardSlot
from onecard.errors import CardRemoved, NoCard, NoReader, ReaderError, WrongKey

pytestmark = pytest.mark.pcsc

UID = bytes.fromhex("A1B2C3D4")  # the card the virtual_reader fixture inserts
KEY_A = bytes.fromhex("A0A1A2A3A4A5")
KEY_B = bytes.fromhex("B0B1B2B3B4B5")
DATA = bytes(range(16))
ATR_1K = "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A"


def card_of(slot: VirtualCardSlot) -> MifareClassicCard:
    assert slot.card is not None
    return slot.card


def test_read_and_write_through_pcscd(virtual_reader: tuple[str, VirtualCardSlot]) -> None:
    reader_name, slot = virtual_reader
    card = card_of(slot)
    with PcscTransport.open(reader_name) as transport:
        assert transport.atr.hex(" ").upper() == ATR_1K
        reader = MifareReader(transport)
        assert reader.uid() == UID
        reader.ensure_auth(4, "A", DEFAULT_KEY)
        for block in (4, 5, 6):
            reader.ensure_auth(block, "A", DEFAULT_KEY)
            reader.write_block(block, DATA)
        assert reader.read_block(5) == DATA
        assert card.block(6) == DATA
        assert reader.apdu_count == transport.apdu_count == 1 + 2 + 4  # one load, one auth

        # issue sector 1: key B writes, key A only reads
        trailer = make_trailer(KEY_A, (DATA_READ_AB_WRITE_B,) * 3 + (TRAILER_B_MANAGES,), KEY_B)
        reader.write_block(7, trailer)
        assert card.block(7) == trailer
        with pytest.raises(WrongKey, match="key A for sector 1"):
            reader.authenticate(4, "A", 0)  # slot 0 still holds the transport key
        reader.ensure_auth(4, "A", KEY_A)
        assert reader.read_block(4) == DATA
        with pytest.raises(ReaderError, match=r"write block 4 \(SW 6300"):
            reader.write_block(4, bytes(16))
        reader.ensure_auth(4, "B", KEY_B)
        reader.write_block(4, bytes(16))
        assert card.block(4) == bytes(16)
    text = " ".join(reader.apdus)
    assert all(k.hex().upper() not in text for k in (DEFAULT_KEY, KEY_A, KEY_B))


def test_reader_selection(pcscd_service: PcscdService) -> None:
    first, second = pcscd_service.reader_names()
    assert {first, second} <= set(list_readers())
    with pytest.raises(NoReader, match=r"no card reader 'no such reader'; connected: .*00 01"):
        PcscTransport.open("no such reader")
    with pytest.raises(NoReader, match="names several card readers"):
        PcscTransport.open(pcscd_service.name)
    with pytest.raises(NoCard, match=f"no card on reader '{second}'"):
        PcscTransport.open(second)
    with pytest.raises(NoCard):
        PcscTransport.open(second[-5:])  # a unique part of the name is enough


def test_card_removed_between_apdus(virtual_reader: tuple[str, VirtualCardSlot]) -> None:
    reader_name, slot = virtual_reader
    with PcscTransport.open(reader_name) as transport:
        reader = MifareReader(transport)
        assert reader.uid() == UID
        slot.remove()
        with pytest.raises(CardRemoved, match=reader_name):
            reader.uid()
        with pytest.raises(CardRemoved):
            reader.read_block(4)
    assert wait_for_card(reader_name, present=False, timeout=5)
    with pytest.raises(NoCard):
        PcscTransport.open(reader_name)


def test_card_pulled_after_the_write_landed(virtual_reader: tuple[str, VirtualCardSlot]) -> None:
    reader_name, slot = virtual_reader
    card = card_of(slot)
    with PcscTransport.open(reader_name) as transport:
        reader = MifareReader(transport)
        reader.ensure_auth(4, "A", DEFAULT_KEY)
        slot.cut_after(1, execute=True)
        with pytest.raises(CardRemoved):
            reader.write_block(5, DATA)
    assert slot.cut_done.is_set() and not slot.present
    assert card.block(5) == DATA  # the write landed though no answer came back

    # put the same card back: what landed is on it
    assert wait_for_card(reader_name, present=False, timeout=5)
    slot.insert(card)
    with PcscTransport.open(reader_name, wait=5) as transport:
        reader = MifareReader(transport)
        reader.ensure_auth(4, "A", DEFAULT_KEY)
        assert reader.read_block(5) == DATA


def test_card_pulled_before_the_write(virtual_reader: tuple[str, VirtualCardSlot]) -> None:
    reader_name, slot = virtual_reader
    card = card_of(slot)
    with PcscTransport.open(reader_name) as transport:
        reader = MifareReader(transport)
        reader.ensure_auth(4, "A", DEFAULT_KEY)
        slot.cut_after(2, execute=False)
        reader.write_block(4, DATA)
        with pytest.raises(CardRemoved):
            reader.write_block(5, DATA)
    assert (card.block(4), card.block(5)) == (DATA, bytes(16))


def test_4k_card_on_the_second_reader(pcscd_service: PcscdService) -> None:
    reader_name = pcscd_service.reader_names()[1]
    card = MifareClassicCard(bytes.fromhex("04112233445566"), "4k")
    with VirtualCardSlot(pcscd_service.port_of(reader_name)) as slot:
        slot.insert(card)
        try:
            with PcscTransport.open(reader_name, wait=5) as transport:
                assert transport.atr[13:15] == b"\x00\x02"
                reader = MifareReader(transport)
                assert reader.uid() == card.uid
                reader.ensure_auth(250, "A", DEFAULT_KEY)
                reader.write_block(254, DATA)
                assert reader.read_block(254) == DATA
        finally:
            slot.remove()
            assert wait_for_card(reader_name, present=False, timeout=5)


def test_stock_tools_see_the_reader_and_card(virtual_reader: tuple[str, VirtualCardSlot]) -> None:
    reader_name, _ = virtual_reader
    for tool in ("pcsc_scan", "scriptor"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install pcsc-tools", pytrace=False)
    scan = subprocess.run(
        ["pcsc_scan", "-c", "-n"], capture_output=True, text=True, timeout=20, check=True
    )
    assert reader_name in scan.stdout
    assert ATR_1K in scan.stdout
    apdu = subprocess.run(
        ["scriptor", "-r", reader_name],
        input="FF CA 00 00 00\n",
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert "< A1 B2 C3 D4 90 00" in apdu.stdout
