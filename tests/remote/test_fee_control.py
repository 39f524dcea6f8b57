"""Server-side fee control end to end: emulated Modbus meters over TCP, the reading service,
the ledger, alarms by e-mail through a real SMTP server, trip and close."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from email import message_from_bytes
from email.header import decode_header, make_header

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard.config import load_settings
from onecard.ledger.verify import verify
from onecard.models import (
    Customer,
    LedgerTransaction,
    MeterEvent,
    MeterReading,
    Notification,
    RelayCommand,
    RemoteMeter,
)
from onecard.plugins import Plugins

from .conftest import ACTOR, attach_meter, credit, make_service, meter, modbus_port, sell


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[bytes]]]:
    from aiosmtpd.controller import Controller

    received: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
            received.append(envelope.original_content or envelope.content)
            return "250 OK"

    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


def _subjects(received: list[bytes]) -> list[str]:
    return [str(make_header(decode_header(message_from_bytes(m)["Subject"]))) for m in received]


def test_consumption_drives_alarms_email_trip_and_recharge_close(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet, smtp, tmp_path
) -> None:
    port_no, received = smtp
    sim = meter("1")  # 10 kWh an hour at 0.50 yuan: 5 yuan an hour
    port = modbus_port(fleet, plugins, "bus1", [sim])
    with sessions() as session, session.begin():
        customer = session.get(Customer, world.customer_id)
        customer.email = "wangfang@example.com"
        sell(session, world, 3000, "sale-1")
    settings = load_settings(
        {"instance_path": str(tmp_path), "smtp_host": "127.0.0.1", "smtp_port": port_no}
    )
    with fleet.running():
        meter_id = attach_meter(
            sessions, plugins, gateway="gw1", port=port.port, serial="E0001", address="1"
        )
        service = make_service(sessions, plugins, fleet, settings)

        def cycle() -> None:
            report = asyncio.run(service.cycle_all())[0]
            assert report.read == 1, report

        cycle()  # the baseline: nothing priced
        levels = []
        for hours in (1, 1, 3, 1, 1):
            fleet.advance(dt.timedelta(hours=hours))
            cycle()
            with sessions() as session:
                levels.append(session.get(RemoteMeter, meter_id).alarm_level)
        # credit 30 -> 25 (0) -> 20 (alarm 1) -> 5 (alarm 2) -> 0 (exhausted) -> tripped, no use
        assert levels == [0, 1, 2, 3, 3]
        assert sim.relay_closed is False
        with sessions() as session:
            assert credit(session, meter_id) == 0
            remote = session.get(RemoteMeter, meter_id)
            assert remote.tripped == "auto" and remote.relay == "open"
            events = [e.event for e in session.scalars(select(MeterEvent).order_by(MeterEvent.id))]
            assert events == ["alarm1", "alarm2", "exhausted", "trip"]
            assert session.scalar(select(func.count()).select_from(Notification)) == 3
            # each interval's cost posted once: 5 + 5 + 15 + 5 yuan
            consumed = session.scalars(
                select(LedgerTransaction).where(LedgerTransaction.kind == "consume")
            ).all()
            assert len(consumed) == 4
            assert sorted(-p.amount for t in consumed for p in t.postings if p.amount < 0) == [
                500,
                500,
                500,
                1500,
            ]
        assert len(received) == 3
        subjects = _subjects(received)
        assert "余额不足提醒" in subjects[0] and "E0001" in subjects[0]
        assert "余额严重不足" in subjects[1]
        assert "余额已用尽" in subjects[2]

        # a recharge brings credit back: the next cycle closes the relay
        with sessions() as session, session.begin():
            sell(session, world, 5000, "sale-2")
        fleet.advance(dt.timedelta(minutes=30))
        cycle()
        assert sim.relay_closed is True
        with sessions() as session:
            remote = session.get(RemoteMeter, meter_id)
            assert remote.tripped is None and remote.alarm_level == 0
            commands = session.scalars(select(RelayCommand).order_by(RelayCommand.id)).all()
            assert [(c.command, c.status, c.relay_after) for c in commands] == [
                ("trip", "done", "open"),
                ("close", "done", "closed"),
            ]
            assert verify(session).ok
        # no more notices for levels already crossed; a new crossing notifies again
        assert len(received) == 3


def test_a_retried_cycle_prices_nothing_twice(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet
) -> None:
    sim = meter("7", rate=Decimal(2))
    port = modbus_port(fleet, plugins, "bus", [sim])
    with sessions() as session, session.begin():
        sell(session, world, 100000, "sale")
    with fleet.running():
        meter_id = attach_meter(
            sessions, plugins, gateway="g", port=port.port, serial="E0001", address="7"
        )
        service = make_service(sessions, plugins, fleet)
        asyncio.run(service.cycle_all())
        fleet.advance(dt.timedelta(hours=5))
        asyncio.run(service.cycle_all())
        asyncio.run(service.cycle_all())  # the same counter read again: nothing new
        with sessions() as session:
            assert credit(session, meter_id) == 100000 - 500  # 10 kWh at 0.50
            assert session.scalar(select(func.count()).select_from(MeterReading)) == 2


def test_keep_power_holds_the_relay_and_no_trip_hours_wait(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet
) -> None:
    kept, night = meter("1"), meter("2")
    port = modbus_port(fleet, plugins, "bus", [kept, night])
    with fleet.running():
        a = attach_meter(
            sessions,
            plugins,
            gateway="g",
            port=port.port,
            serial="E0001",
            address="1",
            keep_power=True,
        )
        b = attach_meter(
            sessions,
            plugins,
            gateway="g",
            port=port.port,
            serial="E9001",
            address="2",
            no_trip_hours="00:00-23:59",
        )
        service = make_service(sessions, plugins, fleet)
        asyncio.run(service.cycle_all())
        fleet.advance(dt.timedelta(hours=1))
        asyncio.run(service.cycle_all())
        with sessions() as session:
            for meter_id in (a, b):
                remote = session.get(RemoteMeter, meter_id)
                assert remote.alarm_level == 3 and remote.tripped is None
        assert kept.relay_closed and night.relay_closed


def test_a_bypassed_relay_raises_an_alarm(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet
) -> None:
    sim = meter("3", relay_stuck=True)
    port = modbus_port(fleet, plugins, "bus", [sim])
    with fleet.running():
        meter_id = attach_meter(
            sessions, plugins, gateway="g", port=port.port, serial="E0001", address="3"
        )
        service = make_service(sessions, plugins, fleet)
        report = asyncio.run(service.cycle_all())[0]  # no credit at all: tripped at once
        assert report.commands[0]["status"] == "mismatch"  # the relay still reads closed
        fleet.advance(dt.timedelta(hours=1))
        asyncio.run(service.cycle_all())
        with sessions() as session:
            remote = session.get(RemoteMeter, meter_id)
            assert remote.bypass and remote.relay == "closed"
            assert "bypass" in [e.event for e in session.scalars(select(MeterEvent))]


def test_manual_trip_close_and_keep_are_audited(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet
) -> None:
    from onecard.models import AuditEvent

    sim = meter("5")
    port = modbus_port(fleet, plugins, "bus", [sim])
    with fleet.running():
        meter_id = attach_meter(
            sessions, plugins, gateway="g", port=port.port, serial="E0001", address="5"
        )
        service = make_service(sessions, plugins, fleet)
        out = asyncio.run(service.manual(meter_id, "trip", ACTOR, "meter tampering inspection"))
        assert out["status"] == "done" and out["relay"] == "open" and not sim.relay_closed
        out = asyncio.run(service.manual(meter_id, "close", ACTOR, "inspection over"))
        assert out["status"] == "done" and sim.relay_closed
        out = asyncio.run(service.manual(meter_id, "keep", ACTOR, "hospital patient at home"))
        assert sim.keep_power
        with sessions() as session:
            assert session.get(RemoteMeter, meter_id).keep_power
            actions = [
                e.action for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
            ]
            assert actions[-3:] == ["meter.trip", "meter.close", "meter.keep"]
        with pytest.raises(Exception, match="reason"):
            asyncio.run(service.manual(meter_id, "trip", ACTOR, " "))


def test_a_tariff_version_added_while_the_service_runs_is_priced_from_the_next_round(
    sessions: sessionmaker[Session], plugins: Plugins, world
) -> None:
    """The service caches compiled tariffs between batches, and drops them at each round of
    cycles (and each minute's job sync), so a new price is not missed until a restart."""
    from onecard import tariffs
    from onecard.remote.fees import Context

    from .conftest import flat_tariff

    attach_meter(sessions, plugins, gateway="g", port=502, serial="E0001", address="1")
    ctx = Context(plugins.utilities)
    with sessions() as session:
        before = ctx.schedule(session, "electric", None)
    assert before is not None
    with sessions() as session, session.begin():
        newer = {**flat_tariff("electric", "0.8"), "effective_from": "2026-06-01T00:00:00+08:00"}
        tariffs.add_version(session, ACTOR, plugins.utilities, newer, allow_past=True)
    with sessions() as session:
        assert ctx.schedule(session, "electric", None) is before  # cached
        ctx.forget()
        after = ctx.schedule(session, "electric", None)
    assert after is not None and len(after.versions) == len(before.versions) + 1
