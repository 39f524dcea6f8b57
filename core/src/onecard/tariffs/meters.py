"""A meter's tariff and where it stands: what it used and bought in the current ladder period.

A meter's tariff is the one named on the meter (``meters.tariff``), else the only tariff of its
kind. Its ladder position is the larger of what it **bought** in the period (the units of its
card purchases, pending or confirmed) and what it **used** (the rise of its readings), so a
customer never buys at a step they have already used or bought their way past. Fixed charges of a
billing period (a heat basic fee) are due until a confirmed purchase of the period carried them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.errors import InvalidInput, NotFound
from onecard.models import CardPurchase, Customer, Meter, MeterReading, Premises
from onecard.tariffs.documents import schedule, tariff_names
from onecard.tariffs.engine import Position, Quote, Schedule, quote_money, quote_units
from onecard.utility import UtilityRegistry


def find_meter(session: Session, ref: str, kind: str | None = None) -> Meter:
    """A meter by ``SERIAL`` or ``KIND:SERIAL``."""
    if ":" in ref and kind is None:
        kind, ref = ref.split(":", 1)
    q = select(Meter).where(Meter.serial == ref)
    if kind:
        q = q.where(Meter.kind == kind)
    found = list(session.scalars(q.limit(2)))
    if not found:
        raise NotFound(f"no meter {ref!r}", field="meter")
    if len(found) > 1:
        raise InvalidInput(f"meter {ref!r} is ambiguous: give KIND:SERIAL", field="meter")
    return found[0]


def tariff_name(session: Session, meter: Meter) -> str:
    """The name of the meter's tariff (its own, else its kind's only tariff)."""
    if meter.tariff:
        return meter.tariff
    names = tariff_names(session, meter.kind)
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotFound(
            f"meter {meter.serial}: {meter.kind} has no tariff yet; load one with "
            "'onecard tariff load FILE'",
            field="tariff",
        )
    raise NotFound(
        f"meter {meter.serial}: {meter.kind} has several tariffs ({', '.join(names)}); "
        "assign one with 'onecard tariff assign'",
        field="tariff",
    )


def meter_schedule(session: Session, utilities: UtilityRegistry, meter: Meter) -> Schedule:
    return schedule(session, utilities, meter.kind, tariff_name(session, meter))


def assign(session: Session, utilities: UtilityRegistry, meter: Meter, name: str | None) -> None:
    """Set (or with None, clear) the tariff of a meter; the tariff must exist for its kind."""
    if name is not None:
        schedule(session, utilities, meter.kind, name)  # NotFound names the known ones
    meter.tariff = name


def reading_at(session: Session, meter_id: int, when: dt.datetime) -> int | None:
    """The meter's cumulative reading (smallest units) last reported at or before ``when``."""
    return session.scalar(
        select(MeterReading.cumulative)
        .where(MeterReading.meter_id == meter_id, MeterReading.taken_at <= when)
        .order_by(MeterReading.taken_at.desc(), MeterReading.id.desc())
        .limit(1)
    )


def consumption(session: Session, meter_id: int, start: dt.datetime, end: dt.datetime) -> int:
    """Smallest units the meter used in ``[start, end]`` by its readings (0 without readings).

    The baseline is the last reading at or before ``start``, else the first one after it.
    """
    last = reading_at(session, meter_id, end)
    if last is None:
        return 0
    base = reading_at(session, meter_id, start)
    if base is None:
        base = session.scalar(
            select(MeterReading.cumulative)
            .where(MeterReading.meter_id == meter_id, MeterReading.taken_at > start)
            .order_by(MeterReading.taken_at, MeterReading.id)
            .limit(1)
        )
    return max(0, last - (base if base is not None else last))


def bought(session: Session, meter_id: int, start: dt.datetime, end: dt.datetime) -> int:
    """Smallest units of the meter's live card purchases made in ``[start, end)``."""
    total = session.scalar(
        select(func.coalesce(func.sum(CardPurchase.units), 0)).where(
            CardPurchase.meter_id == meter_id,
            CardPurchase.status.in_(("pending", "confirmed")),
            CardPurchase.created_at >= start,
            CardPurchase.created_at < end,
        )
    )
    return int(total or 0)


def _fixed_paid(session: Session, meter_id: int, start: dt.date, end: dt.date, tz: Any) -> bool:
    lo = dt.datetime.combine(start, dt.time(0), tz)
    hi = dt.datetime.combine(end, dt.time(0), tz)
    rows = session.scalars(
        select(CardPurchase.params).where(
            CardPurchase.meter_id == meter_id,
            CardPurchase.status.in_(("pending", "confirmed")),
            CardPurchase.created_at >= lo,
            CardPurchase.created_at < hi,
        )
    )
    return any(int((p or {}).get("_fixed_fen", 0) or 0) > 0 for p in rows)


def position(
    session: Session, sched: Schedule, meter: Meter, at: dt.datetime, category: str | None
) -> Position:
    """Where ``meter`` stands at ``at`` under ``sched``: used/bought units, fixed charges due."""
    version = sched.at(at)
    body = version.priced(category)
    local = at.astimezone(version.tz)
    used = 0
    period = version.model.ladder_period(body, local)
    if period is not None:
        start, end = period[0].astimezone(dt.UTC), period[1].astimezone(dt.UTC)
        # every live purchase of the period counts, even one stamped later in the same second
        used = max(bought(session, meter.id, start, end), consumption(session, meter.id, start, at))
    premises = session.get(Premises, meter.premises_id) if meter.premises_id else None
    context: dict[str, Any] = {}
    if premises is not None:
        if premises.heated_area is not None:
            context["heated_area"] = premises.heated_area
        if premises.floor_area is not None:
            context["floor_area"] = premises.floor_area
    fixed_due = False
    opened = closed = None
    charge = version.model.charge_period(body, local.date())
    if charge is not None:
        fixed_due = not _fixed_paid(session, meter.id, charge[0], charge[1], version.tz)
        opened = meter.installed_at.astimezone(version.tz).date()
        if meter.removed_at is not None:
            closed = meter.removed_at.astimezone(version.tz).date()
    return Position(used=used, fixed_due=fixed_due, opened=opened, closed=closed, context=context)


def customer_category(session: Session, meter: Meter) -> str | None:
    premises = session.get(Premises, meter.premises_id) if meter.premises_id else None
    if premises is None or premises.customer_id is None:
        return None
    customer = session.get(Customer, premises.customer_id)
    return customer.category if customer else None


def quote_meter(
    session: Session,
    utilities: UtilityRegistry,
    meter: Meter,
    *,
    at: dt.datetime,
    amount: int | None = None,
    units: int | None = None,
    until: dt.datetime | None = None,
) -> Quote:
    """Quote a purchase for a real meter: its tariff, its customer's category, its position."""
    if (amount is None) == (units is None):
        raise InvalidInput("give either amount or units", field="amount")
    sched = meter_schedule(session, utilities, meter)
    category = customer_category(session, meter)
    pos = position(session, sched, meter, at, category)
    if amount is not None:
        return quote_money(
            sched, amount=amount, at=at, until=until, category=category, position=pos
        )
    assert units is not None
    return quote_units(sched, units=units, at=at, until=until, category=category, position=pos)
