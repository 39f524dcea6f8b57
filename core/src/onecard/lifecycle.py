"""An account's life after opening: transfer of ownership (过户), meter replacement (换表),
suspension and resumption (报停/恢复), and closure (销户).

Every function takes a session and does not commit; each writes one audit event naming the
customer. Each takes a ``key`` (the console's form key): a second call with the same key finds the
first one's audit event and returns its result without changing anything, so a double submit is
harmless. Money moves only through the ledger's named operations, with idempotency keys derived
from ``key``.

The ledger side of each action (see ``docs/console/customers.md``):

==================  ====================================================================
transfer            nothing: the account, its wallets and their balances stay
replace a meter     ``transfer`` old meter wallet -> new meter wallet (the whole balance)
suspend / resume    nothing
close               ``consume`` what the meters used (wallet balance - credit left), then
                    ``refund`` every wallet's balance, ``collect_arrears`` what is owed
==================  ====================================================================
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard import ledger
from onecard.audit import Actor, record
from onecard.customers import CATEGORIES, get_customer
from onecard.errors import Conflict, InvalidInput, NotFound
from onecard.ledger import accounts as acc
from onecard.models import (
    AuditEvent,
    Card,
    CardPurchase,
    CardSlot,
    Customer,
    LedgerAccount,
    Meter,
    MeterReading,
    Office,
    Operator,
    Premises,
    utcnow,
)
from onecard.money import format_fen
from onecard.receipts import issue_receipt
from onecard.utility import UtilityRegistry

_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 -]{4,30}$")
_ID_NUMBER = re.compile(r"^[0-9A-Za-z-]{1,32}$")
REFUND_METHODS = ("cash", "bank", "payable")
COLLECT_METHODS = ("cash", "bank")
MAX_REASON = 300

# Shared helpers -----------------------------------------------------------------------------


def _replayed(session: Session, customer_id: int, action: str, key: str) -> AuditEvent | None:
    """The audit event of an earlier call with this form key, if there was one."""
    for event in session.scalars(
        select(AuditEvent).where(AuditEvent.customer_id == customer_id, AuditEvent.action == action)
    ):
        if event.detail.get("key") == key:
            return event
    return None


def already_done(session: Session, customer_id: int, action: str, key: str) -> bool:
    """Whether ``action`` was already done on the customer with this form key."""
    return bool(key) and _replayed(session, customer_id, action, key) is not None


def _key(key: str) -> str:
    if not isinstance(key, str) or not re.match(r"^[A-Za-z0-9._:-]{8,80}$", key):
        raise InvalidInput("the form key is missing or malformed: reload the page", field="key")
    return key


def _reason(reason: str, *, required: bool = True) -> str:
    text = (reason or "").strip()
    if required and not text:
        raise InvalidInput("give a reason", field="reason")
    if len(text) > MAX_REASON:
        raise InvalidInput(f"the reason is at most {MAX_REASON} characters", field="reason")
    return text


def _not_closed(customer: Customer) -> None:
    if customer.status == "closed":
        raise Conflict(f"account {customer.number} is closed", field="customer")


def _meters(session: Session, customer: Customer, *, removed: bool = False) -> list[Meter]:
    stmt = (
        select(Meter)
        .join(Premises, Meter.premises_id == Premises.id)
        .where(Premises.customer_id == customer.id)
        .order_by(Meter.id)
    )
    if not removed:
        stmt = stmt.where(Meter.state != "removed")
    return list(session.scalars(stmt))


def _pending(session: Session, customer_id: int) -> list[CardPurchase]:
    return list(
        session.scalars(
            select(CardPurchase)
            .where(CardPurchase.customer_id == customer_id, CardPurchase.status == "pending")
            .order_by(CardPurchase.id)
        )
    )


def _balance(session: Session, code: str) -> int:
    row = session.scalar(
        select(LedgerAccount)
        .where(LedgerAccount.code == code)
        .execution_options(populate_existing=True)
    )
    return acc.natural_balance(row) if row is not None else 0


def arrears(session: Session, customer_id: int) -> int:
    """What the customer owes (fen, >= 0 normally)."""
    return _balance(session, acc.arrears_code(customer_id))


def last_reading(session: Session, meter_id: int) -> MeterReading | None:
    return session.scalar(
        select(MeterReading)
        .where(MeterReading.meter_id == meter_id)
        .order_by(MeterReading.taken_at.desc(), MeterReading.id.desc())
        .limit(1)
    )


def _people(customer: Customer) -> dict[str, Any]:
    return {
        "name": customer.name,
        "phone": customer.phone,
        "id_number": customer.id_number,
        "category": customer.category,
    }


# Transfer of ownership (过户) ----------------------------------------------------------------


def transfer_ownership(
    session: Session,
    actor: Actor,
    number: str,
    *,
    name: str,
    phone: str | None,
    id_number: str | None,
    key: str,
    category: str | None = None,
    reason: str = "",
) -> AuditEvent:
    """Give the account to a new owner: same number, premises, meters, cards and balances.

    The previous owner's details are kept in the audit event (``detail.from``); arrears are the
    previous owner's and must be collected first.
    """
    _key(key)
    customer = get_customer(session, number)
    done = _replayed(session, customer.id, "customer.transfer", key)
    if done is not None:
        return done
    _not_closed(customer)
    name = (name or "").strip()
    if not name:
        raise InvalidInput("the new owner's name must not be empty", field="name")
    if len(name) > 200:
        raise InvalidInput("the name is at most 200 characters", field="name")
    phone = (phone or "").strip() or None
    if phone is not None and not _PHONE.match(phone):
        raise InvalidInput(f"phone {phone!r} is not a phone number", field="phone")
    id_number = (id_number or "").strip() or None
    if id_number is not None and not _ID_NUMBER.match(id_number):
        raise InvalidInput("the ID number is 1 to 32 letters, digits or -", field="id_number")
    category = category or customer.category
    if category not in CATEGORIES:
        raise InvalidInput(f"category must be one of {', '.join(CATEGORIES)}", field="category")
    reason = _reason(reason, required=False)
    before = _people(customer)
    after = {"name": name, "phone": phone, "id_number": id_number, "category": category}
    if before == after:
        raise InvalidInput("the new owner's details are the same as the current", field="name")
    owed = arrears(session, customer.id)
    if owed > 0:
        raise Conflict(
            f"the account owes {format_fen(owed)} yuan: collect the arrears from the current "
            "owner before the transfer",
            field="customer",
            arrears=owed,
        )
    customer.name, customer.phone, customer.id_number, customer.category = (
        name,
        phone,
        id_number,
        category,
    )
    session.flush()
    return record(
        session,
        actor,
        "customer.transfer",
        [f"customer:{customer.id}"],
        detail={"key": key, "reason": reason, "from": before, "to": after},
        office_id=customer.office_id,
        customer_id=customer.id,
    )


def ownership_history(session: Session, customer_id: int) -> list[dict[str, Any]]:
    """Earlier owners, newest first: ``{"at", "actor", "from", "to", "reason"}``."""
    events = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.customer_id == customer_id, AuditEvent.action == "customer.transfer")
        .order_by(AuditEvent.id.desc())
    )
    return [
        {
            "at": e.at,
            "actor": e.actor,
            "from": e.detail.get("from", {}),
            "to": e.detail.get("to", {}),
            "reason": e.detail.get("reason", ""),
        }
        for e in events
    ]


def account_history(session: Session, customer_id: int, limit: int = 50) -> list[AuditEvent]:
    """The lifecycle events of an account (opening, transfers, replacements, status, cards) and
    what operators did to its remote meters (trip, close, keep power, release, recharge), newest
    first."""
    return list(
        session.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.customer_id == customer_id,
                AuditEvent.action.in_(
                    (
                        "customer.open",
                        "customer.transfer",
                        "meter.replace",
                        "customer.suspend",
                        "customer.resume",
                        "customer.close",
                        "card.issue",
                        "card.reissue",
                        "card.lost",
                        "meter.trip",
                        "meter.close",
                        "meter.keep",
                        "meter.release",
                        "meter.recharge",
                    )
                ),
            )
            .order_by(AuditEvent.id.desc())
            .limit(limit)
        )
    )


# Meter replacement (换表) --------------------------------------------------------------------


def card_serial_limit(utilities: UtilityRegistry, kind: str) -> int | None:
    """How many digits a card meter's serial of ``kind`` may have (None: not a card kind)."""
    if kind not in utilities:
        return None
    layout = utilities.get(kind).card_layout
    purchase = getattr(layout, "purchase", None)
    if purchase is None:
        return None
    return 2 * int(purchase.by_name["meter_serial"].length)


