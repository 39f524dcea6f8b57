"""Sales per second through onecard's ledger API, against a raw-driver baseline.

What it measures
----------------
For each configuration -- SQLite (a temporary file) and PostgreSQL (a temporary database), each
with 1 and with 8 concurrent writers -- two paths post the same sale (100 fen of credit sold at an
office's cash till into one wallet) as fast as they can:

ledger
    ``onecard.ledger.sale`` on a SQLAlchemy session from ``onecard.db.create_db_engine``: open a
    session, call ``sale(...)`` with a unique idempotency key, commit.
raw
    the same transaction shape with the plain driver (``sqlite3`` or ``psycopg``, no
    SQLAlchemy): BEGIN (IMMEDIATE on SQLite); lock the ``ledger_head`` row (FOR UPDATE on
    PostgreSQL); select and lock the two accounts; look up the idempotency key; insert the
    transaction with its chained SHA-256 hash (computed with ``onecard.ledger.core``, so the CPU
    work matches and the rows stay valid) RETURNING id; insert the two postings; update the two
    cached balances; advance ``ledger_head``; COMMIT. ``sale`` runs the same eight statements.

Every writer is its own process (multiprocessing, spawn) with its own engine and its own raw
connection, and every writer sells into the same wallet: the worst case, where all of them queue
on the ledger's single write lock. SQLite runs with onecard's pragmas (WAL, synchronous=FULL,
foreign keys, busy_timeout) on both paths. The two paths alternate in rounds (ledger first in
even rounds, raw first in odd ones) after a short warm-up of both, so they see the same database
size and machine conditions. After each configuration ``onecard.ledger.verify`` checks the whole
ledger (hash chain, contiguous sequence, zero-sum postings, cached balances): both paths must have
written a valid ledger, or the benchmark fails.

The PostgreSQL server is taken from ``ONECARD_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``); the benchmark creates a fresh database
on it and drops it at the end. If the server cannot be reached, the PostgreSQL runs are skipped
(with a line saying so) and SQLite is still reported.

Run
---
From the repository root::

    .venv/bin/python bench/ledger.py              # the whole benchmark, about 40 s on 2 cores
    .venv/bin/python bench/ledger.py --quick      # a smoke run, about 15 s
    .venv/bin/python bench/ledger.py --profile sqlite   # where a single writer's time goes

Options
-------
--seconds S       measured time per path and configuration, split over the rounds (default 3)
--rounds R        alternating rounds per configuration (default 3)
--warmup S        untimed warm-up per path and configuration (default 0.3)
--writers LIST    writer counts, comma-separated (default 1,8)
--backends LIST   sqlite, pg or both (default sqlite,pg)
--quick           --seconds 1 --rounds 2 --warmup 0.2
--profile BACKEND instead of the benchmark: one writer in this process, each path for --seconds
                  under cProfile; prints the hottest functions and the statements of one sale
                  (no table and no RESULT line)

Output: a table (configuration, ledger sales/s, raw sales/s, ratio ledger/raw, the writers' CPU
milliseconds per sale on each path, the slowest and fastest round, the verified transaction
count), then one final line::

    RESULT sqlite_1_ledger=... sqlite_1_raw=... sqlite_1_ratio=... sqlite_8_ledger=... ...

The target is a ratio of at least 0.5: the ledger API reaches half the raw driver's rate.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import multiprocessing as mp
import os
import platform
import pstats
import queue
import sqlite3
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import event
from sqlalchemy.engine import make_url

from onecard.audit import Actor
from onecard.db import SQLITE_BUSY_TIMEOUT_MS, create_db_engine, session_factory, upgrade
from onecard.ledger import sale, verify
from onecard.ledger.accounts import ensure_account, office_account_code
from onecard.ledger.core import LIMITED_PURPOSES, request_fingerprint, transaction_hash
from onecard.ledger.verify import VerifyReport
from onecard.models import utcnow
from onecard.offices import create_office

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
WALLET = "wallet:meter:1"
AMOUNT = 100  # fen per sale
PATHS = ("ledger", "raw")
START_DELAY = 0.15  # seconds between sending "run" and the common start, so every writer is ready
BACKEND_NAMES = {"sqlite": "SQLite", "pg": "PostgreSQL"}
TXN_COLUMNS = (
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


# The raw baseline ------------------------------------------------------------------------------


def _pg_conninfo(url: str) -> str:
    """A libpq URL for a SQLAlchemy ``postgresql+psycopg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


