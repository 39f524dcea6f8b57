"""Server-side pricing of remote readings with a tiered (ladder) tariff: the ladder position kept
on the meter carries over from reading to reading, an interval that crosses into a new month is
split by time and the new month starts its tiers from zero, and a reading stored twice is priced
once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard import tariffs
from onecard.ledger import operations as ops
from onecard.ledger.verify import verify
from onecard.models import LedgerTransaction, RemoteMeter
from onecard.plugins import Plugins
from onecard.remote.fees import Context, Outcome, Policy, store_outcomes
from onecard.remote.types import RemoteReading

from .conftest import ACTOR, attach_meter, credit

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def tiered() -> dict[str, Any]:
    return {
        "kind": "electric",
        "name": "ladder",
        "model": "tiered",
        "effective_from": "2026-01-01T00:00:00+08:00",
        "timezone": "Asia/Shanghai",
        "title": {"zh-CN": "阶梯电价", "en": "Tiered"},
        "body": {
            "reset": "monthly",
            "tiers": [{"upto": 10, "price": "0.5"}, {"upto": None, "price": "1.0"}],
        },
    }


def test_ladder_position_carries_over_and_restarts_each_month(
    sessions: sessionmaker[Session], plugins: Plugins, world
) -> None:
    with sessions() as session, session.begin():
        tariffs.add_version(session, ACTOR, plugins.utilities, tiered(), allow_past=True)
        ops.sale(
            session,
            wallet=world.wallets["electric"],
            amount=100_00,
            office_id=world.office_id,
            idempotency_key="sale-1",
        )
    meter_id = attach_meter(
        sessions, plugins, gateway="gw1", port=1, serial="E0001", address="1", load_tariff=False
    )
    ctx = Context(plugins.utilities, Policy(alarm1=0, alarm2=0))

    def store(local: dt.datetime, kwh: str) -> int:
        at = local.replace(tzinfo=SHANGHAI).astimezone(dt.UTC)
        outcome = Outcome(meter_id, at, RemoteReading(cumulative=Decimal(kwh)))
        with sessions() as session, session.begin():
            return store_outcomes(session, ctx, [outcome], now=at).posted_fen

    def ladder() -> tuple[dt.datetime | None, int]:
        with sessions() as session:
            remote = session.get(RemoteMeter, meter_id)
            start = remote.ladder_start
            return (start.astimezone(SHANGHAI) if start else None, remote.ladder_used)

    november = dt.datetime(2026, 11, 1, tzinfo=SHANGHAI)
    december = dt.datetime(2026, 12, 1, tzinfo=SHANGHAI)
    assert store(dt.datetime(2026, 11, 30, 0, 0), "100.00") == 0  # the baseline
    # 8 kWh, all in tier 1: 4.00 yuan
    assert store(dt.datetime(2026, 11, 30, 6, 0), "108.00") == 400
    assert ladder() == (november, 800)  # hundredths of a kWh
    # 4 kWh: 2 more in tier 1, 2 in tier 2: 1.00 + 2.00
    assert store(dt.datetime(2026, 11, 30, 10, 0), "112.00") == 300
    assert ladder() == (november, 1200)
    # 12 kWh over 24 hours, 14 of them in November: 7 kWh at tier 2 (7.00), then 5 kWh from
    # December's tier 1 (2.50)
    assert store(dt.datetime(2026, 12, 1, 10, 0), "124.00") == 950
    assert ladder() == (december, 500)
    # 8 kWh in December: 5 to the end of tier 1 (2.50), 3 in tier 2 (3.00)
    assert store(dt.datetime(2026, 12, 1, 12, 0), "132.00") == 550
    assert ladder() == (december, 1300)
    # the same reading stored again (a retried cycle) is priced once
    assert store(dt.datetime(2026, 12, 1, 12, 0), "132.00") == 0

    with sessions() as session:
        consumed = session.scalars(
            select(LedgerTransaction)
            .where(LedgerTransaction.kind == "consume")
            .order_by(LedgerTransaction.seq)
        ).all()
        assert [t.idempotency_key for t in consumed] == [
            f"remote-use:{meter_id}:10000:10800",
            f"remote-use:{meter_id}:10800:11200",
            f"remote-use:{meter_id}:11200:12400",
            f"remote-use:{meter_id}:12400:13200",
        ]
        assert credit(session, meter_id) == 100_00 - (400 + 300 + 950 + 550)
        assert verify(session).ok