def find_customer_meter(session: Session, customer: Customer, serial: str) -> Meter:
    for meter in _meters(session, customer):
        if meter.serial == serial:
            return meter
    raise NotFound(f"account {customer.number} has no meter {serial!r} in use", field="meter")


def replace_meter(
    session: Session,
    actor: Actor,
    utilities: UtilityRegistry,
    number: str,
    *,
    meter: str,
    new_serial: str,
    final_reading: int,
    key: str,
    remaining: int | None = None,
    new_model: str = "",
    reason: str = "",
) -> dict[str, Any]:
    """Replace a meter (换表) and carry its wallet over to the new one.

    * the old meter's final register (``final_reading``, in the kind's smallest unit) and the
      credit it still held (``remaining``, fen or smallest units as its card layout counts) are
      stored as a ``closing`` reading; the old meter becomes ``removed``;
    * a new meter of the same kind, protocol and tariff takes its place on the premises, with a
      new wallet; the old wallet's whole balance moves there by a ledger ``transfer``
      (an overdrawn balance moves back the same way), so both wallets keep their history;
    * every usable card slot (card active or lost) bound to the old meter is bound to the new
      one: the next sale writes a purchase for the new serial, starting at sequence 1.
    """
    _key(key)
    customer = get_customer(session, number)
    done = _replayed(session, customer.id, "meter.replace", key)
    if done is not None:
        return dict(done.detail) | {"replayed": True}
    _not_closed(customer)
    old = find_customer_meter(session, customer, meter)
    new_serial = (new_serial or "").strip()
    if not _SERIAL.match(new_serial):
        raise InvalidInput(
            f"the new serial {new_serial!r} must be letters, digits, - or _", field="new_serial"
        )
    if session.scalar(select(Meter.id).where(Meter.kind == old.kind, Meter.serial == new_serial)):
        raise Conflict(f"meter {old.kind}:{new_serial} is already registered", field="new_serial")
    reason = _reason(reason)
    if len(new_model or "") > 64:
        raise InvalidInput("the model is at most 64 characters", field="new_model")
    if isinstance(final_reading, bool) or not isinstance(final_reading, int) or final_reading < 0:
        raise InvalidInput(
            "the final reading must be a number, not negative", field="final_reading"
        )
    previous = last_reading(session, old.id)
    if previous is not None and final_reading < previous.cumulative:
        raise InvalidInput(
            f"the final reading is below the last reading taken ({previous.cumulative} at "
            f"{previous.taken_at:%Y-%m-%d}): check the register",
            field="final_reading",
        )
    waiting = session.scalar(
        select(CardPurchase).where(
            CardPurchase.meter_id == old.id, CardPurchase.status == "pending"
        )
    )
    if waiting is not None:
        raise Conflict(
            f"meter {old.serial} has a pending sale ({waiting.sale_key}): finish or void it first",
            field="meter",
        )
    slots = list(
        session.scalars(
            select(CardSlot)
            .join(Card, CardSlot.card_id == Card.id)
            .where(CardSlot.meter_id == old.id, Card.status.in_(("active", "lost")))
        )
    )
    if slots:
        limit = card_serial_limit(utilities, old.kind)
        if limit is not None and (not new_serial.isdigit() or len(new_serial) > limit):
            raise InvalidInput(
                f"meter {new_serial!r} cannot go on the card: card meter serials are up to "
                f"{limit} digits",
                field="new_serial",
            )
        card_ids = {s.card_id for s in slots}
        same = session.scalar(
            select(Meter.serial)
            .join(CardSlot, CardSlot.meter_id == Meter.id)
            .where(CardSlot.card_id.in_(card_ids), Meter.id != old.id)
            .where(func.ltrim(Meter.serial, "0") == new_serial.lstrip("0"))
        )
        if same is not None:
            raise InvalidInput(
                f"meter {same} on the same card carries the same serial: a meter finds its slot "
                "by serial",
                field="new_serial",
            )
    now = utcnow()
    loaded = session.scalar(
        select(func.max(MeterReading.last_seq)).where(MeterReading.meter_id == old.id)
    )
    session.add(
        MeterReading(
            meter_id=old.id,
            source="closing",
            taken_at=now,
            cumulative=final_reading,
            remaining=remaining,
            last_seq=loaded,
            status=0,
            detail={"reason": reason, "key": key, "replaced_by": new_serial},
        )
    )
    old.state = "removed"
    old.removed_at = now
    new = Meter(
        kind=old.kind,
        serial=new_serial,
        model=new_model or "",
        protocol=old.protocol,
        tariff=old.tariff,
        premises_id=old.premises_id,
        installed_at=now,
    )
    session.add(new)
    session.flush()
    old_code, new_code = acc.meter_wallet_code(old.id), acc.meter_wallet_code(new.id)
    old_wallet = acc.get_account(session, old_code)
    acc.ensure_account(
        session,
        new_code,
        type="liability",
        purpose="wallet",
        name=f"{new.kind} {new.serial}",
        utility_kind=new.kind,
        office_id=old_wallet.office_id,
        customer_id=customer.id,
        meter_id=new.id,
        overdraft=old_wallet.overdraft,
    )
    balance = acc.natural_balance(old_wallet)
    posted = None
    if balance > 0:
        posted = ledger.transfer(
            session,
            source=old_code,
            target=new_code,
            amount=balance,
            idempotency_key=f"{key}:carry",
            operator_id=actor.operator_id,
            memo=f"meter replacement {old.serial} -> {new.serial}",
        )
    elif balance < 0:
        posted = ledger.transfer(
            session,
            source=new_code,
            target=old_code,
            amount=-balance,
            idempotency_key=f"{key}:carry",
            operator_id=actor.operator_id,
            memo=f"meter replacement {old.serial} -> {new.serial}: overdraft carried",
        )
    for slot in slots:
        slot.meter_id = new.id
    session.flush()
    detail = {
        "key": key,
        "reason": reason,
        "kind": old.kind,
        "old": {"serial": old.serial, "final_reading": final_reading, "remaining": remaining},
        "new": {"serial": new.serial, "model": new.model},
        "carried_fen": balance,
        "ledger_seq": posted.seq if posted else None,
        "cards": sorted({s.card_id for s in slots}),
    }
    record(
        session,
        actor,
        "meter.replace",
        [
            f"customer:{customer.id}",
            f"meter:{old.kind}:{old.serial}",
            f"meter:{new.kind}:{new.serial}",
            *([f"ledger:#{posted.seq}"] if posted else []),
        ],
        detail=detail,
        office_id=customer.office_id,
        customer_id=customer.id,
    )
    return detail | {"replayed": False}


