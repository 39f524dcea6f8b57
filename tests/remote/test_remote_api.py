"""The remote-meter API: list, manual commands with their audit events and permissions, remote
recharge."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from test_api import app, client_for, state, world  # noqa: F401  (fixtures)

from onecard import lifecycle
from onecard.fleet.server import Fleet
from onecard.fleet.sim import SimClock
from onecard.ledger.verify import verify
from onecard.models import AuditEvent, RelayCommand, RemoteRecharge
from onecard.remote import inventory
from onecard.web import EXTENSION

from .conftest import ACTOR, START, attach_meter, meter


def test_gateway_counts_are_the_operators_own(app) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A gateway carrying meters of two offices: each office's operator sees it, counting only
    their own office's meters; an operator of every office counts them all."""
    rt = app.extensions[EXTENSION]
    fleet = Fleet(SimClock(START))
    fleet.add_port("bus", rt.utilities.get("electric").protocols.get("modbus"), meters=[meter("4")])
    with fleet.running():  # the gateway's port is the running emulator's
        for serial, address in (("E0001", "4"), ("E9001", "5")):  # east's customer, west's
            attach_meter(
                rt.sessions,
                rt.plugins,
                gateway="g",
                port=fleet.ports["bus"].port,
                serial=serial,
                address=address,
            )
    east, west, audit = (client_for(app, who) for who in ("east", "west", "audit"))

    def counts(client):  # type: ignore[no-untyped-def]
        gateways = client.get("/api/v1/remote/gateways").json["gateways"]
        return [(g["code"], g["meters"], g["stale"], g["alarm"]) for g in gateways]

    assert counts(audit) == [("g", 2, 0, 0)]
    assert counts(east) == [("g", 1, 0, 0)]
    assert counts(west) == [("g", 1, 0, 0)]
    assert [m["meter"] for m in west.get("/api/v1/remote/meters").json["meters"]] == [
        "electric:E9001"
    ]


