"""The customer pages: search, the customer page and its scope, opening an account, its card."""

from __future__ import annotations

from typing import Any

from cardkit import blank_card
from conftest import World
from flask import Flask
from sqlalchemy import func, select

from onecard.models import AuditEvent, Card, Customer, LedgerAccount, Meter, Premises
from onecard.web import EXTENSION

from .conftest import Desk, login, post


def counts(app: Flask) -> dict[str, int]:
    rt = app.extensions[EXTENSION]
    with rt.sessions() as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0
            for m in (Customer, Premises, Meter, LedgerAccount, Card)
        }


def new_form(client: Any) -> dict[str, str]:
    page = client.get("/console/customers/new").get_data(as_text=True)
    import re

    key = re.search(r'name="key" value="([^"]+)"', page)
    assert key
    return {"key": key.group(1), "office": "E01", "category": "residential"}


# Search -----------------------------------------------------------------------------------------


def test_search_box_and_results_in_scope(app: Flask, world: World) -> None:
    client = login(app, "east")
    page = client.get("/console/customers/").get_data(as_text=True)
    assert "data-search" in page and "autofocus" in page
    r = client.get("/console/customers/?q=1号楼")
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and world.customer_number in body and "王芳" in body
    # west's cashier does not find east's customer
    west = login(app, "west")
    body = west.get("/console/customers/?q=王").get_data(as_text=True)
    assert world.customer_number not in body and "No customer matches" in body
    # the auditor of the group finds customers of both offices
    body = login(app, "audit").get("/console/customers/?q=E").get_data(as_text=True)
    assert world.customer_number in body and "李强" in body


def test_single_exact_hit_goes_to_the_customer(app: Flask, world: World) -> None:
    client = login(app, "east")
    for q in ("E0001", "13800000001", world.customer_number):
        r = client.get(f"/console/customers/?q={q}")
        assert r.status_code == 302, q
        assert r.location.endswith(f"/console/customers/{world.customer_number}")
    # a partial match lists
    assert client.get("/console/customers/?q=E000").status_code == 200


def test_search_by_card_uid(app: Flask, world: World, reader: Desk) -> None:
    rt = app.extensions[EXTENSION]
    number, uid = issue_card_customer(app, reader)
    client = login(app, "east")
    r = client.get(f"/console/customers/?q={uid.lower()}")
    assert r.status_code == 302 and r.location.endswith(number)
    assert rt


# The customer page ------------------------------------------------------------------------------


def test_customer_page_shows_everything_and_actions(app: Flask, world: World) -> None:
    client = login(app, "east")
    r = client.get(f"/console/customers/{world.customer_number}")
    body = r.get_data(as_text=True)
    assert r.status_code == 200
    for text in ("王芳", "1号楼", "88.50", "E0001", "W0001", "H0001", "Shared wallet", "Arrears"):
        assert text in body, text
    for href in ("/transfer", "/replace-meter", "/suspend", "/close", "/console/counter/sell"):
        assert href in body, href


def test_other_office_cashier_is_refused(app: Flask, world: World) -> None:
    r = login(app, "west").get(f"/console/customers/{world.customer_number}")
    assert r.status_code == 403


def test_auditor_sees_but_has_no_actions(app: Flask, world: World) -> None:
    client = login(app, "audit")
    body = client.get(f"/console/customers/{world.customer_number}").get_data(as_text=True)
    assert "王芳" in body
    for href in ("/transfer", "/replace-meter", "/suspend", "/close", "counter/sell"):
        assert href not in body, href
    assert client.get("/console/customers/new").status_code == 403


def test_unknown_customer_is_404(app: Flask, world: World) -> None:
    assert login(app, "east").get("/console/customers/NOPE").status_code == 404


# Opening an account -----------------------------------------------------------------------------


def test_open_account_without_card(app: Flask, world: World) -> None:
    client = login(app, "east")
    data = new_form(client) | {
        "name": "赵敏",
        "phone": "13900000002",
        "building": "2号楼",
        "unit": "302",
        "floor_area": "66.5",
        "kind_0": "electric",
        "serial_0": "100000000777",
        "issue": "",
    }
    r = post(client, "/console/customers/new", data)
    assert r.status_code == 302, r.get_data(as_text=True)
    page = client.get(r.location).get_data(as_text=True)
    assert "赵敏" in page and "100000000777" in page and "No card issued yet" in page
    # a double submit opens nothing more
    before = counts(app)
    r = post(client, "/console/customers/new", data)
    assert r.status_code == 302 and counts(app) == before


