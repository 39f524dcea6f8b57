"""Customers: opening an account (customer, premises, meters, wallets) and looking one up."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from onecard.audit import Actor, record
from onecard.errors import Conflict, InvalidInput, NotFound
from onecard.ledger import accounts as acc
from onecard.models import Card, Customer, LedgerAccount, LedgerTransaction, Meter, Premises
from onecard.money import format_fen
from onecard.offices import get_office
from onecard.utility import UtilityRegistry

CATEGORIES = ("residential", "commercial", "industrial", "public")
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 -]{4,30}$")


@dataclass(frozen=True)
class MeterSpec:
    kind: str
    serial: str
    model: str = ""
    protocol: str = "card"

    @classmethod
    def parse(cls, text: str, field: str = "meters") -> MeterSpec:
        """``KIND:SERIAL[:MODEL]`` as typed on the command line."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise InvalidInput(f"{field}: {text!r} is not KIND:SERIAL[:MODEL]", field=field)
        return cls(kind=parts[0], serial=parts[1], model=parts[2] if len(parts) == 3 else "")


def _area(value: Any, field: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a number of m², not {value!r}", field=field)
    try:
        area = Decimal(str(value))  # str() of a float is its shortest exact repr: 72.3 -> "72.3"
    except InvalidOperation:
        raise InvalidInput(f"{field} must be a number of m², not {value!r}", field=field) from None
    if not area.is_finite() or area <= 0 or area > Decimal("1000000"):
        raise InvalidInput(f"{field} must be between 0 and 1,000,000 m²", field=field)
    if area != area.quantize(Decimal("0.01")):
        raise InvalidInput(f"{field} has more than two decimals", field=field)
    return area


def open_account(
    session: Session,
    actor: Actor,
    utilities: UtilityRegistry,
    *,
    office: str,
    name: str,
    phone: str | None = None,
    id_number: str | None = None,
    category: str = "residential",
    building: str = "",
    unit: str = "",
    address: str = "",
    floor_area: Any = None,
    heated_area: Any = None,
    meters: Sequence[MeterSpec] = (),
    shared_wallet: bool = False,
    number: str | None = None,
    key: str | None = None,
) -> Customer:
    """Open an account (开户): customer, premises, its meters, and a wallet for each meter.

    ``key`` (a console form's key) is kept in the audit event: :func:`opened_with` finds the
    account a form already opened, so a double submit opens one account."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("name must not be empty", field="name")
    if phone and not _PHONE.match(phone):
        raise InvalidInput(f"phone {phone!r} is not a phone number", field="phone")
    if category not in CATEGORIES:
        raise InvalidInput(
            f"category must be one of {', '.join(CATEGORIES)}, not {category!r}", field="category"
        )
    floor = _area(floor_area, "floor_area")
    heated = _area(heated_area, "heated_area")
    seen: set[tuple[str, str]] = set()
    for i, spec in enumerate(meters):
        field = f"meters[{i}]"
        if spec.kind not in utilities:
            known = ", ".join(utilities.codes()) or "none (no plugins loaded)"
            raise InvalidInput(
                f"{field}.kind: unknown utility kind {spec.kind!r} (known: {known})",
                field=f"{field}.kind",
            )
        if utilities.get(spec.kind).money_only:
            raise InvalidInput(
                f"{field}.kind: {spec.kind!r} is billed in money only and has no meters",
                field=f"{field}.kind",
            )
        if not _SERIAL.match(spec.serial):
            raise InvalidInput(
                f"{field}.serial: {spec.serial!r} must be letters, digits, - or _",
                field=f"{field}.serial",
            )
        if (spec.kind, spec.serial) in seen:
            raise InvalidInput(
                f"{field}: meter {spec.kind}:{spec.serial} is listed twice", field=field
            )
        seen.add((spec.kind, spec.serial))
        taken = session.execute(
            select(Meter.id).where(Meter.kind == spec.kind, Meter.serial == spec.serial)
        ).first()
        if taken:
            raise Conflict(
                f"{field}: meter {spec.kind}:{spec.serial} is already registered",
                field=f"{field}.serial",
            )
    if number is not None:
        if not re.match(r"^[A-Za-z0-9-]{1,32}$", number):
            raise InvalidInput("number must be 1 to 32 letters, digits or -", field="number")
        if session.execute(select(Customer.id).where(Customer.number == number)).first():
            raise Conflict(f"customer number {number!r} is taken", field="number")
    home = get_office(session, office)

    customer = Customer(
        number=number or f"tmp-{uuid.uuid4().hex[:24]}",
        name=name.strip(),
        phone=phone or None,
        id_number=id_number or None,
        category=category,
        office_id=home.id,
    )
    session.add(customer)
    session.flush()
    if number is None:
        customer.number = f"{home.code}-{customer.id:06d}"
    premises = Premises(
        customer_id=customer.id,
        office_id=home.id,
        building=building,
        unit=unit,
        address=address,
        floor_area=floor,
        heated_area=heated,
    )
    session.add(premises)
    session.flush()
    for spec in meters:
        meter = Meter(
            kind=spec.kind,
            serial=spec.serial,
            model=spec.model,
            protocol=spec.protocol,
            premises_id=premises.id,
        )
        session.add(meter)
        session.flush()
        acc.ensure_account(
            session,
            acc.meter_wallet_code(meter.id),
            type="liability",
            purpose="wallet",
            name=f"{spec.kind} {spec.serial}",
            utility_kind=spec.kind,
            office_id=home.id,
            customer_id=customer.id,
            meter_id=meter.id,
        )
    if shared_wallet:
        acc.ensure_account(
            session,
            acc.shared_wallet_code(customer.id),
            type="liability",
            purpose="shared_wallet",
            name="Shared wallet",
            office_id=home.id,
            customer_id=customer.id,
        )
    session.flush()
    record(
        session,
        actor,
        "customer.open",
        [f"customer:{customer.id}", *(f"meter:{m.kind}:{m.serial}" for m in meters)],
        detail={"number": customer.number, "meters": len(meters)} | ({"key": key} if key else {}),
        office_id=home.id,
        customer_id=customer.id,
    )
    return customer


def opened_with(session: Session, key: str) -> Customer | None:
    """The customer whose opening recorded the form key ``key``, if any."""
    from onecard.models import AuditEvent

    for event in session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "customer.open", AuditEvent.customer_id.is_not(None))
        .order_by(AuditEvent.id.desc())
        .limit(500)
    ):
        if event.detail.get("key") == key and event.customer_id is not None:
            return session.get(Customer, event.customer_id)
    return None


def require_active(session: Session, customer_id: int | None, what: str = "buy") -> None:
    """Refuse (409) when the customer is suspended or closed: they may not ``what``."""
    if customer_id is None:
        return
    customer = session.get(Customer, customer_id)
    if customer is not None and customer.status != "active":
        raise Conflict(
            f"customer {customer.number} is {customer.status} and may not {what}",
            field="customer",
        )


def get_customer(session: Session, number: str) -> Customer:
    customer = session.execute(
        select(Customer).where(Customer.number == number)
    ).scalar_one_or_none()
    if customer is None:
        raise NotFound(f"no customer with number {number!r}", field="customer")
    return customer


def find_meter(session: Session, serial: str, kind: str | None = None) -> Meter:
    """A meter by serial (and kind, where serials repeat across kinds)."""
    stmt = select(Meter).where(Meter.serial == serial)
    if kind:
        stmt = stmt.where(Meter.kind == kind)
    found = list(session.execute(stmt).scalars())
    if not found:
        raise NotFound(f"no meter with serial {serial!r}", field="meter")
    if len(found) > 1:
        kinds = ", ".join(m.kind for m in found)
        raise InvalidInput(
            f"serial {serial!r} belongs to meters of several kinds ({kinds}); name the kind",
            field="meter",
        )
    return found[0]


def search_customers(
    session: Session, text: str, office_ids: frozenset[int] | None, limit: int = 50
) -> list[Customer]:
    """Customers whose name, number, phone, card number (UID), meter serial, building or unit
    contains ``text`` (case-insensitive for card numbers), in ``office_ids`` (None: all)."""
    text = text.strip()
    if not text:
        return []
    stmt = (
        select(Customer)
        .outerjoin(Premises, Premises.customer_id == Customer.id)
        .outerjoin(Meter, Meter.premises_id == Premises.id)
        .outerjoin(Card, Card.customer_id == Customer.id)
        .where(
            or_(
                Customer.name.contains(text, autoescape=True),
                Customer.number.contains(text, autoescape=True),
                Customer.phone.contains(text, autoescape=True),
                Card.uid.contains(text.upper(), autoescape=True),
                Meter.serial.contains(text, autoescape=True),
                Premises.building.contains(text, autoescape=True),
                Premises.unit.contains(text, autoescape=True),
            )
        )
        .distinct()
        .order_by(Customer.number)
        .limit(limit)
    )
    if office_ids is not None:
        stmt = stmt.where(Customer.office_id.in_(office_ids))
    return list(session.execute(stmt).scalars())


def exact_customer(
    session: Session, text: str, office_ids: frozenset[int] | None
) -> Customer | None:
    """The one customer whose number, phone, card number or meter serial is exactly ``text``."""
    text = text.strip()
    if not text:
        return None
    stmt = (
        select(Customer)
        .outerjoin(Premises, Premises.customer_id == Customer.id)
        .outerjoin(Meter, Meter.premises_id == Premises.id)
        .outerjoin(Card, Card.customer_id == Customer.id)
        .where(
            or_(
                Customer.number == text,
                Customer.phone == text,
                Card.uid == text.upper(),
                Meter.serial == text,
            )
        )
        .distinct()
        .limit(2)
    )
    if office_ids is not None:
        stmt = stmt.where(Customer.office_id.in_(office_ids))
    found = list(session.execute(stmt).scalars())
    return found[0] if len(found) == 1 else None


def customer_summary(session: Session, customer: Customer, *, history: int = 20) -> dict[str, Any]:
    """Everything the counter shows about a customer, as plain data."""
    premises = list(
        session.execute(select(Premises).where(Premises.customer_id == customer.id)).scalars()
    )
    owned = list(
        session.execute(
            select(LedgerAccount)
            .where(LedgerAccount.customer_id == customer.id)
            .order_by(LedgerAccount.id)
        ).scalars()
    )
    accounts = {a.meter_id: a for a in owned if a.meter_id is not None}
    others = [a for a in owned if a.meter_id is None]
    meters = []
    for p in premises:
        for m in session.execute(select(Meter).where(Meter.premises_id == p.id)).scalars():
            wallet = accounts.get(m.id)
            meters.append(
                {
                    "kind": m.kind,
                    "serial": m.serial,
                    "model": m.model,
                    "protocol": m.protocol,
                    "state": m.state,
                    "wallet": wallet.code if wallet else None,
                    "balance_fen": acc.natural_balance(wallet) if wallet else None,
                    "balance": format_fen(acc.natural_balance(wallet)) if wallet else None,
                }
            )
    cards = session.execute(select(Card).where(Card.customer_id == customer.id)).scalars()
    txns = session.execute(
        select(LedgerTransaction)
        .where(LedgerTransaction.customer_id == customer.id)
        .order_by(LedgerTransaction.seq.desc())
        .limit(history)
    ).scalars()
    return {
        "number": customer.number,
        "name": customer.name,
        "phone": customer.phone,
        "category": customer.category,
        "status": customer.status,
        "office": customer.office.code,
        "premises": [
            {
                "building": p.building,
                "unit": p.unit,
                "address": p.address,
                "floor_area": str(p.floor_area) if p.floor_area is not None else None,
                "heated_area": str(p.heated_area) if p.heated_area is not None else None,
            }
            for p in premises
        ],
        "meters": meters,
        "accounts": [
            {"code": a.code, "purpose": a.purpose, "balance_fen": acc.natural_balance(a)}
            for a in others
        ],
        "cards": [
            {"uid": c.uid, "type": c.card_type, "profile": c.profile, "status": c.status}
            for c in cards
        ],
        "transactions": [
            {"seq": t.seq, "kind": t.kind, "key": t.idempotency_key, "at": t.created_at.isoformat()}
            for t in txns
        ],
    }


def customer_file(session: Session, customer: Customer, *, history: int = 30) -> dict[str, Any]:
    """What the customer page shows, as rows of the models (for one request's templates).

    ``meters`` (in use) and ``removed`` are ``{"meter", "premises", "wallet", "balance_fen",
    "reading"}`` with the newest reading; ``transactions`` are ``{"txn", "amount_fen"}`` with the
    net effect on the customer's wallets (credit in positive) and arrears.
    """
    from onecard.models import CardPurchase, LedgerPosting, MeterReading, Receipt

    premises = list(
        session.scalars(
            select(Premises).where(Premises.customer_id == customer.id).order_by(Premises.id)
        )
    )
    owned = {
        a.id: a
        for a in session.scalars(
            select(LedgerAccount)
            .where(LedgerAccount.customer_id == customer.id)
            .order_by(LedgerAccount.id)
        )
    }
    by_meter = {a.meter_id: a for a in owned.values() if a.meter_id is not None}
    meters: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    for p in premises:
        for m in session.scalars(select(Meter).where(Meter.premises_id == p.id).order_by(Meter.id)):
            wallet = by_meter.get(m.id)
            reading = session.scalar(
                select(MeterReading)
                .where(MeterReading.meter_id == m.id)
                .order_by(MeterReading.taken_at.desc(), MeterReading.id.desc())
                .limit(1)
            )
            row = {
                "meter": m,
                "premises": p,
                "wallet": wallet.code if wallet else None,
                "balance_fen": acc.natural_balance(wallet) if wallet else None,
                "reading": reading,
            }
            (removed if m.state == "removed" else meters).append(row)
    shared = next((a for a in owned.values() if a.purpose == "shared_wallet"), None)
    owes = next((a for a in owned.values() if a.purpose == "arrears"), None)
    cards = list(
        session.scalars(
            select(Card).where(Card.customer_id == customer.id).order_by(Card.id.desc())
        )
    )
    purchases = list(
        session.scalars(
            select(CardPurchase)
            .where(CardPurchase.customer_id == customer.id)
            .order_by(CardPurchase.id.desc())
            .limit(history)
        )
    )
    txns = list(
        session.scalars(
            select(LedgerTransaction)
            .where(LedgerTransaction.customer_id == customer.id)
            .order_by(LedgerTransaction.seq.desc())
            .limit(history)
        )
    )
    effect: dict[int, int] = {}
    if txns and owned:
        for txn_id, account_id, amount in session.execute(
            select(
                LedgerPosting.transaction_id, LedgerPosting.account_id, LedgerPosting.amount
            ).where(
                LedgerPosting.transaction_id.in_([t.id for t in txns]),
                LedgerPosting.account_id.in_(list(owned)),
            )
        ):
            account = owned[account_id]
            if account.purpose in ("wallet", "shared_wallet"):
                effect[txn_id] = effect.get(txn_id, 0) - amount
    meter_ids = [row["meter"].id for row in meters + removed]
    readings = (
        list(
            session.execute(
                select(MeterReading, Meter)
                .join(Meter, MeterReading.meter_id == Meter.id)
                .where(MeterReading.meter_id.in_(meter_ids))
                .order_by(MeterReading.taken_at.desc(), MeterReading.id.desc())
                .limit(history)
            )
        )
        if meter_ids
        else []
    )
    receipts = list(
        session.scalars(
            select(Receipt)
            .where(Receipt.customer_id == customer.id)
            .order_by(Receipt.id.desc())
            .limit(history)
        )
    )
    return {
        "customer": customer,
        "premises": premises,
        "meters": meters,
        "removed": removed,
        "shared_fen": acc.natural_balance(shared) if shared else None,
        "arrears_fen": acc.natural_balance(owes) if owes else 0,
        "wallets_fen": sum(r["balance_fen"] or 0 for r in meters)
        + (acc.natural_balance(shared) if shared else 0),
        "cards": cards,
        "purchases": purchases,
        "pending": list(
            session.scalars(
                select(CardPurchase)
                .where(CardPurchase.customer_id == customer.id, CardPurchase.status == "pending")
                .order_by(CardPurchase.id)
            )
        ),
        "transactions": [{"txn": t, "amount_fen": effect.get(t.id)} for t in txns],
        "readings": readings,
        "receipts": receipts,
    }
