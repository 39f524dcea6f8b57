"""The remote-meter API: list, manual commands with their audit events and permissions."""

from __future__ import annotations

from sqlalchemy import select
from test_api import app, client_for, world  # noqa: F401  (fixtures)

from onecard.fleet.server import Fleet
from onecard.fleet.sim import SimClock
from onecard.models import AuditEvent, RelayCommand
from onecard.web import EXTENSION

from .conftest import START, attach_meter, meter


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
