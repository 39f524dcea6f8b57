"""Server-side fee control: what the reading service does with a gateway's readings, in the
database, in one transaction per batch.

For each meter read: store the reading; price the use since what was last posted with the
meter's tariff (time-of-use bands, tiers) and post it to the ledger against the meter's wallet;
work out the alarm level from the credit left and record each crossing once; decide whether the
relay must trip or close. For each meter not read: count the miss and mark it stale. The bus work
(commands, recharges) that follows comes back as :class:`Action` objects.

Exactly once: ``priced_cumulative`` moves only in the transaction that posts the use, with the
idempotency key ``remote-use:<meter>:<from>:<to>``, under the gateway's lease (see
:mod:`onecard.remote.lease`). A restart re-reads and prices from where the last commit left off.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, and_, bindparam, select, update
from sqlalchemy.orm import Session

from onecard.db import execute_many
from onecard.errors import InvalidInput, NotFound
from onecard.ledger import operations as ops
from onecard.models import (
    Customer,
    Holiday,
    LedgerAccount,
    Meter,
    MeterEvent,
    MeterReading,
    Premises,
    RemoteMeter,
    RemoteRecharge,
)
from onecard.pricing import exact
from onecard.remote.types import MeterError, RemoteReading, unwrap_count
from onecard.tariffs.documents import schedule as load_schedule
from onecard.tariffs.documents import tariff_names
from onecard.tariffs.engine import Position, Schedule, quote_units
from onecard.utility import UtilityRegistry

#: Alarm levels: 0 none, 1 alarm 1, 2 alarm 2, 3 exhausted (credit at or past the overdraft).
LEVEL_EVENTS = {1: "alarm1", 2: "alarm2", 3: "exhausted"}
#: Events that are sent as notices (to the customer, and to staff for the bypass).
NOTICE_EVENTS = ("alarm1", "alarm2", "exhausted", "bypass", "recharge_mismatch")


@dataclass(frozen=True)
class Policy:
    """Installation-wide defaults (a meter's own thresholds win)."""

    alarm1: int = 2000  # fen
    alarm2: int = 500
    stale_after: int = 3  # consecutive missed readings
    timezone: str = "Asia/Shanghai"


@dataclass
class Outcome:
    """The result of reading one meter: a reading, or the error after the retries."""

    meter_id: int
    at: dt.datetime
    reading: RemoteReading | None = None
    error: MeterError | None = None
    attempts: int = 1


@dataclass(frozen=True)
class Action:
    """Bus work decided in the database: a relay command or a recharge push."""

    meter_id: int
    what: str  # trip, close, recharge
    source: str = "auto"
    recharge_id: int | None = None
    amount: Decimal | None = None
    count: int | None = None


@dataclass
class Stored:
    readings: int = 0
    priced: int = 0
    posted_fen: int = 0
    missed: int = 0
    events: list[int] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)


class Context:
    """What stays the same across batches: the plugins, the policy, compiled tariffs."""

    def __init__(self, utilities: UtilityRegistry, policy: Policy | None = None) -> None:
        self.utilities = utilities
        self.policy = policy or Policy()
        self._schedules: dict[tuple[str, str | None], Schedule | None] = {}
        self._holidays: dict[tuple[int | None, dt.date], bool] = {}

    def forget(self) -> None:
        """Drop the cached tariffs and holidays: the next batch loads them again (a tariff
        version or a holiday added since then is seen)."""
        self._schedules = {}
        self._holidays = {}

    def schedule(self, session: Session, kind: str, tariff: str | None) -> Schedule | None:
        key = (kind, tariff)
        if key not in self._schedules:
            name = tariff
            if name is None:
                names = tariff_names(session, kind)
                name = names[0] if len(names) == 1 else None
            try:
                self._schedules[key] = (
                    load_schedule(session, self.utilities, kind, name) if name else None
                )
            except NotFound:
                self._schedules[key] = None
        return self._schedules[key]

    def holiday(self, session: Session, office_id: int | None, day: dt.date) -> bool:
        key = (office_id, day)
        if key not in self._holidays:
            found = session.execute(
                select(Holiday.id).where(
                    Holiday.day == day,
                    (Holiday.office_id.is_(None)) | (Holiday.office_id == office_id),
                )
            ).first()
            self._holidays[key] = found is not None
        return self._holidays[key]


