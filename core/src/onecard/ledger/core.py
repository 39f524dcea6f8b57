"""Posting to the double-entry ledger.

Every transaction:

* has postings that sum to zero (integer fen, debits positive, credits negative);
* carries a unique idempotency key: posting the same request again returns the first result and
  writes nothing; the same key with a different request is refused;
* is chained: it stores the previous transaction's hash and its own hash over its content, so any
  later edit is detectable by :func:`onecard.ledger.verify`;
* is immutable: the database refuses UPDATE and DELETE on transactions and postings. A mistake is
  corrected by :func:`reverse`, which posts the opposite postings with a reason code.

Posting locks the single ``ledger_head`` row, so transactions are ordered into one chain even
with several application instances on one PostgreSQL database. The caller owns the database
transaction: nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from onecard.db import execute_many
from onecard.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    NotFound,
    UnbalancedTransaction,
    UnknownAccount,
)
from onecard.models import (
    LedgerAccount,
    LedgerHead,
    LedgerPosting,
    LedgerTransaction,
    utcnow,
)

#: The largest amount one posting may carry: 100 million yuan, in fen.
MAX_AMOUNT = 10_000_000_000
#: Accounts that may not be drawn below ``-overdraft`` (customer money held by the office).
LIMITED_PURPOSES = frozenset({"wallet", "shared_wallet"})
CREDIT_NORMAL = frozenset({"liability", "revenue"})

_KEY = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_REASON = re.compile(r"^[a-z][a-z0-9_]{1,63}$")

AccountRef = str | int

# Core tables: posting writes with plain INSERT/UPDATE statements, not the unit of work.
_TXN: Table = LedgerTransaction.__table__  # type: ignore[assignment]
_POSTING: Table = LedgerPosting.__table__  # type: ignore[assignment]
_ACCOUNT: Table = LedgerAccount.__table__  # type: ignore[assignment]
_HEAD: Table = LedgerHead.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Posted:
    """The result of posting: the transaction, and whether this call created it."""

    id: int
    seq: int
    idempotency_key: str
    kind: str
    hash: str
    created_at: dt.datetime
    postings: tuple[tuple[str, int], ...]
    created: bool


def check_amount(amount: object, field: str, *, allow_zero: bool = False) -> int:
    """Return ``amount`` if it is a whole, positive number of fen within range; else raise."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidInput(
            f"{field} must be a whole number of fen (an integer), not {amount!r}", field=field
        )
    if amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidInput(f"{field} must be positive, got {amount}", field=field)
    if amount > MAX_AMOUNT:
        raise InvalidInput(f"{field} must be at most {MAX_AMOUNT} fen, got {amount}", field=field)
    return amount


def check_key(key: object, field: str = "idempotency_key") -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidInput(
            f"{field} must be 1 to 128 characters of letters, digits and ._:@/+=-", field=field
        )
    return key


def check_reason(reason: object) -> str:
    if not isinstance(reason, str) or not _REASON.match(reason):
        raise InvalidInput(
            "reason_code must be 2 to 64 lower-case letters, digits or _ (like 'operator_error')",
            field="reason_code",
        )
    return reason


