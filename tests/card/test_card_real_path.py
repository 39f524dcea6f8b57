"""The card operations through the real PC/SC path: pyscard -> pcscd -> vpcd -> our emulator.

Every refusal leaves the card exactly as it was (its memory image is compared byte for byte).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from cardkit import (
    ACTOR,
    EIGHT,
    KEK,
    Counter,
    blank_card,
    card_customer,
    direct,
    keyed_site,
    make_desk,
    new_uid,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard import ledger
from onecard import offices as off
from onecard.card.emulator import MifareClassicCard
from onecard.card.keys import KeyStore
from onecard.card.meter import CardMeter, MeterSam
from onecard.card.mifare import DATA_ANY, TRAILER_B_MANAGES, make_trailer
from onecard.card.service import CardDesk, SaleItem
from onecard.db import create_db_engine, session_factory, upgrade
from onecard.errors import (
    CardRefused,
    CardRemoved,
    CardTampered,
    ForeignSiteCard,
    NotOurCard,
    WrongKey,
)
from onecard.ledger import accounts as acc
from onecard.models import Meter, MeterReading
from onecard.operators import ensure_default_roles
from onecard.plugins import Plugins

pytestmark = [pytest.mark.pcsc, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


@pytest.fixture
def desk(sessions: sessionmaker[Session], plugins: Plugins, world: object) -> CardDesk:
    return make_desk(sessions, plugins, keyed_site(sessions))


def balance(sessions: sessionmaker[Session], serial: str) -> int:
    with sessions() as session:
        meter = session.scalar(select(Meter).where(Meter.serial == serial))
        assert meter is not None
        return -acc.get_account(session, acc.meter_wallet_code(meter.id)).balance


def test_eight_meter_card_carries_eight_purchases_through_pcscd(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins, counter: Counter
) -> None:
    number, serials = card_customer(sessions, plugins, list(EIGHT))
    card = blank_card()
    reader = counter.present(card)
    issued = desk.issue(reader, ACTOR, customer=number, profile="eight")
    assert [s["meter"] for s in issued["slots"]] == serials
    sale = desk.sell(
        reader,
        ACTOR,
        sale_key="eight-1",
        items=[SaleItem(s, 1000 + i) for i, s in enumerate(serials)],
    )
    assert sale["status"] == "confirmed"
    assert len({p["slot"] for p in sale["purchases"]}) == 8
    read = desk.read(reader, ACTOR)
    assert [s["purchase"]["seq"] for s in read["slots"]] == [1] * 8
    assert all(s["purchase_valid"] for s in read["slots"])
    assert balance(sessions, serials[7]) == 1007


def test_a_four_card_refuses_purified_water(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins, counter: Counter
) -> None:
    number, _ = card_customer(sessions, plugins, ["electric", "heat", "gas", "water.cold"])
    card = blank_card()
    reader = counter.present(card)
    desk.issue(reader, ACTOR, customer=number, profile="four")
    before = card.memory
    with pytest.raises(Exception, match=r"a 'four' card has no water\.purified slot"):
        desk.sell(reader, ACTOR, sale_key="pw", items=[SaleItem("water.purified", 500)])
    assert card.memory == before


def _issued(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> tuple[MifareClassicCard, str, list[str]]:
    number, serials = card_customer(sessions, plugins, ["electric", "water.cold"])
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")
    return card, number, serials


def _refused(
    desk: CardDesk, counter: Counter, card: MifareClassicCard, serial: str, error: type
) -> str:
    reader = counter.present(card)
    before = card.memory
    with pytest.raises(error) as err:
        desk.sell(reader, ACTOR, sale_key=f"attack-{new_uid().hex()}", items=[SaleItem(serial, 9)])
    assert card.memory == before, "a refused card must not be written"
    return str(err.value)


def test_attacks_are_refused_with_a_specific_message_and_nothing_written(
    desk: CardDesk,
    sessions: sessionmaker[Session],
    plugins: Plugins,
    counter: Counter,
    tmp_path: Path,
) -> None:
    card, number, serials = _issued(desk, sessions, plugins)

    # not a onecard card at all
    assert "no onecard header" in _refused(desk, counter, blank_card(), serials[0], NotOurCard)

    # a clone: the whole image copied to a card with another UID
    message = _refused(desk, counter, card.clone_to(new_uid()), serials[0], CardTampered)
    assert "clone" in message

    # one bit flipped in the header
    flipped = card.clone_to(card.uid)
    block = bytearray(flipped.memory[4 * 16 : 5 * 16])
    block[9] ^= 0x01  # the card serial
    flipped.poke(4, bytes(block))
    assert "edited" in _refused(desk, counter, flipped, serials[0], CardTampered)

    # a return record edited (the meter's data): the MAC catches it
    edited = card.clone_to(card.uid)
    ret_block = 12  # slot 0 (electric): purchase in blocks 8-10, return in 12-13 (11 is a trailer)
    data = bytearray(edited.memory[ret_block * 16 : ret_block * 16 + 16])
    data[0:6] = bytes.fromhex(serials[0].rjust(12, "0"))
    data[14] ^= 0x40  # remaining credit
    edited.poke(ret_block, bytes(data))
    assert "fails its MAC" in _refused(desk, counter, edited, serials[0], CardTampered)

    # the keys of a slot sector changed: the card no longer opens with this site's keys
    rekeyed = card.clone_to(card.uid)
    rekeyed.poke(
        15,
        make_trailer(b"\x11" * 6, (DATA_ANY, DATA_ANY, DATA_ANY, TRAILER_B_MANAGES), b"\x22" * 6),
    )
    assert "sector 3" in _refused(desk, counter, rekeyed, serials[0], WrongKey)

    # a card of another site
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    other_engine = create_db_engine(other_url)
    upgrade(other_engine)
    other_sessions = session_factory(other_engine)
    with other_sessions() as session, session.begin():
        ensure_default_roles(session)
        off.create_office(session, ACTOR, code="E01", name="Elsewhere")
    other = CardDesk(other_sessions, plugins.utilities, KeyStore(KEK))
    with other_sessions() as session, session.begin():
        other.keystore.init_site(session, 7777, "another site")
    foreign_number, foreign_serials = card_customer(other_sessions, plugins, ["electric"])
    foreign = blank_card()
    other.issue(direct(foreign), ACTOR, customer=foreign_number, profile="four")
    assert "site 7777" in _refused(desk, counter, foreign, foreign_serials[0], ForeignSiteCard)
    other_engine.dispose()

    # a blacklisted (reissued) card
    new_card = blank_card()
    desk.reissue(direct(new_card), ACTOR, customer=number, reason="lost")
    message = _refused(desk, counter, card, serials[0], CardRefused)
    assert "blacklisted" in message and new_card.uid.hex().upper() in message

    with sessions() as session:
        assert ledger.verify(session).ok
    assert balance(sessions, serials[0]) == 0


def test_card_pulled_at_each_apdu_of_a_sale_through_pcscd(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins, counter: Counter
) -> None:
    # how many APDUs a one-meter sale takes on this path
    card, _, serials = _issued(desk, sessions, plugins)
    reader = counter.present(card)
    desk.sell(reader, ACTOR, sale_key="count", items=[SaleItem(serials[0], 100)])
    total = reader.apdu_count
    pending_seen = 0
    for at in range(1, total + 1):
        card, _, serials = _issued(desk, sessions, plugins)
        reader = counter.present(card)
        counter.slot.cut_after(at, execute=bool(at % 2))
        key = f"pull-{at}"
        with pytest.raises(CardRemoved):
            desk.sell(reader, ACTOR, sale_key=key, items=[SaleItem(serials[0], 4200)])
        assert balance(sessions, serials[0]) == 0
        reader = counter.present(card)  # the operator puts the card back
        if desk.pending():
            pending_seen += 1
            if at % 3:
                assert desk.finish(reader, ACTOR, sale_key=key)["status"] == "confirmed"
                expected = 4200
            else:
                desk.void(reader, ACTOR, sale_key=key, reason="card pulled")
                expected = 0
        else:
            expected = 0
        assert desk.pending() == []
        assert balance(sessions, serials[0]) == expected
        slot = desk.read(reader, ACTOR)["slots"][0]
        assert slot["purchase_valid"]
        assert (slot["purchase"]["seq"], slot["purchase"]["amount"]) == (
            (1, 4200) if expected else (0, 0)
        )
    assert pending_seen >= 4  # the writes and the verify reads
    with sessions() as session:
        assert ledger.verify(session).ok


def test_card_carried_from_the_office_to_eight_meters_and_back(
    desk: CardDesk,
    sessions: sessionmaker[Session],
    plugins: Plugins,
    counter: Counter,
    meter_reader: Counter,
    tmp_path: Path,
) -> None:
    """Sell to eight meters; the card image goes to each meter's reader; each meter loads only
    its own purchase; back at the office the card's return records become readings."""
    number, serials = card_customer(sessions, plugins, list(EIGHT))
    card = blank_card()
    reader = counter.present(card)
    desk.issue(reader, ACTOR, customer=number, profile="eight")
    desk.sell(
        reader,
        ACTOR,
        sale_key="carry",
        items=[SaleItem(s, 2000 + 100 * i) for i, s in enumerate(serials)],
    )
    counter.take_away()
    image = tmp_path / "card.mfd"
    card.save(image)

    with sessions() as session:
        store = desk.keystore

        def keys_for(uid: bytes, version: int) -> object:
            return store.card_keys(session, uid, version)

        sam = MeterSam(store.site_id(session), keys_for)  # type: ignore[arg-type]
        meters = [
            CardMeter(plugins.utilities.get(k), s, sam) for k, s in zip(EIGHT, serials, strict=True)
        ]
        for meter in meters:
            carried = MifareClassicCard.load(image)
            visit = meter.insert(meter_reader.present(carried))
            assert visit.code == "loaded", visit.message
            assert visit.seq == 1
            meter.consume(Decimal("1.5"))
            again = meter.insert(meter_reader.present(carried))  # writes the return record
            assert again.code == "already_loaded"
            carried.save(image)
            meter_reader.take_away()
    loaded = [m.credit for m in meters]
    assert loaded[0] < 2000 and loaded[1] < 2100  # each electric meter holds only its own

    back = MifareClassicCard.load(image)
    read = desk.read(counter.present(back), ACTOR)
    for slot, serial in zip(read["slots"], serials, strict=True):
        assert slot["meter"] == serial
        assert slot["return"] is not None and slot["return"]["last_seq"] == 1
        assert slot["return"]["cumulative"] > 0
        assert slot["reading_stored"] is True
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(MeterReading)) == 8
    # a second sale is possible now that every meter loaded the first
    out = desk.sell(
        counter.present(back), ACTOR, sale_key="carry-2", items=[SaleItem(serials[3], 500)]
    )
    assert out["purchases"][0]["seq"] == 2