class RawSales:
    """Sales written with the plain driver, in the same shape as ``onecard.ledger.post``."""

    def __init__(self, backend: str, url: str, office_id: int) -> None:
        self.backend = backend
        self.office_id = office_id
        self.till = office_account_code("cash", office_id)
        self.request = {
            "wallet": WALLET,
            "amount": AMOUNT,
            "office": office_id,
            "method": "cash",
            "fee": 0,
        }
        lock = ""
        self.conn: Any
        if backend == "sqlite":
            path = make_url(url).database
            self.conn = sqlite3.connect(
                path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            for pragma in (
                "journal_mode=WAL",
                "synchronous=FULL",
                "foreign_keys=ON",
                f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            ):
                self.conn.execute(f"PRAGMA {pragma}")

            def begin() -> None:
                self.cur.execute("BEGIN IMMEDIATE")

            def commit() -> None:
                self.cur.execute("COMMIT")

            def rollback() -> None:
                self.cur.execute("ROLLBACK")

            # SQLAlchemy stores SQLite timestamps as naive UTC text; do the same.
            self.stamp: Callable[[dt.datetime], Any] = lambda at: at.replace(tzinfo=None).isoformat(
                " ", "microseconds"
            )
        else:
            # Not autocommit: psycopg sends BEGIN before the first statement, as under SQLAlchemy.
            self.conn = psycopg.connect(_pg_conninfo(url))
            lock = " FOR UPDATE"
            begin = _nothing
            commit = self.conn.commit
            rollback = self.conn.rollback
            self.stamp = _same
        self.begin, self.commit, self.rollback = begin, commit, rollback
        self.cur = self.conn.cursor()

        def q(text: str) -> str:
            return text if backend == "sqlite" else text.replace("?", "%s")

        self.sql_head = q("SELECT seq, hash FROM ledger_head WHERE id = 1" + lock)
        self.sql_accounts = q(
            "SELECT id, code, type, purpose, balance, overdraft FROM ledger_accounts"
            " WHERE code IN (?, ?) ORDER BY id" + lock
        )
        self.sql_key = q("SELECT id FROM ledger_transactions WHERE idempotency_key = ?")
        self.sql_txn = q(
            f"INSERT INTO ledger_transactions ({', '.join(TXN_COLUMNS)})"
            f" VALUES ({', '.join('?' for _ in TXN_COLUMNS)}) RETURNING id"
        )
        self.sql_posting = q(
            "INSERT INTO ledger_postings (transaction_id, account_id, amount) VALUES (?, ?, ?)"
        )
        self.sql_balance = q("UPDATE ledger_accounts SET balance = balance + ? WHERE id = ?")
        self.sql_advance = q("UPDATE ledger_head SET seq = ?, hash = ? WHERE id = 1")

    def sale(self, key: str) -> None:
        cur = self.cur
        self.begin()
        try:
            head_seq, head_hash = cur.execute(self.sql_head).fetchone()
            accounts = {
                row[1]: row
                for row in cur.execute(self.sql_accounts, (self.till, WALLET)).fetchall()
            }
            legs = [(self.till, AMOUNT), (WALLET, -AMOUNT)]
            by_id = [(accounts[code][0], amount) for code, amount in legs]
            fingerprint = request_fingerprint("sale", self.request, by_id, "", None, None)
            if cur.execute(self.sql_key, (key,)).fetchone() is not None:
                raise RuntimeError(f"idempotency key {key} is already used")
            for code, amount in legs:
                _, _, _, purpose, balance, overdraft = accounts[code]
                if purpose in LIMITED_PURPOSES and amount > 0 and balance + amount > overdraft:
                    raise RuntimeError(f"insufficient funds in {code}")
            fields: dict[str, Any] = {
                "seq": head_seq + 1,
                "idempotency_key": key,
                "request_hash": fingerprint,
                "kind": "sale",
                "memo": "",
                "reason_code": None,
                "reverses_id": None,
                "operator_id": None,
                "office_id": self.office_id,
                "customer_id": None,
                "created_at": utcnow(),
                "prev_hash": head_hash,
            }
            fields["hash"] = transaction_hash(head_hash, fields, by_id)
            values = [fields[column] for column in TXN_COLUMNS]
            values[TXN_COLUMNS.index("created_at")] = self.stamp(fields["created_at"])
            txn_id = cur.execute(self.sql_txn, values).fetchone()[0]
            cur.executemany(self.sql_posting, [(txn_id, a, n) for a, n in by_id])
            cur.executemany(self.sql_balance, [(n, a) for a, n in by_id])
            cur.execute(self.sql_advance, (fields["seq"], fields["hash"]))
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def close(self) -> None:
        self.conn.close()


def _nothing() -> None:
    pass


def _same(value: dt.datetime) -> dt.datetime:
    return value


# One writer: both paths on one database -------------------------------------------------------


class Writer:
    """A writer's ledger engine and raw connection, kept open over all its rounds."""

    def __init__(self, backend: str, url: str, office_id: int) -> None:
        self.office_id = office_id
        self.engine = create_db_engine(url)
        self.factory = session_factory(self.engine)
        self.raw = RawSales(backend, url, office_id)

    def ledger_sale(self, key: str) -> None:
        with self.factory() as session:
            sale(
                session,
                wallet=WALLET,
                amount=AMOUNT,
                office_id=self.office_id,
                idempotency_key=key,
            )
            session.commit()

    def run(
        self, path: str, prefix: str, start_at: float, seconds: float
    ) -> tuple[int, float, float]:
        """Sell from ``start_at`` until ``start_at + seconds``.

        Returns the number of sales, the time of the last commit and the CPU seconds this process
        spent (user and system: Python, the driver, SQLite itself; not waits for locks or disk).
        """
        one = self.ledger_sale if path == "ledger" else self.raw.sale
        delay = start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        deadline = start_at + seconds
        count = 0
        cpu = time.process_time()
        now = time.monotonic()
        while now < deadline:
            one(f"{prefix}-{count}")
            count += 1
            now = time.monotonic()
        return count, now, time.process_time() - cpu

    def close(self) -> None:
        self.raw.close()
        self.engine.dispose()


def _writer_process(index: int, commands: Any, results: Any) -> None:
    writer: Writer | None = None
    while True:
        command = commands.get()
        if command[0] == "stop":
            break
        try:
            payload: Any = None
            if command[0] == "open":
                writer = Writer(*command[1:])
            elif command[0] == "run" and writer is not None:
                path, tag, start_at, seconds = command[1:]
                payload = writer.run(path, f"{tag}-w{index}", start_at, seconds)
            elif command[0] == "close" and writer is not None:
                writer.close()
                writer = None
            else:
                raise RuntimeError(f"unexpected command {command!r}")
        except Exception:
            results.put(("error", index, traceback.format_exc()))
        else:
            results.put(("ok", index, payload))
    if writer is not None:
        writer.close()


class WriterPool:
    """Writer processes (spawned once, reused by every configuration) and their command queues."""

    def __init__(self, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.results: Any = ctx.Queue()
        self.commands: list[Any] = [ctx.Queue() for _ in range(size)]
        self.processes = [
            ctx.Process(target=_writer_process, args=(i, q, self.results), daemon=True)
            for i, q in enumerate(self.commands)
        ]
        for process in self.processes:
            process.start()

    def call(self, n: int, command: tuple[Any, ...], timeout: float) -> list[Any]:
        """Send ``command`` to the first ``n`` writers and wait for all their answers."""
        for commands in self.commands[:n]:
            commands.put(command)
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < n:
            try:
                status, index, payload = self.results.get(timeout=1.0)
            except queue.Empty:
                dead = [i for i, p in enumerate(self.processes[:n]) if not p.is_alive()]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"writers {dead} died" if dead else f"writers silent for {timeout} s"
                    ) from None
                continue
            if status == "error":
                raise RuntimeError(f"writer {index} failed:\n{payload}")
            answers[index] = payload
        return [answers[i] for i in range(n)]

    def stop(self) -> None:
        for commands in self.commands:
            commands.put(("stop",))
        for process in self.processes:
            process.join(timeout=15)
            if process.is_alive():
                process.terminate()
                process.join()


# Databases ------------------------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="onecard-bench-") as tmp:
        yield f"sqlite:///{tmp}/bench.db"


@contextmanager
def pg_database(admin: psycopg.Connection[Any], base_url: str) -> Iterator[str]:
    name = f"onecard_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def prepare(url: str) -> int:
    """Migrate a fresh database and create the office and the wallet; the office's id."""
    engine = create_db_engine(url)
    try:
        upgrade(engine)
        with session_factory(engine)() as session:
            office = create_office(session, Actor("bench"), code="BENCH", name="Bench office")
            ensure_account(
                session,
                WALLET,
                type="liability",
                purpose="wallet",
                utility_kind="electric",
                office_id=office.id,
            )
            session.commit()
            return office.id
    finally:
        engine.dispose()


def check_ledger(url: str) -> VerifyReport:
    """Verify the whole ledger; stop the benchmark if either path left it invalid."""
    engine = create_db_engine(url)
    try:
        with session_factory(engine)() as session:
            report = verify(session)
    finally:
        engine.dispose()
    if not report.ok:
        problems = "\n  ".join(str(p) for p in report.problems[:10])
        raise SystemExit(f"the ledger is NOT valid after the run:\n  {problems}")
    return report


# Measuring ------------------------------------------------------------------------------------


@dataclass
class Rate:
    """Sales, elapsed seconds and writers' CPU seconds of each round of one path."""

    sales: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, sales: int, seconds: float, cpu: float) -> None:
        self.sales.append(sales)
        self.seconds.append(seconds)
        self.cpu.append(cpu)

    @property
    def per_second(self) -> float:
        return sum(self.sales) / sum(self.seconds) if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        """Writer CPU milliseconds per sale."""
        return 1000 * sum(self.cpu) / sum(self.sales) if sum(self.sales) else 0.0

    @property
    def spread(self) -> str:
        rates = [n / s for n, s in zip(self.sales, self.seconds, strict=True)]
        return f"{min(rates):.0f}-{max(rates):.0f}" if rates else "-"