def _timestamp(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds")


def request_fingerprint(
    kind: str,
    request: Mapping[str, Any] | None,
    postings: Sequence[tuple[int, int]],
    memo: str,
    reason_code: str | None,
    reverses_id: int | None,
) -> str:
    """What makes two calls "the same request" for the idempotency check.

    Operations whose postings depend on the state of the ledger (``consume`` splits between
    wallet and arrears) pass their parameters as ``request``, so a retry matches the first call.
    """
    what: Any = dict(request) if request is not None else sorted(postings)
    body = json.dumps(
        [kind, what, memo, reason_code, reverses_id],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def transaction_hash(
    prev_hash: str, fields: dict[str, Any], postings: Sequence[tuple[int, int]]
) -> str:
    """The chain hash of one transaction: SHA-256 over the previous hash and a canonical body."""
    body = {
        "seq": fields["seq"],
        "key": fields["idempotency_key"],
        "request": fields["request_hash"],
        "kind": fields["kind"],
        "memo": fields["memo"],
        "reason": fields["reason_code"],
        "reverses": fields["reverses_id"],
        "operator": fields["operator_id"],
        "office": fields["office_id"],
        "customer": fields["customer_id"],
        "at": _timestamp(fields["created_at"]),
        "postings": [[a, n] for a, n in postings],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def _validate_postings(postings: Sequence[tuple[AccountRef, int]]) -> list[tuple[AccountRef, int]]:
    if len(postings) < 2:
        raise UnbalancedTransaction("a transaction needs at least two postings", field="postings")
    legs: list[tuple[AccountRef, int]] = []
    seen: set[AccountRef] = set()
    for i, leg in enumerate(postings):
        try:
            account, amount = leg
        except (TypeError, ValueError):
            raise InvalidInput(
                f"postings[{i}] must be an (account, amount) pair", field=f"postings[{i}]"
            ) from None
        field = f"postings[{i}].amount"
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidInput(
                f"{field} must be a whole number of fen (an integer), not {amount!r}", field=field
            )
        if amount == 0:
            raise InvalidInput(f"{field} must not be zero", field=field)
        if abs(amount) > MAX_AMOUNT:
            raise InvalidInput(f"{field} must be at most {MAX_AMOUNT} fen", field=field)
        if not isinstance(account, str | int) or isinstance(account, bool):
            raise InvalidInput(
                f"postings[{i}].account must be an account code or id", field=f"postings[{i}]"
            )
        if account in seen:
            raise InvalidInput(
                f"account {account!r} appears twice in one transaction", field=f"postings[{i}]"
            )
        seen.add(account)
        legs.append((account, amount))
    total = sum(amount for _, amount in legs)
    if total != 0:
        raise UnbalancedTransaction(
            f"postings sum to {total} fen, not zero: debits and credits must balance",
            field="postings",
            total=total,
        )
    return legs


# Statements of the posting path, built once: building them per call costs more than running them.
_ACCOUNT_COLUMNS = (
    "id",
    "code",
    "type",
    "purpose",
    "balance",
    "overdraft",
    "utility_kind",
    "office_id",
    "customer_id",
)
_REVERSED_BY = select(_TXN.c.seq).where(_TXN.c.reverses_id == bindparam("rid"))
_SEQ_OF = select(_TXN.c.seq).where(_TXN.c.id == bindparam("tid"))
_INSERT_TXN = insert(_TXN).returning(_TXN.c.id)
_INSERT_TXNS = insert(_TXN)

# The statements that carry only integers and text run on the DB-API cursor of the same
# connection (same transaction): SQLAlchemy's fixed cost per execute is most of a sale's CPU time.
# Written with "?" placeholders; psycopg gets "%s". bench/ledger.py measures the difference.
_DRIVER_SQL = {
    "lock_head": f"SELECT seq, hash FROM {_HEAD.name} WHERE id = 1",
    "by_key": f"SELECT id, seq, kind, request_hash FROM {_TXN.name} WHERE idempotency_key = ?",
    "ids_of_seqs": f"SELECT id FROM {_TXN.name} WHERE seq BETWEEN ? AND ? ORDER BY seq",
    "insert_posting": (
        f"INSERT INTO {_POSTING.name} (transaction_id, account_id, amount) VALUES (?, ?, ?)"
    ),
    "add_to_balance": f"UPDATE {_ACCOUNT.name} SET balance = balance + ? WHERE id = ?",
    "advance_head": f"UPDATE {_HEAD.name} SET seq = ?, hash = ? WHERE id = 1",
}
_DRIVER_SQL_FORMAT = {name: sql.replace("?", "%s") for name, sql in _DRIVER_SQL.items()}


_LOCKING = " FOR UPDATE"  # PostgreSQL row locks; SQLite's BEGIN IMMEDIATE already holds the db
_IN_CHUNK = 500  # values in one IN (...) list


class _Driver:
    """Runs the plain statements above on the DB-API connection behind ``conn``."""

    def __init__(self, conn: Connection) -> None:
        raw = conn.connection.driver_connection
        assert raw is not None, "the connection is closed"
        self.raw: Any = raw
        self.qmark = conn.dialect.paramstyle in ("qmark", "numeric")
        self.sql = _DRIVER_SQL if self.qmark else _DRIVER_SQL_FORMAT
        self.locking = "" if self.qmark else _LOCKING

    def one(self, name: str, params: Sequence[Any], *, lock: bool = False) -> Any:
        cursor = self.raw.cursor()
        try:
            cursor.execute(self.sql[name] + (self.locking if lock else ""), params)
            return cursor.fetchone()
        finally:
            cursor.close()

    def accounts(self, column: str, refs: Sequence[AccountRef]) -> list[dict[str, Any]]:
        """Lock and read the accounts whose ``column`` (code or id) is in ``refs``."""
        mark = "?" if self.qmark else "%s"
        sql = (
            f"SELECT {', '.join(_ACCOUNT_COLUMNS)} FROM {_ACCOUNT.name} "
            f"WHERE {column} IN ({', '.join([mark] * len(refs))}) ORDER BY id{self.locking}"
        )
        cursor = self.raw.cursor()
        try:
            cursor.execute(sql, list(refs))
            return [dict(zip(_ACCOUNT_COLUMNS, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def by_keys(self, keys: Sequence[str]) -> dict[str, tuple[int, int, str, str]]:
        """The stored transactions (id, seq, kind, request hash) of these idempotency keys."""
        mark = "?" if self.qmark else "%s"
        found: dict[str, tuple[int, int, str, str]] = {}
        unique = list(dict.fromkeys(keys))
        cursor = self.raw.cursor()
        try:
            for start in range(0, len(unique), _IN_CHUNK):
                chunk = unique[start : start + _IN_CHUNK]
                cursor.execute(
                    f"SELECT idempotency_key, id, seq, kind, request_hash FROM {_TXN.name} "
                    f"WHERE idempotency_key IN ({', '.join([mark] * len(chunk))})",
                    chunk,
                )
                for key, *row in cursor.fetchall():
                    found[key] = tuple(row)
        finally:
            cursor.close()
        return found

    def all(self, name: str, params: Sequence[Any]) -> list[Any]:
        cursor = self.raw.cursor()
        try:
            cursor.execute(self.sql[name], params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def many(self, name: str, rows: Sequence[Sequence[Any]]) -> None:
        cursor = self.raw.cursor()
        try:
            cursor.executemany(self.sql[name], rows)
        finally:
            cursor.close()


@dataclass
class LedgerLock:
    """The ledger's write lock, held by this database transaction on ``conn``, with the newest
    sequence number and hash (read under it, and moved on by every posting made under it)."""

    conn: Connection
    driver: _Driver
    seq: int
    hash: str


def lock_ledger(session: Session) -> LedgerLock:
    """Take the ledger's write lock (the head row) for this database transaction.

    Call it before reading balances that decide what to post; :func:`post` takes it itself.
    """
    conn = session.connection()
    driver = _Driver(conn)
    seq, hash_ = driver.one("lock_head", (), lock=True)
    return LedgerLock(conn=conn, driver=driver, seq=seq, hash=hash_)


def lock_accounts(
    lock: LedgerLock,
    refs: Sequence[AccountRef],
    fields: Mapping[AccountRef, str] | None = None,
) -> dict[AccountRef, dict[str, Any]]:
    """Lock and read accounts by code or id; rows are keyed by both. Unknown ones raise.

    ``fields`` names the input field to blame for each reference (default ``postings[i]``).
    """
    codes = [r for r in refs if isinstance(r, str)]
    ids = [r for r in refs if not isinstance(r, str)]
    rows: list[dict[str, Any]] = []
    if codes:
        rows += lock.driver.accounts("code", codes)
    if ids:
        rows += lock.driver.accounts("id", ids)
    found: dict[AccountRef, dict[str, Any]] = {}
    for data in rows:
        found[data["code"]] = data
        found[data["id"]] = data
    for i, ref in enumerate(refs):
        if ref not in found:
            field = (fields or {}).get(ref, f"postings[{i}].account")
            raise UnknownAccount(f"no ledger account {ref!r}", field=field, account=ref)
    return found


def post(
    session: Session,
    *,
    idempotency_key: str,
    kind: str,
    postings: Sequence[tuple[AccountRef, int]],
    memo: str = "",
    reason_code: str | None = None,
    reverses_id: int | None = None,
    operator_id: int | None = None,
    office_id: int | None = None,
    customer_id: int | None = None,
    request: Mapping[str, Any] | None = None,
    fields: Mapping[AccountRef, str] | None = None,
) -> Posted:
    """Post a balanced transaction; accounts are given by code or id. Does not commit.

    ``fields`` names the input field to blame when an account does not exist.
    """
    legs = _validate_postings(postings)
    lock = lock_ledger(session)  # one chain, one writer at a time; from here on we see all commits
    accounts = lock_accounts(lock, [ref for ref, _ in legs], fields)
    return post_locked(
        session,
        lock,
        accounts,
        idempotency_key=idempotency_key,
        kind=kind,
        postings=legs,
        memo=memo,
        reason_code=reason_code,
        reverses_id=reverses_id,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=customer_id,
        request=request,
    )


Postings = Sequence[tuple[AccountRef, int]]
#: Builds an entry's postings from the locked accounts, at its turn in the batch.
PostingsBuilder = Callable[[Mapping[AccountRef, dict[str, Any]]], Postings]


@dataclass(frozen=True)
class Entry:
    """One transaction to post with :func:`post_many_locked`.

    ``postings`` may be a function of the locked accounts, called at the entry's turn (after the
    entries before it have moved the balances) and only when the key is new. Such an entry
    must carry its ``request``, which stands for the postings in the idempotency check.
    """

    idempotency_key: str
    kind: str
    postings: Postings | PostingsBuilder
    memo: str = ""
    reason_code: str | None = None
    reverses_id: int | None = None
    operator_id: int | None = None
    office_id: int | None = None
    customer_id: int | None = None
    request: Mapping[str, Any] | None = None


def post_locked(
    session: Session,
    lock: LedgerLock,
    accounts: Mapping[AccountRef, dict[str, Any]],
    *,
    idempotency_key: str,
    kind: str,
    postings: Sequence[tuple[AccountRef, int]],
    memo: str = "",
    reason_code: str | None = None,
    reverses_id: int | None = None,
    operator_id: int | None = None,
    office_id: int | None = None,
    customer_id: int | None = None,
    request: Mapping[str, Any] | None = None,
) -> Posted:
    """Post with the ledger lock held and the accounts locked (see :func:`lock_ledger`).

    Operations that must read balances before deciding their postings use this; everyone else
    calls :func:`post`.
    """
    entry = Entry(
        idempotency_key=idempotency_key,
        kind=kind,
        postings=postings,
        memo=memo,
        reason_code=reason_code,
        reverses_id=reverses_id,
        operator_id=operator_id,
        office_id=office_id,
        customer_id=customer_id,
        request=request,
    )
    return post_many_locked(session, lock, accounts, [entry])[0]


def _check_entry(entry: Entry) -> None:
    check_key(entry.idempotency_key)
    if not isinstance(entry.kind, str) or not _KIND.match(entry.kind):
        raise InvalidInput("kind must be a lower-case word like 'sale'", field="kind")
    if not isinstance(entry.memo, str) or len(entry.memo) > 500:
        raise InvalidInput("memo must be text of at most 500 characters", field="memo")
    if entry.reason_code is not None:
        check_reason(entry.reason_code)
    if callable(entry.postings) and entry.request is None:
        raise InvalidInput(
            "an entry whose postings are built at posting time needs its request", field="request"
        )


def _resolve(
    accounts: Mapping[AccountRef, dict[str, Any]], legs: Sequence[tuple[AccountRef, int]]
) -> list[tuple[dict[str, Any], int]]:
    return [(accounts[ref], amount) for ref, amount in legs]


def post_many_locked(
    session: Session,
    lock: LedgerLock,
    accounts: Mapping[AccountRef, dict[str, Any]],
    entries: Sequence[Entry],
) -> list[Posted]:
    """Post a batch of transactions in order, under one ledger lock; one result per entry.

    Each entry is checked as :func:`post_locked` checks one (a key already used answers with the
    stored transaction, or refuses a different request), against the balances the entries before
    it left. The new transactions are chained one after another and written together: a handful
    of statements for the whole batch. If any entry is refused, nothing is written and the locked
    rows keep their balances.
    """
    for entry in entries:
        _check_entry(entry)
    stored = _stored(lock.driver, [e.idempotency_key for e in entries])
    replays: dict[int, int] = {}  # entry index -> stored transaction id
    new: list[tuple[dict[str, Any], list[tuple[int, int]], list[tuple[str, int]]]] = []
    fields: dict[str, Any]
    in_batch: dict[str, tuple[str, int]] = {}  # key -> (fingerprint, index into new)
    reversed_here: set[int] = set()
    applied: list[tuple[dict[str, Any], int]] = []
    seq, prev_hash = lock.seq, lock.hash
    now = utcnow()
    try:
        for i, entry in enumerate(entries):
            key = entry.idempotency_key
            postings = entry.postings
            resolved = (
                [] if callable(postings) else _resolve(accounts, _validate_postings(postings))
            )
            by_id = [(acc["id"], n) for acc, n in resolved]
            fingerprint = request_fingerprint(
                entry.kind, entry.request, by_id, entry.memo, entry.reason_code, entry.reverses_id
            )
            earlier = stored.get(key)
            if earlier is not None:
                _same_request(key, earlier[3], fingerprint, earlier[1], earlier[2])
                replays[i] = earlier[0]
                continue
            if key in in_batch:
                first_fingerprint, index = in_batch[key]
                first = new[index][0]
                _same_request(key, first_fingerprint, fingerprint, first["seq"], first["kind"])
                replays[i] = -1 - index  # posted earlier in this batch
                continue
            if entry.reverses_id is not None:
                _not_reversed(lock.conn, entry.reverses_id, reversed_here)
                reversed_here.add(entry.reverses_id)
            if callable(postings):
                resolved = _resolve(accounts, _validate_postings(postings(accounts)))
                by_id = [(acc["id"], n) for acc, n in resolved]
            for acc, amount in resolved:
                _check_limit(acc, amount)
            fields = {
                "seq": seq + 1,
                "idempotency_key": key,
                "request_hash": fingerprint,
                "kind": entry.kind,
                "memo": entry.memo,
                "reason_code": entry.reason_code,
                "reverses_id": entry.reverses_id,
                "operator_id": entry.operator_id,
                "office_id": entry.office_id,
                "customer_id": entry.customer_id,
                "created_at": now,
                "prev_hash": prev_hash,
            }
            fields["hash"] = transaction_hash(prev_hash, fields, by_id)
            seq, prev_hash = fields["seq"], fields["hash"]
            for acc, amount in resolved:  # the next entries see the balances this one leaves
                acc["balance"] += amount
                applied.append((acc, amount))
            in_batch[key] = (fingerprint, len(new))
            new.append((fields, by_id, [(acc["code"], n) for acc, n in resolved]))
    except BaseException:
        for acc, amount in reversed(applied):
            acc["balance"] -= amount
        raise

    if new:
        ids = _write(lock, [fields for fields, _, _ in new], [legs for _, legs, _ in new])
        lock.seq, lock.hash = seq, prev_hash
        for (fields, _, _), txn_id in zip(new, ids, strict=True):
            fields["id"] = txn_id
    created = iter(new)
    out: list[Posted] = []
    for i in range(len(entries)):
        ref = replays.get(i)
        if ref is None:
            fields, _, names = next(created)
            out.append(_posted(fields, names, created=True))
        elif ref >= 0:
            out.append(load_posted(session, ref))
        else:
            fields, _, names = new[-1 - ref]
            out.append(_posted(fields, names, created=False))
    return out


def _stored(driver: _Driver, keys: Sequence[str]) -> dict[str, tuple[int, int, str, str]]:
    if len(keys) == 1:  # a single posting: the prepared statement of the one key
        row = driver.one("by_key", (keys[0],))
        return {} if row is None else {keys[0]: tuple(row)}
    return driver.by_keys(keys) if keys else {}


def _same_request(key: str, stored: str, fingerprint: str, seq: int, kind: str) -> None:
    if stored != fingerprint:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used for a different "
            f"transaction (#{seq}, {kind})",
            field="idempotency_key",
        )


def _not_reversed(conn: Connection, reverses_id: int, reversed_here: set[int]) -> None:
    prior = conn.execute(_REVERSED_BY, {"rid": reverses_id}).scalar_one_or_none()
    if prior is not None or reverses_id in reversed_here:
        original = conn.execute(_SEQ_OF, {"tid": reverses_id}).scalar_one()
        by = f"transaction #{prior}" if prior is not None else "an earlier entry of this batch"
        raise AlreadyReversed(
            f"transaction #{original} is already reversed by {by}", field="transaction"
        )


def _write(
    lock: LedgerLock, txns: Sequence[dict[str, Any]], legs: Sequence[Sequence[tuple[int, int]]]
) -> list[int]:
    """Insert the chained transactions, their postings, the balance changes and the new head;
    the transactions' ids, in order."""
    conn, driver = lock.conn, lock.driver
    if len(txns) == 1:
        ids = [conn.execute(_INSERT_TXN, txns[0]).scalar_one()]
    else:
        execute_many(conn, _INSERT_TXNS, txns)
        first, last = txns[0]["seq"], txns[-1]["seq"]
        ids = [row[0] for row in driver.all("ids_of_seqs", (first, last))]
        assert len(ids) == len(txns), "the ledger moved while it was locked"
    delta: dict[int, int] = defaultdict(int)
    rows = []
    for txn_id, txn_legs in zip(ids, legs, strict=True):
        for account_id, amount in txn_legs:
            rows.append((txn_id, account_id, amount))
            delta[account_id] += amount
    driver.many("insert_posting", rows)
    driver.many("add_to_balance", [(n, a) for a, n in delta.items() if n])
    # the head moves one transaction at a time (a trigger holds it to that), as when posted singly
    driver.many("advance_head", [(txn["seq"], txn["hash"]) for txn in txns])
    return ids


def _posted(
    fields: Mapping[str, Any], names: Sequence[tuple[str, int]], *, created: bool
) -> Posted:
    return Posted(
        id=fields["id"],
        seq=fields["seq"],
        idempotency_key=fields["idempotency_key"],
        kind=fields["kind"],
        hash=fields["hash"],
        created_at=fields["created_at"],
        postings=tuple(names),
        created=created,
    )


def _check_limit(account: dict[str, Any], amount: int) -> None:
    if account["purpose"] not in LIMITED_PURPOSES or amount <= 0:
        return
    # A credit-normal wallet: available credit is the negated raw balance.
    available_after = -(account["balance"] + amount)
    if available_after < -account["overdraft"]:
        raise InsufficientFunds(
            f"account {account['code']} has {-account['balance']} fen available"
            + (f" (overdraft {account['overdraft']} fen)" if account["overdraft"] else "")
            + f"; {amount} fen cannot be taken from it",
            field="amount",
            account=account["code"],
            available=-account["balance"],
            requested=amount,
        )


def find_posted(session: Session, idempotency_key: str) -> Posted | None:
    """The transaction already posted under ``idempotency_key``, if any."""
    row = _Driver(session.connection()).one("by_key", (idempotency_key,))
    return None if row is None else load_posted(session, row[0])


def load_posted(session: Session, txn_id: int) -> Posted:
    """The stored transaction ``txn_id`` as a :class:`Posted` with ``created=False``."""
    txn = session.get(LedgerTransaction, txn_id)
    assert txn is not None
    rows = session.execute(
        select(LedgerAccount.code, LedgerPosting.amount)
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(LedgerPosting.transaction_id == txn.id)
        .order_by(LedgerPosting.id)
    ).all()
    return Posted(
        id=txn.id,
        seq=txn.seq,
        idempotency_key=txn.idempotency_key,
        kind=txn.kind,
        hash=txn.hash,
        created_at=txn.created_at,
        postings=tuple((code, amount) for code, amount in rows),
        created=False,
    )


def get_transaction(session: Session, ref: int | str) -> LedgerTransaction:
    """Find a transaction by sequence number (int) or idempotency key (str)."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        stmt = select(LedgerTransaction).where(LedgerTransaction.seq == ref)
    else:
        stmt = select(LedgerTransaction).where(LedgerTransaction.idempotency_key == ref)
    txn = session.execute(stmt).scalar_one_or_none()
    if txn is None:
        raise NotFound(f"no ledger transaction {ref!r}", field="transaction")
    return txn


def reverse(
    session: Session,
    transaction: int | str,
    *,
    reason_code: str,
    idempotency_key: str,
    memo: str = "",
    operator_id: int | None = None,
) -> Posted:
    """Post the exact opposite of a transaction (by seq or key), with a reason code."""
    check_reason(reason_code)
    original = get_transaction(session, transaction)
    if original.reverses_id is not None:
        raise InvalidInput(
            f"transaction #{original.seq} is itself a reversal and cannot be reversed; "
            "post the original operation again instead",
            field="transaction",
        )
    legs = session.execute(
        select(LedgerPosting.account_id, LedgerPosting.amount)
        .where(LedgerPosting.transaction_id == original.id)
        .order_by(LedgerPosting.id)
    ).all()
    return post(
        session,
        idempotency_key=idempotency_key,
        kind="reversal",
        postings=[(account_id, -amount) for account_id, amount in legs],
        memo=memo or f"reversal of #{original.seq}",
        reason_code=reason_code,
        reverses_id=original.id,
        operator_id=operator_id,
        office_id=original.office_id,
        customer_id=original.customer_id,
    )