def smallest(kind_decimals: int, quantity: Decimal) -> int:
    """A quantity in the kind's unit as an integer of its smallest unit (rounded down)."""
    return int((quantity * (Decimal(10) ** kind_decimals)).to_integral_value(ROUND_FLOOR))


def level_of(credit: int, overdraft: int, alarm1: int, alarm2: int) -> int:
    """The alarm level of ``credit`` fen (negative: drawn into the overdraft)."""
    if credit <= -overdraft:
        return 3
    if credit <= alarm2:
        return 2
    if credit <= alarm1:
        return 1
    return 0


def in_no_trip_window(spec: str | None, local: dt.datetime) -> bool:
    """True when ``local`` falls in ``HH:MM-HH:MM`` (which may wrap past midnight)."""
    if not spec:
        return False
    start_s, end_s = spec.split("-")
    start = int(start_s[:2]) * 60 + int(start_s[3:])
    end = int(end_s[:2]) * 60 + int(end_s[3:])
    minute = local.hour * 60 + local.minute
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end


_REMOTE: Table = RemoteMeter.__table__  # type: ignore[assignment]
_READINGS: Table = MeterReading.__table__  # type: ignore[assignment]
_REMOTE_COLUMNS = tuple(c.name for c in _REMOTE.columns)
_INSERT_READING = _READINGS.insert()
#: The working state a batch moves: written back for every meter of the batch in one statement.
_WORKING = (
    "last_cumulative",
    "last_read_at",
    "priced_cumulative",
    "priced_bands",
    "priced_at",
    "ladder_start",
    "ladder_used",
    "last_attempt_at",
    "missed",
    "stale",
    "last_error",
    "alarm_level",
    "relay",
    "relay_checked_at",
    "exhausted_since",
    "bypass",
    "meter_recharge_count",
)
_WRITE_BACK = (
    update(_REMOTE)
    .where(_REMOTE.c.meter_id == bindparam("b_meter_id"))
    .values({name: bindparam(name) for name in _WORKING})
)

# Each row: the remote meter's columns (read as plain values: the batch works on them without
# the ORM's change tracking and writes them back at once), then what pricing and alarms need.
_ROWS = (
    select(
        *_REMOTE.columns,
        Meter.kind,
        Meter.serial,
        Meter.tariff,
        Meter.state,
        Customer.id,
        Customer.category,
        Customer.office_id,
        Premises.heated_area,
        Premises.floor_area,
        LedgerAccount.code,
        LedgerAccount.balance,
        LedgerAccount.overdraft,
    )
    .join(Meter, Meter.id == _REMOTE.c.meter_id)
    .outerjoin(Premises, Premises.id == Meter.premises_id)
    .outerjoin(Customer, Customer.id == Premises.customer_id)
    .outerjoin(
        LedgerAccount,
        and_(LedgerAccount.meter_id == Meter.id, LedgerAccount.purpose == "wallet"),
    )
)