@dataclass
class Result:
    backend: str
    writers: int
    ledger: Rate
    raw: Rate
    verified: int

    @property
    def ratio(self) -> float:
        return self.ledger.per_second / self.raw.per_second if self.raw.per_second else 0.0


def phase(
    pool: WriterPool, n: int, path: str, tag: str, seconds: float
) -> tuple[int, float, float]:
    """All ``n`` writers sell on ``path`` for ``seconds`` from a common start.

    Returns the sales of all writers, the seconds from the start to the last commit, and the CPU
    seconds of all writers.
    """
    start_at = time.monotonic() + START_DELAY
    answers = pool.call(n, ("run", path, tag, start_at, seconds), timeout=seconds + 120)
    return (
        sum(sales for sales, _, _ in answers),
        max(end for _, end, _ in answers) - start_at,
        sum(cpu for _, _, cpu in answers),
    )


def run_config(
    pool: WriterPool, backend: str, url: str, writers: int, args: argparse.Namespace
) -> Result:
    name = f"{backend}{writers}"
    for path in PATHS:
        phase(pool, writers, path, f"{name}-{path}-warm", args.warmup)
    rates = {path: Rate() for path in PATHS}
    share = args.seconds / args.rounds
    for r in range(args.rounds):
        order = PATHS if r % 2 == 0 else PATHS[::-1]
        for path in order:
            rates[path].add(*phase(pool, writers, path, f"{name}-{path}-r{r}", share))
    report = check_ledger(url)
    result = Result(backend, writers, rates["ledger"], rates["raw"], report.transactions)
    print(
        f"  {BACKEND_NAMES[backend]}, {writers} writer(s): ledger {result.ledger.per_second:.0f}/s,"
        f" raw {result.raw.per_second:.0f}/s, ratio {result.ratio:.2f}; CPU/sale"
        f" {result.ledger.cpu_ms:.2f} vs {result.raw.cpu_ms:.2f} ms;"
        f" verify ok ({report.transactions} transactions, {report.postings} postings)",
        flush=True,
    )
    return result


