"""The dashboard's queries (onecard.dashboard) on SQLite and PostgreSQL: a day's sales cut at
local midnight, by kind and by operator, scoped to offices; pending card sales; meters in alarm."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from conftest import ACTOR, World
from sqlalchemy.orm import Session, sessionmaker

from onecard import dashboard, ledger
from onecard import operators as ops
from onecard.card.layout import STATUS_FLAGS
from onecard.models import Card, CardPurchase, Meter, MeterReading

UTC = dt.UTC
DAY = dt.date(2026, 3, 10)
SHANGHAI = "Asia/Shanghai"


def at(y: int, mo: int, d: int, h: int, mi: int) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[dt.datetime], None]:
    """Set the time the ledger stamps on what it posts."""

    def set_time(when: dt.datetime) -> None:
        monkeypatch.setattr("onecard.ledger.core.utcnow", lambda: when)

    return set_time


def sell(
    s: Session, wallet: str, amount: int, office_id: int, key: str, *, fee: int = 0, op: int | None
) -> ledger.Posted:
    return ledger.sale(
        s,
        wallet=wallet,
        amount=amount,
        office_id=office_id,
        idempotency_key=key,
        fee=fee,
        operator_id=op,
    )


def test_day_bounds_are_local_midnights() -> None:
    start, end = dashboard.day_bounds(DAY, SHANGHAI)
    assert start == at(2026, 3, 9, 16, 0) and end == at(2026, 3, 10, 16, 0)
    assert dashboard.local_today(SHANGHAI, at(2026, 3, 10, 15, 59)) == DAY
    assert dashboard.local_today(SHANGHAI, at(2026, 3, 10, 16, 0)) == DAY + dt.timedelta(days=1)


def test_sales_of_day_by_kind_and_operator_cut_at_local_midnight(
    sessions: sessionmaker[Session], world: World, clock: Callable[[dt.datetime], None]
) -> None:
    with sessions() as s, s.begin():
        ann = ops.create_operator(s, ACTOR, username="ann", password="ann-pass-1", full_name="Ann")
        bob = ops.create_operator(s, ACTOR, username="bob", password="bob-pass-1")
        e, w = world.office_id, world.other_office_id
        clock(at(2026, 3, 9, 15, 59))  # 23:59 on the 9th in Shanghai: the day before
        sell(s, world.wallets["electric"], 1000, e, "k0", op=ann.id)
        clock(at(2026, 3, 9, 16, 0))  # 00:00 on the 10th: counts
        sell(s, world.wallets["electric"], 10000, e, "k1", op=ann.id)
        clock(at(2026, 3, 10, 3, 0))
        sell(s, world.wallets["water.cold"], 2550, e, "k2", fee=200, op=bob.id)
        sell(s, world.shared_wallet, 5000, e, "k3", op=ann.id)
        sell(s, world.other_wallet, 7000, w, "k4", op=bob.id)
        clock(at(2026, 3, 10, 15, 59))  # 23:59 on the 10th: counts
        sell(s, world.wallets["electric"], 300, e, "k5", op=bob.id)
        clock(at(2026, 3, 10, 16, 0))  # 00:00 on the 11th: the next day
        sell(s, world.wallets["electric"], 99900, e, "k6", op=bob.id)

    with sessions() as s:
        every = dashboard.sales_of_day(s, DAY, SHANGHAI)
        assert (every.count, every.amount, every.fees) == (5, 10000 + 2550 + 5000 + 7000 + 300, 200)
        assert every.taken == every.amount + 200
        kinds = {line.key: (line.count, line.amount) for line in every.by_kind}
        assert kinds == {
            "electric": (3, 10000 + 7000 + 300),
            "water.cold": (1, 2550),
            "shared": (1, 5000),
        }
        people = {
            line.key: (line.label, line.count, line.amount, line.fees) for line in every.by_operator
        }
        assert people == {
            "ann": ("Ann", 2, 15000, 0),
            "bob": ("bob", 3, 2550 + 7000 + 300, 200),
        }
        assert every.by_kind[0].key == "electric"  # largest first

        east = dashboard.sales_of_day(s, DAY, SHANGHAI, {world.office_id})
        assert (east.count, east.amount) == (4, 10000 + 2550 + 5000 + 300)
        nowhere = dashboard.sales_of_day(s, DAY, SHANGHAI, set())
        assert nowhere.count == 0 and nowhere.by_kind == []

        # the same instants in UTC cut the day elsewhere
        utc_day = dashboard.sales_of_day(s, DAY, "UTC", {world.office_id})
        assert utc_day.amount == 2550 + 5000 + 300 + 99900


def test_reversals_of_the_day_are_counted_apart(
    sessions: sessionmaker[Session], world: World, clock: Callable[[dt.datetime], None]
) -> None:
    with sessions() as s, s.begin():
        clock(at(2026, 3, 10, 2, 0))
        sale = sell(s, world.wallets["electric"], 4000, world.office_id, "r1", op=None)
        ledger.reverse(s, sale.seq, idempotency_key="r1-rev", reason_code="wrong_amount")
    with sessions() as s:
        day = dashboard.sales_of_day(s, DAY, SHANGHAI, {world.office_id})
        assert (day.count, day.amount) == (1, 4000)
        assert (day.reversals, day.reversed_amount) == (1, 4000)
        assert day.by_operator[0].key == ""  # no operator (a command-line sale)


def _card(s: Session, world: World, uid: str = "A1B2C3D4") -> Card:
    card = Card(uid=uid, card_type="user", customer_id=world.customer_id, office_id=world.office_id)
    s.add(card)
    s.flush()
    return card


def _meter(s: Session, serial: str) -> Meter:
    from sqlalchemy import select

    meter = s.scalar(select(Meter).where(Meter.serial == serial))
    assert meter is not None
    return meter


def test_pending_sales_oldest_first_and_scoped(
    sessions: sessionmaker[Session], world: World
) -> None:
    now = at(2026, 3, 10, 8, 0)
    with sessions() as s, s.begin():
        card = _card(s, world)
        meter = _meter(s, "E0001")
        for i, (status, minutes) in enumerate(
            [("pending", 5), ("pending", 90), ("confirmed", 100), ("voided", 200)]
        ):
            s.add(
                CardPurchase(
                    idempotency_key=f"p{i}",
                    sale_key=f"sale-{i}",
                    meter_id=meter.id,
                    card_id=card.id,
                    customer_id=world.customer_id,
                    office_id=world.office_id,
                    slot=0,
                    seq=i + 1,
                    amount=1000 * (i + 1),
                    status=status,
                    written_at=now - dt.timedelta(minutes=minutes),
                    created_at=now - dt.timedelta(minutes=minutes),
                )
            )
    with sessions() as s:
        found = dashboard.pending_sales(s, {world.office_id}, now=now)
        assert [p.sale_key for p in found] == ["sale-1", "sale-0"]
        assert found[0].age == dt.timedelta(minutes=90)
        assert found[0].customer_number == world.customer_number
        assert (found[0].meter_kind, found[0].meter_serial, found[0].amount) == (
            "electric",
            "E0001",
            2000,
        )
        assert dashboard.count_pending(s, {world.office_id}) == 2
        assert dashboard.pending_sales(s, {world.other_office_id}, now=now) == []
        assert dashboard.count_pending(s, None) == 2


def test_meters_in_alarm_use_the_latest_reading(
    sessions: sessionmaker[Session], world: World
) -> None:
    alarm1, alarm2 = STATUS_FLAGS["alarm1"], STATUS_FLAGS["alarm2"]
    exhausted, relay = STATUS_FLAGS["exhausted"], STATUS_FLAGS["relay_open"]
    t = at(2026, 3, 10, 1, 0)
    with sessions() as s, s.begin():
        e, w, h, other = (_meter(s, x) for x in ("E0001", "W0001", "H0001", "E9001"))

        def read(meter: Meter, minutes: int, status: int, remaining: int = 500) -> None:
            s.add(
                MeterReading(
                    meter_id=meter.id,
                    source="card",
                    taken_at=t + dt.timedelta(minutes=minutes),
                    cumulative=minutes,
                    remaining=remaining,
                    status=status,
                )
            )

        read(e, 0, 0)
        read(e, 10, alarm1 | alarm2)  # latest: alarm 2
        read(w, 0, alarm1)
        read(w, 10, 0)  # latest: cleared (credit bought)
        read(h, 5, exhausted | relay | alarm1 | alarm2, remaining=-10)
        read(other, 1, alarm1)
    with sessions() as s:
        every = dashboard.meters_in_alarm(s)
        assert [(a.serial, a.level) for a in every] == [
            ("H0001", "exhausted"),
            ("E0001", "alarm2"),
            ("E9001", "alarm1"),
        ]
        assert every[0].customer_number == world.customer_number
        assert "relay_open" in every[0].flags and every[0].remaining == -10
        east = dashboard.meters_in_alarm(s, {world.office_id})
        assert [a.serial for a in east] == ["H0001", "E0001"]
        assert [a.serial for a in dashboard.meters_in_alarm(s, {world.other_office_id})] == [
            "E9001"
        ]
