"""Corrections and card life: reissue, re-purchase, cancel, lost cards, key rotation, retries.

Fast, on the direct (in-process) path; the same desk runs through pcscd in the real-path tests.
"""

from __future__ import annotations

import pytest
from cardkit import ACTOR, blank_card, card_customer, direct, keyed_site, make_desk
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard import ledger
from onecard import operators as ops
from onecard.card.reader import MifareReader
from onecard.card.service import CardDesk, Manager, SaleItem
from onecard.errors import (
    AuthenticationFailed,
    CardRefused,
    CardRemoved,
    Conflict,
    InvalidInput,
    PermissionDenied,
)
from onecard.models import AuditEvent, Card, CardPurchase
from onecard.plugins import Plugins

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
MGR_PASSWORD = "manager-pass-1"


@pytest.fixture
def desk(sessions: sessionmaker[Session], plugins: Plugins, world: object) -> CardDesk:
    with sessions() as s, s.begin():
        ops.create_operator(
            s, ACTOR, username="mgr", password=MGR_PASSWORD, roles=[("manager", "E01")]
        )
        ops.create_operator(
            s, ACTOR, username="clerk", password=MGR_PASSWORD, roles=[("cashier", "E01")]
        )
    return make_desk(sessions, plugins, keyed_site(sessions))


def by_password(desk: CardDesk, username: str = "mgr", password: str = MGR_PASSWORD):  # type: ignore[no-untyped-def]
    def authorize(office_id: int) -> Manager:
        return desk.authorize(office_id, username=username, password=password)

    return authorize


def test_reissue_blacklists_the_old_card_and_repurchase_needs_a_manager(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, serials = card_customer(sessions, plugins, ["electric"])
    old = blank_card()
    desk.issue(direct(old), ACTOR, customer=number, profile="four")
    sale = desk.sell(direct(old), ACTOR, sale_key="before-loss", items=[SaleItem(serials[0], 6000)])
    pid = sale["purchases"][0]["id"]
    # the card is lost before the meter loaded the purchase
    new = blank_card()
    out = desk.reissue(direct(new), ACTOR, customer=number, reason="lost")
    assert out["replaces"] == old.uid.hex().upper() and out["reissue_count"] == 1
    assert [p["seq"] for p in out["unloaded_purchases"]] == [1]
    with pytest.raises(CardRefused, match="blacklisted"):
        desk.sell(direct(old), ACTOR, sale_key="x", items=[SaleItem(serials[0], 100)])
    assert desk.read(direct(old), ACTOR)["warning"].startswith("this card is blacklisted")
    # re-purchase writes the same purchase #1 onto the new card, no new money
    with pytest.raises(PermissionDenied, match="may not authorise"):
        desk.repurchase(direct(new), ACTOR, purchase_id=pid, authorize=by_password(desk, "clerk"))
    done = desk.repurchase(direct(new), ACTOR, purchase_id=pid, authorize=by_password(desk))
    assert (done["seq"], done["rewrites"]) == (1, 1)
    slot = desk.read(direct(new), ACTOR)["slots"][0]
    assert (slot["purchase"]["seq"], slot["purchase"]["amount"]) == (1, 6000)
    with pytest.raises(Conflict, match="already carries"):
        desk.repurchase(direct(new), ACTOR, purchase_id=pid, authorize=by_password(desk))
    with sessions() as s:
        assert ledger.verify(s).ok
        sales = s.scalars(select(CardPurchase).where(CardPurchase.status == "confirmed")).all()
        assert len(sales) == 1  # one purchase, one sale in the ledger, however often written


def test_wrong_manager_passwords_count_towards_the_lockout(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, serials = card_customer(sessions, plugins, ["electric"])
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")
    pid = desk.sell(direct(card), ACTOR, sale_key="s", items=[SaleItem(serials[0], 500)])[
        "purchases"
    ][0]["id"]
    for _ in range(ops.MAX_FAILED_LOGINS):
        with pytest.raises(AuthenticationFailed):
            desk.cancel(
                direct(card), ACTOR, purchase_id=pid, reason="test",
                authorize=by_password(desk, password="wrong-password"),
            )  # fmt: skip
    with pytest.raises(AuthenticationFailed, match="locked"):
        desk.cancel(direct(card), ACTOR, purchase_id=pid, reason="t", authorize=by_password(desk))
    with sessions() as s:
        failed = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "card.authorize_failed")
        ).all()
        assert len(failed) == ops.MAX_FAILED_LOGINS + 1
        assert s.scalar(select(CardPurchase.status).where(CardPurchase.id == pid)) == "confirmed"


