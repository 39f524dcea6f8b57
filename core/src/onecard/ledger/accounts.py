"""Ledger accounts: their codes, and creating them exactly once.

==========================  ===========  ==========================================================
code                        type         what it holds
==========================  ===========  ==========================================================
wallet:meter:<id>           liability    a customer's prepaid credit for one meter
wallet:customer:<id>        liability    a customer's optional shared wallet (any of their meters)
arrears:customer:<id>       asset        what a customer owes (use beyond credit and overdraft)
cash:office:<id>            asset        an office's cash till
bank:office:<id>            asset        an office's bank account (card, transfer, UnionPay ...)
revenue:<kind>:office:<id>  revenue      revenue of one utility kind at an office
fees:office:<id>            revenue      card fees, reissue fees, service fees
refunds:office:<id>         liability    refunds owed to customers, not yet paid out
==========================  ===========  ==========================================================

Balances are raw sums of postings (debits positive). Credit-normal accounts (liability, revenue)
show their natural balance negated: :func:`natural_balance`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from onecard.errors import UnknownAccount
from onecard.ledger.core import CREDIT_NORMAL
from onecard.models import LedgerAccount

OFFICE_ACCOUNTS: dict[str, tuple[str, str]] = {
    # purpose: (type, display name)
    "cash": ("asset", "Cash"),
    "bank": ("asset", "Bank"),
    "fees": ("revenue", "Fees"),
    "refunds": ("liability", "Refunds payable"),
}
PAYMENT_METHODS = ("cash", "bank")


def meter_wallet_code(meter_id: int) -> str:
    return f"wallet:meter:{meter_id}"


def shared_wallet_code(customer_id: int) -> str:
    return f"wallet:customer:{customer_id}"


def arrears_code(customer_id: int) -> str:
    return f"arrears:customer:{customer_id}"


def office_account_code(purpose: str, office_id: int) -> str:
    return f"{purpose}:office:{office_id}"


def revenue_code(kind: str, office_id: int) -> str:
    return f"revenue:{kind}:office:{office_id}"


def ensure_account(session: Session, code: str, *, type: str, purpose: str, **fields: Any) -> int:
    """Create the account ``code`` unless it exists (safe against concurrent creators); its id."""
    with session.no_autoflush:
        existing = session.execute(
            select(LedgerAccount.id).where(LedgerAccount.code == code)
        ).scalar_one_or_none()
    if existing is not None:  # the common case: a plain lookup, no insert (and no autoflush)
        return int(existing)
    values = {"code": code, "type": type, "purpose": purpose, "balance": 0, "overdraft": 0}
    values.update(fields)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = (
            postgresql.insert(LedgerAccount)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["code"])
        )
    elif dialect == "sqlite":
        stmt = (
            sqlite.insert(LedgerAccount)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["code"])
        )
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(dialect)
    session.execute(stmt)
    return account_id(session, code)


def account_id(session: Session, code: str) -> int:
    found = session.execute(
        select(LedgerAccount.id).where(LedgerAccount.code == code)
    ).scalar_one_or_none()
    if found is None:
        raise UnknownAccount(f"no ledger account {code!r}", field="account", account=code)
    return found


def get_account(session: Session, code: str, *, field: str = "account") -> LedgerAccount:
    account = session.execute(
        select(LedgerAccount)
        .where(LedgerAccount.code == code)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if account is None:
        raise UnknownAccount(f"no ledger account {code!r}", field=field, account=code)
    return account


def natural_balance(account: LedgerAccount) -> int:
    """The balance on the account's normal side: a wallet's available credit is positive."""
    return -account.balance if account.type in CREDIT_NORMAL else account.balance


def ensure_office_accounts(session: Session, office_id: int) -> None:
    for purpose, (type_, name) in OFFICE_ACCOUNTS.items():
        ensure_account(
            session,
            office_account_code(purpose, office_id),
            type=type_,
            purpose=purpose,
            name=name,
            office_id=office_id,
        )


def ensure_revenue_account(session: Session, kind: str, office_id: int) -> int:
    return ensure_account(
        session,
        revenue_code(kind, office_id),
        type="revenue",
        purpose="revenue",
        name=f"Revenue {kind}",
        utility_kind=kind,
        office_id=office_id,
    )


def ensure_arrears_account(session: Session, customer_id: int, office_id: int) -> int:
    return ensure_account(
        session,
        arrears_code(customer_id),
        type="asset",
        purpose="arrears",
        name="Arrears",
        customer_id=customer_id,
        office_id=office_id,
    )
