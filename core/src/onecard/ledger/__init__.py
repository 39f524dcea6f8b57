"""The double-entry ledger: integer fen, zero-sum, immutable, idempotent, hash-chained.

See ``docs/ledger.md``. Nothing here commits: the caller owns the database transaction.
"""

from onecard.ledger import accounts
from onecard.ledger.accounts import natural_balance
from onecard.ledger.core import (
    MAX_AMOUNT,
    Posted,
    check_amount,
    get_transaction,
    lock_ledger,
    post,
    reverse,
)
from onecard.ledger.operations import (
    charge_fee,
    collect_arrears,
    consume,
    pay_refund,
    refund,
    sale,
    transfer,
)
from onecard.ledger.verify import Problem, Report, verify

__all__ = [
    "MAX_AMOUNT",
    "Posted",
    "Problem",
    "Report",
    "accounts",
    "charge_fee",
    "check_amount",
    "collect_arrears",
    "consume",
    "get_transaction",
    "lock_ledger",
    "natural_balance",
    "pay_refund",
    "post",
    "refund",
    "reverse",
    "sale",
    "transfer",
    "verify",
]
