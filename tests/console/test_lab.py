"""The demo lab: its service in-process (wallet, readers, meters) and its pages."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from cardkit import ACTOR, card_customer
from flask import Flask
from sqlalchemy import func, select

from onecard.card.service import SaleItem
from onecard.console import lab as lab_service
from onecard.console.lab import Lab, MemorySlot
from onecard.console.views import lab as lab_views
from onecard.errors import NoReader, NotFound
from onecard.models import MeterReading
from onecard.runtime import Runtime
from onecard.web import EXTENSION, create_app

from .conftest import csrf_of, login, post

READERS = {"counter": "Test reader 0", "manager": "Test reader 1"}


def make_lab(app: Flask, folder: Path, *, manager: bool = True) -> Lab:
    rt: Runtime = app.extensions[EXTENSION]
    slots = {"counter": MemorySlot(), "manager": MemorySlot() if manager else None}
    return Lab(
        folder,
        rt.sessions,
        rt.utilities,
        rt.card_desk().keystore,
        slots=slots,
        reader_names=READERS,
    )


@pytest.fixture
def lab(app: Flask, tmp_path: Path) -> Lab:
    """The app in demo mode: the lab's pages, and its in-process readers as the counter's."""
    service = make_lab(app, tmp_path / "lab")
    app.config["ONECARD_LAB"] = True
    app.register_blueprint(lab_views.bp)
    app.extensions[lab_service.EXTENSION] = service
    app.config["ONECARD_READER_FACTORY"] = service.open_reader
    return service


def customer_card(app: Flask, lab: Lab, kinds: list[str]) -> tuple[str, list[str]]:
    """A new customer with card meters of ``kinds`` and a card issued to them in the wallet."""
    rt: Runtime = app.extensions[EXTENSION]
    number, serials = card_customer(rt.sessions, rt.plugins, kinds)
    uid = lab.new_card("1k", "test card")
    lab.put(uid)
    with lab.open_reader() as reader:
        rt.card_desk().issue(reader, ACTOR, customer=number, profile="four")
    lab.take("counter")
    return uid, serials


def sell(app: Flask, lab: Lab, uid: str, serials: list[str], key: str, fen: int = 5000) -> None:
    rt: Runtime = app.extensions[EXTENSION]
    lab.put(uid)
    with lab.open_reader() as reader:
        out = rt.card_desk().sell(
            reader, ACTOR, sale_key=key, items=[SaleItem(s, fen) for s in serials]
        )
    assert out["status"] == "confirmed"
    lab.take("counter")


# The service -----------------------------------------------------------------------------------


def test_wallet_keeps_cards_and_their_images(app: Flask, tmp_path: Path) -> None:
    first = make_lab(app, tmp_path / "lab")
    blank = first.new_card("4k", "spare")
    uid, _ = customer_card(app, first, ["electric"])
    issued = first.card(uid).memory
    assert first.card(blank).size == "4k"

    again = make_lab(app, tmp_path / "lab")
    rows = {r["uid"]: r for r in again.cards()}
    assert list(rows) == [blank, uid]
    assert rows[blank]["label"] == "spare" and rows[blank]["card_type"] is None
    assert rows[uid]["card_type"] == "user" and rows[uid]["customer"]["name"] == "张伟"
    assert again.card(uid).memory == issued
    with pytest.raises(NotFound):
        again.card("DEADBEEF")


def test_cards_move_between_readers_and_a_missing_reader_says_so(
    app: Flask, tmp_path: Path
) -> None:
    lab = make_lab(app, tmp_path / "lab")
    a, b = lab.new_card(), lab.new_card()
    lab.put(a, "counter")
    lab.put(a, "manager")  # the same card moves
    assert lab.on_reader("counter") is None and lab.on_reader("manager") == a
    lab.put(b, "manager")  # another card takes its place; the first goes back to the wallet
    assert lab.on_reader("manager") == b
    assert {r["uid"]: r["where"] for r in lab.cards()} == {a: None, b: "manager"}
    assert lab.take("manager") == b and lab.take("manager") is None

    without = make_lab(app, tmp_path / "lab", manager=False)
    with pytest.raises(NoReader, match="manager reader is not available"):
        without.put(a, "manager")


def test_a_card_carried_to_its_meters_loads_and_brings_the_use_back(
    app: Flask, lab: Lab, tmp_path: Path
) -> None:
    uid, serials = customer_card(app, lab, ["electric", "water.cold"])
    sell(app, lab, uid, serials, "lab-1")
    refs = lab.meters_of(uid)
    assert [(r.kind, r.serial) for r in refs] == [
        ("electric", serials[0]),
        ("water.cold", serials[1]),
    ]

    for ref in refs:
        visit = lab.carry(uid, ref.kind, ref.serial)
        assert visit.code == "loaded" and visit.seq == 1, visit.message
        assert lab.run(ref.kind, ref.serial, 24) > 0
        state = lab.meter_state(ref.kind, ref.serial)
        assert state["last_seq"] == 1 and state["credit"] < 5000 and not state["relay_open"]
        assert state["events"][0]["code"] == "loaded"  # newest first
        # inserted again, the meter writes its use on the card
        assert lab.carry(uid, ref.kind, ref.serial).code == "already_loaded"

    # the meters' state survives the lab
    reopened = make_lab(app, tmp_path / "lab")
    assert reopened.meter_state("electric", serials[0]) == lab.meter_state("electric", serials[0])

    # read at the counter: the return records become readings
    rt: Runtime = app.extensions[EXTENSION]
    lab.put(uid)
    with lab.open_reader() as reader:
        read = rt.card_desk().read(reader, ACTOR)
    slots = {s["meter"]: s for s in read["slots"] if s["meter"]}
    rate = lab.meter_state("electric", serials[0])["rate"]  # kWh an hour: about 1 yuan's worth
    assert slots[serials[0]]["return"]["cumulative"] == int(rate * 24 * 100)  # in 0.01 kWh
    assert all(s["reading_stored"] for s in slots.values())
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(MeterReading)) == 2
    # and a second sale is possible now that the meters loaded the first
    sell(app, lab, uid, serials, "lab-2")
    assert lab.carry(uid, "electric", serials[0]).seq == 2


def test_a_meter_runs_out_and_opens_its_relay(app: Flask, lab: Lab) -> None:
    uid, serials = customer_card(app, lab, ["electric"])
    sell(app, lab, uid, serials, "lab-out", fen=100)
    lab.carry(uid, "electric", serials[0])
    lab.run("electric", serials[0], 24, Decimal(50))
    state = lab.meter_state("electric", serials[0])
    assert state["relay_open"] and state["exhausted"]
    assert "exhausted" in [e["code"] for e in state["events"]]


# The pages -------------------------------------------------------------------------------------


def test_lab_pages_need_demo_mode_and_a_login(app: Flask, lab: Lab) -> None:
    anonymous = app.test_client()
    r = anonymous.get("/lab/")
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]

    client = login(app, "east")  # any operator: a cashier
    page = client.get("/lab/").get_data(as_text=True)
    assert "Emulated hardware of the demo" in page
    assert "Test reader 0" in page
    assert 'href="/lab/"' in client.get("/console/").get_data(as_text=True)

    # a POST without the session's CSRF token changes nothing
    before = len(lab.cards())
    assert client.post("/lab/cards", data={"size": "1k"}).status_code == 400
    assert len(lab.cards()) == before


def test_no_lab_outside_demo_mode(sqlite_url: str, tmp_path: Path) -> None:
    from conftest import BUILTIN_PLUGINS

    plain = create_app(
        {"database_url": sqlite_url, "instance_path": tmp_path / "inst"}, plugins=BUILTIN_PLUGINS
    )
    assert plain.test_client().get("/lab/").status_code == 404
    plain.extensions[EXTENSION].close()


def test_lab_page_walk_through(app: Flask, lab: Lab) -> None:
    client = login(app, "east")
    r = post(client, "/lab/cards", {"size": "4k", "label": "walk"})
    assert r.status_code == 302
    (uid,) = [c["uid"] for c in lab.cards() if c["label"] == "walk"]
    assert lab.card(uid).size == "4k"

    assert post(client, f"/lab/cards/{uid}/put", {"place": "counter"}).status_code == 302
    assert lab.on_reader("counter") == uid
    page = client.get("/lab/").get_data(as_text=True)
    assert "Blank card (not issued)" in page and "on-reader" in page
    # the counter's reader now reads this card through the app's reader factory
    rt: Runtime = app.extensions[EXTENSION]
    number, serials = card_customer(rt.sessions, rt.plugins, ["gas"])
    with lab.open_reader() as reader:
        rt.card_desk().issue(reader, ACTOR, customer=number, profile="four")
        rt.card_desk().sell(reader, ACTOR, sale_key="walk-1", items=[SaleItem(serials[0], 3000)])

    page = client.get("/lab/").get_data(as_text=True)
    assert f'id="meter-gas-{serials[0]}"' in page
    r = post(client, f"/lab/meters/gas/{serials[0]}/insert", {"uid": uid})
    assert r.status_code == 302
    assert lab.on_reader("counter") is None  # carried away from the counter
    assert "loaded purchase #1" in client.get("/lab/").get_data(as_text=True)

    r = post(client, f"/lab/meters/gas/{serials[0]}/run", {"hours": "24", "rate": "0.1"})
    assert r.status_code == 302
    page = client.get("/lab/").get_data(as_text=True)
    assert "metered 2.4 m³" in page
    # bad input is said, not raised
    post(client, f"/lab/meters/gas/{serials[0]}/run", {"hours": "24", "rate": "lots"})
    assert "rate: not a number" in client.get("/lab/").get_data(as_text=True)
    post(client, "/lab/cards/NOTAUID/put", {"place": "counter"})
    assert "a UID is 8 or 14 hex digits" in client.get("/lab/").get_data(as_text=True)

    assert post(client, "/lab/take", {"place": "manager"}).status_code == 302
    token = csrf_of(client, "/lab/")
    assert token
