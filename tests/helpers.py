"""Small helpers shared by tests."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.ledger import accounts as acc
from onecard.models import AuditEvent, LedgerHead, LedgerPosting, LedgerTransaction


def available(session: Session, code: str) -> int:
    """A wallet's available credit in fen (its natural balance)."""
    return acc.natural_balance(acc.get_account(session, code))


def ledger_state(session: Session) -> tuple[int, int, str, int]:
    """(transactions, postings, head hash, audit events): unchanged means nothing was written."""
    txns = session.execute(select(func.count()).select_from(LedgerTransaction)).scalar_one()
    postings = session.execute(select(func.count()).select_from(LedgerPosting)).scalar_one()
    head = session.execute(select(LedgerHead.hash)).scalar_one()
    audit = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    return txns, postings, head, audit
