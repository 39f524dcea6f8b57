"""The demo's remote meters: a gateway of emulated Modbus meters and the reading service.

``onecard demo`` opens (once) three customers whose meters hang off the gateway ``demo-gw``,
serves those meters from the fleet emulator on 127.0.0.1, runs simulated time at 60x (an hour
of use a minute), and reads them every minute with the reading service: balances fall, alarms
cross, relays trip; a sale at the counter closes them again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from onecard import customers as cust
from onecard.audit import Actor
from onecard.fleet.server import Fleet
from onecard.fleet.sim import SimClock, SimMeter
from onecard.ledger import accounts as acc
from onecard.ledger import operations as ops
from onecard.models import Gateway, Meter, Office, RemoteMeter
from onecard.remote import inventory

ACTOR = Actor(name="demo")
GATEWAY = "demo-gw"
SPEED = 60  # simulated seconds per real second


def _modbus_kind(utilities: Any) -> Any:
    for kind in utilities:
        if "modbus" in kind.protocols and kind.protocols.get("modbus").models():
            return kind
    return None


def ensure_demo_remote(rt: Any) -> str:
    """Make the demo gateway, its customers and their meters once; return what was made."""
    kind = _modbus_kind(rt.utilities)
    if kind is None:
        return "no plugin offers Modbus meters: no remote meters in the demo"
    with rt.sessions() as session, session.begin():
        if session.execute(select(Gateway.id).where(Gateway.code == GATEWAY)).first():
            return ""
        office = (
            session.execute(select(Office).where(Office.parent_id.is_not(None))).scalars().first()
        )
        if office is None:
            return "no office for the remote meters"
        group = inventory.ensure_group(session, "demo", 1)
        gateway = inventory.add_gateway(
            session,
            ACTOR,
            code=GATEWAY,
            transport="tcp",
            host="127.0.0.1",
            port=15502,
            timeout_ms=500,
            retries=1,
        )
        gateway.group_id = group.id
        for i, credit in enumerate((3000, 800, 300), start=1):
            customer = cust.open_account(
                session,
                ACTOR,
                rt.utilities,
                office=office.code,
                name=f"远程用户{i}",
                building="远程楼",
                unit=f"{i:03d}",
                meters=[cust.MeterSpec(kind.code, f"RM{i:04d}")],
            )
            meter = customer.premises[0].meters[0]
            session.flush()
            ops.sale(
                session,
                wallet=acc.meter_wallet_code(meter.id),
                amount=credit,
                office_id=office.id,
                idempotency_key=f"demo-remote-sale-{i}",
            )
            inventory.attach(
                session,
                rt.utilities,
                meter,
                gateway,
                protocol="modbus",
                address=str(i),
            )
    return f"remote meters: gateway {GATEWAY} with 3 Modbus meters, read every minute"


class DemoRemote:
    """The emulated meters and the reading service, in background threads."""

    def __init__(self, rt: Any, *, port: int = 15502) -> None:
        self.rt = rt
        self.port = port
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.fleet: Fleet | None = None

    def start(self) -> str:
        from onecard.remote.cli import make_service

        rt = self.rt
        kind = _modbus_kind(rt.utilities)
        with rt.sessions() as session:
            rows = session.execute(
                select(RemoteMeter, Meter)
                .join(Meter, Meter.id == RemoteMeter.meter_id)
                .join(Gateway, Gateway.id == RemoteMeter.gateway_id)
                .where(Gateway.code == GATEWAY)
            ).all()
            sims = [
                SimMeter(
                    address=r.address,
                    kind=m.kind,
                    model=m.model,
                    serial=m.serial,
                    cumulative=Decimal(r.last_cumulative or 0) / 100,
                    rate=Decimal("1.5"),
                )
                for r, m in rows
            ]
        if kind is None or not sims:
            return "no demo remote meters"
        fleet = Fleet(SimClock(dt.datetime.now(dt.UTC)))
        port = fleet.add_port("demo", kind.protocols.get("modbus"), meters=sims, port=self.port)
        self.fleet = fleet
        context = fleet.running()
        context.__enter__()
        self._fleet_context = context
        with rt.sessions() as session, session.begin():
            inventory.get_gateway(session, GATEWAY).port = port.port

        def tick() -> None:
            while not self.stop_event.wait(5):
                fleet.advance(dt.timedelta(seconds=5 * SPEED))

        def serve() -> None:
            service = make_service(rt, owner="demo")

            async def main() -> None:
                scheduler = service.start()
                while not self.stop_event.is_set():
                    await asyncio.sleep(0.5)
                scheduler.shutdown(wait=False)

            asyncio.run(main())

        for target in (tick, serve):
            thread = threading.Thread(target=target, daemon=True, name=f"demo-{target.__name__}")
            thread.start()
            self.threads.append(thread)
        return f"emulated remote meters on 127.0.0.1:{port.port}, read every minute"

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(5)
        if self.fleet is not None:
            self._fleet_context.__exit__(None, None, None)
