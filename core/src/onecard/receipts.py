"""Receipts: numbered, stored as plain data, rendered to PDF (weasyprint) on demand.

A receipt is made in the same transaction as what it records and never changes afterwards; a
reprint renders the stored ``data`` again and counts the reprint. The data is utility-neutral:

``data`` keys
    ``title``: what the receipt is for ("sale", "settlement", ...; the renderer translates it);
    ``office``: ``{"code", "name", "timezone"}``; ``operator``: ``{"username", "full_name"}``;
    ``customer``: ``{"number", "name", "building", "unit", "address"}`` (or None);
    ``card``: the card UID (or None); ``method``: the payment method (cash, bank, ...);
    ``at``: ISO time (UTC) of the business event; ``lines``: one per meter or wallet, each
    ``{"title", "kind", "meter", "seq", "amount_fen", "units", "items"}`` where ``items`` is the
    itemised quote (``[{"label", "quantity", "unit", "price", "amount"}]``, amounts in yuan text);
    ``total_fen``: what was paid (negative: paid out to the customer); ``notes``: extra lines.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.errors import InvalidInput, NotFound
from onecard.models import Office, Receipt, utcnow

KINDS = ("sale", "settlement", "refund", "fee", "cancel")


def issue_receipt(
    session: Session,
    *,
    kind: str,
    office_id: int,
    data: dict[str, Any],
    total: int,
    operator_id: int | None = None,
    customer_id: int | None = None,
    sale_key: str | None = None,
    when: dt.datetime | None = None,
) -> Receipt:
    """Store a new receipt with the next number; does not commit.

    A sale has at most one receipt: asking again for ``sale_key`` returns the one there is.
    """
    if kind not in KINDS:
        raise InvalidInput(f"receipt kind must be one of {', '.join(KINDS)}", field="kind")
    if sale_key is not None:
        found = session.scalar(select(Receipt).where(Receipt.sale_key == sale_key))
        if found is not None:
            return found
    office = session.get(Office, office_id)
    if office is None:
        raise NotFound(f"no office with id {office_id}", field="office")
    at = when or utcnow()
    receipt = Receipt(
        number=f"pending-{id(data)}-{at.timestamp()}",
        kind=kind,
        office_id=office_id,
        operator_id=operator_id,
        customer_id=customer_id,
        sale_key=sale_key,
        total=total,
        data=data,
        created_at=at,
    )
    session.add(receipt)
    session.flush()
    receipt.number = receipt_number(office.code, at, receipt.id)
    session.flush()
    return receipt


def receipt_number(office_code: str, at: dt.datetime, receipt_id: int) -> str:
    """``E01-20261121-000042``: office, UTC date of issue, and the receipt's row id."""
    return f"{office_code}-{at.astimezone(dt.UTC):%Y%m%d}-{receipt_id:06d}"


def get_receipt(session: Session, number: str) -> Receipt:
    found = session.scalar(select(Receipt).where(Receipt.number == number))
    if found is None:
        raise NotFound(f"no receipt numbered {number!r}", field="receipt")
    return found


def receipt_for_sale(session: Session, sale_key: str) -> Receipt | None:
    return session.scalar(select(Receipt).where(Receipt.sale_key == sale_key))


def customer_receipts(session: Session, customer_id: int, *, limit: int = 50) -> list[Receipt]:
    """The customer's receipts, newest first."""
    return list(
        session.scalars(
            select(Receipt)
            .where(Receipt.customer_id == customer_id)
            .order_by(Receipt.id.desc())
            .limit(limit)
        )
    )
