"""The counter pages: sell with a live quote, read a card, pending sales, corrections, reissue.

Fast: the Flask test client and the in-process card reader (``reader`` fixture); SQLite.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from cardkit import ACTOR, blank_card, card_customer, direct
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from onecard import ledger, tariffs
from onecard.card.emulator import MifareClassicCard
from onecard.card.reader import MifareReader
from onecard.card.service import CardDesk, SaleItem
from onecard.errors import CardRemoved, NoCard
from onecard.ledger import accounts as acc
from onecard.models import AuditEvent, Card, CardPurchase, LedgerTransaction, Meter, Receipt
from onecard.runtime import Runtime
from onecard.web import EXTENSION

from .conftest import PASSWORDS, Desk, login, post

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "tariffs" / "examples"
TARIFFS = (
    "electric-residential.yaml",
    "water-cold-residential.yaml",
    "gas-residential.yaml",
    "heat-two-part.yaml",
)
SALE_KEY = re.compile(r'name="sale_key" value="([^"]+)"')


@dataclass
class Shop:
    """A customer of E01 with a four-meter card on the reader, and the tariffs loaded."""

    app: Flask
    reader: Desk
    card: MifareClassicCard
    number: str
    serials: dict[str, str]  # kind -> meter serial

    @property
    def rt(self) -> Runtime:
        rt: Runtime = self.app.extensions[EXTENSION]
        return rt

    @property
    def desk(self) -> CardDesk:
        return self.rt.card_desk()

    def count(self, model: Any) -> int:
        with self.rt.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def shop(app: Flask, reader: Desk) -> Shop:
    return open_shop(app, reader)


def open_shop(app: Flask, reader: Desk) -> Shop:
    """A customer of E01 (张伟) with four card meters, a card on the reader, tariffs loaded."""
    rt: Runtime = app.extensions[EXTENSION]
    with rt.sessions() as s, s.begin():
        for name in TARIFFS:
            doc = yaml.safe_load((EXAMPLES / name).read_text())
            tariffs.add_version(s, ACTOR, rt.plugins.utilities, doc)
    kinds = ["electric", "water.cold", "gas", "heat"]
    number, serials = card_customer(rt.sessions, rt.plugins, kinds, name="张伟")
    with rt.sessions() as s, s.begin():
        for m in s.scalars(select(Meter).where(Meter.serial.in_(serials))):
            # installed long ago (no proration of the heat basic fee), on 80 m² heated
            m.installed_at = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
            m.premises.heated_area = Decimal("80")
    card = blank_card()
    rt.card_desk().issue(direct(card), ACTOR, customer=number, profile="four")
    reader.card = card
    return Shop(app, reader, card, number, dict(zip(kinds, serials, strict=True)))


def sell_form(client: FlaskClient) -> tuple[str, str]:
    """Open the sell page (reads the card); its HTML and the sale key it made."""
    page = client.get("/console/counter/sell")
    assert page.status_code == 200, page.get_data(as_text=True)
    body = page.get_data(as_text=True)
    found = SALE_KEY.search(body)
    assert found, body
    return body, found.group(1)


def confirm(client: FlaskClient, shop: Shop, key: str, **amounts: str) -> Any:
    data = {"sale_key": key, "card": shop.card.uid.hex().upper(), "method": "cash", "reader": ""}
    data.update(amounts)
    return post(client, "/console/counter/sell", data)


def amount(shop: Shop, kind: str) -> str:
    return f"amount-{shop.serials[kind]}"


def test_sell_to_three_meters_then_the_receipt(shop: Shop) -> None:
    client = login(shop.app, "east")
    body, key = sell_form(client)
    assert "张伟" in body and shop.serials["heat"] in body
    assert f'id="{amount(shop, "electric")}"' in body and "autofocus" in body
    assert f'id="units-{shop.serials["heat"]}"' in body  # heat cards carry units
    r = confirm(
        client,
        shop,
        key,
        **{amount(shop, "electric"): "100", amount(shop, "water.cold"): "50.00"},
        **{amount(shop, "gas"): "30"},
    )
    assert r.status_code == 302, r.get_data(as_text=True)
    page = client.get(r.location).get_data(as_text=True)
    assert "Print receipt" in page and "data-autoopen" in page
    with shop.rt.sessions() as s:
        receipt = s.scalar(select(Receipt).where(Receipt.sale_key == key))
        assert receipt is not None and receipt.kind == "sale" and receipt.total == 18000
        rows = s.scalars(select(CardPurchase).where(CardPurchase.sale_key == key)).all()
        assert sorted(p.status for p in rows) == ["confirmed"] * 3
        assert ledger.verify(s).ok
    assert receipt.number in page
    # the card carries the purchases
    slots = shop.desk.read(direct(shop.card), ACTOR)["slots"]
    assert {s["meter"]: s["purchase"]["seq"] for s in slots}[shop.serials["gas"]] == 1


def test_double_submit_makes_one_sale(shop: Shop) -> None:
    client = login(shop.app, "east")
    _, key = sell_form(client)
    first = confirm(client, shop, key, **{amount(shop, "electric"): "20"})
    second = confirm(client, shop, key, **{amount(shop, "electric"): "20"})
    assert first.status_code == second.status_code == 302
    assert first.location == second.location
    with shop.rt.sessions() as s:
        rows = s.scalars(select(CardPurchase).where(CardPurchase.sale_key == key)).all()
        assert len(rows) == 1
        assert s.scalar(select(func.count()).select_from(Receipt)) == 1
        wallet = acc.meter_wallet_code(rows[0].meter_id)
        assert acc.natural_balance(acc.get_account(s, wallet)) == 2000


def test_the_sale_key_is_new_on_every_page(shop: Shop) -> None:
    client = login(shop.app, "east")
    assert sell_form(client)[1] != sell_form(client)[1]


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({}, "electric", "at least one meter"),
        ({"electric": "-5"}, "electric", "must not be negative"),
        ({"electric": "100000.01"}, "electric", "Too large"),
        ({"gas": "1.234"}, "gas", "two decimals"),
        ({"gas": "abc"}, "gas", "Not an amount"),
        ({"electric": "0"}, "electric", "more than zero"),
        ({"units-electric": "10"}, "electric", "in money on the card, not in units"),
        ({"units-heat": "-1"}, "units-heat", "more than zero"),
        ({"units-heat": "1.2345"}, "units-heat", "At most 3 decimals"),
    ],
)
def test_bad_input_is_shown_next_to_its_field_and_changes_nothing(
    shop: Shop, fields: dict[str, str], where: str, message: str
) -> None:
    client = login(shop.app, "east")
    _, key = sell_form(client)
    data = {}
    for name, value in fields.items():
        if name.startswith("units-"):
            data[f"units-{shop.serials[name[6:]]}"] = value
        else:
            data[amount(shop, name)] = value
    purchases, entries = shop.count(CardPurchase), shop.count(LedgerTransaction)
    r = confirm(client, shop, key, **data)
    body = r.get_data(as_text=True)
    assert r.status_code == 422, body
    target = (
        f"units-{shop.serials[where[6:]]}" if where.startswith("units-") else amount(shop, where)
    )
    error = re.search(rf'id="{re.escape(target)}-error"[^>]*>([^<]*)<', body)
    assert error and message in error.group(1), body
    assert key in body  # the same form, the same sale key
    assert (shop.count(CardPurchase), shop.count(LedgerTransaction)) == (purchases, entries)


def test_unknown_meter_and_wrong_card_keep_the_form(shop: Shop) -> None:
    client = login(shop.app, "east")
    _, key = sell_form(client)
    r = confirm(client, shop, key, **{"amount-999999": "10", amount(shop, "gas"): "10"})
    assert r.status_code == 422 and "no meter 999999" in r.get_data(as_text=True)
    # another customer's card is put on the reader
    rt = shop.rt
    other_number, _ = card_customer(rt.sessions, rt.plugins, ["electric"], name="李四")
    other = blank_card()
    shop.desk.issue(direct(other), ACTOR, customer=other_number, profile="four")
    shop.reader.card = other
    r = confirm(client, shop, key, **{amount(shop, "gas"): "10"})
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and "is not the card this sale was made for" in body
    assert 'value="10"' in body and key in body
    assert shop.count(CardPurchase) == 0


def test_no_card_on_the_reader(shop: Shop) -> None:
    client = login(shop.app, "east")
    shop.reader.card = None
    page = client.get("/console/counter/sell").get_data(as_text=True)
    assert "card on the reader." in page and 'accesskey="r"' in page


def test_live_quote(shop: Shop) -> None:
    client = login(shop.app, "east")
    token = re.search(r'name="csrf-token" content="([^"]+)"', sell_form(client)[0])
    assert token
    headers = {"X-CSRF-Token": token.group(1)}
    r = client.post(
        "/console/counter/quote",
        json={"meter": shop.serials["water.cold"], "amount": "50"},
        headers=headers,
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    data = r.get_json()
    assert data["amount_fen"] == 5000 and data["quantity"] == "10.00"
    assert [ln["amount"] for ln in data["lines"]] == ["20.70", "15.70", "13.60"]
    r = client.post(
        "/console/counter/quote",
        json={"meter": shop.serials["heat"], "units": "1.5"},
        headers=headers,
    )
    assert r.get_json()["ok"] and r.get_json()["quantity"] == "1.500"
    bad = client.post(
        "/console/counter/quote", json={"meter": shop.serials["gas"], "amount": "-1"},
        headers=headers,
    )  # fmt: skip
    assert bad.status_code == 422 and "negative" in bad.get_json()["error"]
    assert (
        client.post("/console/counter/quote", json={"meter": "nope"}, headers=headers).status_code
        == 404
    )
    # another office's cashier does not see the meter; without the token nothing is answered
    west = login(shop.app, "west")
    token_w = re.search(
        r'name="csrf-token" content="([^"]+)"', west.get("/console/").get_data(as_text=True)
    )
    assert token_w
    r = west.post(
        "/console/counter/quote",
        json={"meter": shop.serials["gas"], "amount": "5"},
        headers={"X-CSRF-Token": token_w.group(1)},
    )
    assert r.status_code == 404
    assert client.post("/console/counter/quote", json={"meter": "x"}).status_code == 400


def test_units_for_heat_are_priced_by_the_tariff(shop: Shop) -> None:
    client = login(shop.app, "east")
    _, key = sell_form(client)
    r = confirm(client, shop, key, **{f"units-{shop.serials['heat']}": "2"})
    assert r.status_code == 302, r.get_data(as_text=True)
    with shop.rt.sessions() as s:
        p = s.scalar(select(CardPurchase).where(CardPurchase.sale_key == key))
        assert p is not None and p.units == 2000 and p.amount > 0


class Pull:
    """A transport that loses the card at APDU number ``at`` (the card pulled mid-write)."""

    def __init__(self, card: MifareClassicCard, at: int) -> None:
        self.card, self.at, self.n = card, at, 0

    def transmit(self, apdu: bytes) -> bytes:
        self.n += 1
        if self.n >= self.at and apdu[:2] == b"\xff\xd6":  # the first block write from ``at``
            raise CardRemoved("the card left the reader")
        return self.card.transmit(apdu)


@dataclass
class PullingDesk(Desk):
    """The console tests' reader, which loses the card during the next write."""

    pull_at: int | None = None
    cards: dict[str, MifareClassicCard] = field(default_factory=dict)

    @contextmanager
    def open(self, name: str | None) -> Iterator[MifareReader]:
        self.opened.append(name)
        card = self.cards.get(name or "", self.card)
        if card is None:
            raise NoCard("no card on the reader: put the card on it")
        if self.pull_at is not None and card is self.card:
            at, self.pull_at = self.pull_at, None
            yield MifareReader(Pull(card, at))
        else:
            yield direct(card)