# Suspension (报停) and resumption ------------------------------------------------------------


def suspend(session: Session, actor: Actor, number: str, *, key: str, reason: str) -> AuditEvent:
    """Suspend an account: no sales and no new cards until it is resumed (balances stay)."""
    return _set_status(session, actor, number, key, reason, "active", "suspended", "suspend")


def resume(
    session: Session, actor: Actor, number: str, *, key: str, reason: str = ""
) -> AuditEvent:
    """Resume a suspended account."""
    return _set_status(session, actor, number, key, reason, "suspended", "active", "resume")


def _set_status(
    session: Session,
    actor: Actor,
    number: str,
    key: str,
    reason: str,
    before: str,
    after: str,
    verb: str,
) -> AuditEvent:
    _key(key)
    customer = get_customer(session, number)
    action = f"customer.{verb}"
    done = _replayed(session, customer.id, action, key)
    if done is not None:
        return done
    if customer.status != before:
        raise Conflict(
            f"account {customer.number} is {customer.status}; only an {before} account can be "
            f"{'suspended' if verb == 'suspend' else 'resumed'}",
            field="customer",
        )
    reason = _reason(reason, required=verb == "suspend")
    customer.status = after
    session.flush()
    return record(
        session,
        actor,
        action,
        [f"customer:{customer.id}"],
        detail={"key": key, "reason": reason, "from": before, "to": after},
        office_id=customer.office_id,
        customer_id=customer.id,
    )


