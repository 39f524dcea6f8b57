"""Server-side pricing of remote readings with the tariff models that depend on more than the
quantity.

Tiered (ladder): the ladder position kept on the meter carries over from reading to reading, an
interval that crosses into a new month is split by time and the new month starts its tiers from
zero, and a reading stored twice is priced once. Time of use: the meter's band registers say how
the use falls on the bands; where they cannot, the use is spread by time."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard import tariffs
from onecard.ledger.verify import verify
from onecard.models import LedgerTransaction, MeterReading, RemoteMeter
from onecard.plugins import Plugins
from onecard.remote.fees import Context, Outcome, Policy, band_shares, store_outcomes
from onecard.remote.types import RemoteReading

from .conftest import ACTOR, attach_meter, credit, sell

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


def time_of_use() -> dict[str, Any]:
    return {
        "kind": "electric",
        "name": "tou",
        "model": "tou",
        "effective_from": "2026-01-01T00:00:00+08:00",
        "timezone": "Asia/Shanghai",
        "title": {"zh-CN": "峰谷电价", "en": "Peak and valley"},
        "body": {
            "bands": {"peak": {"price": "1.0"}, "valley": {"price": "0.3"}},
            "timetables": [{"windows": {"peak": ["08:00-22:00"], "valley": ["22:00-08:00"]}}],
        },
    }


def _setup(sessions: sessionmaker[Session], plugins: Plugins, world, tariff: dict[str, Any]):
    with sessions() as session, session.begin():
        tariffs.add_version(session, ACTOR, plugins.utilities, tariff, allow_past=True)
        sell(session, world, 100_00, "sale-1")
    meter_id = attach_meter(
        sessions, plugins, gateway="gw1", port=1, serial="E0001", address="1", load_tariff=False
    )
    ctx = Context(plugins.utilities, Policy(alarm1=0, alarm2=0))

    def store(local: dt.datetime, kwh: str, **bands: str) -> int:
        """Store a reading taken at ``local`` (Shanghai time); the fen it posted."""
        at = local.replace(tzinfo=SHANGHAI).astimezone(dt.UTC)
        reading = RemoteReading(
            cumulative=Decimal(kwh), bands={k: Decimal(v) for k, v in bands.items()}
        )
        with sessions() as session, session.begin():
            return store_outcomes(session, ctx, [Outcome(meter_id, at, reading)], now=at).posted_fen

    return meter_id, store


def test_ladder_position_carries_over_and_restarts_each_month(
    sessions: sessionmaker[Session], plugins: Plugins, world
) -> None:
    meter_id, store = _setup(sessions, plugins, world, tiered())

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


def test_time_of_use_by_the_meters_band_registers(
    sessions: sessionmaker[Session], plugins: Plugins, world
) -> None:
    meter_id, store = _setup(sessions, plugins, world, time_of_use())
    day = dt.datetime(2026, 11, 30)
    assert store(day.replace(hour=9), "100", peak="60", valley="40", sharp="0") == 0
    # 09:00-13:00 is all peak by the clock, but the meter counted 3 kWh peak and 1 kWh valley:
    # 3 x 1.00 + 1 x 0.30 (by time it would be 4.00)
    assert store(day.replace(hour=13), "104", peak="63", valley="41", sharp="0") == 330
    # a band the tariff does not have: the use is spread by time (13:00-15:00: peak), and the
    # reading says why its band registers were not used
    assert store(day.replace(hour=15), "106", peak="64", valley="41", sharp="1") == 200
    # a band register that went back cannot say: 4 kWh by time over 15:00-23:00, 7 hours peak
    # and 1 valley: 3.5 x 1.00 + 0.5 x 0.30
    assert store(day.replace(hour=23), "110", peak="60", valley="44", sharp="1") == 365
    with sessions() as session:
        details = [
            r.detail
            for r in session.scalars(
                select(MeterReading)
                .where(MeterReading.meter_id == meter_id)
                .order_by(MeterReading.taken_at)
            )
        ]
        assert "bands_unused" not in details[1]
        assert "sharp" in details[2]["bands_unused"]
        assert [d.get("priced", {}).get("amount") for d in details] == [None, 330, 200, 365]
        assert verify(session).ok


@given(
    st.dictionaries(
        st.sampled_from(["sharp", "peak", "flat", "valley", "deep_valley"]),
        st.decimals(min_value=0, max_value=10**6, places=3),
        min_size=1,
    )
)
def test_band_shares_add_up_to_exactly_one(deltas: dict[str, Decimal]) -> None:
    priced = {name: "1000.000" for name in deltas}
    bands = {name: Decimal(1000) + d for name, d in deltas.items()}
    shares = band_shares(bands, priced)
    moved = {name for name, d in deltas.items() if d > 0}
    if not moved:
        assert shares is None
        return
    assert shares is not None and set(shares) == moved
    assert sum(shares.values(), Decimal(0)) == 1
    assert all(share >= 0 for share in shares.values())
    total = sum(deltas.values())
    for name, share in shares.items():
        assert abs(share - deltas[name] / total) < Decimal("1e-18")


def test_band_shares_that_cannot_say() -> None:
    assert band_shares({}, {}) is None
    assert band_shares({"peak": Decimal(5)}, {}) is None  # not known at the last pricing
    assert (
        band_shares({"peak": Decimal(5), "valley": Decimal(1)}, {"peak": "6", "valley": "0"})
        is None
    )
    thirds = band_shares(
        {"a": Decimal(1), "b": Decimal(1), "c": Decimal(1)}, {"a": "0", "b": "0", "c": "0"}
    )
    assert thirds is not None and sum(thirds.values()) == 1