@pytest.fixture
def pulling(shop: Shop) -> PullingDesk:
    desk = PullingDesk(card=shop.card)
    shop.app.config["ONECARD_READER_FACTORY"] = desk.open
    return desk


def balances(shop: Shop) -> int:
    with shop.rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(LedgerTransaction)) or 0)


def test_card_pulled_mid_write_leaves_a_pending_sale_then_finish(
    shop: Shop, pulling: PullingDesk
) -> None:
    client = login(shop.app, "east")
    _, key = sell_form(client)
    pulling.pull_at = 1
    r = confirm(client, shop, key, **{amount(shop, "electric"): "60"})
    assert r.status_code == 302 and "failed=card_removed" in r.location
    page = client.get(r.location).get_data(as_text=True)
    assert "This sale is pending" in page and "Finish the sale" in page and "Void the sale" in page
    assert balances(shop) == 0
    assert key in client.get("/console/counter/pending").get_data(as_text=True)
    # a new sale is refused while the pending one waits
    _, key2 = sell_form(client)
    r = confirm(client, shop, key2, **{amount(shop, "electric"): "5"})
    assert r.status_code == 422 and "pending sale" in r.get_data(as_text=True)
    # finish: the card is back on the reader
    r = post(client, f"/console/counter/sales/{key}/finish", {"reader": ""})
    assert r.status_code == 302, r.get_data(as_text=True)
    # finishing twice (or the browser retrying the first confirm) credits nothing more
    r = confirm(client, shop, key, **{amount(shop, "electric"): "60"})
    assert r.status_code == 302
    with shop.rt.sessions() as s:
        rows = s.scalars(select(CardPurchase).where(CardPurchase.sale_key == key)).all()
        assert [p.status for p in rows] == ["confirmed"]
        wallet = acc.meter_wallet_code(rows[0].meter_id)
        assert acc.natural_balance(acc.get_account(s, wallet)) == 6000
        assert s.scalar(select(func.count()).select_from(Receipt)) == 1
        assert ledger.verify(s).ok
    assert "Print receipt" in client.get(f"/console/counter/sales/{key}").get_data(as_text=True)


