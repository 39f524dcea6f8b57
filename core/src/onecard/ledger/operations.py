"""The ledger's named operations: what the counter and the meters do with money.

Each takes the ledger lock, locks and reads its accounts once, builds balanced postings and posts
them (:func:`onecard.ledger.core.post_locked`); none commits.

=================  =========================================  ====================================
operation          debit                                      credit
=================  =========================================  ====================================
sale               office cash/bank (amount + fee)            wallet (amount), fees (fee)
consume            wallet (what it holds), arrears (rest)     revenue of the wallet's kind
consume_many       as consume, for a batch of uses            (one lock and write for the batch)
refund             wallet                                     office cash/bank, or refunds payable
pay_refund         refunds payable                            office cash/bank
transfer           source wallet                              target wallet
charge_fee         office cash/bank                           fees
collect_arrears    office cash/bank                           arrears
=================  =========================================  ====================================

Each passes its parameters as the ``request`` of the idempotency check, so a retry is recognised
even when the postings it would compute now differ (``consume`` after the balance moved).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from onecard.errors import InvalidInput
from onecard.ledger import accounts as acc
from onecard.ledger.core import (
    AccountRef,
    Entry,
    Posted,
    PostingsBuilder,
    check_amount,
    find_posted,
    lock_accounts,
    lock_ledger,
    post,
    post_locked,
    post_many_locked,
)

WALLET_PURPOSES = ("wallet", "shared_wallet")


def _require_wallet(row: dict[str, Any], field: str) -> dict[str, Any]:
    if row["purpose"] not in WALLET_PURPOSES:
        raise InvalidInput(f"account {row['code']} is not a customer wallet", field=field)
    return row


def _method(method: str, refund: bool = False) -> str:
    allowed = acc.PAYMENT_METHODS + (("payable",) if refund else ())
    if method not in allowed:
        raise InvalidInput(
            f"method must be one of {', '.join(allowed)}, not {method!r}", field="method"
        )
    return method


def _office_till(purpose: str, office_id: int) -> str:
    if isinstance(office_id, bool) or not isinstance(office_id, int):
        raise InvalidInput("office_id must be an office id", field="office_id")
    return acc.office_account_code(purpose, office_id)


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
    till = _office_till(_method(method), office_id)
    legs: list[tuple[AccountRef, int]] = [(till, amount + fee), (wallet, -amount)]
    if fee:
        legs.append((acc.office_account_code("fees", office_id), -fee))
    lock = lock_ledger(session)
    accounts = lock_accounts(lock, [ref for ref, _ in legs], {wallet: "wallet", till: "office_id"})
    target = _require_wallet(accounts[wallet], "wallet")
    return post_locked(
        session,
        lock,
        accounts,
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
        customer_id=target["customer_id"],
    )


@dataclass(frozen=True)
class Use:
    """One charge of use for :func:`consume_many`: the arguments of :func:`consume`."""

    wallet: str
    amount: int
    idempotency_key: str
    kind: str | None = None
    memo: str = ""
    operator_id: int | None = None


@dataclass(frozen=True)
class Consumed:
    """What :func:`consume_many` posted (one result per use, in order), and each wallet's raw
    balance after the batch."""

    posted: list[Posted]
    balances: dict[str, int]


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
    use = Use(wallet, amount, idempotency_key, kind, memo, operator_id)
    return _consume(session, [use], lambda _, name: name).posted[0]


def consume_many(session: Session, uses: Sequence[Use]) -> Consumed:
    """Charge a batch of uses, in order, under one ledger lock: as :func:`consume` each, in a
    handful of statements for the whole batch. An error names the use (``uses[3].amount``)."""
    return _consume(session, uses, lambda i, name: f"uses[{i}].{name}")


def _consume(session: Session, uses: Sequence[Use], field: Callable[[int, str], str]) -> Consumed:
    for i, use in enumerate(uses):
        check_amount(use.amount, field(i, "amount"))
    lock = lock_ledger(session)  # the splits below depend on the balances
    wallets = list(dict.fromkeys(use.wallet for use in uses))
    named: dict[AccountRef, str] = {
        use.wallet: field(i, "wallet") for i, use in reversed(list(enumerate(uses)))
    }
    accounts = dict(lock_accounts(lock, wallets, named))
    # What each use posts to: revenue of its kind at the wallet's office, and arrears for what
    # the wallet cannot cover. Arrears are found as if every use posts (a replayed one posts
    # nothing), so no use can need an account that was not locked first.
    revenue: dict[tuple[str, int], int] = {}
    arrears: dict[int, int] = {}
    targets: list[tuple[str, int, int | None]] = []
    running = {code: accounts[code]["balance"] for code in wallets}
    for i, use in enumerate(uses):
        source = _require_wallet(accounts[use.wallet], field(i, "wallet"))
        utility = use.kind or source["utility_kind"]
        office_id = source["office_id"]
        if utility is None or office_id is None:
            raise InvalidInput(
                f"wallet {use.wallet} has no utility kind; name the kind of the use",
                field=field(i, "kind"),
            )
        if (utility, office_id) not in revenue:
            revenue[utility, office_id] = acc.ensure_revenue_account(session, utility, office_id)
        covered = _covered(use.amount, running[use.wallet], source["overdraft"])
        running[use.wallet] += covered
        customer_id = source["customer_id"]
        if use.amount > covered and customer_id is not None and customer_id not in arrears:
            arrears[customer_id] = acc.ensure_arrears_account(session, customer_id, office_id)
        targets.append((utility, office_id, customer_id))
    accounts.update(lock_accounts(lock, [*revenue.values(), *arrears.values()]))

    def postings(i: int, use: Use) -> PostingsBuilder:
        utility, office_id, customer_id = targets[i]

        def build(locked: Mapping[AccountRef, dict[str, Any]]) -> list[tuple[AccountRef, int]]:
            source = locked[use.wallet]
            covered = _covered(use.amount, source["balance"], source["overdraft"])
            legs: list[tuple[AccountRef, int]] = [(revenue[utility, office_id], -use.amount)]
            if covered:
                legs.append((use.wallet, covered))
            if use.amount > covered:
                if customer_id is None:
                    raise InvalidInput(
                        f"wallet {use.wallet} cannot cover {use.amount} fen",
                        field=field(i, "amount"),
                    )
                legs.append((arrears[customer_id], use.amount - covered))
            return legs

        return build

    entries = [
        Entry(
            idempotency_key=use.idempotency_key,
            kind="consume",
            request={"wallet": use.wallet, "amount": use.amount, "kind": targets[i][0]},
            postings=postings(i, use),
            memo=use.memo,
            operator_id=use.operator_id,
            office_id=targets[i][1],
            customer_id=targets[i][2],
        )
        for i, use in enumerate(uses)
    ]
    posted = post_many_locked(session, lock, accounts, entries)
    return Consumed(posted=posted, balances={code: accounts[code]["balance"] for code in wallets})


def _covered(amount: int, balance: int, overdraft: int) -> int:
    """How much of ``amount`` a wallet with raw ``balance`` (and ``overdraft``) can take."""
    return max(0, min(amount, -balance + overdraft))


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
    till = _office_till("refunds" if method == "payable" else method, office_id)
    legs: list[tuple[AccountRef, int]] = [(wallet, amount), (till, -amount)]
    lock = lock_ledger(session)
    accounts = lock_accounts(lock, [wallet, till], {wallet: "wallet", till: "office_id"})
    source = _require_wallet(accounts[wallet], "wallet")
    return post_locked(
        session,
        lock,
        accounts,
        idempotency_key=idempotency_key,
        kind="refund",
        request={"wallet": wallet, "amount": amount, "office": office_id, "method": method},
        postings=legs,
        memo=memo,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=source["customer_id"],
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
    owed = _office_till("refunds", office_id)
    till = acc.office_account_code(_method(method), office_id)
    lock = lock_ledger(session)
    accounts = lock_accounts(lock, [owed, till], {owed: "office_id", till: "office_id"})
    payable = -accounts[owed]["balance"]
    # A retry of a payout that already happened is answered by the idempotency check.
    if amount > payable and find_posted(session, idempotency_key) is None:
        raise InvalidInput(
            f"the office owes {payable} fen of refunds; {amount} fen is more than that",
            field="amount",
        )
    return post_locked(
        session,
        lock,
        accounts,
        idempotency_key=idempotency_key,
        kind="refund_payment",
        request={"amount": amount, "office": office_id, "method": method, "customer": customer_id},
        postings=[(owed, amount), (till, -amount)],
        memo=memo,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=customer_id,
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
    till = _office_till(_method(method), office_id)
    fees = acc.office_account_code("fees", office_id)
    return post(
        session,
        idempotency_key=idempotency_key,
        kind="fee",
        request={"amount": amount, "office": office_id, "method": method, "customer": customer_id},
        postings=[(till, amount), (fees, -amount)],
        memo=memo,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=customer_id,
        fields={till: "office_id", fees: "office_id"},
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
    if source == target:
        raise InvalidInput("source and target are the same wallet", field="target")
    lock = lock_ledger(session)
    accounts = lock_accounts(lock, [source, target], {source: "source", target: "target"})
    _require_wallet(accounts[source], "source")
    dst = _require_wallet(accounts[target], "target")
    return post_locked(
        session,
        lock,
        accounts,
        idempotency_key=idempotency_key,
        kind="transfer",
        request={"source": source, "target": target, "amount": amount},
        postings=[(source, amount), (target, -amount)],
        memo=memo,
        operator_id=operator_id,
        office_id=dst["office_id"],
        customer_id=dst["customer_id"],
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
    till = _office_till(_method(method), office_id)
    owed_code = acc.arrears_code(customer_id)
    lock = lock_ledger(session)
    accounts = lock_accounts(lock, [till, owed_code], {till: "office_id", owed_code: "customer"})
    owed = accounts[owed_code]
    request = {"customer": customer_id, "amount": amount, "office": office_id, "method": method}
    # A retry of a collection that already happened is answered by the idempotency check.
    if amount > owed["balance"] and find_posted(session, idempotency_key) is None:
        raise InvalidInput(
            f"the customer owes {owed['balance']} fen; {amount} fen is more than that",
            field="amount",
        )
    return post_locked(
        session,
        lock,
        accounts,
        idempotency_key=idempotency_key,
        kind="arrears_collection",
        request=request,
        postings=[(till, amount), (owed_code, -amount)],
        memo=memo,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=customer_id,
    )
