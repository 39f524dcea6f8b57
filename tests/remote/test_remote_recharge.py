"""Remote recharge of meters that keep their own credit, end to end: the sale and the push in
one transaction, the meter accepting only the next count, the credit leaving the wallet once the
meter holds it, a lost push pushed again, a meter ahead of the server raising a mismatch, and
counters that wrap (CJ/T 188's one-byte purchase serial, a Modbus uint16 register)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard.errors import Conflict
from onecard.fleet.server import Fleet
from onecard.fleet.sim import SimMeter
from onecard.ledger.verify import verify
from onecard.models import LedgerTransaction, MeterEvent, Office, RemoteMeter, RemoteRecharge
from onecard.plugins import Plugins
from onecard.remote import service as svc
from onecard.remote.modbus import Register, count_modulus, count_on_wire, decode, encode
from onecard.remote.types import unwrap_count

from .conftest import ACTOR, attach_meter, credit, make_service

WATER_ADDRESS = "00000000000033"
ONECARD = str(Path(sys.executable).with_name("onecard"))


def _recharge(
    sessions: sessionmaker[Session], world: Any, meter_id: int, fen: int, key: str
) -> int:
    with sessions() as session, session.begin():
        push = svc.recharge(
            session, ACTOR, meter_id, amount=fen, office_id=world.office_id, idempotency_key=key
        )
        return push.id


def _push(sessions: sessionmaker[Session], push_id: int) -> RemoteRecharge:
    with sessions() as session:
        push = session.get(RemoteRecharge, push_id)
        assert push is not None
        session.expunge(push)
        return push


def _delivered(session: Session, meter_id: int) -> list[str]:
    """The keys of the transactions that moved pushed credit from the wallet to the meter."""
    return list(
        session.scalars(
            select(LedgerTransaction.idempotency_key)
            .where(LedgerTransaction.idempotency_key.like(f"remote-recharge:{meter_id}:%"))
            .order_by(LedgerTransaction.seq)
        )
    )


def _events(session: Session, meter_id: int) -> list[str]:
    return list(
        session.scalars(
            select(MeterEvent.event).where(MeterEvent.meter_id == meter_id).order_by(MeterEvent.id)
        )
    )


def _acrel(fleet: Fleet, plugins: Plugins, **kw: Any) -> tuple[SimMeter, Any]:
    kw.setdefault("remaining", Decimal("10.00"))
    sim = SimMeter(
        address="1", kind="electric", model="acrel-ddsy1352", rate=Decimal(1), price=Decimal("0.5"),
        **kw,
    )  # fmt: skip
    proto = plugins.utilities.get("electric").protocols.get("modbus")
    return sim, fleet.add_port("bus1", proto, meters=[sim])


def _water(fleet: Fleet, plugins: Plugins, **kw: Any) -> tuple[SimMeter, Any]:
    sim = SimMeter(
        address=WATER_ADDRESS,
        kind="water.cold",
        model="prepaid",
        rate=Decimal("0.1"),
        price=Decimal("3"),
        **kw,
    )
    proto = plugins.utilities.get("water.cold").protocols.get("cjt188")
    return sim, fleet.add_port("water", proto, meters=[sim])


def test_a_push_is_accepted_retried_when_lost_and_a_meter_ahead_is_flagged(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet
) -> None:
    sim, port = _acrel(fleet, plugins)
    with fleet.running():
        meter_id = attach_meter(
            sessions, plugins, gateway="gw1", port=port.port, serial="E0001", address="1",
            billing="meter",
        )  # fmt: skip
        service = make_service(sessions, plugins, fleet)
        asyncio.run(service.cycle_all())  # the first reading: the meter's count is 0, as ours

        # the sale and the queued push, in one transaction; a retry with the key does neither
        push_id = _recharge(sessions, world, meter_id, 2550, "counter-1")
        assert _recharge(sessions, world, meter_id, 2550, "counter-1") == push_id
        with pytest.raises(Conflict) as refused:
            _recharge(sessions, world, meter_id, 1000, "counter-1")
        assert refused.value.field == "idempotency_key"
        with sessions() as session:
            assert credit(session, meter_id) == 2550  # sold into the wallet, not yet delivered
            assert session.get(RemoteMeter, meter_id).recharge_count == 1
        assert _push(sessions, push_id).status == "pending"

        result = asyncio.run(svc.push_recharge(service, push_id))
        assert result["status"] == "accepted", result
        assert result["recharge_count"] == 1
        assert (sim.recharge_count, sim.remaining) == (1, Decimal("35.50"))
        push = _push(sessions, push_id)
        assert push.status == "accepted" and push.confirmed_at is not None
        with sessions() as session:
            assert credit(session, meter_id) == 0  # it is on the meter now
            assert _delivered(session, meter_id) == [f"remote-recharge:{meter_id}:1"]

        # a push that does not arrive stays pending, and the next cycle pushes it again
        push_id = _recharge(sessions, world, meter_id, 1000, "counter-2")
        fleet.set_offline("bus1")
        result = asyncio.run(svc.push_recharge(service, push_id))
        assert result["status"] == "pending"
        assert sim.recharge_count == 1
        fleet.set_offline("bus1", False)
        fleet.advance(dt.timedelta(hours=1))
        report = asyncio.run(service.cycle_all())[0]
        assert [(c["what"], c["status"]) for c in report.commands] == [("recharge", "accepted")]
        assert (sim.recharge_count, sim.remaining) == (2, Decimal("45.00"))  # 35.50 - 0.50 + 10
        with sessions() as session:
            assert credit(session, meter_id) == 0
            assert len(_delivered(session, meter_id)) == 2
            # the meter's own credit drives its alarms: 10 yuan at first, 45 now
            assert _events(session, meter_id) == ["alarm1", "recovered"]

        # the meter shows a recharge the server never issued: flagged once, not pushed over
        sim.recharge_count = 3
        for _ in range(2):
            fleet.advance(dt.timedelta(hours=1))
            report = asyncio.run(service.cycle_all())[0]
            assert report.commands == []
        with sessions() as session:
            assert _events(session, meter_id) == ["alarm1", "recovered", "recharge_mismatch"]
            event = session.scalars(
                select(MeterEvent).where(MeterEvent.event == "recharge_mismatch")
            ).one()
            assert event.detail == {"meter_count": 3, "issued": 2}
            remote = session.get(RemoteMeter, meter_id)
            assert (remote.recharge_count, remote.meter_recharge_count) == (2, 3)
            assert verify(session).ok


@pytest.mark.parametrize("meter", ["cjt188", "modbus"])
def test_recharge_counts_that_wrap_are_read_as_full_counts(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet, meter: str
) -> None:
    # a long-lived meter whose counter is about to wrap: CJ/T 188 sends the purchase serial in
    # one byte (255 -> 0), the Acrel map's count register is a uint16 (65535 -> 0)
    last = 255 if meter == "cjt188" else 65535
    if meter == "cjt188":
        sim, port = _water(fleet, plugins, recharge_count=last, remaining=Decimal(100))
        where = {"serial": "W0001", "address": WATER_ADDRESS, "protocol": "cjt188"}
        where["model"] = "prepaid"
    else:
        sim, port = _acrel(fleet, plugins, recharge_count=last, remaining=Decimal(100))
        where = {"serial": "E0001", "address": "1"}
    with fleet.running():
        meter_id = attach_meter(
            sessions, plugins, gateway="gw1", port=port.port, billing="meter", **where
        )
        with sessions() as session, session.begin():
            session.get(RemoteMeter, meter_id).recharge_count = last
        service = make_service(sessions, plugins, fleet)
        asyncio.run(service.cycle_all())
        with sessions() as session:
            assert session.get(RemoteMeter, meter_id).meter_recharge_count == last

        for n, key in ((last + 1, "wrap-1"), (last + 2, "wrap-2")):
            push_id = _recharge(sessions, world, meter_id, 500, key)
            assert _push(sessions, push_id).count == n
            result = asyncio.run(svc.push_recharge(service, push_id))
            assert result["status"] == "accepted", result
            assert result["recharge_count"] == n  # the meter's 0, 1 read as 256, 257
            assert sim.recharge_count == n

        fleet.advance(dt.timedelta(hours=1))
        report = asyncio.run(service.cycle_all())[0]
        assert report.read == 1 and report.commands == []  # nothing pending, nothing re-pushed
        with sessions() as session:
            assert _events(session, meter_id) == []
            assert credit(session, meter_id) == 0
            assert _delivered(session, meter_id) == [
                f"remote-recharge:{meter_id}:{last + 1}",
                f"remote-recharge:{meter_id}:{last + 2}",
            ]

        sim.recharge_count = last + 4  # ahead of the server, across the wrap: still caught
        fleet.advance(dt.timedelta(hours=1))
        asyncio.run(service.cycle_all())
        with sessions() as session:
            assert _events(session, meter_id) == ["recharge_mismatch"]
            remote = session.get(RemoteMeter, meter_id)
            assert remote.meter_recharge_count == last + 4
            assert verify(session).ok


# Counting round a wrapping counter --------------------------------------------------------------


@given(
    near=st.integers(min_value=0, max_value=10**9),
    offset=st.integers(min_value=-128, max_value=127),  # exactly half way counts as behind
    modulus=st.sampled_from([256, 10_000, 65_536, 2**32]),
)
def test_unwrap_reads_the_full_count_nearest_the_issued_one(
    near: int, offset: int, modulus: int
) -> None:
    true = near + offset
    assert unwrap_count(true % modulus, modulus, near) == true
    assert unwrap_count(true, None, near) == true  # a counter that does not wrap is as read


def test_unwrap_examples() -> None:
    assert unwrap_count(0, 256, 256) == 256  # the serial byte wrapped to 0 at count 256
    assert unwrap_count(255, 256, 256) == 255  # one push still pending
    assert unwrap_count(2, 256, 256) == 258  # two recharges the server did not issue
    assert unwrap_count(5, 256, 0) == 5
    assert unwrap_count(65535, 65536, 0) == -1  # never happens: a meter behind a count of 0


@pytest.mark.parametrize(
    ("kind", "modulus"),
    [("uint16", 65536), ("int16", 65536), ("uint32", 2**32), ("bcd16", 10_000), ("float32", None)],
)
def test_a_count_register_wraps_at_its_types_range(kind: str, modulus: int | None) -> None:
    reg = Register(name="count", address=0, type=kind)
    assert count_modulus(reg) == modulus
    if modulus is None:
        return
    for count in (1, modulus - 1, modulus, modulus + 7, 3 * modulus + 2):
        wire = count_on_wire(reg, count)
        words = encode(reg, Decimal(wire))
        assert int(decode(reg, words)) == wire  # encodable, not clamped
        assert unwrap_count(int(decode(reg, words)), modulus, count) == count
    scaled = Register(name="count", address=0, type="uint16", scale=Decimal("0.1"))
    assert count_modulus(scaled) is None


def test_recharge_from_the_command_line(
    sessions: sessionmaker[Session], plugins: Plugins, world, fleet, db_url: str, tmp_path
) -> None:
    sim, port = _acrel(fleet, plugins)
    env = {**os.environ, "ONECARD_DATABASE_URL": db_url, "ONECARD_INSTANCE_PATH": str(tmp_path)}

    def onecard(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ONECARD, *args], env=env, capture_output=True, text=True)

    with fleet.running():
        meter_id = attach_meter(
            sessions, plugins, gateway="gw1", port=port.port, serial="E0001", address="1",
            billing="meter",
        )  # fmt: skip
        out = onecard("meters", "recharge", "E0001", "12.5x", "--office", "E01")
        assert out.returncode != 0 and "amount" in out.stderr
        out = onecard("meters", "recharge", "E9001", "10", "--office", "E01")  # not on a bus
        assert out.returncode != 0 and "not a remote meter" in out.stderr
        with sessions() as session:
            assert session.scalars(select(RemoteRecharge)).all() == []
        # the money is taken at the meter's office: another office is refused, by name
        out = onecard("meters", "recharge", "E0001", "10", "--office", "W01")
        assert out.returncode != 0
        assert "office" in out.stderr and "belongs to office E01, not W01" in out.stderr
        with sessions() as session:
            assert session.scalars(select(RemoteRecharge)).all() == []
        out = onecard("meters", "recharge", "E0001", "12.50", "--key", "c1")  # its office: E01
        assert out.returncode == 0, out.stderr
        assert "recharge #1 of 12.50 yuan: accepted" in out.stdout
        again = onecard("meters", "recharge", "E0001", "12.50", "--office", "E01", "--key", "c1")
        assert again.returncode == 0 and "accepted" in again.stdout
        assert (sim.recharge_count, sim.remaining) == (1, Decimal("22.50"))
        with sessions() as session:
            assert _delivered(session, meter_id) == [f"remote-recharge:{meter_id}:1"]
            sale = session.scalars(
                select(LedgerTransaction).where(
                    LedgerTransaction.idempotency_key == "remote-sale:c1"
                )
            ).one()
            assert (
                sale.office_id
                == session.scalars(select(Office.id).where(Office.code == "E01")).one()
            )
            assert verify(session).ok