def test_pending_sale_voided_with_the_card(shop: Shop, pulling: PullingDesk) -> None:
    client = login(shop.app, "east")
    _, key = sell_form(client)
    pulling.pull_at = 1
    confirm(client, shop, key, **{amount(shop, "gas"): "25"})
    r = post(client, f"/console/counter/sales/{key}/void", {"reason": "", "reader": ""})
    assert r.status_code == 422 and 'id="reason-error"' in r.get_data(as_text=True)
    r = post(
        client, f"/console/counter/sales/{key}/void", {"reason": "customer left", "reader": ""}
    )
    assert r.status_code == 302
    with shop.rt.sessions() as s:
        assert s.scalar(select(CardPurchase.status).where(CardPurchase.sale_key == key)) == "voided"
        assert s.scalar(select(func.count()).select_from(LedgerTransaction)) == 0
    assert "No pending sales" in client.get("/console/counter/pending").get_data(as_text=True)


def test_pending_sale_of_a_lost_card_voided_by_a_manager(shop: Shop, pulling: PullingDesk) -> None:
    client = login(shop.app, "east")
    _, key = sell_form(client)
    pulling.pull_at = 1
    confirm(client, shop, key, **{amount(shop, "gas"): "25"})
    uid = shop.card.uid.hex().upper()
    r = post(
        client,
        "/console/counter/lost",
        {"customer": shop.number, "uid": uid, "lost_reason": "lost"},
    )
    assert r.status_code == 302
    page = client.get(f"/console/counter/sales/{key}").get_data(as_text=True)
    assert "Void without the card" in page and "Finish the sale" not in page
    path = f"/console/counter/sales/{key}/void-without-card"
    r = post(client, path, {"reason": "card lost", "manager_username": "mgr",
                            "manager_password": "wrong-pass"})  # fmt: skip
    assert r.status_code == 422 and 'id="manager_password-error"' in r.get_data(as_text=True)
    r = post(client, path, {"reason": "card lost", "manager_username": "east",
                            "manager_password": PASSWORDS["east"]})  # fmt: skip
    assert r.status_code == 422 and 'id="manager_username-error"' in r.get_data(as_text=True)
    with shop.rt.sessions() as s:
        assert (
            s.scalar(select(CardPurchase.status).where(CardPurchase.sale_key == key)) == "pending"
        )
    r = post(client, path, {"reason": "card lost", "manager_username": "mgr",
                            "manager_password": PASSWORDS["mgr"]})  # fmt: skip
    assert r.status_code == 302, r.get_data(as_text=True)
    with shop.rt.sessions() as s:
        assert s.scalar(select(CardPurchase.status).where(CardPurchase.sale_key == key)) == "voided"


