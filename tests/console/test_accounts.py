"""The account pages: transfer, replace a meter, suspend/resume, close; scope and double submits."""

from __future__ import annotations

import re
from typing import Any

from cardkit import ACTOR, blank_card, card_customer, direct
from conftest import World
from flask import Flask
from sqlalchemy import func, select

from onecard.ledger import accounts as acc
from onecard.ledger import operations as ops
from onecard.models import (
    AuditEvent,
    Card,
    CardSlot,
    Customer,
    LedgerTransaction,
    Meter,
    Receipt,
)
from onecard.web import EXTENSION

from .conftest import login, post


def key_of(client: Any, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, r.get_data(as_text=True)
    found = re.search(r'name="key" value="([^"]+)"', r.get_data(as_text=True))
    assert found
    return found.group(1)


def state(app: Flask) -> dict[str, Any]:
    rt = app.extensions[EXTENSION]
    with rt.sessions() as s:
        c = s.get(Customer, app.config["WORLD"].customer_id)
        assert c is not None
        return {
            "customer": (c.name, c.phone, c.status),
            "meters": sorted((m.serial, m.state) for m in s.scalars(select(Meter))),
            "txns": s.scalar(select(func.count()).select_from(LedgerTransaction)),
            "events": s.scalar(select(func.count()).select_from(AuditEvent)),
            "receipts": s.scalar(select(func.count()).select_from(Receipt)),
        }


def sell(app: Flask, wallet: str, amount: int, key: str) -> None:
    rt = app.extensions[EXTENSION]
    with rt.sessions() as s, s.begin():
        ops.sale(s, wallet=wallet, amount=amount, office_id=2, idempotency_key=key)


def test_scope_other_office_and_auditor(app: Flask, world: World) -> None:
    number = world.customer_number
    for path in ("transfer", "replace-meter", "suspend", "close"):
        url = f"/console/customers/{number}/{path}"
        assert login(app, "west").get(url).status_code == 403, path
        auditor = login(app, "audit")
        assert auditor.get(url).status_code == 403, path
        west = login(app, "west")
        before = state(app)
        r = post(auditor, url, {"key": "whatever-key-1", "reason": "x", "name": "Y"})
        assert r.status_code == 403 and state(app) == before
        r = post(west, url, {"key": "whatever-key-1", "reason": "x", "name": "Y"})
        assert r.status_code == 403 and state(app) == before


def test_transfer_page(app: Flask, world: World) -> None:
    client = login(app, "east")
    url = f"/console/customers/{world.customer_number}/transfer"
    key = key_of(client, url)
    before = state(app)
    for bad, field in (
        ({"name": ""}, "name"),
        ({"phone": "zz"}, "phone"),
        ({"reason": ""}, "reason"),
    ):
        data = {
            "key": key,
            "name": "李娜",
            "phone": "",
            "category": "residential",
            "reason": "sold",
        }
        r = post(client, url, data | bad)
        assert r.status_code == 422 and f'id="{field}-error"' in r.get_data(as_text=True)
        assert state(app) == before
    data = {
        "key": key,
        "name": "李娜",
        "phone": "13700000000",
        "category": "residential",
        "reason": "sold",
    }
    r = post(client, url, data)
    assert r.status_code == 302
    page = client.get(r.location).get_data(as_text=True)
    assert "李娜" in page and "Previous owners" in page and "王芳" in page
    after = state(app)
    r = post(client, url, data)  # double submit
    assert r.status_code == 302 and state(app) == after


def test_replace_meter_page_moves_wallet_and_card_slot(app: Flask, world: World) -> None:
    rt = app.extensions[EXTENSION]
    number, serials = card_customer(rt.sessions, rt.plugins, ["electric", "water.cold"])
    card = blank_card()
    rt.card_desk().issue(direct(card), ACTOR, customer=number, profile="four")
    with rt.sessions() as s:
        old = s.scalar(select(Meter).where(Meter.serial == serials[0]))
        assert old is not None
        wallet = acc.meter_wallet_code(old.id)
    sell(app, wallet, 7000, "replace-sale")
    client = login(app, "east")
    url = f"/console/customers/{number}/replace-meter?meter={serials[0]}"
    key = key_of(client, url)
    base = {"key": key, "meter": serials[0], "final_reading": "321.5", "reason": "broken"}
    events = state(app)["events"]
    for bad, field in (
        ({"new_serial": ""}, "new_serial"),
        ({"new_serial": "E-12"}, "new_serial"),  # not a card serial
        ({"new_serial": serials[1]}, "new_serial"),  # the card's water meter has these digits
        ({"new_serial": "200000000001", "final_reading": "-1"}, "final_reading"),
        ({"new_serial": "200000000001", "final_reading": "1.23456789"}, "final_reading"),
        ({"new_serial": "200000000001", "reason": ""}, "reason"),
    ):
        r = post(client, url, base | bad)
        assert r.status_code == 422, (bad, r.status_code)
        assert f'id="{field}-error"' in r.get_data(as_text=True), bad
        assert state(app)["events"] == events
    # the serial of the card's other meter was accepted as another kind's: undo by checking
    with rt.sessions() as s:
        replaced = s.scalar(
            select(Meter).where(Meter.kind == "electric", Meter.serial == serials[1])
        )
    if replaced is not None:  # the same digits on one card are refused, so this must not exist
        raise AssertionError("a serial clashing on the card was accepted")
    r = post(client, url, base | {"new_serial": "200000000001", "remaining": "12.50"})
    assert r.status_code == 302, r.get_data(as_text=True)
    after = state(app)
    assert post(client, url, base | {"new_serial": "200000000001"}).status_code == 302
    assert state(app) == after
    with rt.sessions() as s:
        new = s.scalar(select(Meter).where(Meter.serial == "200000000001"))
        assert new is not None
        assert acc.natural_balance(acc.get_account(s, acc.meter_wallet_code(new.id))) == 7000
        assert acc.natural_balance(acc.get_account(s, wallet)) == 0
        slot = s.scalar(
            select(CardSlot)
            .join(Card)
            .where(Card.uid == card.uid.hex().upper(), CardSlot.kind == "electric")
        )
        assert slot is not None and slot.meter_id == new.id


def test_suspend_and_resume_pages(app: Flask, world: World) -> None:
    client = login(app, "east")
    number = world.customer_number
    url = f"/console/customers/{number}/suspend"
    key = key_of(client, url)
    r = post(client, url, {"key": key, "reason": ""})
    assert r.status_code == 422 and 'id="reason-error"' in r.get_data(as_text=True)
    assert post(client, url, {"key": key, "reason": "vacant"}).status_code == 302
    assert post(client, url, {"key": key, "reason": "vacant"}).status_code == 302  # replay
    assert state(app)["customer"][2] == "suspended"
    page = client.get(f"/console/customers/{number}").get_data(as_text=True)
    assert "counter/sell?customer=" not in page and "/resume" in page
    url = f"/console/customers/{number}/resume"
    r = post(client, url, {"key": key_of(client, url)})
    assert r.status_code == 302 and state(app)["customer"][2] == "active"


def test_suspended_customer_cannot_buy_on_card(app: Flask, world: World) -> None:
    rt = app.extensions[EXTENSION]
    number, serials = card_customer(rt.sessions, rt.plugins, ["electric"])
    card = blank_card()
    rt.card_desk().issue(direct(card), ACTOR, customer=number, profile="four")
    client = login(app, "east")
    url = f"/console/customers/{number}/suspend"
    assert post(client, url, {"key": key_of(client, url), "reason": "x"}).status_code == 302
    from onecard.card.service import SaleItem
    from onecard.errors import Conflict

    try:
        rt.card_desk().sell(direct(card), ACTOR, sale_key="s-1", items=[SaleItem(serials[0], 100)])
    except Conflict as exc:
        assert "suspended" in exc.message
    else:
        raise AssertionError("a suspended customer bought")


def test_close_page_settles_and_double_submit_refunds_once(app: Flask, world: World) -> None:
    sell(app, world.wallets["electric"], 5000, "close-sale-1")
    sell(app, world.shared_wallet, 1000, "close-sale-2")
    client = login(app, "east")
    number = world.customer_number
    url = f"/console/customers/{number}/close"
    key = key_of(client, url)
    before = state(app)
    rt = app.extensions[EXTENSION]
    with rt.sessions() as s:
        e = s.scalar(select(Meter).where(Meter.serial == "E0001"))
        assert e is not None
        eid = e.id
    base = {
        "key": key,
        "method": "cash",
        "collect_method": "cash",
        "reason": "moved",
        "confirm": "1",
    }
    for bad, field in (
        ({"confirm": ""}, "confirm"),
        ({"reason": ""}, "reason"),
        ({"method": "gold"}, "method"),
        ({f"left_{eid}": "80"}, f"left_{eid}"),  # more than the wallet holds
        ({f"left_{eid}": "abc"}, f"left_{eid}"),
        ({f"final_{eid}": "-3"}, f"final_{eid}"),
    ):
        r = post(client, url, base | bad)
        assert r.status_code == 422, (bad, r.status_code)
        assert f'id="{field}-error"' in r.get_data(as_text=True), bad
        assert state(app) == before
    r = post(client, url, base | {f"left_{eid}": "30", f"final_{eid}": "1234.5"})
    assert r.status_code == 302, r.get_data(as_text=True)
    page = client.get(r.location).get_data(as_text=True)
    assert "Closed" in page
    with rt.sessions() as s:
        receipt = s.scalar(select(Receipt).where(Receipt.kind == "settlement"))
        assert receipt is not None and receipt.total == -4000  # 30 + 10 yuan paid out
        assert f"/console/receipts/{receipt.number}.pdf" in page or receipt.number in page
    after = state(app)
    r = post(client, url, base | {f"left_{eid}": "30"})
    assert state(app) == after  # nothing twice
    assert after["customer"][2] == "closed"


def test_close_refused_with_pending_sale(app: Flask, world: World) -> None:
    rt = app.extensions[EXTENSION]
    number, serials = card_customer(rt.sessions, rt.plugins, ["electric"])
    card = blank_card()
    rt.card_desk().issue(direct(card), ACTOR, customer=number, profile="four")
    from onecard.models import CardPurchase

    with rt.sessions() as s, s.begin():
        c = s.scalar(select(Customer).where(Customer.number == number))
        m = s.scalar(select(Meter).where(Meter.serial == serials[0]))
        k = s.scalar(select(Card).where(Card.customer_id == c.id))  # type: ignore[union-attr]
        assert c is not None and m is not None and k is not None
        import datetime as dt

        s.add(
            CardPurchase(
                idempotency_key="p-1:1",
                sale_key="p-1",
                meter_id=m.id,
                card_id=k.id,
                customer_id=c.id,
                office_id=c.office_id,
                slot=0,
                seq=1,
                amount=100,
                status="pending",
                written_at=dt.datetime.now(dt.UTC),
            )
        )
    client = login(app, "east")
    url = f"/console/customers/{number}/close"
    page = client.get(url).get_data(as_text=True)
    assert 'id="pending-error"' in page
    r = post(
        client,
        url,
        {
            "key": key_of(client, url),
            "method": "cash",
            "collect_method": "cash",
            "reason": "x",
            "confirm": "1",
        },
    )
    assert r.status_code == 409 or r.status_code == 422
    assert "pending card sale" in r.get_data(as_text=True)
    with rt.sessions() as s:
        assert s.scalar(select(Customer.status).where(Customer.number == number)) == "active"
    page = client.get(f"/console/customers/{number}").get_data(as_text=True)
    assert 'id="pending"' in page
