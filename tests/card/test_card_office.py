"""The office's card operations on the direct (in-process) path: fast and exhaustive.

The same operations run through pcscd in test_card_real_path.py.
"""

from __future__ import annotations

import pytest
from cardkit import (
    ACTOR,
    EIGHT,
    blank_card,
    card_customer,
    direct,
    keyed_site,
    make_desk,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard import ledger
from onecard.card import profiles as prof
from onecard.card.cardio import sale_apdu_budget
from onecard.card.emulator import MifareClassicCard
from onecard.card.reader import MifareReader
from onecard.card.service import CardDesk, SaleItem
from onecard.errors import (
    CardRemoved,
    Conflict,
    IdempotencyConflict,
    InvalidInput,
)
from onecard.ledger import accounts as acc
from onecard.models import Meter
from onecard.plugins import Plugins


@pytest.fixture
def desk(sessions: sessionmaker[Session], plugins: Plugins, world: object) -> CardDesk:
    return make_desk(sessions, plugins, keyed_site(sessions))


def wallet_balance(sessions: sessionmaker[Session], serial: str) -> int:
    with sessions() as session:
        meter = session.scalar(select(Meter).where(Meter.serial == serial))
        assert meter is not None
        return -acc.get_account(session, acc.meter_wallet_code(meter.id)).balance


def test_issue_six_card_and_read_it_back(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, serials = card_customer(sessions, plugins, ["electric", "water.cold", "heat"])
    card = blank_card()
    out = desk.issue(direct(card), ACTOR, customer=number, profile="six")
    assert out["profile"] == "six"
    bound = {s["label"]: s["meter"] for s in out["slots"]}
    assert bound["electric"] == serials[0]
    assert bound["water.cold"] == serials[1]
    assert bound["heat"] == serials[2]
    assert bound["gas"] is None
    read = desk.read(direct(card), ACTOR)
    assert read["customer"]["number"] == number
    assert [s["label"] for s in read["slots"]] == [
        "electric",
        "heat",
        "gas",
        "water.cold",
        "water.hot",
        "water.recycled",
    ]
    assert all(s["return"] is None for s in read["slots"])
    electric = read["slots"][0]
    assert electric["purchase"]["seq"] == 0
    assert electric["purchase_valid"]


def test_sale_to_three_meters_is_written_verified_and_posted_once(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, serials = card_customer(sessions, plugins, ["electric", "water.cold", "gas"])
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="six")
    items = [SaleItem(serials[0], 10000), SaleItem(serials[1], 5000), SaleItem("gas", 3000)]
    out = desk.sell(direct(card), ACTOR, sale_key="s-1", items=items)
    assert out["status"] == "confirmed"
    assert out["total"] == 18000
    assert [p["seq"] for p in out["purchases"]] == [1, 1, 1]
    again = desk.sell(direct(card), ACTOR, sale_key="s-1", items=items)
    assert again["replayed"] is True
    assert wallet_balance(sessions, serials[0]) == 10000
    assert wallet_balance(sessions, serials[2]) == 3000
    read = desk.read(direct(card), ACTOR)
    by_label = {s["label"]: s for s in read["slots"]}
    assert by_label["electric"]["purchase"]["amount"] == 10000
    assert by_label["electric"]["purchase"]["price"] == "0.5483"
    assert by_label["gas"]["purchase"]["seq"] == 1
    with pytest.raises(IdempotencyConflict):
        desk.sell(direct(card), ACTOR, sale_key="s-1", items=items[:1])
    with sessions() as session:
        assert ledger.verify(session).ok


def test_a_second_sale_waits_until_the_meter_loaded_the_first(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, serials = card_customer(sessions, plugins, ["electric"])
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")
    desk.sell(direct(card), ACTOR, sale_key="a", items=[SaleItem(serials[0], 5000)])
    with pytest.raises(Conflict, match="has not loaded yet"):
        desk.sell(direct(card), ACTOR, sale_key="b", items=[SaleItem(serials[0], 5000)])


def test_a_four_card_cannot_carry_purified_water(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, _ = card_customer(sessions, plugins, ["electric", "water.purified"])
    card = blank_card()
    with pytest.raises(InvalidInput, match=r"no slot for the customer's water\.purified"):
        desk.issue(direct(card), ACTOR, customer=number, profile="four")
    number2, _ = card_customer(sessions, plugins, ["electric"])
    desk.issue(direct(card), ACTOR, customer=number2, profile="four")
    with pytest.raises(InvalidInput, match=r"no water\.purified slot") as err:
        desk.sell(direct(card), ACTOR, sale_key="p", items=[SaleItem("water.purified", 100)])
    assert err.value.field == "items.0.meter"


def test_eight_card_holds_eight_independent_purchases(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, serials = card_customer(sessions, plugins, list(EIGHT))
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="eight")
    items = [SaleItem(s, 1000 * (i + 1)) for i, s in enumerate(serials)]
    out = desk.sell(direct(card), ACTOR, sale_key="eight", items=items)
    assert len(out["purchases"]) == 8
    read = desk.read(direct(card), ACTOR)
    amounts = {s["meter"]: s["purchase"]["amount"] for s in read["slots"]}
    heat = serials[2]
    for i, serial in enumerate(serials):
        if serial == heat:
            assert amounts[serial] == int(3000 / 100 / 38 * 1000)  # units of 0.001 GJ
        else:
            assert amounts[serial] == 1000 * (i + 1)


class CutTransport:
    """Pull the card at the n-th APDU: before it runs, or after it ran but before the answer."""

    def __init__(self, card: MifareClassicCard, at: int, *, executed: bool) -> None:
        self.card, self.at, self.executed, self.count = card, at, executed, 0

    def transmit(self, apdu: bytes) -> bytes:
        self.count += 1
        if self.count == self.at:
            if self.executed:
                self.card.transmit(apdu)
            raise CardRemoved("the card was removed")
        return self.card.transmit(apdu)


def _sale_apdus(desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins) -> int:
    number, serials = card_customer(sessions, plugins, ["electric"])
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")
    reader = direct(card)
    desk.sell(reader, ACTOR, sale_key="count", items=[SaleItem(serials[0], 100)])
    return reader.apdu_count


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("executed", [False, True], ids=["before", "after"])
def test_card_pulled_at_every_apdu_of_a_sale_never_loses_or_doubles(
    sessions: sessionmaker[Session], plugins: Plugins, world: object, executed: bool
) -> None:
    desk = make_desk(sessions, plugins, keyed_site(sessions))
    total = _sale_apdus(desk, sessions, plugins)
    outcomes = set()
    for at in range(1, total + 1):
        number, serials = card_customer(sessions, plugins, ["electric"])
        card = blank_card()
        desk.issue(direct(card), ACTOR, customer=number, profile="four")
        key = f"cut-{at}-{executed}"
        with pytest.raises(CardRemoved) as err:
            desk.sell(
                MifareReader(CutTransport(card, at, executed=executed)),
                ACTOR,
                sale_key=key,
                items=[SaleItem(serials[0], 2500)],
            )
        pending = desk.pending()
        if not pending:  # pulled before anything was recorded: nothing happened
            outcomes.add("nothing")
            assert wallet_balance(sessions, serials[0]) == 0
            assert desk.read(direct(card), ACTOR)["slots"][0]["purchase"]["seq"] == 0
            continue
        assert err.value.detail["pending"] == [p["id"] for p in pending]
        assert wallet_balance(sessions, serials[0]) == 0  # no money until confirmed
        if at % 2:
            outcomes.add("finished")
            out = desk.finish(direct(card), ACTOR, sale_key=key)
            assert out["status"] == "confirmed"
            assert wallet_balance(sessions, serials[0]) == 2500
            slot = desk.read(direct(card), ACTOR)["slots"][0]
            assert (slot["purchase"]["seq"], slot["purchase"]["amount"]) == (1, 2500)
            # finishing twice, or retrying the sale, credits nothing more
            again = desk.sell(direct(card), ACTOR, sale_key=key, items=[SaleItem(serials[0], 2500)])
            assert again["replayed"]
            assert wallet_balance(sessions, serials[0]) == 2500
        else:
            outcomes.add("voided")
            desk.void(direct(card), ACTOR, sale_key=key, reason="card pulled")
            assert wallet_balance(sessions, serials[0]) == 0
            slot = desk.read(direct(card), ACTOR)["slots"][0]
            assert slot["purchase"]["seq"] == 0 and slot["purchase_valid"]
        assert desk.pending() == []
    assert outcomes == {"nothing", "finished", "voided"}
    with sessions() as session:
        assert ledger.verify(session).ok


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("meters", [1, 4, 8])
def test_a_sale_takes_the_minimum_apdus_plus_one_verify_read_per_written_block(
    sessions: sessionmaker[Session], plugins: Plugins, world: object, meters: int
) -> None:
    desk = make_desk(sessions, plugins, keyed_site(sessions))
    number, serials = card_customer(sessions, plugins, list(EIGHT))
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="eight")
    reader = direct(card)
    sold = serials[:meters]
    desk.sell(reader, ACTOR, sale_key=f"apdus-{meters}", items=[SaleItem(s, 1000) for s in sold])
    with sessions() as session:
        card_map = prof.card_map(prof.get_profile(session, "eight"), plugins.utilities)
    minimum, verify = sale_apdu_budget(card_map, card_map.slots[:meters])
    assert reader.apdu_count == minimum + verify
