"""Card test fixtures (a pytest plugin of tests/conftest.py): a pcscd with virtual (vpcd) readers,

The PC/SC tests need Debian's ``pcscd`` and ``vsmartcard-vpcd`` (``make install`` installs them);
without them they fail, unless ``ONECARD_TEST_PCSC=0`` is set: then they are skipped with that
reason shown. ``ONECARD_VPCD_PORT`` moves the virtual readers' TCP ports (default 28432, 28433).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from cardkit import Counter

from onecard.card.emulator import MifareClassicCard
from onecard.card.pcscd import INSTALL_HINT, PcscdError, PcscdService, find_pcscd, find_vpcd_driver
from onecard.card.reader import wait_for_card
from onecard.card.vpcd import VirtualCardSlot

PCSC_ENABLED = os.environ.get("ONECARD_TEST_PCSC", "1") != "0"
TEST_UID = bytes.fromhex("A1B2C3D4")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pcsc: needs pcscd and the vpcd driver (ONECARD_TEST_PCSC)")


@pytest.fixture(scope="session")
def pcscd_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscdService]:
    """pcscd with two virtual readers, started for the session (or a running one reused)."""
    if not PCSC_ENABLED:
        pytest.skip("ONECARD_TEST_PCSC=0: PC/SC tests not run")
    missing = [
        what
        for what, found in (("pcscd", find_pcscd()), ("vsmartcard-vpcd", find_vpcd_driver()))
        if found is None
    ]
    if missing:
        pytest.fail(
            f"the PC/SC tests need {' and '.join(missing)} ({INSTALL_HINT}); "
            "'make install' installs them, or skip these tests with ONECARD_TEST_PCSC=0",
            pytrace=False,
        )
    service = PcscdService(tmp_path_factory.mktemp("pcscd"))
    try:
        service.start()
    except PcscdError as exc:
        pytest.fail(f"{exc}\n(or skip these tests with ONECARD_TEST_PCSC=0)", pytrace=False)
    yield service
    service.stop()


@pytest.fixture
def virtual_reader(pcscd_service: PcscdService) -> Iterator[tuple[str, VirtualCardSlot]]:
    """(reader name, slot) of the first virtual reader, holding a fresh blank 1K card."""
    reader = pcscd_service.reader_names()[0]
    slot = VirtualCardSlot(pcscd_service.port_of(reader))
    slot.insert(MifareClassicCard(TEST_UID))
    # pcscd polls the vpcd slots every 0.4 s: wait until it has seen the card come and go.
    assert wait_for_card(reader, present=True, timeout=5), f"pcscd did not see a card in {reader}"
    try:
        yield reader, slot
    finally:
        slot.remove()
        assert wait_for_card(reader, present=False, timeout=5), (
            f"pcscd still sees a card in {reader}"
        )


@pytest.fixture
def counter(pcscd_service: PcscdService) -> Iterator[Counter]:
    """The office's reader (the first virtual reader), empty; cards are put on it by the test."""
    reader = pcscd_service.reader_names()[0]
    slot = VirtualCardSlot(pcscd_service.port_of(reader))
    at = Counter(reader, slot)
    try:
        yield at
    finally:
        at.take_away()


@pytest.fixture
def meter_reader(pcscd_service: PcscdService) -> Iterator[Counter]:
    """A second virtual reader: the card slot of a meter, for carrying a card image to it."""
    reader = pcscd_service.reader_names()[1]
    at = Counter(reader, VirtualCardSlot(pcscd_service.port_of(reader)))
    try:
        yield at
    finally:
        at.take_away()
