"""The ledger's named operations: what the counter and the meters do with money.

Each builds balanced postings and calls :func:`onecard.ledger.post`; none commits.

=================  =========================================  ====================================
operation          debit                                      credit
=================  =========================================  ====================================
sale               office cash/bank (amount + fee)            wallet (amount), fees (fee)
consume            wallet (what it holds), arrears (rest)     revenue of the wallet's kind
refund             wallet                                     office cash/bank, or refunds payable
pay_refund         refunds payable                            office cash/bank
transfer           source wallet                              target wallet
charge_fee         office cash/bank                           fees
collect_arrears    office cash/bank                           arrears
=================  =========================================  ====================================
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from onecard.errors import InvalidInput
from onecard.ledger import accounts as acc
from onecard.ledger.core import Posted, check_amount, lock_ledger, post
from onecard.models import LedgerAccount

WALLET_PURPOSES = ("wallet", "shared_wallet")


def _wallet(session: Session, code: str, field: str = "wallet") -> LedgerAccount:
    account = acc.get_account(session, code, field=field)
    if account.purpose not in WALLET_PURPOSES:
        raise InvalidInput(f"account {code} is not a customer wallet", field=field)
    return account


def _method(method: str, refund: bool = False) -> str:
    allowed = acc.PAYMENT_METHODS + (("payable",) if refund else ())
    if method not in allowed:
        raise InvalidInput(
            f"method must be one of {', '.join(allowed)}, not {method!r}", field="method"
        )
    return method


def sale(
    session: Session,
    *,
    wallet: str,
    amount: int,
    office_id: int,
    idempotency_key: str,
    method: str = "cash",
    fee: int = 0,
    operator_id: int | None = None,
    memo: str = "",
) -> Posted:
    """Sell ``amount`` fen of credit into a wallet, paid at an office (plus an optional fee)."""
    check_amount(amount, "amount")
    check_amount(fee, "fee", allow_zero=True)
    _method(method)
    target = _wallet(session, wallet)
    till = acc.office_account_code(method, office_id)
    legs: list[tuple[str | int, int]] = [(till, amount + fee), (target.id, -amount)]
    if fee:
        legs.append((acc.office_account_code("fees", office_id), -fee))
    return post(
        session,
        idempotency_key=idempotency_key,
        kind="sale",
        request={
            "wallet": wallet,
            "amount": amount,
            "office": office_id,
            "method": method,
            "fee": fee,
        },
        postings=legs,
        memo=memo,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=target.customer_id,
    )


def consume(
    session: Session,
    *,
    wallet: str,
    amount: int,
    idempotency_key: str,
    kind: str | None = None,
    memo: str = "",
    operator_id: int | None = None,
) -> Posted:
    """Charge use to a wallet as revenue; what the wallet (and overdraft) can't cover is arrears."""
    check_amount(amount, "amount")
    lock_ledger(session)  # the split below depends on the balance: read it under the lock
    source = _wallet(session, wallet)
    utility = kind or source.utility_kind
    if utility is None or source.office_id is None:
        raise InvalidInput(
            f"wallet {wallet} has no utility kind; name the kind of the use", field="kind"
        )
    revenue = acc.ensure_revenue_account(session, utility, source.office_id)
    covered = max(0, min(amount, -source.balance + source.overdraft))
    legs: list[tuple[str | int, int]] = [(revenue, -amount)]
    if covered:
        legs.append((source.id, covered))
    if amount > covered:
        if source.customer_id is None:
            raise InvalidInput(f"wallet {wallet} cannot cover {amount} fen", field="amount")
        arrears = acc.ensure_arrears_account(session, source.customer_id, source.office_id)
        legs.append((arrears, amount - covered))
    return post(
        session,
        idempotency_key=idempotency_key,
        kind="consume",
        request={"wallet": wallet, "amount": amount, "kind": utility},
        postings=legs,
        memo=memo,
        operator_id=operator_id,
        office_id=source.office_id,
        customer_id=source.customer_id,
    )