def test_other_office_and_auditor(shop: Shop) -> None:
    west = login(shop.app, "west")
    assert west.get("/console/counter/card").status_code == 403
    assert west.get("/console/counter/sell").status_code == 403
    r = confirm(west, shop, "sale-west-1", **{amount(shop, "gas"): "10"})
    assert r.status_code == 403  # not their office: refused before the reader is touched
    audit = login(shop.app, "audit")
    page = audit.get("/console/counter/card")
    assert page.status_code == 200 and "张伟" in page.get_data(as_text=True)
    assert "Sell" not in re.sub(r"<nav.*?</nav>", "", page.get_data(as_text=True), flags=re.S)
    assert audit.get("/console/counter/sell").status_code == 403
    assert confirm(audit, shop, "sale-audit-1", **{amount(shop, "gas"): "10"}).status_code == 403
    assert shop.count(CardPurchase) == 0


def test_read_card_page_uploads_readings_and_lists_slots(shop: Shop) -> None:
    client = login(shop.app, "east")
    page = client.get("/console/counter/card").get_data(as_text=True)
    for serial in shop.serials.values():
        assert serial in page
    assert "张伟" in page and shop.card.uid.hex().upper() in page
    with shop.rt.sessions() as s:
        assert s.scalar(select(func.count()).where(AuditEvent.action == "card.read")) == 1