# Closure (销户) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterClosing:
    """What the operator read on a meter at closure.

    ``final_reading``: the register (kind's smallest unit), stored as a closing reading;
    ``left``: the credit the meter still holds, in fen (None: the wallet balance is the credit,
    as for meters whose use the ledger already charged). Negative: the meter is in overdraft.
    """

    final_reading: int | None = None
    left: int | None = None


def close_account(
    session: Session,
    actor: Actor,
    number: str,
    *,
    office_id: int,
    key: str,
    reason: str,
    method: str = "cash",
    collect_method: str = "cash",
    meters: Mapping[int, MeterClosing] | None = None,
) -> dict[str, Any]:
    """Close an account (销户) and settle it; the result names the settlement receipt.

    1. refused while a card sale of the customer is pending (finish or void it first);
    2. each meter: its closing reading is stored; what it used (wallet balance minus the credit
       left on it) is charged with ``consume`` (beyond the wallet: arrears);
    3. every wallet with credit is refunded (``method`` cash/bank now, or ``payable``);
    4. arrears are collected (``collect_method``);
    5. the customer's cards are retired, the meters removed, the account closed;
    6. a settlement receipt is issued (total: collected minus paid out now).
    """
    _key(key)
    customer = get_customer(session, number)
    done = _replayed(session, customer.id, "customer.close", key)
    if done is not None:
        return dict(done.detail) | {"replayed": True}
    _not_closed(customer)
    if method not in REFUND_METHODS:
        raise InvalidInput(f"method must be one of {', '.join(REFUND_METHODS)}", field="method")
    if collect_method not in COLLECT_METHODS:
        raise InvalidInput(
            f"collect_method must be one of {', '.join(COLLECT_METHODS)}", field="collect_method"
        )
    reason = _reason(reason)
    waiting = _pending(session, customer.id)
    if waiting:
        raise Conflict(
            f"the account has a pending card sale ({waiting[0].sale_key}): finish or void it "
            "before closing",
            field="customer",
            pending=[p.id for p in waiting],
        )
    office = session.get(Office, office_id)
    if office is None:
        raise NotFound(f"no office with id {office_id}", field="office_id")
    readings = dict(meters or {})
    active = _meters(session, customer)
    known = {m.id for m in active}
    for meter_id in readings:
        if meter_id not in known:
            raise InvalidInput(f"meter #{meter_id} is not in use on this account", field="meters")
    now = utcnow()
    lines: list[dict[str, Any]] = []
    refunded_now = owed_later = consumed = 0
    txns: list[int] = []
    for m in active:
        closing = readings.get(m.id, MeterClosing())
        field = f"meters.{m.id}"
        if closing.final_reading is not None:
            previous = last_reading(session, m.id)
            if closing.final_reading < 0 or (
                previous is not None and closing.final_reading < previous.cumulative
            ):
                raise InvalidInput(
                    f"meter {m.serial}: the final reading is below the last one taken",
                    field=f"{field}.final_reading",
                )
            session.add(
                MeterReading(
                    meter_id=m.id,
                    source="closing",
                    taken_at=now,
                    cumulative=closing.final_reading,
                    remaining=closing.left,
                    status=0,
                    detail={"reason": reason, "key": key, "closure": True},
                )
            )
        code = acc.meter_wallet_code(m.id)
        balance = _balance(session, code)
        used = 0
        if closing.left is not None:
            if closing.left > balance:
                raise InvalidInput(
                    f"meter {m.serial}: {format_fen(closing.left)} yuan left on the meter is more "
                    f"than its wallet holds ({format_fen(balance)}): check the reading",
                    field=f"{field}.left",
                )
            used = balance - closing.left
            if used > 0:
                posted = ledger.consume(
                    session,
                    wallet=code,
                    amount=used,
                    idempotency_key=f"{key}:use:{m.id}",
                    memo=f"use of meter {m.serial} up to the account's closure",
                    operator_id=actor.operator_id,
                )
                txns.append(posted.seq)
                consumed += used
        lines.append(
            {
                "title": f"{m.kind} {m.serial}",
                "kind": m.kind,
                "meter": m.serial,
                "seq": None,
                "amount_fen": 0,
                "units": None,
                "items": [],
                "_wallet": code,
                "_used": used,
            }
        )
    shared = acc.shared_wallet_code(customer.id)
    if session.scalar(select(LedgerAccount.id).where(LedgerAccount.code == shared)):
        lines.append(
            {
                "title": "Shared wallet",
                "kind": None,
                "meter": None,
                "seq": None,
                "amount_fen": 0,
                "units": None,
                "items": [],
                "_wallet": shared,
                "_used": 0,
            }
        )
    for line in lines:
        code = line.pop("_wallet")
        used = line.pop("_used")
        if used:
            line["items"].append(
                {
                    "label": "used",
                    "quantity": "",
                    "unit": "",
                    "price": "",
                    "amount": format_fen(used),
                }
            )
        balance = _balance(session, code)
        if balance > 0:
            posted = ledger.refund(
                session,
                wallet=code,
                amount=balance,
                office_id=office_id,
                method=method,
                idempotency_key=f"{key}:refund:{code}",
                operator_id=actor.operator_id,
                memo=f"refund on closing account {customer.number}",
            )
            txns.append(posted.seq)
            line["amount_fen"] = -balance
            line["items"].append(
                {
                    "label": "refund",
                    "quantity": "",
                    "unit": "",
                    "price": "",
                    "amount": format_fen(-balance),
                }
            )
            if method == "payable":
                owed_later += balance
            else:
                refunded_now += balance
    owed = arrears(session, customer.id)
    collected = 0
    if owed > 0:
        posted = ledger.collect_arrears(
            session,
            customer_id=customer.id,
            amount=owed,
            office_id=office_id,
            method=collect_method,
            idempotency_key=f"{key}:arrears",
            operator_id=actor.operator_id,
            memo=f"arrears on closing account {customer.number}",
        )
        txns.append(posted.seq)
        collected = owed
        lines.append(
            {
                "title": "Arrears",
                "kind": None,
                "meter": None,
                "seq": None,
                "amount_fen": owed,
                "units": None,
                "items": [],
            }
        )
    cards = list(
        session.scalars(
            select(Card).where(
                Card.customer_id == customer.id,
                Card.card_type == "user",
                Card.status.in_(("active", "lost")),
            )
        )
    )
    for card in cards:
        card.status = "retired"
        card.status_changed_at = now
        card.status_reason = f"account closed: {reason}"[:300]
    for m in active:
        m.state = "removed"
        m.removed_at = now
    customer.status = "closed"
    customer.closed_at = now
    session.flush()
    premises = session.scalar(
        select(Premises).where(Premises.customer_id == customer.id).order_by(Premises.id)
    )
    operator = session.get(Operator, actor.operator_id) if actor.operator_id else None
    total = collected - refunded_now
    notes = [f"reason: {reason}"]
    if owed_later:
        notes.append(f"refund payable, paid out later: {format_fen(owed_later)}")
    data: dict[str, Any] = {
        "title": "settlement",
        "office": {"code": office.code, "name": office.name, "timezone": office.timezone},
        "operator": {
            "username": operator.username if operator else actor.name,
            "full_name": operator.full_name if operator else "",
        },
        "customer": {
            "number": customer.number,
            "name": customer.name,
            "building": premises.building if premises else "",
            "unit": premises.unit if premises else "",
            "address": premises.address if premises else "",
        },
        "card": cards[0].uid if cards else None,
        "method": method,
        "at": now.isoformat(),
        "lines": lines,
        "total_fen": total,
        "notes": notes,
    }
    receipt = issue_receipt(
        session,
        kind="settlement",
        office_id=office_id,
        data=data,
        total=total,
        operator_id=actor.operator_id,
        customer_id=customer.id,
        when=now,
    )
    detail = {
        "key": key,
        "reason": reason,
        "receipt": receipt.number,
        "method": method,
        "collect_method": collect_method,
        "consumed_fen": consumed,
        "refunded_fen": refunded_now,
        "payable_fen": owed_later,
        "collected_fen": collected,
        "total_fen": total,
        "ledger_seqs": txns,
        "cards": [c.uid for c in cards],
        "meters": [m.serial for m in active],
    }
    record(
        session,
        actor,
        "customer.close",
        [f"customer:{customer.id}", f"receipt:{receipt.number}", *(f"ledger:#{s}" for s in txns)],
        detail=detail,
        office_id=customer.office_id,
        customer_id=customer.id,
    )
    return detail | {"replayed": False}


