"""Checking the ledger: the hash chain, zero-sum transactions, and the cached balances."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.ledger.core import transaction_hash
from onecard.models import LedgerAccount, LedgerHead, LedgerPosting, LedgerTransaction

GENESIS = "0" * 64


@dataclass(frozen=True)
class Problem:
    """One thing found wrong. ``seq`` names the transaction where there is one."""

    message: str
    seq: int | None = None
    idempotency_key: str | None = None
    account: str | None = None

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"transaction #{self.seq}")
        if self.idempotency_key is not None:
            where.append(f"key {self.idempotency_key}")
        if self.account is not None:
            where.append(f"account {self.account}")
        return f"{' '.join(where)}: {self.message}" if where else self.message


@dataclass
class VerifyReport:
    transactions: int = 0
    postings: int = 0
    accounts: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_transaction(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "transactions": self.transactions,
            "postings": self.postings,
            "accounts": self.accounts,
            "first_bad_transaction": self.first_bad_transaction,
            "problems": [
                {
                    "message": p.message,
                    "seq": p.seq,
                    "idempotency_key": p.idempotency_key,
                    "account": p.account,
                }
                for p in self.problems
            ],
        }


_TXN_FIELDS = (
    "id",
    "seq",
    "idempotency_key",
    "request_hash",
    "kind",
    "memo",
    "reason_code",
    "reverses_id",
    "operator_id",
    "office_id",
    "customer_id",
    "created_at",
    "prev_hash",
    "hash",
)


def verify(session: Session, *, batch: int = 5000) -> VerifyReport:
    """Check the whole ledger; the report lists every problem, the earliest transaction first."""
    report = VerifyReport()
    txn_cols = [getattr(LedgerTransaction, name) for name in _TXN_FIELDS]
    rows = session.execute(
        select(*txn_cols, LedgerPosting.account_id, LedgerPosting.amount)
        .outerjoin(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .order_by(LedgerTransaction.seq, LedgerPosting.id)
        .execution_options(yield_per=batch)
    )
    expected_seq = 1
    prev_hash = GENESIS
    current: dict[str, Any] | None = None
    legs: list[tuple[int, int]] = []

    def finish(txn: dict[str, Any], legs: list[tuple[int, int]]) -> None:
        nonlocal expected_seq, prev_hash
        report.transactions += 1
        report.postings += len(legs)
        seq, key = txn["seq"], txn["idempotency_key"]

        def bad(message: str) -> None:
            report.problems.append(Problem(message, seq=seq, idempotency_key=key))

        if seq != expected_seq:
            if seq > expected_seq:
                bad(f"transactions #{expected_seq} to #{seq - 1} are missing from the chain")
            else:
                bad(f"sequence number repeats or goes back (expected #{expected_seq})")
        if txn["prev_hash"] != prev_hash:
            bad("its previous-hash does not match the transaction before it")
        if transaction_hash(txn["prev_hash"], txn, legs) != txn["hash"]:
            bad("its content does not match its hash: it was changed after posting")
        if len(legs) < 2:
            bad(f"it has {len(legs)} posting(s); a transaction needs at least two")
        total = sum(amount for _, amount in legs)
        if total != 0:
            bad(f"its postings sum to {total} fen, not zero")
        expected_seq = seq + 1
        prev_hash = txn["hash"]

    for row in rows:
        data = row._asdict()
        if current is None or data["id"] != current["id"]:
            if current is not None:
                finish(current, legs)
            current = {name: data[name] for name in _TXN_FIELDS}
            legs = []
        if data["account_id"] is not None:
            legs.append((data["account_id"], data["amount"]))
    if current is not None:
        finish(current, legs)

    head = session.execute(select(LedgerHead.seq, LedgerHead.hash).where(LedgerHead.id == 1)).one()
    if head.seq != expected_seq - 1 or head.hash != prev_hash:
        report.problems.append(
            Problem(
                f"the ledger head (#{head.seq}) does not match the last transaction "
                f"(#{expected_seq - 1}): transactions were removed or added outside the ledger"
            )
        )

    sums = dict(
        session.execute(
            select(LedgerPosting.account_id, func.sum(LedgerPosting.amount)).group_by(
                LedgerPosting.account_id
            )
        ).all()
    )
    for account_id, code, balance in session.execute(
        select(LedgerAccount.id, LedgerAccount.code, LedgerAccount.balance).order_by(
            LedgerAccount.id
        )
    ):
        report.accounts += 1
        actual = int(sums.get(account_id) or 0)
        if actual != balance:
            report.problems.append(
                Problem(
                    f"cached balance {balance} fen differs from the sum of its postings "
                    f"{actual} fen",
                    account=code,
                )
            )
    report.problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    return report
