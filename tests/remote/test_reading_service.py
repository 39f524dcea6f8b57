"""The reading service under trouble: restarts mid-cycle, two instances, bad meters and gateways,
the CSV import, stale marking and the archive."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard.ledger import accounts as acc
from onecard.ledger import operations as ops
from onecard.ledger.verify import verify
from onecard.models import (
    Gateway,
    LedgerTransaction,
    Meter,
    MeterEvent,
    MeterReading,
    MeterReadingArchive,
    RemoteMeter,
)
from onecard.plugins import Plugins
from onecard.remote import inventory
from onecard.remote.service import ReadingService

from .conftest import ACTOR, attach_meter, make_service, meter, modbus_port

ONECARD = Path(sys.executable).with_name("onecard")


def _fund(sessions: sessionmaker[Session], wallet: str, office_id: int, fen: int, key: str) -> None:
    with sessions() as session, session.begin():
        ops.sale(session, wallet=wallet, amount=fen, office_id=office_id, idempotency_key=key)


def _open_meters(sessions: sessionmaker[Session], plugins: Plugins, count: int) -> list[str]:
    from onecard import customers as cust

    serials = [f"K{i:04d}" for i in range(count)]
    with sessions() as session, session.begin():
        for serial in serials:
            customer = cust.open_account(
                session,
                ACTOR,
                plugins.utilities,
                office="E01",
                name=f"户{serial}",
                meters=[cust.MeterSpec("electric", serial)],
            )
            meter_id = customer.premises[0].meters[0].id
            session.flush()
            ops.sale(
                session,
                wallet=acc.meter_wallet_code(meter_id),
                amount=100000,
                office_id=customer.office_id,
                idempotency_key=f"sale-{serial}",
            )
    return serials


def _consumed_by_meter(session: Session) -> dict[int, int]:
    out: dict[int, int] = {}
    for txn in session.scalars(
        select(LedgerTransaction).where(LedgerTransaction.kind == "consume")
    ):
        for posting in txn.postings:
            if posting.amount > 0:
                meter_id = int(
                    acc.get_account(session, _code(session, posting.account_id)).meter_id
                )
                out[meter_id] = out.get(meter_id, 0) + posting.amount
    return out


def _code(session: Session, account_id: int) -> str:
    from onecard.models import LedgerAccount

    return session.get(LedgerAccount, account_id).code


def test_kill_and_restart_mid_cycle_prices_nothing_twice_and_skips_nothing(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet, db_url: str, tmp_path: Path
) -> None:
    sims = [meter(str(i + 1), rate=Decimal(4)) for i in range(24)]
    for sim in sims:
        sim.fault, sim.delay = "slow", 0.08  # about 2 s for the whole bus
    port = modbus_port(fleet, plugins, "bus", sims)
    serials = _open_meters(sessions, plugins, len(sims))
    env = {**os.environ, "ONECARD_DATABASE_URL": db_url, "ONECARD_INSTANCE_PATH": str(tmp_path)}
    poll = [str(ONECARD), "meters", "poll", "--batch", "3", "--lease-seconds", "2", "--json"]
    with fleet.running():
        ids = [
            attach_meter(
                sessions, plugins, gateway="g", port=port.port, serial=s, address=str(i + 1)
            )
            for i, s in enumerate(serials)
        ]
        subprocess.run(poll, env=env, check=True, capture_output=True, timeout=60)  # baselines
        fleet.advance(dt.timedelta(hours=10))  # 40 kWh each: 20 yuan
        victim = subprocess.Popen(poll, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until some, not all, meters are priced
            with sessions() as session:
                priced = session.scalar(
                    select(func.count())
                    .select_from(LedgerTransaction)
                    .where(LedgerTransaction.kind == "consume")
                )
            if priced >= 6:
                break
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        with sessions() as session:
            half = session.scalar(
                select(func.count())
                .select_from(LedgerTransaction)
                .where(LedgerTransaction.kind == "consume")
            )
        assert 6 <= half < len(sims), "the kill must land mid-cycle"
        time.sleep(2.2)  # the dead process's lease runs out
        done = subprocess.run(poll, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        with sessions() as session:
            consumed = _consumed_by_meter(session)
            assert sorted(consumed) == sorted(ids)  # none skipped
            assert set(consumed.values()) == {2000}  # none priced twice
            assert verify(session).ok


def test_two_instances_share_the_gateways_without_double_pricing(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet
) -> None:
    ports = [
        modbus_port(fleet, plugins, f"bus{i}", [meter(str(j + 1)) for j in range(3)])
        for i in range(3)
    ]
    serials = _open_meters(sessions, plugins, 9)
    with fleet.running():
        for i, serial in enumerate(serials):
            attach_meter(
                sessions,
                plugins,
                gateway=f"g{i // 3}",
                port=ports[i // 3].port,
                serial=serial,
                address=str(i % 3 + 1),
            )
        a = make_service(sessions, plugins, fleet, owner="instance-a")
        b = make_service(sessions, plugins, fleet, owner="instance-b")

        async def both() -> list:
            return list(await asyncio.gather(a.cycle_all(), b.cycle_all()))

        asyncio.run(both())
        fleet.advance(dt.timedelta(hours=2))
        for _ in range(3):
            reports = [r for rs in asyncio.run(both()) for r in rs]
            # every gateway was read by exactly one of them; the other found it busy
            for code in ("g0", "g1", "g2"):
                mine = [r for r in reports if r.gateway == code]
                assert len(mine) == 2
                assert sum(1 for r in mine if r.busy is None) >= 1
        with sessions() as session:
            consumed = _consumed_by_meter(session)
            assert len(consumed) == 9 and set(consumed.values()) == {1000}  # 20 kWh at 0.50
            assert (
                session.scalar(
                    select(func.count())
                    .select_from(Gateway)
                    .where(Gateway.lease_owner.is_not(None))
                )
                == 0
            )


def test_bad_meters_and_an_offline_gateway_never_stall_the_other_buses(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet
) -> None:
    bad = [meter("1"), meter("2"), meter("3"), meter("4"), meter("5")]
    bad[0].fault = "silent"
    bad[1].fault = "garbage"
    bad[2].fault = "checksum"
    bad[3].fault, bad[3].delay = "slow", 0.1  # slower than nothing, within the timeout
    good = [meter(str(i + 1)) for i in range(5)]
    busy = modbus_port(fleet, plugins, "troubled", bad, framer="rtu")
    fine = modbus_port(fleet, plugins, "fine", good)
    gone = modbus_port(fleet, plugins, "gone", [meter("1")])
    serials = _open_meters(sessions, plugins, 11)
    with fleet.running():
        for i in range(5):
            attach_meter(
                sessions,
                plugins,
                gateway="troubled",
                port=busy.port,
                serial=serials[i],
                address=str(i + 1),
            )
            attach_meter(
                sessions,
                plugins,
                gateway="fine",
                port=fine.port,
                serial=serials[5 + i],
                address=str(i + 1),
            )
        attach_meter(
            sessions, plugins, gateway="gone", port=gone.port, serial=serials[10], address="1"
        )
        with sessions() as session, session.begin():
            inventory.get_gateway(session, "troubled").framer = "rtu"
        fleet.set_offline("gone")
        service = make_service(sessions, plugins, fleet)
        started = time.monotonic()
        reports = {r.gateway: r for r in asyncio.run(service.cycle_all())}
        assert reports["fine"].read == 5 and not reports["fine"].errors
        troubled = reports["troubled"]
        assert troubled.read == 2  # the slow one and the healthy one
        assert troubled.errors["timeout"] == 1
        assert troubled.errors["garbage"] + troubled.errors["checksum"] == 2
        assert reports["gone"].errors == {"offline": 1}
        assert time.monotonic() - started < 10
        for _ in range(2):
            asyncio.run(service.cycle_all())
        with sessions() as session:
            stale = session.scalars(select(RemoteMeter).where(RemoteMeter.stale.is_(True))).all()
            assert len(stale) == 4  # three bad meters and the one behind the offline gateway
            assert all(r.missed == 3 for r in stale)
            assert (
                session.scalar(
                    select(func.count()).select_from(MeterEvent).where(MeterEvent.event == "stale")
                )
                == 4
            )
            gateway = inventory.get_gateway(session, "gone")
            assert gateway.last_error.startswith("offline")
        fleet.set_offline("gone", False)
        bad[0].fault = None
        asyncio.run(service.cycle_all())
        with sessions() as session:
            assert (
                len(session.scalars(select(RemoteMeter).where(RemoteMeter.stale.is_(True))).all())
                == 2
            )


CSV_OK = """gateway,transport,host,port,meter,kind,protocol,address,model,customer,alarm1,alarm2
gwA,tcp,10.0.0.5,502,E0001,electric,modbus,1,acrel-ddsy1352,,30,10
gwA,,,,W0001,water.cold,cjt188,00000000000012,,,,
gwB,tcp,10.0.0.6,4001,N0001,electric,dlt645,000000001234,,{customer},,
"""


def test_csv_import_all_or_nothing_with_row_errors(
    sessions: sessionmaker[Session], plugins: Plugins, world
) -> None:
    bad = (
        "gateway,transport,host,port,meter,kind,protocol,address\n"
        "gwA,tcp,10.0.0.5,502,E0001,electric,modbus,1\n"
        "gwA,tcp,10.0.0.9,502,E0002,electric,modbus,2\n"  # another host for gwA
        "gwC,tcp,10.0.0.7,99999,E0003,electric,modbus,3\n"  # bad port
        "gwA,,,,E0004,electric,modbus,300\n"  # bad unit id
        "gwA,,,,E0005,steam,modbus,4\n"  # unknown kind
        "gwA,,,,E0006,electric,smoke,5\n"  # unknown protocol
        "gwA,,,,E0001,electric,modbus,6\n"  # the same meter twice
    )
    with sessions() as session:
        with pytest.raises(inventory.ImportRefused) as refused:
            inventory.import_csv(session, ACTOR, plugins.utilities, bad)
        errors = {(e["row"], e["column"]) for e in refused.value.errors}
        assert errors == {
            (3, "host"),
            (4, "port"),
            (5, "address"),
            (6, "kind"),
            (7, "protocol"),
            (8, "meter"),
        }
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Gateway)) == 0
        assert session.scalar(select(func.count()).select_from(RemoteMeter)) == 0
    with sessions() as session, session.begin():
        result = inventory.import_csv(
            session, ACTOR, plugins.utilities, CSV_OK.format(customer=world.customer_number)
        )
        assert result.gateways == ["gwA", "gwB"]
        assert result.meters == ["electric:E0001", "water.cold:W0001", "electric:N0001"]
    with sessions() as session:
        new = session.scalars(select(Meter).where(Meter.serial == "N0001")).one()
        assert new.protocol == "dlt645" and new.premises_id is not None
        assert (
            acc.get_account(session, acc.meter_wallet_code(new.id)).customer_id == world.customer_id
        )
        remote = session.get(
            RemoteMeter, session.scalars(select(Meter.id).where(Meter.serial == "E0001")).one()
        )
        assert (remote.alarm1, remote.alarm2, remote.address) == (3000, 1000, "1")


def test_csv_import_from_the_command_line(
    tmp_path: Path, world, db_url: str, plugins: Plugins
) -> None:
    env = {**os.environ, "ONECARD_DATABASE_URL": db_url, "ONECARD_INSTANCE_PATH": str(tmp_path)}
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "gateway,host,port,meter,kind,protocol,address\ngw,127.0.0.1,502,E0001,electric,modbus,0\n"
    )
    out = subprocess.run(
        [str(ONECARD), "meters", "import", str(bad)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "row 2, address" in out.stderr and "nothing was imported" in out.stderr
    good = tmp_path / "good.csv"
    good.write_text(CSV_OK.format(customer=world.customer_number))
    out = subprocess.run(
        [str(ONECARD), "meters", "import", str(good)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "imported 2 gateway(s) and 3 meter(s)" in out.stdout
    listed = subprocess.run(
        [str(ONECARD), "meters", "list"], env=env, capture_output=True, text=True
    )
    assert "electric:N0001" in listed.stdout


def test_old_readings_are_archived_but_each_meters_newest_stays(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet
) -> None:
    sim = meter("1")
    port = modbus_port(fleet, plugins, "bus", [sim])
    with fleet.running():
        meter_id = attach_meter(
            sessions, plugins, gateway="g", port=port.port, serial="E0001", address="1"
        )
        service = make_service(sessions, plugins, fleet)
        for _ in range(4):
            asyncio.run(service.cycle_all())
            fleet.advance(dt.timedelta(days=1))
        moved = service.archive(dt.timedelta(hours=12))
    assert moved == 3
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(MeterReading)) == 1
        assert session.scalar(select(func.count()).select_from(MeterReadingArchive)) == 3
        assert session.scalar(select(MeterReading.meter_id)) == meter_id


def test_reading_groups_set_the_schedule(
    sessions: sessionmaker[Session], plugins: Plugins, world
) -> None:
    # nothing is served: the schedule is all this test looks at
    attach_meter(sessions, plugins, gateway="g", port=502, serial="E0001", address="1")
    attach_meter(
        sessions, plugins, gateway="g", port=502, serial="E9001", address="2", group="fast"
    )
    with sessions() as session, session.begin():
        inventory.set_group_interval(session, "fast", 5)
    service = ReadingService(sessions, plugins.utilities)

    class Jobs:
        def __init__(self) -> None:
            self.jobs: dict[str, dict] = {}

        def get_jobs(self) -> list:
            return []

        def add_job(self, fn, trigger, **kw) -> None:  # type: ignore[no-untyped-def]
            self.jobs[kw["id"]] = kw

    service.scheduler = Jobs()
    service.sync_jobs()
    gateway_id = service.scheduler.jobs and next(iter(service.scheduler.jobs.values()))["args"][0]
    assert set(service.scheduler.jobs) == {f"gateway-{gateway_id}-30", f"gateway-{gateway_id}-5"}
    assert service.scheduler.jobs[f"gateway-{gateway_id}-5"]["minutes"] == 5


def test_stores_served_together_keep_one_gateways_lost_lease_to_itself(
    sessions: sessionmaker[Session], plugins: Plugins, world
) -> None:
    """Stores queued at the same moment share one commit, each in its own savepoint: the store
    of a gateway whose lease was taken over is rolled back and raised to its cycle alone."""
    from onecard.remote.fees import Outcome
    from onecard.remote.lease import LeaseLost
    from onecard.remote.types import RemoteReading

    first = attach_meter(sessions, plugins, gateway="g1", port=502, serial="E0001", address="1")
    second = attach_meter(sessions, plugins, gateway="g2", port=503, serial="E9001", address="1")
    with sessions() as session:
        g1, g2 = (inventory.get_gateway(session, code).id for code in ("g1", "g2"))
    service = ReadingService(sessions, plugins.utilities)
    at = dt.datetime.now(dt.UTC)

    async def run() -> list[object]:
        b1, b2 = await asyncio.gather(service._begin(g1, None), service._begin(g2, None))
        assert b1.token is not None and b2.token is not None
        with sessions() as session, session.begin():  # another instance takes g1 over
            session.get(Gateway, g1).lease_token += 1
        reading = RemoteReading(cumulative=Decimal("12.5"))
        return await asyncio.gather(
            service._store(g1, b1.token, [Outcome(first, at, reading)]),
            service._store(g2, b2.token, [Outcome(second, at, reading)]),
            return_exceptions=True,
        )

    lost, stored = asyncio.run(run())
    assert isinstance(lost, LeaseLost)
    assert stored.readings == 1
    with sessions() as session:
        read = session.scalars(select(MeterReading.meter_id)).all()
        assert read == [second]
        assert session.get(RemoteMeter, first).last_read_at is None
        assert session.get(RemoteMeter, second).last_cumulative == 1250