def test_reissue_then_repurchase_with_manager_password(shop: Shop) -> None:
    client = login(shop.app, "east")
    _, key = sell_form(client)
    assert confirm(client, shop, key, **{amount(shop, "electric"): "80"}).status_code == 302
    old_uid = shop.card.uid.hex().upper()
    page = client.get(f"/console/counter/reissue?customer={shop.number}").get_data(as_text=True)
    assert old_uid in page and "Report lost" in page
    new = blank_card()
    shop.reader.card = new
    r = post(client, f"/console/counter/reissue?customer={shop.number}", {"reason": "lost"})
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and "no longer works" in body, body
    link = re.search(r'href="(/console/counter/purchases/(\d+)/repurchase)"', body)
    assert link
    with shop.rt.sessions() as s:
        assert s.scalar(select(Card.status).where(Card.uid == old_uid)) == "blacklisted"
    # wrong manager password: nothing written
    before = new.memory
    r = post(client, link.group(1), {"manager_username": "mgr", "manager_password": "nope-nope"})
    assert r.status_code == 422 and 'id="manager_password-error"' in r.get_data(as_text=True)
    assert new.memory == before
    r = post(
        client, link.group(1), {"manager_username": "mgr", "manager_password": PASSWORDS["mgr"]}
    )
    assert r.status_code == 302, r.get_data(as_text=True)
    slot = next(s for s in shop.desk.read(direct(new), ACTOR)["slots"] if s["kind"] == "electric")
    assert (slot["purchase"]["seq"], slot["purchase"]["amount"]) == (1, 8000)
    with shop.rt.sessions() as s:
        assert s.scalar(select(func.count()).where(CardPurchase.status == "confirmed")) == 1


def test_cancel_with_a_manager_card_on_the_second_reader(shop: Shop, pulling: PullingDesk) -> None:
    manager_card = blank_card()
    shop.desk.issue_tool(direct(manager_card), ACTOR, card_type="manager", operator="mgr")
    pulling.cards["Test reader 1"] = manager_card
    client = login(shop.app, "east")
    _, key = sell_form(client)
    assert confirm(client, shop, key, **{amount(shop, "gas"): "40"}).status_code == 302
    with shop.rt.sessions() as s:
        pid = s.scalar(select(CardPurchase.id).where(CardPurchase.sale_key == key))
    page = client.get("/console/counter/card").get_data(as_text=True)
    path = f"/console/counter/purchases/{pid}/cancel"
    assert path in page
    # the same reader for both cards is refused; no reason is refused
    r = post(client, path, {"reason": "typo", "reader": "Test reader 1",
                            "manager_reader": "Test reader 1"})  # fmt: skip
    assert r.status_code == 422 and 'id="manager_reader-error"' in r.get_data(as_text=True)
    r = post(client, path, {"reason": "", "reader": "Test reader 0",
                            "manager_reader": "Test reader 1"})  # fmt: skip
    assert r.status_code == 422 and 'id="reason-error"' in r.get_data(as_text=True)
    r = post(client, path, {"reason": "typo", "reader": "Test reader 0",
                            "manager_reader": "Test reader 1"})  # fmt: skip
    assert r.status_code == 302, r.get_data(as_text=True)
    with shop.rt.sessions() as s:
        p = s.get(CardPurchase, pid)
        assert p is not None and p.status == "cancelled" and p.authorized_by_id is not None
        assert ledger.verify(s).ok
        wallet = acc.meter_wallet_code(p.meter_id)
        assert acc.natural_balance(acc.get_account(s, wallet)) == 0


def test_pages_in_chinese(shop: Shop) -> None:
    client = login(shop.app, "east", lang="zh_CN")
    body, _ = sell_form(client)
    assert "确认" in body and "张伟" in body
    shop.reader.card = None
    assert "读卡" in client.get("/console/counter/card").get_data(as_text=True)


def test_units_desk_sale_item_is_what_the_service_sells() -> None:
    assert SaleItem("1", 100).units is None
