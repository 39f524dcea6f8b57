"""Building blocks for card tests: a keyed site, customers with card meters, direct readers."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from onecard import customers as cust
from onecard.audit import Actor
from onecard.card.emulator import MifareClassicCard
from onecard.card.keys import KeyStore
from onecard.card.reader import MifareReader, PcscTransport, wait_for_card
from onecard.card.service import CardDesk
from onecard.card.vpcd import VirtualCardSlot
from onecard.plugins import Plugins

KEK = bytes(range(32))
SITE_ID = 4201
ACTOR = Actor(name="test")
EIGHT = (
    "electric",
    "electric",
    "heat",
    "gas",
    "water.cold",
    "water.hot",
    "water.recycled",
    "water.purified",
)
_uids = itertools.count(0x10000001)
_serials = itertools.count(100000000001)


def new_uid() -> bytes:
    return next(_uids).to_bytes(4, "big")


def blank_card(size: str = "1k") -> MifareClassicCard:
    return MifareClassicCard(new_uid(), size)


def direct(card: MifareClassicCard) -> MifareReader:
    """A reader driving the emulated card directly (no pcscd): for fast tests."""
    return MifareReader(card)


def keyed_site(sessions: sessionmaker[Session], site_id: int = SITE_ID) -> KeyStore:
    store = KeyStore(KEK)
    with sessions() as session, session.begin():
        store.init_site(session, site_id, "test site")
    return store


def make_desk(sessions: sessionmaker[Session], plugins: Plugins, store: KeyStore) -> CardDesk:
    return CardDesk(sessions, plugins.utilities, store)


def card_customer(
    sessions: sessionmaker[Session],
    plugins: Plugins,
    kinds: Sequence[str],
    *,
    office: str = "E01",
    name: str = "张伟",
) -> tuple[str, list[str]]:
    """Open a customer with one card meter per kind; return (number, meter serials)."""
    serials = [str(next(_serials)) for _ in kinds]
    with sessions() as session, session.begin():
        c = cust.open_account(
            session,
            ACTOR,
            plugins.utilities,
            office=office,
            name=name,
            meters=[cust.MeterSpec(k, s) for k, s in zip(kinds, serials, strict=True)],
        )
        return c.number, serials


class Counter:
    """The office's card reader through the real PC/SC path: pyscard -> pcscd -> vpcd -> card."""

    def __init__(self, reader_name: str, slot: VirtualCardSlot) -> None:
        self.reader_name = reader_name
        self.slot = slot
        self.transport: PcscTransport | None = None

    def present(self, card: MifareClassicCard) -> MifareReader:
        """Put ``card`` on the reader and connect to it (replacing any card there)."""
        self.take_away()
        self.slot.insert(card)
        self.transport = PcscTransport.open(self.reader_name, wait=5)
        return MifareReader(self.transport)

    def take_away(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self.slot.present:
            self.slot.remove()
        wait_for_card(self.reader_name, present=False, timeout=5)
