"""The double-entry ledger: integer fen, zero-sum, immutable, idempotent, hash-chained.

See ``docs/ledger.md``. Nothing here commits: the caller owns the database transaction.
"""

from onecard.ledger import accounts
from onecard.ledger.accounts import natural_balance
from onecard.ledger.core import (
    MAX_AMOUNT,
    Entry,
    LedgerLock,
    Posted,
    check_amount,
    find_posted,
    get_transaction,
    load_posted,
    lock_accounts,
    lock_ledger,
    post,
    post_locked,
    post_many_locked,
    reverse,
)
from onecard.ledger.operations import (
    Consumed,
    Use,
    charge_fee,
    collect_arrears,
    consume,
    consume_many,
    pay_refund,
    refund,
    sale,
    transfer,
)
from onecard.ledger.verify import Problem, VerifyReport, verify

__all__ = [
    "MAX_AMOUNT",
    "Consumed",
    "Entry",
    "LedgerLock",
    "Posted",
    "Problem",
    "Use",
    "VerifyReport",
    "accounts",
    "charge_fee",
    "check_amount",
    "collect_arrears",
    "consume",
    "consume_many",
    "find_posted",
    "get_transaction",
    "load_posted",
    "lock_accounts",
    "lock_ledger",
    "natural_balance",
    "pay_refund",
    "post",
    "post_locked",
    "post_many_locked",
    "refund",
    "reverse",
    "sale",
    "transfer",
    "verify",
]
