"""The JSON API through Flask's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ACTOR, BUILTIN_PLUGINS, World, build_world
from flask import Flask
from flask.testing import FlaskClient
from helpers import ledger_state

from onecard import operators as ops
from onecard.runtime import Runtime
from onecard.web import EXTENSION, create_app

PASSWORDS = {
    "boss": "boss-pass-1",
    "east": "east-pass-1",
    "west": "west-pass-1",
    "audit": "audit-pass-1",
    "mgr": "mgr-pass-1",
}


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    flask_app = create_app(
        {"database_url": db_url, "instance_path": tmp_path / "instance"}, plugins=BUILTIN_PLUGINS
    )
    rt: Runtime = flask_app.extensions[EXTENSION]
    with rt.sessions() as s, s.begin():
        flask_app.config["WORLD"] = build_world(s, rt.plugins)
        for name, role, office in [
            ("boss", "administrator", None),
            ("east", "cashier", "E01"),
            ("west", "cashier", "W01"),
            ("audit", "auditor", "GRP"),
            ("mgr", "manager", "E01"),
        ]:
            ops.create_operator(
                s, ACTOR, username=name, password=PASSWORDS[name], roles=[(role, office)]
            )
    yield flask_app
    rt.close()


@pytest.fixture
def world(app: Flask) -> World:
    w: World = app.config["WORLD"]
    return w


def client_for(app: Flask, who: str) -> FlaskClient:
    client = app.test_client()
    r = client.post("/api/v1/session", json={"username": who, "password": PASSWORDS[who]})
    assert r.status_code == 200, r.json
    return client


def state(app: Flask) -> tuple[int, int, str, int]:
    rt: Runtime = app.extensions[EXTENSION]
    with rt.sessions() as s:
        return ledger_state(s)


def sale(client: FlaskClient, **body: Any) -> Any:
    payload = {"meter": "E0001", "amount_fen": 10000, "idempotency_key": "k1"} | body
    return client.post("/api/v1/sales", json={k: v for k, v in payload.items() if v is not None})


def test_index_and_healthz(app: Flask) -> None:
    assert app.test_client().get("/").json["api"] == "/api/v1"
    r = app.test_client().get("/healthz")
    assert r.status_code == 200
    assert r.json["status"] == "ok" and r.json["database"] == "ok"
    assert "water.purified" in r.json["utility_kinds"]


def test_login_logout_and_wrong_password(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/api/v1/session").status_code == 401
    r = client.post("/api/v1/session", json={"username": "east", "password": "wrong"})
    assert r.status_code == 401 and r.json["error"] == "authentication_failed"
    r = client.post("/api/v1/session", json={"username": "east"})
    assert r.status_code == 422 and r.json["field"] == "password"
    client = client_for(app, "east")
    me = client.get("/api/v1/session").json
    assert me["username"] == "east" and me["roles"] == [{"role": "cashier", "office": "E01"}]
    assert client.delete("/api/v1/session").status_code == 200
    assert client.get("/api/v1/session").status_code == 401


def test_session_expires_when_idle(app: Flask) -> None:
    client = client_for(app, "east")
    with client.session_transaction() as sess:
        sess["seen"] -= 31 * 60
    r = client.get("/api/v1/session")
    assert r.status_code == 401 and "expired" in r.json["message"]


def test_sale_and_idempotent_retry(app: Flask, world: World) -> None:
    client = client_for(app, "east")
    first = sale(client)
    assert first.status_code == 201 and first.json["created"] is True
    retry = sale(client)
    assert retry.status_code == 200 and retry.json["created"] is False
    assert retry.json["seq"] == first.json["seq"]
    shown = client.get(f"/api/v1/customers/{world.customer_number}").json
    electric = next(m for m in shown["meters"] if m["kind"] == "electric")
    assert electric["balance_fen"] == 10000 and electric["balance"] == "100.00"
    conflict = sale(client, amount_fen=20000)
    assert conflict.status_code == 409 and conflict.json["field"] == "idempotency_key"


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"amount_fen": -100}, "amount_fen", 422),
        ({"amount_fen": 0}, "amount_fen", 422),
        ({"amount_fen": 12.5}, "amount_fen", 422),
        ({"amount_fen": "100"}, "amount_fen", 422),
        ({"amount_fen": 10**12}, "amount_fen", 422),
        ({"amount_fen": None}, "amount_fen", 422),
        ({"idempotency_key": "has space"}, "idempotency_key", 422),
        ({"method": "cheque"}, "method", 422),
        ({"meter": None, "wallet": "wallet:meter:999"}, "wallet", 404),
        ({"meter": "NOPE"}, "meter", 404),
        ({"meter": None}, "wallet", 422),
        ({"surprise": 1}, "surprise", 422),
    ],
)
def test_bad_sales_are_refused_naming_the_field_and_write_nothing(
    app: Flask, body: dict[str, Any], field: str, status: int
) -> None:
    client = client_for(app, "east")
    before = state(app)
    r = sale(client, **body)
    assert r.status_code == status, r.json
    assert r.json["field"] == field
    assert field.split(".")[0] in r.json["message"]
    assert r.json["message"]
    assert state(app)[:3] == before[:3]


def test_non_json_bodies_are_refused(app: Flask) -> None:
    client = client_for(app, "east")
    r = client.post(
        "/api/v1/sales", data={"meter": "E0001", "amount_fen": "1", "idempotency_key": "k"}
    )
    assert r.status_code == 422 and r.json["field"] == "body"
    r = client.post("/api/v1/sales", data="[1, 2]", content_type="application/json")
    assert r.status_code == 422 and r.json["field"] == "body"


def test_office_scope_is_enforced(app: Flask, world: World) -> None:
    west = client_for(app, "west")
    assert west.get(f"/api/v1/customers/{world.customer_number}").status_code == 404
    assert west.get("/api/v1/customers?q=王").json["customers"] == []
    # Another office's meter or wallet is answered exactly as an unknown one, not as forbidden.
    r = sale(west)
    assert (r.status_code, r.json) == (
        404,
        sale(west, meter="NOPE").json | {"message": r.json["message"]},
    )
    assert r.json["message"] == "no meter with serial 'E0001'"
    mine, theirs = (
        sale(west, meter=None, wallet=world.wallets["electric"]),
        sale(west, meter=None, wallet="wallet:meter:999"),
    )
    assert mine.status_code == theirs.status_code == 404
    assert (
        mine.json.keys() == theirs.json.keys()
        and mine.json["detail"].keys() == theirs.json["detail"].keys()
    )
    east = client_for(app, "east")
    assert [c["number"] for c in east.get("/api/v1/customers?q=王").json["customers"]] == [
        world.customer_number
    ]
    assert east.get("/api/v1/customers?q=E9001").json["customers"] == []


def test_auditor_reads_but_changes_nothing(app: Flask, world: World) -> None:
    sale(client_for(app, "east"))
    audit = client_for(app, "audit")
    assert audit.get(f"/api/v1/customers/{world.customer_number}").status_code == 200
    assert sale(audit, idempotency_key="a1").status_code == 403
    r = audit.post("/api/v1/customers", json={"office": "E01", "name": "x"})
    assert r.status_code == 403
    verify = audit.get("/api/v1/ledger/verify")
    assert verify.status_code == 200 and verify.json["ok"] is True
    events = audit.get("/api/v1/audit?action=ledger.sale").json["events"]
    assert events[0]["actor"] == "east" and events[0]["detail"]["amount_fen"] == 10000
    assert client_for(app, "east").get("/api/v1/audit").status_code == 403


def test_reversal_needs_sale_correct_and_a_reason(app: Flask) -> None:
    seq = sale(client_for(app, "east")).json["seq"]
    body = {"reason_code": "operator_error", "idempotency_key": "rev-1"}
    assert (
        client_for(app, "east")
        .post(f"/api/v1/ledger/transactions/{seq}/reversal", json=body)
        .status_code
        == 403
    )
    mgr = client_for(app, "mgr")
    r = mgr.post(f"/api/v1/ledger/transactions/{seq}/reversal", json={"idempotency_key": "rev-1"})
    assert r.status_code == 422 and r.json["field"] == "reason_code"
    r = mgr.post(f"/api/v1/ledger/transactions/{seq}/reversal", json=body)
    assert r.status_code == 201 and r.json["kind"] == "reversal"
    assert mgr.post(f"/api/v1/ledger/transactions/{seq}/reversal", json=body).status_code == 200
    again = mgr.post(
        f"/api/v1/ledger/transactions/{seq}/reversal", json=body | {"idempotency_key": "rev-2"}
    )
    assert again.status_code == 409 and again.json["error"] == "already_reversed"
    assert mgr.get(f"/api/v1/ledger/transactions/{seq}").json["kind"] == "sale"


def test_open_account_via_api(app: Flask) -> None:
    client = client_for(app, "east")
    body = {
        "office": "E01",
        "name": "赵敏",
        "phone": "13900000002",
        "building": "3号楼",
        "unit": "202",
        "floor_area": 72.3,
        "meters": [{"kind": "electric", "serial": "E0100"}, {"kind": "gas", "serial": "G0100"}],
    }
    r = client.post("/api/v1/customers", json=body)
    assert r.status_code == 201, r.json
    assert r.json["number"].startswith("E01-") and len(r.json["meters"]) == 2
    assert r.json["premises"][0]["floor_area"] == "72.30"
    for bad, field in [
        ({"meters": [{"kind": "steam", "serial": "S1"}]}, "meters[0].kind"),
        ({"meters": [{"kind": "rent", "serial": "R1"}]}, "meters[0].kind"),
        ({"floor_area": True}, "floor_area"),
        ({"meters": [{"kind": "electric", "serial": "E0001"}]}, "meters[0].serial"),
        ({"floor_area": "-3"}, "floor_area"),
        ({"name": " "}, "name"),
        ({"office": "W01"}, None),
    ]:
        before = state(app)
        r = client.post("/api/v1/customers", json=body | {"meters": []} | bad)
        assert 400 <= r.status_code < 500, (bad, r.json)
        if field:
            assert r.json["field"] == field, r.json
        assert state(app)[:3] == before[:3]


def test_customer_shows_every_wallet_and_the_arrears(app: Flask, world: World) -> None:
    rt: Runtime = app.extensions[EXTENSION]
    from onecard import ledger

    with rt.sessions() as s, s.begin():
        ledger.consume(s, wallet=world.wallets["electric"], amount=700, idempotency_key="use")
    shown = client_for(app, "east").get(f"/api/v1/customers/{world.customer_number}").json
    purposes = {a["purpose"]: a["balance_fen"] for a in shown["accounts"]}
    assert purposes == {"shared_wallet": 0, "arrears": 700}


def test_plugins_endpoint_and_unknown_route(app: Flask) -> None:
    client = client_for(app, "boss")
    names = [p["name"] for p in client.get("/api/v1/plugins").json["plugins"]]
    assert names == ["electric", "gas", "heat", "rent", "water"]
    r = client.get("/api/v1/nothing")
    assert r.status_code == 404 and r.json["error"] == "not_found"


def test_login_failures_are_audited_and_lock(app: Flask) -> None:
    client = app.test_client()
    for _ in range(5):
        client.post("/api/v1/session", json={"username": "west", "password": "wrong-password"})
    r = client.post("/api/v1/session", json={"username": "west", "password": PASSWORDS["west"]})
    assert r.status_code == 401 and "locked" in r.json["message"]
    events = (
        client_for(app, "boss").get("/api/v1/audit?action=operator.login_failed").json["events"]
    )
    assert len(events) == 6


def test_sale_refused_for_suspended_customer_but_retry_answers(app: Flask, world: World) -> None:
    from onecard.models import Customer

    client = client_for(app, "east")
    assert sale(client, idempotency_key="before").status_code == 201
    rt: Runtime = app.extensions[EXTENSION]
    with rt.sessions() as s, s.begin():
        customer = s.get(Customer, world.customer_id)
        assert customer is not None
        customer.status = "suspended"
    before = state(app)
    r = sale(client, idempotency_key="after")
    assert r.status_code == 409 and r.json["field"] == "customer"
    assert "suspended" in r.json["message"]
    assert state(app) == before
    # a retry of the sale made before the suspension still answers as it did
    assert sale(client, idempotency_key="before").status_code == 200
