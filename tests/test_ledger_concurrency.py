"""Many writers, one wallet: no lost update, no duplicate, the chain intact.

Each worker process posts its own sales and, in between, retries sales of its neighbour with the
same idempotency keys (so the same key races across processes). The final balance must be exactly
the sum of the distinct sales.
"""

from __future__ import annotations

import multiprocessing

import pytest
from conftest import World
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard import ledger
from onecard.db import create_db_engine, session_factory
from onecard.errors import IdempotencyConflict
from onecard.ledger import accounts as acc
from onecard.models import LedgerTransaction


def amount_for(worker: int, n: int) -> int:
    return 100 + worker * 7 + n % 13


def worker_main(
    url: str, wallet: str, office_id: int, worker: int, workers: int, sales: int
) -> tuple[int, int]:
    engine = create_db_engine(url, pool_size=1)
    sessions = session_factory(engine)
    created = replayed = 0
    neighbour = (worker + 1) % workers
    try:
        for n in range(sales):
            jobs = [(worker, n)]
            if n % 10 == 0:  # retry a neighbour's sale: may come before or after the original
                jobs.append((neighbour, n))
            if n % 25 == 0:  # and our own, right away
                jobs.append((worker, n))
            for who, m in jobs:
                with sessions() as s, s.begin():
                    p = ledger.sale(
                        s,
                        wallet=wallet,
                        amount=amount_for(who, m),
                        office_id=office_id,
                        idempotency_key=f"w{who}-s{m}",
                    )
                created += p.created
                replayed += not p.created
    finally:
        engine.dispose()
    return created, replayed


def run_workers(url: str, world: World, workers: int, sales: int) -> tuple[int, int]:
    ctx = multiprocessing.get_context("spawn")
    wallet = world.wallets["electric"]
    with ctx.Pool(workers) as pool:
        results = pool.starmap(
            worker_main,
            [(url, wallet, world.office_id, w, workers, sales) for w in range(workers)],
        )
    return sum(r[0] for r in results), sum(r[1] for r in results)


def check(
    sessions: sessionmaker[Session], world: World, workers: int, sales: int, created: int
) -> None:
    expected = sum(amount_for(w, n) for w in range(workers) for n in range(sales))
    with sessions() as s:
        wallet = acc.get_account(s, world.wallets["electric"])
        assert acc.natural_balance(wallet) == expected
        count = s.execute(select(func.count()).select_from(LedgerTransaction)).scalar_one()
        assert count == created == workers * sales
        report = ledger.verify(s)
        assert report.ok, report.problems
        assert report.transactions == workers * sales


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_eight_processes_two_hundred_sales_each_on_postgres(
    db_url: str, sessions: sessionmaker[Session], world: World
) -> None:
    created, replayed = run_workers(db_url, world, workers=8, sales=200)
    assert replayed == 8 * (20 + 8)  # every retry answered with the first result
    check(sessions, world, 8, 200, created)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_four_processes_on_the_embedded_sqlite_file(
    db_url: str, sessions: sessionmaker[Session], world: World
) -> None:
    created, replayed = run_workers(db_url, world, workers=4, sales=50)
    assert replayed == 4 * (5 + 2)
    check(sessions, world, 4, 50, created)


def test_a_key_reused_across_processes_with_another_amount_is_refused(
    sessions: sessionmaker[Session], world: World
) -> None:
    with sessions() as s, s.begin():
        ledger.sale(
            s,
            wallet=world.wallets["electric"],
            amount=100,
            office_id=world.office_id,
            idempotency_key="w0-s0",
        )
    with sessions() as s, s.begin(), pytest.raises(IdempotencyConflict):
        ledger.sale(
            s,
            wallet=world.wallets["electric"],
            amount=101,
            office_id=world.office_id,
            idempotency_key="w0-s0",
        )