def closing_preview(session: Session, customer: Customer) -> dict[str, Any]:
    """What closing would settle now: each wallet's balance, arrears, pending sales."""
    wallets = []
    for m in _meters(session, customer):
        reading = last_reading(session, m.id)
        wallets.append(
            {
                "meter": m,
                "balance_fen": _balance(session, acc.meter_wallet_code(m.id)),
                "reading": reading,
                "unloaded_fen": unloaded_fen(session, m.id),
            }
        )
    return {
        "meters": wallets,
        "shared_fen": _balance(session, acc.shared_wallet_code(customer.id)),
        "arrears_fen": arrears(session, customer.id),
        "pending": _pending(session, customer.id),
    }


def unloaded_fen(session: Session, meter_id: int) -> int:
    """Confirmed purchases of a meter that no uploaded reading shows loaded (still on the card)."""
    loaded = session.scalar(
        select(func.max(MeterReading.last_seq)).where(MeterReading.meter_id == meter_id)
    )
    total = session.scalar(
        select(func.coalesce(func.sum(CardPurchase.amount), 0)).where(
            CardPurchase.meter_id == meter_id,
            CardPurchase.status == "confirmed",
            CardPurchase.seq > int(loaded or 0),
        )
    )
    return int(total or 0)


def suspended_since(session: Session, customer_id: int) -> dt.datetime | None:
    event = session.scalar(
        select(AuditEvent)
        .where(AuditEvent.customer_id == customer_id, AuditEvent.action == "customer.suspend")
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    return event.at if event is not None else None


__all__ = [
    "COLLECT_METHODS",
    "REFUND_METHODS",
    "MeterClosing",
    "account_history",
    "arrears",
    "close_account",
    "closing_preview",
    "ownership_history",
    "replace_meter",
    "resume",
    "suspend",
    "transfer_ownership",
]
