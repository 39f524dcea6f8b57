"""A sale closes a relay the service tripped within seconds (ReadingService.restore), not at the
next scheduled cycle; and a scheduled cycle waits briefly for a gateway held by a short job."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard.fleet.sim import SimMeter
from onecard.ledger import accounts as acc
from onecard.ledger.verify import verify
from onecard.models import LedgerTransaction, RelayCommand, RemoteMeter
from onecard.plugins import Plugins
from onecard.remote import inventory, lease
from onecard.remote.service import BUSY_WAIT, ReadingService

from .conftest import ACTOR, attach_meter, credit, make_service, meter, modbus_port, sell


@pytest.fixture
def tripped(sessions: sessionmaker[Session], plugins: Plugins, world, fleet) -> Iterator[Tripped]:
    """E0001, an emulated meter on gateway ``g``, sold 5 yuan of credit, read, then an hour used
    (10 kWh at 0.50): the credit is gone and the service has tripped the relay. The emulator
    runs while the test does."""
    sim = meter("1")
    port = modbus_port(fleet, plugins, "bus", [sim])
    with fleet.running():
        with sessions() as session, session.begin():
            sell(session, world, 500, "sale-1")
        meter_id = attach_meter(
            sessions, plugins, gateway="g", port=port.port, serial="E0001", address="1"
        )
        service = make_service(sessions, plugins, fleet)
        asyncio.run(service.cycle_all())  # the baseline
        fleet.advance(dt.timedelta(hours=1))
        asyncio.run(service.cycle_all())
        with sessions() as session:
            remote = session.get(RemoteMeter, meter_id)
            assert remote.tripped == "auto" and remote.alarm_level == 3, remote.last_error
        assert not sim.relay_closed
        yield Tripped(sim, meter_id, service)


@dataclass
class Tripped:
    sim: SimMeter
    meter_id: int
    service: ReadingService


def test_a_sale_closes_the_tripped_relay_at_once(
    sessions: sessionmaker[Session], world, fleet, tripped: Tripped
) -> None:
    sim, meter_id, service = tripped.sim, tripped.meter_id, tripped.service
    with sessions() as session:
        assert service.due_to_restore(session) == {}  # no credit: nothing to restore
    assert asyncio.run(service.restore()) == []

    fleet.advance(dt.timedelta(minutes=6))  # the customer comes to the counter and pays
    with sessions() as session, session.begin():
        sell(session, world, 5000, "sale-2")
    with sessions() as session:
        gateway_id = inventory.get_gateway(session, "g").id
        assert service.due_to_restore(session) == {gateway_id: [meter_id]}
    reports = asyncio.run(service.restore())
    assert [(r.gateway, r.read, r.priced) for r in reports] == [("g", 1, 0)]
    assert [(c["what"], c["status"]) for c in reports[0].commands] == [("close", "done")]
    assert sim.relay_closed
    with sessions() as session:
        remote = session.get(RemoteMeter, meter_id)
        assert remote.tripped is None and remote.relay == "closed"
        assert remote.alarm_level == 0
        assert credit(session, meter_id) == 5000  # the open relay used nothing
        commands = session.scalars(select(RelayCommand).order_by(RelayCommand.id)).all()
        assert [(c.command, c.source, c.status) for c in commands] == [
            ("trip", "auto", "done"),
            ("close", "auto", "done"),
        ]
        assert verify(session).ok
        assert service.due_to_restore(session) == {}  # closed: nothing left to do
    assert asyncio.run(service.restore()) == []


def test_a_sale_too_small_is_read_once_and_waits(
    sessions: sessionmaker[Session], world, fleet, tripped: Tripped
) -> None:
    """A sale that the use since the trip swallows: the meter is read, stays tripped, and is
    not read again before ``restore_after``; the reading is priced once."""
    sim, meter_id, service = tripped.sim, tripped.meter_id, tripped.service
    sim.relay_closed = True  # a meter left closed by hand ...
    fleet.advance(dt.timedelta(hours=1))  # ... used 10 kWh (5 yuan) more before the sale
    sim.relay_closed = False
    with sessions() as session, session.begin():
        sell(session, world, 100, "sale-2")  # 1 yuan
    reports = asyncio.run(service.restore())
    assert [(r.read, r.commands) for r in reports] == [(1, [])]
    assert not sim.relay_closed
    with sessions() as session:
        remote = session.get(RemoteMeter, meter_id)
        assert remote.tripped == "auto" and remote.alarm_level == 3
        consumed = session.scalars(
            select(LedgerTransaction).where(LedgerTransaction.kind == "consume")
        ).all()
        assert len(consumed) == 2  # the first hour, and what the 1 yuan could pay of this
        assert credit(session, meter_id) == 0
        assert service.due_to_restore(session) == {}
    # a bigger sale: still not before a minute has passed since the last attempt
    with sessions() as session, session.begin():
        sell(session, world, 5000, "sale-3")
    with sessions() as session:
        assert service.due_to_restore(session) == {}
    fleet.advance(dt.timedelta(seconds=61))
    reports = asyncio.run(service.restore())
    assert [c["what"] for c in reports[0].commands] == ["close"]
    assert sim.relay_closed


def test_an_operators_trip_and_a_meter_billed_by_itself_are_left_alone(
    sessions: sessionmaker[Session], world, fleet, tripped: Tripped
) -> None:
    sim, meter_id, service = tripped.sim, tripped.meter_id, tripped.service
    asyncio.run(service.manual(meter_id, "trip", ACTOR, "tampered seal"))
    with sessions() as session, session.begin():
        assert session.get(RemoteMeter, meter_id).tripped == "manual"  # now an operator's trip
        sell(session, world, 5000, "sale-2")
    fleet.advance(dt.timedelta(minutes=5))
    with sessions() as session:
        assert service.due_to_restore(session) == {}
    with sessions() as session, session.begin():
        remote = session.get(RemoteMeter, meter_id)
        remote.tripped, remote.billing = "auto", "meter"
    with sessions() as session:
        assert service.due_to_restore(session) == {}
    assert not sim.relay_closed


def test_an_overdraft_counts_as_credit(
    sessions: sessionmaker[Session], world, fleet, tripped: Tripped
) -> None:
    """A wallet granted an overdraft after the trip: the meter may draw on it, so it closes."""
    sim, service = tripped.sim, tripped.service
    fleet.advance(dt.timedelta(minutes=5))
    with sessions() as session, session.begin():
        acc.get_account(session, world.wallets["electric"]).overdraft = 2000
    reports = asyncio.run(service.restore())
    assert [c["what"] for c in reports[0].commands] == ["close"]
    assert sim.relay_closed


def test_a_cycle_waits_for_a_short_holder(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet
) -> None:
    """A scheduled cycle finding the gateway held (a manual command, a restore) waits up to its
    ``wait`` instead of skipping the gateway until its next run."""
    sim = meter("1", rate=Decimal(1))
    port = modbus_port(fleet, plugins, "bus", [sim])
    with fleet.running():
        attach_meter(sessions, plugins, gateway="g", port=port.port, serial="E0001", address="1")
        service = make_service(sessions, plugins, fleet)
        with sessions() as session, session.begin():
            gateway_id = inventory.get_gateway(session, "g").id
            token = lease.acquire(
                session, gateway_id, "other", now=fleet.clock.now(), ttl=dt.timedelta(minutes=5)
            )
        assert token is not None
        assert asyncio.run(service.cycle(gateway_id)).busy == "other"

        async def held_briefly() -> object:
            async def give_back() -> None:
                await asyncio.sleep(0.6)
                with sessions() as session, session.begin():
                    lease.release(session, gateway_id, "other", token)

            releasing = asyncio.create_task(give_back())
            report = await service.cycle(gateway_id, wait=5)
            await releasing
            return report

        report = asyncio.run(held_briefly())
        assert report.busy is None and report.read == 1  # type: ignore[attr-defined]


def test_the_schedule_has_the_restore_job(
    sessions: sessionmaker[Session], plugins: Plugins, world
) -> None:
    """``start()`` adds the restore job every ``restore_seconds`` (none for 0), and the gateway
    jobs wait :data:`BUSY_WAIT` seconds for a held gateway."""
    attach_meter(sessions, plugins, gateway="g", port=502, serial="E0001", address="1")

    async def jobs(**options: object) -> dict[str, object]:
        service = ReadingService(sessions, plugins.utilities, **options)  # type: ignore[arg-type]
        scheduler = service.start()
        try:  # shut down before the loop runs anything: no job starts
            return {job.id: job for job in scheduler.get_jobs()}
        finally:
            scheduler.shutdown(wait=False)

    found = asyncio.run(jobs())
    assert found["restore"].trigger.interval == dt.timedelta(seconds=10)  # type: ignore[attr-defined]
    gateway_jobs = [job for name, job in found.items() if name.startswith("gateway-")]
    assert [job.kwargs for job in gateway_jobs] == [{"minutes": 30, "wait": BUSY_WAIT}]  # type: ignore[attr-defined]
    assert "restore" not in asyncio.run(jobs(restore_seconds=0))