def test_trip_keep_close_through_the_api(app) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    rt = app.extensions[EXTENSION]
    fleet = Fleet(SimClock(START))
    sim = meter("4")
    fleet.add_port("bus", rt.utilities.get("electric").protocols.get("modbus"), meters=[sim])
    with fleet.running():
        attach_meter(
            rt.sessions,
            rt.plugins,
            gateway="g",
            port=fleet.ports["bus"].port,
            serial="E0001",
            address="4",
        )
        east, west, audit = (client_for(app, who) for who in ("east", "west", "audit"))
        listed = audit.get("/api/v1/remote/meters").json["meters"]
        assert [m["meter"] for m in listed] == ["electric:E0001"]
        gateways = audit.get("/api/v1/remote/gateways").json["gateways"]
        assert [(g["code"], g["meters"], g["stale"]) for g in gateways] == [("g", 1, 0)]
        # an operator sees the meters of their offices' customers, and the gateways carrying them
        assert [m["meter"] for m in east.get("/api/v1/remote/meters").json["meters"]] == [
            "electric:E0001"
        ]
        assert [g["code"] for g in east.get("/api/v1/remote/gateways").json["gateways"]] == ["g"]
        assert west.get("/api/v1/remote/meters").json["meters"] == []
        assert west.get("/api/v1/remote/gateways").json["gateways"] == []
        mgr = client_for(app, "mgr")
        r = mgr.post("/api/v1/remote/meters/E0001/trip", json={})
        assert r.status_code == 422 and r.json["field"] == "reason"
        r = east.post("/api/v1/remote/meters/E0001/trip", json={"reason": "x"})
        assert r.status_code == 403  # a cashier does not control meters
        assert (
            west.post("/api/v1/remote/meters/E0001/trip", json={"reason": "x"}).status_code == 403
        )
        assert (
            audit.post("/api/v1/remote/meters/E0001/trip", json={"reason": "x"}).status_code == 403
        )
        r = mgr.post("/api/v1/remote/meters/E0001/trip", json={"reason": "unpaid arrears"})
        assert r.status_code == 200, r.json
        assert r.json["relay"] == "open" and not sim.relay_closed
        r = mgr.post("/api/v1/remote/meters/E0001/keep", json={"reason": "patient at home"})
        assert r.status_code == 200 and sim.keep_power and sim.relay_closed
        r = mgr.post("/api/v1/remote/meters/E0001/release", json={"reason": "patient moved"})
        assert r.status_code == 200 and not sim.keep_power
        with rt.sessions() as s:
            commands = [
                c.command for c in s.scalars(select(RelayCommand).order_by(RelayCommand.id))
            ]
            assert commands == ["trip", "keep", "release"]
            actions = [a.action for a in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
            assert actions[-3:] == ["meter.trip", "meter.keep", "meter.release"]
            # the customer's account history tells the counter what was done to the meter
            history = lifecycle.account_history(s, app.config["WORLD"].customer_id)
            assert [(e.action, e.detail["reason"], e.office_id) for e in history[:3]] == [
                ("meter.release", "patient moved", app.config["WORLD"].office_id),
                ("meter.keep", "patient at home", app.config["WORLD"].office_id),
                ("meter.trip", "unpaid arrears", app.config["WORLD"].office_id),
            ]


def test_remote_recharge_through_the_api(app) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    rt = app.extensions[EXTENSION]
    fleet = Fleet(SimClock(START))
    sim = meter("5", remaining=Decimal("10.00"), price=Decimal("0.5"))
    fleet.add_port("bus", rt.utilities.get("electric").protocols.get("modbus"), meters=[sim])
    url = "/api/v1/remote/meters/E0001/recharges"
    with fleet.running():
        meter_id = attach_meter(
            rt.sessions, rt.plugins, gateway="g", port=fleet.ports["bus"].port,
            serial="E0001", address="5", billing="meter",
        )  # fmt: skip
        east, west, audit = (client_for(app, who) for who in ("east", "west", "audit"))
        before = state(app)
        for payload, field in [
            ({"idempotency_key": "r1"}, "amount_fen"),
            ({"amount_fen": 0, "idempotency_key": "r1"}, "amount_fen"),
            ({"amount_fen": "50", "idempotency_key": "r1"}, "amount_fen"),
            ({"amount_fen": 5000}, "idempotency_key"),
            ({"amount_fen": 5000, "idempotency_key": "r1", "method": "iou"}, "method"),
        ]:
            r = east.post(url, json=payload)
            assert r.status_code == 422 and r.json["field"] == field, (payload, r.json)
        r = west.post(url, json={"amount_fen": 5000, "idempotency_key": "r1"})
        assert r.status_code == 404 and r.json["field"] == "meter"  # another office's meter
        assert (
            audit.post(url, json={"amount_fen": 5000, "idempotency_key": "r1"}).status_code == 403
        )
        assert state(app) == before  # nothing sold by a refused request
        assert sim.recharge_count == 0

        r = east.post(url, json={"amount_fen": 5000, "idempotency_key": "r1"})
        assert r.status_code == 201, r.json
        assert (r.json["status"], r.json["count"], r.json["created"]) == ("accepted", 1, True)
        assert (sim.recharge_count, sim.remaining) == (1, Decimal("60.00"))
        again = east.post(url, json={"amount_fen": 5000, "idempotency_key": "r1"})
        assert again.status_code == 200
        assert (again.json["status"], again.json["count"], again.json["created"]) == (
            "accepted",
            1,
            False,
        )
        assert (sim.recharge_count, sim.remaining) == (1, Decimal("60.00"))  # not sold twice
        with rt.sessions() as s:
            push = s.scalars(select(RemoteRecharge)).one()
            assert (push.meter_id, push.amount, push.status) == (meter_id, 5000, "accepted")
            actions = [a.action for a in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
            assert actions.count("meter.recharge") == 1
            history = lifecycle.account_history(s, app.config["WORLD"].customer_id)
            assert [(e.action, e.objects) for e in history[:1]] == [
                ("meter.recharge", ["meter:electric:E0001"])
            ]
            assert verify(s).ok


def test_a_meter_at_no_premises_is_run_by_its_gateways_office(app) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A public-area meter (imported with no customer) on a gateway of E01 is listed, counted and
    controlled by E01 and audited there, but has no one to sell to; on a gateway of no office it
    is for operators of every office only."""
    rt = app.extensions[EXTENSION]
    fleet = Fleet(SimClock(START))
    public, spare = meter("4"), meter("5")
    fleet.add_port(
        "bus", rt.utilities.get("electric").protocols.get("modbus"), meters=[public, spare]
    )
    with fleet.running():
        port = fleet.ports["bus"].port
        text = (
            "gateway,transport,host,port,office,meter,kind,protocol,address,model\n"
            f"pub,tcp,127.0.0.1,{port},E01,P0001,electric,modbus,4,acrel-ddsy1352\n"
            f"nowhere,tcp,127.0.0.1,{port},,P0002,electric,modbus,5,acrel-ddsy1352\n"
        )
        with rt.sessions() as s, s.begin():
            inventory.import_csv(s, ACTOR, rt.utilities, text)
        east, west, mgr, boss = (client_for(app, w) for w in ("east", "west", "mgr", "boss"))

        def listed(client):  # type: ignore[no-untyped-def]
            meters = [m["meter"] for m in client.get("/api/v1/remote/meters").json["meters"]]
            gateways = client.get("/api/v1/remote/gateways").json["gateways"]
            return meters, [(g["code"], g["meters"]) for g in gateways]

        assert listed(east) == (["electric:P0001"], [("pub", 1)])
        assert listed(west) == ([], [])
        assert listed(boss) == (
            ["electric:P0002", "electric:P0001"],
            [("nowhere", 1), ("pub", 1)],
        )
        r = mgr.post("/api/v1/remote/meters/P0001/trip", json={"reason": "stairwell rewiring"})
        assert r.status_code == 200 and r.json["relay"] == "open" and not public.relay_closed
        r = mgr.post("/api/v1/remote/meters/P0002/trip", json={"reason": "x"})
        assert r.status_code == 403 and spare.relay_closed  # no office: not E01's to control
        r = east.post(
            "/api/v1/remote/meters/P0001/recharges",
            json={"amount_fen": 5000, "idempotency_key": "pub-1"},
        )
        assert r.status_code == 422 and r.json["field"] == "meter", r.json
        assert "no customer" in r.json["message"]
        with rt.sessions() as s:
            trip = s.scalars(select(AuditEvent).where(AuditEvent.action == "meter.trip")).one()
            assert (trip.office_id, trip.customer_id) == (app.config["WORLD"].office_id, None)
            assert s.scalars(select(RemoteRecharge)).all() == []