def issue_card_customer(app: Flask, reader: Desk) -> tuple[str, str]:
    client = login(app, "east")
    reader.card = blank_card()
    data = new_form(client) | {
        "name": "孙丽",
        "kind_0": "electric",
        "serial_0": "100000000888",
        "issue": "1",
        "profile": "four",
    }
    r = post(client, "/console/customers/new", data)
    assert r.status_code == 302, r.get_data(as_text=True)
    number = r.location.rsplit("/", 1)[1]
    rt = app.extensions[EXTENSION]
    with rt.sessions() as s:
        card = s.scalar(select(Card).join(Customer).where(Customer.number == number))
        assert card is not None and card.status == "active"
        return number, card.uid


def test_open_account_and_issue_card(app: Flask, world: World, reader: Desk) -> None:
    number, uid = issue_card_customer(app, reader)
    page = login(app, "east").get(f"/console/customers/{number}").get_data(as_text=True)
    assert uid in page and "Active" in page


def test_card_step_fails_account_stays_then_retry(app: Flask, world: World, reader: Desk) -> None:
    client = login(app, "east")
    reader.card = None
    data = new_form(client) | {
        "name": "周杰",
        "kind_0": "electric",
        "serial_0": "100000000999",
        "issue": "1",
        "profile": "four",
    }
    r = post(client, "/console/customers/new", data)
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and 'id="card-error"' in body and "No card on the reader" in body
    rt = app.extensions[EXTENSION]
    with rt.sessions() as s:
        c = s.scalar(select(Customer).where(Customer.name == "周杰"))
        assert c is not None and c.status == "active"
        number = c.number
    assert f"/console/customers/{number}/card" in body
    reader.card = blank_card()
    r = post(client, f"/console/customers/{number}/card", {"profile": "four"})
    assert r.status_code == 302
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Card).where(Card.customer_id == c.id)) == 1
    # issuing again onto another blank card is refused: the customer holds a card
    reader.card = blank_card()
    r = post(client, f"/console/customers/{number}/card", {"profile": "four"})
    assert r.status_code == 200 and "already holds card" in r.get_data(as_text=True)


def test_open_account_bad_input_stores_nothing(app: Flask, world: World) -> None:
    client = login(app, "east")
    before = counts(app)
    base = new_form(client) | {"name": "钱七", "issue": ""}
    cases: list[tuple[dict[str, str], str]] = [
        ({"name": "  "}, "name"),
        ({"phone": "call me"}, "phone"),
        ({"floor_area": "-5"}, "floor_area"),
        ({"heated_area": "2000000"}, "heated_area"),
        ({"floor_area": "abc"}, "floor_area"),
        ({"kind_4": "nonsense", "serial_4": "123"}, "kind_4"),
        ({"kind_0": "electric", "serial_0": "1 2"}, "serial_0"),
        (
            {"kind_0": "electric", "serial_0": "555", "kind_5": "electric", "serial_5": "555"},
            "serial_5",
        ),
        ({"kind_0": "electric", "serial_0": "E0001"}, "serial_0"),  # taken by 王芳
        ({"office": "W01"}, "office"),  # not east's office
        ({"category": "alien"}, "category"),
    ]
    for extra, field in cases:
        r = post(client, "/console/customers/new", base | extra)
        body = r.get_data(as_text=True)
        assert r.status_code == 422, (extra, r.status_code)
        assert f'id="{field}-error"' in body, (extra, body[body.find("error") - 200 :][:600])
        assert counts(app) == before, extra


def test_card_serial_must_fit_the_card(app: Flask, world: World, reader: Desk) -> None:
    client = login(app, "east")
    before = counts(app)
    data = new_form(client) | {
        "name": "吴九",
        "kind_0": "electric",
        "serial_0": "E123",
        "issue": "1",
        "profile": "four",
    }
    r = post(client, "/console/customers/new", data)
    assert r.status_code == 422 and 'id="serial_0-error"' in r.get_data(as_text=True)
    assert counts(app) == before


def test_chinese_pages(app: Flask, world: World) -> None:
    client = login(app, "east", lang="zh_CN")
    body = client.get(f"/console/customers/{world.customer_number}").get_data(as_text=True)
    assert "过户" in body and "换表" in body and "销户" in body
    body = client.get("/console/customers/new").get_data(as_text=True)
    assert "开户" in body


def test_audit_event_keeps_the_form_key(app: Flask, world: World) -> None:
    client = login(app, "east")
    data = new_form(client) | {"name": "郑十", "issue": ""}
    assert post(client, "/console/customers/new", data).status_code == 302
    rt = app.extensions[EXTENSION]
    with rt.sessions() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "customer.open")).all()
        assert any(e.detail.get("key") == data["key"] for e in events)
