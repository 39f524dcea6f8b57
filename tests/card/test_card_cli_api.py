"""``onecard card ...`` and ``/api/v1/card`` through the real PC/SC path (pcscd, vpcd, emulator)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cardkit import ACTOR, KEK, Counter, blank_card, card_customer
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient

from onecard import offices as off
from onecard import operators as ops
from onecard.card.keys import KeyStore
from onecard.cli import cli
from onecard.runtime import Runtime
from onecard.web import EXTENSION, create_app

pytestmark = [pytest.mark.pcsc, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]
KEK_ENV = {"ONECARD_KEK": KEK.hex()}


@pytest.fixture
def run(db_url: str, tmp_path: Path, counter: Counter):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(
            cli,
            ["--instance", str(tmp_path / "inst"), "--database-url", db_url, *args],
            input=input,
            env=KEK_ENV | {"ONECARD_READER": counter.reader_name},
        )

    assert invoke("init", "--password-stdin", input="admin-pass-1\n").exit_code == 0
    assert invoke("office", "add", "E01", "东区").exit_code == 0
    r = invoke("keys", "init", "--site-id", "31")
    assert r.exit_code == 0, r.output
    return invoke


def test_cli_issue_sell_read_and_retry(run, counter: Counter) -> None:  # type: ignore[no-untyped-def]
    r = run("card", "readers")
    assert counter.reader_name in r.output
    r = run(
        "customer",
        "open",
        "--office",
        "E01",
        "--name",
        "赵敏",
        "--meter",
        "electric:200000000001",
        "--meter",
        "water.cold:200000000002",
        "--json",
    )
    assert r.exit_code == 0, r.output
    number = json.loads(r.output)["number"]
    card = blank_card()
    counter.present(card)
    counter.transport.close()  # type: ignore[union-attr]  # the command opens its own
    counter.transport = None
    r = run("card", "issue", "--customer", number, "--profile", "four")
    assert r.exit_code == 0, r.output
    assert "electric=200000000001" in r.output and "gas=-" in r.output
    r = run(
        "card",
        "sell",
        "--meter",
        "200000000001=12.50",
        "--meter",
        "water.cold=30",
        "--key",
        "cli-sale-1",
    )
    assert r.exit_code == 0, r.output
    assert "confirmed, total 42.50 yuan" in r.output
    again = run(
        "card",
        "sell",
        "--meter",
        "200000000001=12.50",
        "--meter",
        "water.cold=30",
        "--key",
        "cli-sale-1",
    )
    assert again.exit_code == 0 and "(already done)" in again.output
    r = run("card", "read", "--json")
    assert r.exit_code == 0, r.output
    slots = {s["label"]: s for s in json.loads(r.output)["slots"]}
    assert slots["electric"]["purchase"]["amount"] == 1250
    assert slots["water.cold"]["purchase"]["seq"] == 1
    r = run("ledger", "verify")
    assert r.exit_code == 0, r.output


def test_cli_errors_name_the_field_and_exit_1(run, counter: Counter) -> None:  # type: ignore[no-untyped-def]
    r = run("card", "sell", "--meter", "200000000001")
    assert r.exit_code == 1 and "write SERIAL=YUAN" in r.output
    r = run("card", "sell", "--meter", "200000000001=-5")
    assert r.exit_code == 1 and "items.0.amount" in r.output
    r = run("card", "read")  # nothing on the reader
    assert r.exit_code == 1 and "no card" in r.output.lower()
    r = run("card", "read", "--reader", "no such reader")
    assert r.exit_code == 1 and "no such reader" in r.output


def test_cli_pending_sale_after_a_pulled_card_is_finished(run, counter: Counter) -> None:  # type: ignore[no-untyped-def]
    r = run(
        "customer",
        "open",
        "--office",
        "E01",
        "--name",
        "周芷若",
        "--meter",
        "electric:300000000001",
        "--json",
    )
    number = json.loads(r.output)["number"]
    card = blank_card()
    counter.present(card)
    counter.transport.close()  # type: ignore[union-attr]
    counter.transport = None
    assert run("card", "issue", "--customer", number, "--profile", "four").exit_code == 0
    counter.slot.cut_after(14, execute=True)  # the first purchase write lands; no answer comes
    r = run("card", "sell", "--meter", "300000000001=20", "--key", "pulled")
    assert r.exit_code == 1 and "the sale is pending" in r.output, r.output
    assert "pulled" in run("card", "pending").output
    counter.present(card)
    counter.transport.close()  # type: ignore[union-attr]
    counter.transport = None
    r = run("card", "finish", "--sale", "pulled")
    assert r.exit_code == 0 and "confirmed" in r.output, r.output
    assert run("card", "pending").output.strip() == "no pending sales"


# The API ----------------------------------------------------------------------------------------

PASSWORDS = {"east": "east-pass-1", "west": "west-pass-1", "mgr": "mgr-pass-1"}


@pytest.fixture
def app(
    db_url: str, tmp_path: Path, counter: Counter, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    monkeypatch.setenv("ONECARD_KEK", KEK.hex())
    flask_app = create_app(
        {
            "database_url": db_url,
            "instance_path": tmp_path / "instance",
            "reader": counter.reader_name,
        },
    )
    rt: Runtime = flask_app.extensions[EXTENSION]
    with rt.sessions() as s, s.begin():
        ops.ensure_default_roles(s)
        off.create_office(s, ACTOR, code="GRP", name="Group")
        off.create_office(s, ACTOR, code="E01", name="East", parent="GRP")
        off.create_office(s, ACTOR, code="W01", name="West", parent="GRP")
        for name, role, office in [
            ("east", "cashier", "E01"),
            ("west", "cashier", "W01"),
            ("mgr", "manager", "E01"),
        ]:
            ops.create_operator(
                s, ACTOR, username=name, password=PASSWORDS[name], roles=[(role, office)]
            )
        KeyStore(KEK).init_site(s, 32, "api test")
    yield flask_app
    rt.close()


def client_for(app: Flask, who: str) -> FlaskClient:
    client = app.test_client()
    r = client.post("/api/v1/session", json={"username": who, "password": PASSWORDS[who]})
    assert r.status_code == 200, r.json
    return client


def test_api_issue_sell_read_and_refusals(app: Flask, counter: Counter) -> None:
    rt: Runtime = app.extensions[EXTENSION]
    number, serials = card_customer(rt.sessions, rt.plugins, ["electric", "gas", "heat"])
    east, west = client_for(app, "east"), client_for(app, "west")
    assert counter.reader_name in east.get("/api/v1/card/readers").json["readers"]
    profiles = east.get("/api/v1/card/profiles").json["profiles"]
    assert [p["code"] for p in profiles] == ["four", "six", "eight"]

    card = blank_card()
    counter.present(card)
    # another office's customer is answered exactly as an unknown one
    r = west.post("/api/v1/card/issue", json={"customer": number, "profile": "six"})
    unknown = west.post("/api/v1/card/issue", json={"customer": "E01-999999", "profile": "six"})
    assert r.status_code == unknown.status_code == 404
    assert r.json["message"].replace(number, "N") == unknown.json["message"].replace(
        "E01-999999", "N"
    )
    r = east.post("/api/v1/card/issue", json={"customer": number, "profile": "six"})
    assert r.status_code == 201, r.json
    body: dict[str, Any] = {
        "sale_key": "api-1",
        "items": [
            {"meter": serials[0], "amount_fen": 5000},
            {"meter": serials[2], "amount_fen": 7600},
        ],
    }
    # a cashier of another office gets nothing from this card
    r = west.post("/api/v1/card/sales", json=body)
    assert r.status_code == 403 and r.json["error"] == "permission_denied"
    r = west.post("/api/v1/card/read", json={})
    assert r.status_code == 403
    r = east.post("/api/v1/card/sales", json=body)
    assert r.status_code == 201, r.json
    heat = next(p for p in r.json["purchases"] if p["meter"] == serials[2])
    assert heat["units"] == 2000  # 76 yuan at 38 yuan/GJ: 2.000 GJ
    r = east.post("/api/v1/card/sales", json=body)
    assert r.status_code == 200 and r.json["replayed"]

    bad = {"sale_key": "api-2", "items": [{"meter": serials[1], "amount_fen": -1}]}
    r = east.post("/api/v1/card/sales", json=bad)
    assert r.status_code == 422 and "items" in r.json.get("field", "") + json.dumps(r.json)
    r = east.post(
        "/api/v1/card/sales",
        json={"sale_key": "api-3", "items": [{"meter": "999", "amount_fen": 100}]},
    )
    assert r.status_code == 422 and r.json["field"] == "items.0.meter"
    r = east.post(
        "/api/v1/card/sales",
        json={"sale_key": "api-4", "items": [{"meter": "water.purified", "amount_fen": 100}]},
    )
    assert r.status_code == 422 and "no water.purified slot" in r.json["message"]

    r = east.post("/api/v1/card/read", json={})
    assert r.status_code == 200
    assert {s["meter"]: s["purchase"]["seq"] for s in r.json["slots"] if s["meter"]} == {
        serials[0]: 1,
        serials[1]: 0,
        serials[2]: 1,
    }
    counter.take_away()
    r = east.post("/api/v1/card/read", json={})
    assert r.status_code == 409 and r.json["error"] == "no_card"
    r = east.post("/api/v1/card/read", json={"reader": "no such reader"})
    assert r.status_code == 503 and r.json["error"] == "no_reader"


def test_api_cancel_needs_a_manager(app: Flask, counter: Counter) -> None:
    rt: Runtime = app.extensions[EXTENSION]
    number, serials = card_customer(rt.sessions, rt.plugins, ["electric"])
    east = client_for(app, "east")
    card = blank_card()
    counter.present(card)
    assert (
        east.post("/api/v1/card/issue", json={"customer": number, "profile": "four"}).status_code
        == 201
    )
    r = east.post(
        "/api/v1/card/sales",
        json={"sale_key": "c-1", "items": [{"meter": serials[0], "amount_fen": 900}]},
    )
    pid = r.json["purchases"][0]["id"]
    no_manager = {
        "reason": "customer changed mind",
        "authorization": {"username": "east", "password": PASSWORDS["east"]},
    }
    r = east.post(f"/api/v1/card/purchases/{pid}/cancel", json=no_manager)
    assert r.status_code == 403 and "may not authorise" in r.json["message"]
    wrong = {"reason": "x", "authorization": {"username": "mgr", "password": "wrong-password"}}
    assert east.post(f"/api/v1/card/purchases/{pid}/cancel", json=wrong).status_code == 401
    ok = {
        "reason": "customer changed mind",
        "authorization": {"username": "mgr", "password": PASSWORDS["mgr"]},
    }
    r = east.post(f"/api/v1/card/purchases/{pid}/cancel", json=ok)
    assert r.status_code == 200, r.json
    assert r.json["status"] == "cancelled" and r.json["reversal_seq"] > 0
    r = east.post("/api/v1/card/read", json={})
    assert r.json["slots"][0]["purchase"]["seq"] == 0  # erased from the card