def refund(
    session: Session,
    *,
    wallet: str,
    amount: int,
    office_id: int,
    idempotency_key: str,
    method: str = "cash",
    operator_id: int | None = None,
    memo: str = "",
) -> Posted:
    """Give credit back from a wallet: paid out now (cash/bank) or owed (``payable``)."""
    check_amount(amount, "amount")
    _method(method, refund=True)
    source = _wallet(session, wallet)
    purpose = "refunds" if method == "payable" else method
    return post(
        session,
        idempotency_key=idempotency_key,
        kind="refund",
        request={"wallet": wallet, "amount": amount, "office": office_id, "method": method},
        postings=[(source.id, amount), (acc.office_account_code(purpose, office_id), -amount)],
        memo=memo,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=source.customer_id,
    )


def pay_refund(
    session: Session,
    *,
    amount: int,
    office_id: int,
    idempotency_key: str,
    method: str = "bank",
    customer_id: int | None = None,
    operator_id: int | None = None,
    memo: str = "",
) -> Posted:
    """Pay out a refund that was booked as payable."""
    check_amount(amount, "amount")
    _method(method)
    return post(
        session,
        idempotency_key=idempotency_key,
        kind="refund_payment",
        request={"amount": amount, "office": office_id, "method": method, "customer": customer_id},
        postings=[
            (acc.office_account_code("refunds", office_id), amount),
            (acc.office_account_code(method, office_id), -amount),
        ],
        memo=memo,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=customer_id,
    )


def transfer(
    session: Session,
    *,
    source: str,
    target: str,
    amount: int,
    idempotency_key: str,
    operator_id: int | None = None,
    memo: str = "",
) -> Posted:
    """Move credit between two wallets (shared wallet to a meter, or on meter replacement)."""
    check_amount(amount, "amount")
    src = _wallet(session, source, "source")
    dst = _wallet(session, target, "target")
    if src.id == dst.id:
        raise InvalidInput("source and target are the same wallet", field="target")
    return post(
        session,
        idempotency_key=idempotency_key,
        kind="transfer",
        request={"source": source, "target": target, "amount": amount},
        postings=[(src.id, amount), (dst.id, -amount)],
        memo=memo,
        operator_id=operator_id,
        office_id=dst.office_id,
        customer_id=dst.customer_id,
    )


def charge_fee(
    session: Session,
    *,
    amount: int,
    office_id: int,
    idempotency_key: str,
    method: str = "cash",
    customer_id: int | None = None,
    operator_id: int | None = None,
    memo: str = "",
) -> Posted:
    """Take a fee (card, reissue, service) at an office."""
    check_amount(amount, "amount")
    _method(method)
    return post(
        session,
        idempotency_key=idempotency_key,
        kind="fee",
        request={"amount": amount, "office": office_id, "method": method, "customer": customer_id},
        postings=[
            (acc.office_account_code(method, office_id), amount),
            (acc.office_account_code("fees", office_id), -amount),
        ],
        memo=memo,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=customer_id,
    )


def collect_arrears(
    session: Session,
    *,
    customer_id: int,
    amount: int,
    office_id: int,
    idempotency_key: str,
    method: str = "cash",
    operator_id: int | None = None,
    memo: str = "",
) -> Posted:
    """Collect old arrears (追缴陈欠) from a customer."""
    check_amount(amount, "amount")
    _method(method)
    owed = acc.get_account(session, acc.arrears_code(customer_id), field="customer")
    if amount > owed.balance:
        raise InvalidInput(
            f"the customer owes {owed.balance} fen; {amount} fen is more than that",
            field="amount",
        )
    return post(
        session,
        idempotency_key=idempotency_key,
        kind="arrears_collection",
        request={"customer": customer_id, "amount": amount, "office": office_id, "method": method},
        postings=[(acc.office_account_code(method, office_id), amount), (owed.id, -amount)],
        memo=memo,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=customer_id,
    )
