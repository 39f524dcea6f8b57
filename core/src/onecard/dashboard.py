"""The dashboard's figures: a day's sales, card sales left pending, card meters in alarm.

Plain queries over a session (no Flask, nothing written, nothing committed). ``offices`` is the
set of office ids the reader may see (``None``: every office), as
:meth:`onecard.operators.Grants.offices` answers it.

* A day is a calendar day in a time zone: ``[local midnight, next local midnight)`` in UTC.
* A sale is a ledger transaction of kind ``sale``; its amount is what it put into wallets, its fee
  what went to the office's fees account. Sales reversed later still count on their day; the
  reversals of the day are counted apart.
* A meter is in alarm when its latest reading (by ``taken_at``, then id) has the ``alarm1``,
  ``alarm2`` or ``exhausted`` status bit set, as the card meter writes them in its return record
  (:data:`onecard.card.layout.STATUS_FLAGS`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from onecard.card.layout import STATUS_FLAGS, flags_of
from onecard.models import (
    CardPurchase,
    Customer,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Meter,
    MeterReading,
    Operator,
    Premises,
    utcnow,
)

WALLET_PURPOSES = ("wallet", "shared_wallet")
#: The status bits that put a meter on the alarm list.
ALARM_BITS = STATUS_FLAGS["alarm1"] | STATUS_FLAGS["alarm2"] | STATUS_FLAGS["exhausted"]
#: The key of sales into a shared wallet (no single utility kind).
SHARED = "shared"

Offices = Collection[int] | None


def day_bounds(day: dt.date, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants where ``day`` starts and ends in the time zone ``tz``."""
    zone = ZoneInfo(tz)
    start = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def local_today(tz: str, now: dt.datetime | None = None) -> dt.date:
    return (now or utcnow()).astimezone(ZoneInfo(tz)).date()


@dataclass(frozen=True)
class SalesLine:
    """Sales of one utility kind, or of one operator: how many, what went into wallets, fees."""

    key: str
    label: str
    count: int
    amount: int
    fees: int = 0

    @property
    def taken(self) -> int:
        return self.amount + self.fees


@dataclass(frozen=True)
class SalesDay:
    day: dt.date
    timezone: str
    start: dt.datetime
    end: dt.datetime
    by_kind: list[SalesLine]
    by_operator: list[SalesLine]
    count: int
    amount: int
    fees: int
    reversals: int
    reversed_amount: int

    @property
    def taken(self) -> int:
        return self.amount + self.fees


def _in_offices(column: InstrumentedAttribute[Any], offices: Offices) -> list[ColumnElement[bool]]:
    """The condition "in one of these offices" (none when every office is allowed)."""
    if offices is None:
        return []
    return [column.in_(sorted(offices))]


def _day_sales(start: dt.datetime, end: dt.datetime, offices: Offices) -> Select[Any]:
    return select(LedgerTransaction.id).where(
        LedgerTransaction.kind == "sale",
        LedgerTransaction.created_at >= start,
        LedgerTransaction.created_at < end,
        *_in_offices(LedgerTransaction.office_id, offices),
    )


def sales_of_day(session: Session, day: dt.date, tz: str, offices: Offices = None) -> SalesDay:
    """The sales of one local day, by utility kind and by operator."""
    start, end = day_bounds(day, tz)
    sale_ids = _day_sales(start, end, offices).subquery()
    wallet_amount = case(
        (LedgerAccount.purpose.in_(WALLET_PURPOSES), -LedgerPosting.amount), else_=0
    )
    fee_amount = case((LedgerAccount.purpose == "fees", -LedgerPosting.amount), else_=0)

    # what each sale put into wallets and fees, with the wallet's kind and the sale's operator
    per_txn = (
        select(
            LedgerPosting.transaction_id.label("tid"),
            func.max(
                case(
                    (
                        LedgerAccount.purpose == "shared_wallet",
                        SHARED,
                    ),
                    (LedgerAccount.purpose == "wallet", LedgerAccount.utility_kind),
                    else_=None,
                )
            ).label("kind"),
            func.sum(wallet_amount).label("amount"),
            func.sum(fee_amount).label("fees"),
        )
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(LedgerPosting.transaction_id.in_(select(sale_ids.c.id)))
        .group_by(LedgerPosting.transaction_id)
        .subquery()
    )
    rows = session.execute(
        select(
            per_txn.c.kind,
            LedgerTransaction.operator_id,
            Operator.username,
            Operator.full_name,
            func.count(),
            func.coalesce(func.sum(per_txn.c.amount), 0),
            func.coalesce(func.sum(per_txn.c.fees), 0),
        )
        .join(LedgerTransaction, LedgerTransaction.id == per_txn.c.tid)
        .outerjoin(Operator, Operator.id == LedgerTransaction.operator_id)
        .group_by(
            per_txn.c.kind, LedgerTransaction.operator_id, Operator.username, Operator.full_name
        )
    ).all()

    kinds: dict[str, list[int]] = {}
    people: dict[str, tuple[str, list[int]]] = {}
    for kind, _op_id, username, full_name, count, amount, fees in rows:
        k = kinds.setdefault(kind or SHARED, [0, 0, 0])
        p = people.setdefault(username or "", (full_name or username or "", [0, 0, 0]))[1]
        for acc in (k, p):
            acc[0] += int(count)
            acc[1] += int(amount)
            acc[2] += int(fees)
    by_kind = [
        SalesLine(key, key, c, a, f) for key, (c, a, f) in sorted(kinds.items(), key=_by_amount)
    ]
    by_operator = [
        SalesLine(key, label, c, a, f)
        for key, (label, (c, a, f)) in sorted(
            people.items(), key=lambda i: _by_amount((i[0], i[1][1]))
        )
    ]

    original = aliased(LedgerTransaction)
    rev_count, rev_amount = session.execute(
        select(
            func.count(func.distinct(LedgerTransaction.id)),
            func.coalesce(
                func.sum(
                    case(
                        (LedgerAccount.purpose.in_(WALLET_PURPOSES), LedgerPosting.amount), else_=0
                    )
                ),
                0,
            ),
        )
        .select_from(LedgerTransaction)
        .join(original, original.id == LedgerTransaction.reverses_id)
        .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(
            original.kind == "sale",
            LedgerTransaction.created_at >= start,
            LedgerTransaction.created_at < end,
            *_in_offices(LedgerTransaction.office_id, offices),
        )
    ).one()
    return SalesDay(
        day=day,
        timezone=tz,
        start=start,
        end=end,
        by_kind=by_kind,
        by_operator=by_operator,
        count=sum(line.count for line in by_kind),
        amount=sum(line.amount for line in by_kind),
        fees=sum(line.fees for line in by_kind),
        reversals=int(rev_count),
        reversed_amount=int(rev_amount),
    )