def run_backend(pool: WriterPool, backend: str, url: str, args: argparse.Namespace) -> list[Result]:
    office_id = prepare(url)
    size = max(args.writers)
    pool.call(size, ("open", backend, url, office_id), timeout=120)
    try:
        return [run_config(pool, backend, url, n, args) for n in args.writers]
    finally:
        pool.call(size, ("close",), timeout=60)


def connect_admin(base_url: str) -> psycopg.Connection[Any] | None:
    try:
        return psycopg.connect(_pg_conninfo(base_url), autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"PostgreSQL is unreachable at {_shown(base_url)} ({reason});"
            " skipping the PostgreSQL runs",
            flush=True,
        )
        return None


def _rounded(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def report(results: Sequence[Result]) -> None:
    header = (
        f"{'configuration':<22} {'ledger sales/s':>14} {'raw sales/s':>12} {'ratio':>6}"
        f"  {'CPU ms/sale ledger':>18} {'raw':>5}  {'rounds/s ledger':>15} {'raw':>9}"
        f"  {'verified':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        label = f"{BACKEND_NAMES[r.backend]}, {r.writers} writer{'s' if r.writers > 1 else ''}"
        print(
            f"{label:<22} {r.ledger.per_second:>14.1f} {r.raw.per_second:>12.1f} {r.ratio:>6.2f}"
            f"  {r.ledger.cpu_ms:>18.2f} {r.raw.cpu_ms:>5.2f}  {r.ledger.spread:>15}"
            f" {r.raw.spread:>9}  {r.verified:>8}"
        )
    print(
        "\nCPU ms/sale: CPU time of the writer processes per sale (Python, driver, the SQLite"
        " library;\nnot waits for locks, the server or the disk). rounds/s: the slowest and"
        " fastest round.\n"
    )
    below = [r for r in results if r.ratio < 0.5]
    if below:
        names = ", ".join(f"{r.backend}_{r.writers}" for r in below)
        print(f"target (ledger >= 0.5 x raw): MISSED for {names}")
    else:
        print("target (ledger >= 0.5 x raw): met in every configuration")
    pairs = []
    for r in results:
        key = f"{r.backend}_{r.writers}"
        pairs += [
            f"{key}_ledger={_rounded(r.ledger.per_second)}",
            f"{key}_raw={_rounded(r.raw.per_second)}",
            f"{key}_ratio={r.ratio:.2f}",
        ]
    print("RESULT " + " ".join(pairs), flush=True)


# Profiling ------------------------------------------------------------------------------------


def profile(backend: str, base_url: str, seconds: float) -> None:
    """One writer in this process: each path under cProfile, and the statements of one sale."""
    with _database(backend, base_url) as url:
        if url is None:
            return
        writer = Writer(backend, url, prepare(url))
        try:
            writer.ledger_sale("probe-0")
            statements: list[str] = []

            @event.listens_for(writer.engine, "before_cursor_execute")
            def _log(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
                statements.append(" ".join(statement.split())[:110])

            writer.ledger_sale("probe-1")
            print(f"ledger path: {len(statements)} statements through SQLAlchemy for one sale")
            print("".join(f"  {s}\n" for s in statements), end="")
            event.remove(writer.engine, "before_cursor_execute", _log)
            for path in PATHS:
                writer.run(path, f"warm-{path}", time.monotonic(), 0.3)
                profiler = cProfile.Profile()
                profiler.enable()
                sales = writer.run(path, f"prof-{path}", time.monotonic(), seconds)[0]
                profiler.disable()
                out = io.StringIO()
                stats = pstats.Stats(profiler, stream=out)
                print(
                    f"\n=== {path} path on {BACKEND_NAMES[backend]}: {sales} sales in {seconds} s"
                )
                stats.sort_stats("tottime").print_stats(18)
                stats.sort_stats("cumulative").print_stats(30)
                print(out.getvalue())
        finally:
            writer.close()


@contextmanager
def _database(backend: str, base_url: str) -> Iterator[str | None]:
    if backend == "sqlite":
        with sqlite_database() as url:
            yield url
        return
    admin = connect_admin(base_url)
    if admin is None:
        yield None
        return
    try:
        with pg_database(admin, base_url) as url:
            yield url
    finally:
        admin.close()


# Command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Sales per second: onecard's ledger API against a raw-driver baseline."
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per path")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per config")
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up seconds per path")
    parser.add_argument("--writers", default="1,8", help="writer counts, comma-separated")
    parser.add_argument("--backends", default="sqlite,pg", help="sqlite, pg or both")
    parser.add_argument("--quick", action="store_true", help="--seconds 1 --rounds 2 --warmup 0.2")
    parser.add_argument(
        "--profile", choices=sorted(BACKEND_NAMES), help="profile one writer instead"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.warmup = 1.0, 2, 0.2
    try:
        args.writers = [int(n) for n in args.writers.split(",")]
    except ValueError:
        parser.error("--writers takes numbers like 1,8")
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if any(b not in BACKEND_NAMES for b in args.backends):
        parser.error("--backends takes sqlite, pg or sqlite,pg")
    if args.rounds < 1 or args.seconds <= 0 or min(args.writers) < 1:
        parser.error("--rounds, --seconds and --writers must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base_url = os.environ.get("ONECARD_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    if args.profile:
        profile(args.profile, base_url, args.seconds)
        return 0
    started = time.monotonic()
    print(
        f"onecard ledger benchmark: Python {platform.python_version()}, SQLite"
        f" {sqlite3.sqlite_version}, {os.cpu_count()} CPUs; {args.seconds:g} s per path in"
        f" {args.rounds} rounds, {args.warmup:g} s warm-up; writers {args.writers}",
        flush=True,
    )
    pool = WriterPool(max(args.writers))
    results: list[Result] = []
    try:
        for backend in args.backends:
            with _database(backend, base_url) as url:
                if url is None:
                    continue
                where = "a temporary file" if backend == "sqlite" else _shown(url)
                print(f"{BACKEND_NAMES[backend]} on {where}", flush=True)
                results += run_backend(pool, backend, url, args)
    finally:
        pool.stop()
    print(f"\nwall time {time.monotonic() - started:.1f} s")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