def test_a_manager_card_authorises_a_cancellation(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    manager_card = blank_card()
    with pytest.raises(InvalidInput, match="may not authorise"):
        desk.issue_tool(direct(blank_card()), ACTOR, card_type="manager", operator="clerk")
    desk.issue_tool(direct(manager_card), ACTOR, card_type="manager", operator="mgr")
    number, serials = card_customer(sessions, plugins, ["gas"])
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")
    sale = desk.sell(direct(card), ACTOR, sale_key="g", items=[SaleItem(serials[0], 2500)])

    def with_card(office_id: int) -> Manager:
        return desk.authorize(office_id, manager_reader=direct(manager_card))

    out = desk.cancel(
        direct(card), ACTOR, purchase_id=sale["purchases"][0]["id"], reason="wrong meter",
        authorize=with_card,
    )  # fmt: skip
    assert out["status"] == "cancelled"
    assert desk.read(direct(card), ACTOR)["slots"][2]["purchase"]["seq"] == 0
    with pytest.raises(CardRefused, match="a manager card is needed"):
        desk.authorize(1, manager_reader=direct(card))


def test_a_lost_card_with_a_pending_sale(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, serials = card_customer(sessions, plugins, ["electric"])
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")

    class Pull:
        def __init__(self) -> None:
            self.n = 0

        def transmit(self, apdu: bytes) -> bytes:
            self.n += 1
            if self.n == 14:  # the first purchase write
                raise CardRemoved("pulled")
            return card.transmit(apdu)

    with pytest.raises(CardRemoved):
        desk.sell(MifareReader(Pull()), ACTOR, sale_key="p", items=[SaleItem(serials[0], 700)])
    with pytest.raises(Conflict, match="pending sale"):
        desk.reissue(direct(blank_card()), ACTOR, customer=number)
    with pytest.raises(Conflict, match="still active"):
        desk.void_without_card(ACTOR, sale_key="p", reason="lost", authorize=by_password(desk))
    desk.report_lost(ACTOR, uid=card.uid.hex())
    desk.void_without_card(ACTOR, sale_key="p", reason="card lost", authorize=by_password(desk))
    assert desk.pending() == []
    new = blank_card()
    desk.reissue(direct(new), ACTOR, customer=number)
    out = desk.sell(direct(new), ACTOR, sale_key="after", items=[SaleItem(serials[0], 700)])
    assert out["purchases"][0]["seq"] == 1  # the voided number is used again


def test_key_rotation_rekeys_a_card_at_its_next_visit(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, serials = card_customer(sessions, plugins, ["electric", "water.cold"])
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")
    desk.sell(direct(card), ACTOR, sale_key="v1", items=[SaleItem(serials[0], 1200)])
    with sessions() as s, s.begin():
        assert desk.keystore.rotate(s) == 2
    before = card.memory
    read = desk.read(direct(card), ACTOR)  # re-keys first, in its own transaction
    assert read["key_version"] == 2
    assert card.memory != before
    assert read["slots"][0]["purchase"]["amount"] == 1200 and read["slots"][0]["purchase_valid"]
    with sessions() as s:
        row = s.scalar(select(Card).where(Card.uid == card.uid.hex().upper()))
        assert row is not None and row.key_version == 2
        assert s.scalar(select(AuditEvent.id).where(AuditEvent.action == "card.rekey"))
    # a second visit needs no re-key
    again = MifareReader(card)
    desk.read(again, ACTOR)
    assert again.apdu_count < 60


def test_issuing_refuses_the_wrong_card_untouched_and_can_be_run_again(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, _ = card_customer(sessions, plugins, ["electric"])
    with sessions() as s, s.begin():
        from onecard.card import profiles as prof

        prof.create_profile(
            s, plugins.utilities, ACTOR, code="big", names={"en": "4K"}, slots=["electric"],
            card_size="4k",
        )  # fmt: skip
    small = blank_card("1k")
    before = small.memory
    with pytest.raises(InvalidInput, match="not a blank 4K card"):
        desk.issue(direct(small), ACTOR, customer=number, profile="big")
    assert small.memory == before

    card = blank_card()

    class PullAt:
        def __init__(self, at: int) -> None:
            self.n, self.at = 0, at

        def transmit(self, apdu: bytes) -> bytes:
            self.n += 1
            if self.n == self.at:
                raise CardRemoved("pulled")
            return card.transmit(apdu)

    with pytest.raises(CardRemoved):
        desk.issue(MifareReader(PullAt(60)), ACTOR, customer=number, profile="four")
    out = desk.issue(direct(card), ACTOR, customer=number, profile="four")  # simply again
    assert out["uid"] == card.uid.hex().upper()
    assert desk.read(direct(card), ACTOR)["slots"][0]["purchase_valid"]


def test_long_sale_keys_are_refused_up_front(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, serials = card_customer(sessions, plugins, ["electric"])
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")
    with pytest.raises(InvalidInput, match="at most 64") as err:
        desk.sell(direct(card), ACTOR, sale_key="k" * 65, items=[SaleItem(serials[0], 100)])
    assert err.value.field == "sale_key"
    assert desk.pending() == []