def _by_amount(item: tuple[str, list[int]]) -> tuple[int, str]:
    return (-item[1][1], item[0])


@dataclass(frozen=True)
class PendingSale:
    id: int
    sale_key: str
    created_at: dt.datetime
    age: dt.timedelta
    customer_number: str
    customer_name: str
    meter_kind: str
    meter_serial: str
    amount: int
    operator: str
    office_id: int


def pending_sales(
    session: Session, offices: Offices = None, *, now: dt.datetime | None = None, limit: int = 50
) -> list[PendingSale]:
    """Card sales whose card write did not finish (status ``pending``), oldest first."""
    now = now or utcnow()
    rows = session.execute(
        select(CardPurchase, Customer.number, Customer.name, Meter.kind, Meter.serial, Operator)
        .join(Customer, Customer.id == CardPurchase.customer_id)
        .join(Meter, Meter.id == CardPurchase.meter_id)
        .outerjoin(Operator, Operator.id == CardPurchase.operator_id)
        .where(
            CardPurchase.status == "pending",
            *_in_offices(CardPurchase.office_id, offices),
        )
        .order_by(CardPurchase.created_at, CardPurchase.id)
        .limit(limit)
    ).all()
    return [
        PendingSale(
            id=p.id,
            sale_key=p.sale_key,
            created_at=p.created_at,
            age=max(now - p.created_at, dt.timedelta(0)),
            customer_number=number,
            customer_name=name,
            meter_kind=kind,
            meter_serial=serial,
            amount=p.amount,
            operator=op.username if op is not None else "",
            office_id=p.office_id,
        )
        for p, number, name, kind, serial, op in rows
    ]


def count_pending(session: Session, offices: Offices = None) -> int:
    return int(
        session.scalar(
            select(func.count(CardPurchase.id)).where(
                CardPurchase.status == "pending",
                *_in_offices(CardPurchase.office_id, offices),
            )
        )
        or 0
    )


@dataclass(frozen=True)
class MeterAlarm:
    meter_id: int
    kind: str
    serial: str
    customer_number: str | None
    customer_name: str | None
    office_id: int
    taken_at: dt.datetime
    remaining: int | None
    status: int
    flags: list[str] = field(default_factory=list)

    @property
    def level(self) -> str:
        """The worst condition: ``exhausted``, ``alarm2`` or ``alarm1``."""
        for name in ("exhausted", "alarm2", "alarm1"):
            if name in self.flags:
                return name
        return ""


def meters_in_alarm(
    session: Session, offices: Offices = None, *, limit: int = 100
) -> list[MeterAlarm]:
    """Meters whose latest reading reports alarm 1, alarm 2 or exhausted credit; worst first."""
    ranked = select(
        MeterReading.id.label("rid"),
        func.row_number()
        .over(
            partition_by=MeterReading.meter_id,
            order_by=(MeterReading.taken_at.desc(), MeterReading.id.desc()),
        )
        .label("n"),
    ).subquery()
    latest = select(ranked.c.rid).where(ranked.c.n == 1)
    rows = session.execute(
        select(MeterReading, Meter.kind, Meter.serial, Premises.office_id, Customer)
        .join(Meter, Meter.id == MeterReading.meter_id)
        .join(Premises, Premises.id == Meter.premises_id)
        .outerjoin(Customer, Customer.id == Premises.customer_id)
        .where(
            MeterReading.id.in_(latest),
            MeterReading.status.op("&")(ALARM_BITS) != 0,
            Meter.state != "removed",
            *_in_offices(Premises.office_id, offices),
        )
        .order_by(MeterReading.taken_at.desc(), MeterReading.id.desc())
    ).all()
    alarms = [
        MeterAlarm(
            meter_id=r.meter_id,
            kind=kind,
            serial=serial,
            customer_number=customer.number if customer is not None else None,
            customer_name=customer.name if customer is not None else None,
            office_id=office_id,
            taken_at=r.taken_at,
            remaining=r.remaining,
            status=r.status,
            flags=flags_of(r.status),
        )
        for r, kind, serial, office_id, customer in rows
    ]
    severity = {"exhausted": 0, "alarm2": 1, "alarm1": 2}
    alarms.sort(key=lambda a: severity.get(a.level, 3))  # stable: newest first within a level
    return alarms[:limit]


__all__ = [
    "ALARM_BITS",
    "MeterAlarm",
    "PendingSale",
    "SalesDay",
    "SalesLine",
    "count_pending",
    "day_bounds",
    "local_today",
    "meters_in_alarm",
    "pending_sales",
    "sales_of_day",
]