def _load(session: Session, ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
    """The batch's meters by id: (state, kind, serial, tariff, meter state, customer id,
    category, office id, heated area, floor area, wallet code, balance, overdraft), where the
    state is a namespace of the ``remote_meters`` row."""
    n = len(_REMOTE_COLUMNS)
    found: dict[int, tuple[Any, ...]] = {}
    session.flush()  # what the ORM holds is seen: the rows are read past it, as core rows
    connection = session.connection()
    for start in range(0, len(ids), 500):
        chunk = _ROWS.where(_REMOTE.c.meter_id.in_(ids[start : start + 500]))
        for row in connection.execute(chunk):
            state = SimpleNamespace(**dict(zip(_REMOTE_COLUMNS, row[:n], strict=True)))
            found[state.meter_id] = (state, *row[n:])
    return found


def _write_back(session: Session, states: Sequence[SimpleNamespace]) -> None:
    if states:
        execute_many(
            session.connection(),
            _WRITE_BACK,
            [
                {"b_meter_id": s.meter_id, **{name: getattr(s, name) for name in _WORKING}}
                for s in states
            ],
        )


@dataclass
class _Read:
    """A meter read in this batch, between storing its reading and acting on its credit."""

    row: Any
    outcome: Outcome
    credit: int | None = None  # fen: the meter's own remaining credit, or the wallet's
    use: int | None = None  # index of its use in the batch's consume_many
    detail: dict[str, Any] = field(default_factory=dict)


def store_outcomes(
    session: Session, ctx: Context, outcomes: Sequence[Outcome], *, now: dt.datetime
) -> Stored:
    """Store, price, post, alarm and decide for a batch of outcomes. Does not commit.

    In three steps: store each reading and price its use; post the batch's uses together
    (:func:`onecard.ledger.operations.consume_many`); then work out each meter's alarm level and
    relay from the credit that is left.
    """
    result = Stored()
    if not outcomes:
        return result
    ids = [o.meter_id for o in outcomes]
    rows = _load(session, ids)
    tz = ZoneInfo(ctx.policy.timezone)
    readings: list[dict[str, Any]] = []
    events: list[MeterEvent] = []
    read: list[_Read] = []
    uses: list[ops.Use] = []
    states: list[SimpleNamespace] = []
    for outcome in outcomes:
        row = rows.get(outcome.meter_id)
        if row is None:
            continue
        remote: SimpleNamespace = row[0]
        states.append(remote)
        remote.last_attempt_at = outcome.at
        if outcome.reading is None:
            result.missed += 1
            remote.missed += 1
            error = outcome.error
            remote.last_error = (f"{error.code}: {error}" if error else "no answer")[:500]
            if remote.missed >= ctx.policy.stale_after and not remote.stale:
                remote.stale = True
                events.append(
                    MeterEvent(
                        meter_id=remote.meter_id,
                        at=outcome.at,
                        event="stale",
                        customer_id=row[5],
                        detail={"missed": remote.missed, "error": remote.last_error},
                    )
                )
            continue
        item = _store_one(session, ctx, row, outcome, readings, events, uses, result, now=now)
        if item is not None:
            read.append(item)
    if uses:
        consumed = ops.consume_many(session, uses)
        for item in read:
            if item.use is not None:
                posted = consumed.posted[item.use]
                item.detail["priced"]["transaction"] = posted.seq
                result.priced += 1
                result.posted_fen += uses[item.use].amount
        balances = consumed.balances
    else:
        balances = {}
    for item in read:
        if item.credit is None:  # billed by the server: the wallet's credit after the batch
            wallet = item.row[10]
            item.credit = -balances.get(wallet, item.row[11])
        _conclude(session, ctx, item, events, result, tz=tz)
    _write_back(session, states)
    if readings:
        execute_many(session.connection(), _INSERT_READING, readings)
        result.readings += len(readings)
    if events:
        session.add_all(events)
        session.flush()
        result.events.extend(e.id for e in events if e.event in NOTICE_EVENTS)
    return result


def _store_one(
    session: Session,
    ctx: Context,
    row: Any,
    outcome: Outcome,
    readings: list[dict[str, Any]],
    events: list[MeterEvent],
    uses: list[ops.Use],
    result: Stored,
    *,
    now: dt.datetime,
) -> _Read | None:
    """Store one reading and price its use (added to ``uses``); the meter, if it has a credit
    to act on."""
    remote, kind_code = row[0], row[1]
    customer_id, wallet = row[5], row[10]
    reading = outcome.reading
    assert reading is not None
    kind = ctx.utilities.get(kind_code)
    cumulative = smallest(kind.unit_decimals, reading.cumulative)
    bands = {k: str(v) for k, v in reading.bands.items()}
    item = _Read(row=row, outcome=outcome)
    detail = item.detail
    if bands:
        detail["bands"] = bands
    if reading.values:
        detail["values"] = {
            k: (str(v) if isinstance(v, Decimal) else v) for k, v in reading.values.items()
        }
    if reading.relay:
        detail["relay"] = reading.relay
    if reading.recharge_count is not None:
        detail["recharge_count"] = reading.recharge_count
    remaining = None if reading.remaining is None else int(reading.remaining * 100)
    if remote.stale:
        events.append(
            MeterEvent(
                meter_id=remote.meter_id, at=outcome.at, event="fresh", customer_id=customer_id
            )
        )
    remote.missed = 0
    remote.stale = False
    remote.last_error = ""
    repeated = remote.last_read_at is not None and outcome.at <= remote.last_read_at
    remote.last_cumulative = cumulative
    remote.last_read_at = outcome.at
    if reading.relay:
        remote.relay = reading.relay
        remote.relay_checked_at = outcome.at

    acts = False
    if remote.billing == "server" and wallet is not None:
        use = _price(session, ctx, row, outcome, cumulative, events, detail)
        if use is not None:
            item.use = len(uses)
            uses.append(use)
        acts = True
    elif remote.billing == "meter" and remaining is not None:
        item.credit = remaining
        _check_recharges(session, remote, reading, events, result, customer_id, outcome.at)
        acts = True

    if not repeated:  # the same instant read again (a retried cycle) is stored once
        readings.append(
            {
                "meter_id": remote.meter_id,
                "source": "remote",
                "taken_at": outcome.at,
                "received_at": now,
                "cumulative": cumulative,
                "remaining": remaining,
                "status": 0,
                "detail": detail,
            }
        )
    return item if acts else None


def _conclude(
    session: Session,
    ctx: Context,
    item: _Read,
    events: list[MeterEvent],
    result: Stored,
    *,
    tz: ZoneInfo,
) -> None:
    """Record an alarm level crossed by the meter's credit, and decide its relay."""
    row, outcome, credit = item.row, item.outcome, item.credit
    assert credit is not None and outcome.reading is not None
    remote: SimpleNamespace = row[0]
    customer_id, office_id, overdraft = row[5], row[7], row[12] or 0
    policy = ctx.policy
    alarm1 = policy.alarm1 if remote.alarm1 is None else remote.alarm1
    alarm2 = policy.alarm2 if remote.alarm2 is None else remote.alarm2
    level = level_of(credit, overdraft if remote.billing == "server" else 0, alarm1, alarm2)
    if level > remote.alarm_level:
        events.append(
            MeterEvent(
                meter_id=remote.meter_id,
                at=outcome.at,
                event=LEVEL_EVENTS[level],
                level=level,
                balance=credit,
                customer_id=customer_id,
                detail={"threshold": {1: alarm1, 2: alarm2, 3: -overdraft}[level]},
            )
        )
    elif level < remote.alarm_level:
        events.append(
            MeterEvent(
                meter_id=remote.meter_id,
                at=outcome.at,
                event="recovered",
                level=level,
                balance=credit,
                customer_id=customer_id,
            )
        )
    remote.alarm_level = level
    if level == 3:
        if remote.exhausted_since is None:
            remote.exhausted_since = outcome.at
    else:
        remote.exhausted_since = None
    _decide(
        session,
        ctx,
        remote,
        outcome.reading,
        level,
        office_id,
        customer_id,
        outcome.at,
        tz,
        events,
        result,
    )


def _price(
    session: Session,
    ctx: Context,
    row: Any,
    outcome: Outcome,
    cumulative: int,
    events: list[MeterEvent],
    detail: dict[str, Any],
) -> ops.Use | None:
    """Price the use since ``priced_cumulative`` and move the meter's priced position past it;
    the use to post (in this same transaction), or None when there is nothing to post."""
    remote: SimpleNamespace = row[0]
    kind_code, tariff, customer_id, category = row[1], row[3], row[5], row[6]
    heated_area, floor_area, wallet = row[8], row[9], row[10]
    reading = outcome.reading
    assert reading is not None
    if remote.priced_cumulative is None or remote.priced_at is None:
        remote.priced_cumulative = cumulative  # the first reading is the baseline
        remote.priced_at = outcome.at
        remote.priced_bands = {k: str(v) for k, v in reading.bands.items()}
        return None
    if cumulative < remote.priced_cumulative:
        events.append(
            MeterEvent(
                meter_id=remote.meter_id,
                at=outcome.at,
                event="rollback",
                customer_id=customer_id,
                detail={"priced": remote.priced_cumulative, "read": cumulative},
            )
        )
        remote.priced_cumulative = cumulative
        remote.priced_at = outcome.at
        remote.priced_bands = {k: str(v) for k, v in reading.bands.items()}
        return None
    units = cumulative - remote.priced_cumulative
    if units == 0 or outcome.at <= remote.priced_at:
        return None
    sched = ctx.schedule(session, kind_code, tariff)
    if sched is None:
        detail["unpriced"] = "no tariff"
        return None
    start, end = remote.priced_at, outcome.at
    first = _period_start(sched, start, category)  # the ladder period the interval starts in
    used = _ladder_used(remote, first)
    by_band = band_shares(reading.bands, remote.priced_bands or {})
    context: dict[str, Any] = {}
    if heated_area is not None:
        context["heated_area"] = heated_area
    if floor_area is not None:
        context["floor_area"] = floor_area
    position = Position(used=used, context=context)
    try:
        quote = quote_units(
            sched,
            units=units,
            at=start,
            until=end,
            by_band=by_band,
            category=category,
            position=position,
        )
    except InvalidInput as exc:
        if by_band is None:
            raise
        detail["bands_unused"] = str(exc)[:200]  # e.g. the tariff has no such band: by time
        quote = quote_units(
            sched, units=units, at=start, until=end, category=category, position=position
        )
    amount = quote.amount
    if amount <= 0:
        return None  # less than a fen so far: it waits for the next reading
    unit = sched.kind.unit or ""
    use = ops.Use(
        wallet=wallet,
        amount=amount,
        idempotency_key=f"remote-use:{remote.meter_id}:{remote.priced_cumulative}:{cumulative}",
        memo=(
            f"{kind_code} {row[2]}: {quote.quantity} {unit} "
            f"{start.isoformat(timespec='minutes')} - {end.isoformat(timespec='minutes')}"
        ),
    )
    detail["priced"] = {"from": remote.priced_cumulative, "amount": amount}
    remote.priced_cumulative = cumulative
    remote.priced_at = end
    remote.priced_bands = {k: str(v) for k, v in reading.bands.items()}
    _advance_ladder(sched, remote, start, end, units, used, category, first)
    return use


_SHARE = Decimal("1e-20")


def band_shares(
    bands: Mapping[str, Decimal], priced: Mapping[str, Any]
) -> dict[str, Decimal] | None:
    """How the use since the last priced reading falls on the time-of-use bands, by the meter's
    band registers (``bands``, against ``priced``, those registers when it was last priced): a
    share of each band that moved, adding up to exactly 1 (the last band takes what the others
    leave). None when the registers cannot say: no band registers, a band not known at the
    last pricing, a register gone back, or none moved; the use is then spread by time."""
    if not bands or any(name not in priced for name in bands):
        return None
    deltas = {name: value - Decimal(str(priced[name])) for name, value in bands.items()}
    if any(d < 0 for d in deltas.values()):
        return None
    moved = [(name, d) for name, d in deltas.items() if d > 0]
    if not moved:
        return None
    with exact():
        total = sum((d for _, d in moved), Decimal(0))
        shares = {name: (d / total).quantize(_SHARE, ROUND_FLOOR) for name, d in moved[:-1]}
        shares[moved[-1][0]] = 1 - sum(shares.values(), Decimal(0))
    return shares


def _period_start(sched: Schedule, at: dt.datetime, category: str | None) -> dt.datetime | None:
    version = sched.at(at)
    period = version.model.ladder_period(version.priced(category), at.astimezone(version.tz))
    return None if period is None else period[0].astimezone(dt.UTC)


def _ladder_used(remote: SimpleNamespace, period: dt.datetime | None) -> int:
    """What the meter used already in the ladder period starting at ``period``."""
    if period is None:
        return 0
    if remote.ladder_start is not None and remote.ladder_start == period:
        return int(remote.ladder_used)
    return 0


def _advance_ladder(
    sched: Schedule,
    remote: SimpleNamespace,
    start: dt.datetime,
    end: dt.datetime,
    units: int,
    used: int,
    category: str | None,
    first: dt.datetime | None,
) -> None:
    last = _period_start(sched, end, category)
    if last is None:
        remote.ladder_start, remote.ladder_used = None, 0
        return
    if first == last:
        remote.ladder_start, remote.ladder_used = last, used + units
        return
    # the interval crossed into a new ladder period: the share after its start, by time
    share = (
        Decimal(units)
        * Decimal((end - last).total_seconds())
        / Decimal((end - start).total_seconds())
    )
    remote.ladder_start, remote.ladder_used = last, int(share)


def _check_recharges(
    session: Session,
    remote: SimpleNamespace,
    reading: RemoteReading,
    events: list[MeterEvent],
    result: Stored,
    customer_id: int | None,
    at: dt.datetime,
) -> None:
    """Compare the meter's recharge count with ours: confirm, re-push, or raise a mismatch.
    A counter that wraps (one byte in CJ/T 188) is read as the full count nearest ours."""
    if reading.recharge_count is None:
        return
    count = unwrap_count(
        reading.recharge_count, reading.recharge_count_modulus, remote.recharge_count
    )
    previous = remote.meter_recharge_count
    remote.meter_recharge_count = count
    pending = (
        session.execute(
            select(RemoteRecharge)
            .where(RemoteRecharge.meter_id == remote.meter_id, RemoteRecharge.status == "pending")
            .order_by(RemoteRecharge.count)
        )
        .scalars()
        .all()
    )
    for push in pending:
        if count >= push.count:
            push.status = "accepted"
            push.confirmed_at = at
            push.meter_count = count
        else:
            result.actions.append(
                Action(
                    meter_id=remote.meter_id,
                    what="recharge",
                    recharge_id=push.id,
                    amount=Decimal(push.amount) / 100,
                    count=push.count,
                )
            )
            break
    if count > remote.recharge_count and count != previous:
        events.append(
            MeterEvent(
                meter_id=remote.meter_id,
                at=at,
                event="recharge_mismatch",
                customer_id=customer_id,
                detail={"meter_count": count, "issued": remote.recharge_count},
            )
        )


def _decide(
    session: Session,
    ctx: Context,
    remote: SimpleNamespace,
    reading: RemoteReading,
    level: int,
    office_id: int | None,
    customer_id: int | None,
    at: dt.datetime,
    tz: ZoneInfo,
    events: list[MeterEvent],
    result: Stored,
) -> None:
    """Trip an exhausted meter (unless kept on, in its grace, in no-trip hours or a holiday);
    close one the service tripped once credit is back; flag a relay closed against a trip."""
    relay = reading.relay
    if remote.tripped and relay == "closed" and not remote.keep_power:
        if not remote.bypass:
            remote.bypass = True
            events.append(
                MeterEvent(
                    meter_id=remote.meter_id,
                    at=at,
                    event="bypass",
                    level=level,
                    customer_id=customer_id,
                    detail={"tripped": remote.tripped},
                )
            )
    elif relay == "open" or not remote.tripped:
        remote.bypass = False
    if remote.keep_power:
        return
    if level == 3 and not remote.tripped and relay != "open":
        since = remote.exhausted_since or at
        if at < since + dt.timedelta(minutes=remote.grace_minutes):
            return
        local = at.astimezone(tz)
        if in_no_trip_window(remote.no_trip_hours, local):
            return
        if remote.no_trip_holidays and ctx.holiday(session, office_id, local.date()):
            return
        result.actions.append(Action(meter_id=remote.meter_id, what="trip"))
    elif level < 3 and remote.tripped == "auto":
        result.actions.append(Action(meter_id=remote.meter_id, what="close"))
