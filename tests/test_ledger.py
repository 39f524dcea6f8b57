"""The ledger on SQLite and PostgreSQL: operations, idempotency, refusals, immutability, tamper."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import World
from helpers import available, ledger_state
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from onecard import ledger
from onecard.cli import cli
from onecard.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    UnbalancedTransaction,
    UnknownAccount,
)
from onecard.ledger import accounts as acc


def test_sale_credits_wallet_and_debits_the_till(
    sessions: sessionmaker[Session], world: World
) -> None:
    wallet = world.wallets["electric"]
    with sessions() as s, s.begin():
        posted = ledger.sale(
            s, wallet=wallet, amount=10000, fee=500, office_id=world.office_id, idempotency_key="s1"
        )
    assert posted.created and posted.seq >= 1 and posted.kind == "sale"
    assert dict(posted.postings) == {
        f"cash:office:{world.office_id}": 10500,
        wallet: -10000,
        f"fees:office:{world.office_id}": -500,
    }
    with sessions() as s:
        assert available(s, wallet) == 10000
        assert acc.get_account(s, f"cash:office:{world.office_id}").balance == 10500
        assert ledger.verify(s).ok


def test_retried_sale_never_credits_twice(sessions: sessionmaker[Session], world: World) -> None:
    wallet = world.wallets["electric"]
    with sessions() as s, s.begin():
        first = ledger.sale(
            s, wallet=wallet, amount=5000, office_id=world.office_id, idempotency_key="retry-1"
        )
    for _ in range(3):
        with sessions() as s, s.begin():
            again = ledger.sale(
                s, wallet=wallet, amount=5000, office_id=world.office_id, idempotency_key="retry-1"
            )
        assert not again.created
        assert (again.seq, again.hash, again.postings) == (first.seq, first.hash, first.postings)
        assert again.created_at == first.created_at and again.created_at.tzinfo is not None
    with sessions() as s:
        assert available(s, wallet) == 5000


def test_same_key_for_a_different_request_is_refused(
    sessions: sessionmaker[Session], world: World
) -> None:
    wallet = world.wallets["electric"]
    with sessions() as s, s.begin():
        ledger.sale(s, wallet=wallet, amount=5000, office_id=world.office_id, idempotency_key="k")
    with sessions() as s, s.begin(), pytest.raises(IdempotencyConflict, match="already used"):
        ledger.sale(s, wallet=wallet, amount=6000, office_id=world.office_id, idempotency_key="k")


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (-100, "must be positive"),
        (0, "must be positive"),
        (12.5, "whole number of fen"),
        ("100", "whole number of fen"),
        (True, "whole number of fen"),
        (10**11, "at most"),
    ],
)
def test_bad_amounts_are_refused_and_nothing_is_written(
    sessions: sessionmaker[Session], world: World, amount: object, message: str
) -> None:
    with sessions() as s:
        before = ledger_state(s)
    with sessions() as s, s.begin(), pytest.raises(InvalidInput, match=message) as info:
        ledger.sale(
            s,
            wallet=world.wallets["electric"],
            amount=amount,
            office_id=world.office_id,
            idempotency_key="bad",
        )  # type: ignore[arg-type]
    assert info.value.field == "amount"
    with sessions() as s:
        assert ledger_state(s) == before


def test_unknown_wallet_is_refused(sessions: sessionmaker[Session], world: World) -> None:
    with sessions() as s:
        before = ledger_state(s)
    with (
        sessions() as s,
        s.begin(),
        pytest.raises(UnknownAccount, match="wallet:meter:999") as info,
    ):
        ledger.sale(
            s, wallet="wallet:meter:999", amount=100, office_id=world.office_id, idempotency_key="u"
        )
    assert info.value.field == "wallet"
    with sessions() as s:
        assert ledger_state(s) == before


def test_unbalanced_transaction_is_refused(sessions: sessionmaker[Session], world: World) -> None:
    wallet = world.wallets["electric"]
    cash = f"cash:office:{world.office_id}"
    with sessions() as s:
        before = ledger_state(s)
    for legs, error in [
        ([(cash, 100), (wallet, -99)], UnbalancedTransaction),
        ([(cash, 100)], UnbalancedTransaction),
        ([(cash, 100), (wallet, 0), (wallet, -100)], InvalidInput),
        ([(cash, 100), (cash, -100)], InvalidInput),
        ([(cash, 100.0), (wallet, -100)], InvalidInput),
        ([(cash, 100), ("nope:1", -100)], UnknownAccount),
    ]:
        with sessions() as s, s.begin(), pytest.raises(error):
            ledger.post(s, idempotency_key="unbalanced", kind="sale", postings=legs)  # type: ignore[arg-type]
    with sessions() as s:
        assert ledger_state(s) == before


def test_consume_splits_into_arrears_when_credit_runs_out(
    sessions: sessionmaker[Session], world: World
) -> None:
    wallet = world.wallets["electric"]
    with sessions() as s, s.begin():
        ledger.sale(s, wallet=wallet, amount=3000, office_id=world.office_id, idempotency_key="s")
        posted = ledger.consume(s, wallet=wallet, amount=5000, idempotency_key="c")
    assert dict(posted.postings) == {
        f"revenue:electric:office:{world.office_id}": -5000,
        wallet: 3000,
        f"arrears:customer:{world.customer_id}": 2000,
    }
    # A retry computes against the new balance but is recognised by its parameters.
    with sessions() as s, s.begin():
        again = ledger.consume(s, wallet=wallet, amount=5000, idempotency_key="c")
    assert not again.created and again.postings == posted.postings
    with sessions() as s, s.begin():
        ledger.collect_arrears(
            s,
            customer_id=world.customer_id,
            amount=2000,
            office_id=world.office_id,
            idempotency_key="a",
        )
        again = ledger.collect_arrears(
            s,
            customer_id=world.customer_id,
            amount=2000,
            office_id=world.office_id,
            idempotency_key="a",
        )
        assert not again.created  # a retry after the arrears are paid is not refused
        with pytest.raises(InvalidInput, match="owes 0 fen"):
            ledger.collect_arrears(
                s,
                customer_id=world.customer_id,
                amount=1,
                office_id=world.office_id,
                idempotency_key="a2",
            )
    with sessions() as s:
        assert available(s, wallet) == 0
        assert ledger.verify(s).ok


def test_overdraft_lets_a_wallet_go_below_zero_up_to_its_limit(
    sessions: sessionmaker[Session], world: World
) -> None:
    wallet = world.wallets["electric"]
    with sessions() as s, s.begin():
        s.execute(
            text("UPDATE ledger_accounts SET overdraft = 1000 WHERE code = :c"), {"c": wallet}
        )
        ledger.consume(s, wallet=wallet, amount=1500, idempotency_key="c")
    with sessions() as s:
        assert available(s, wallet) == -1000
        assert acc.get_account(s, f"arrears:customer:{world.customer_id}").balance == 500


def test_refunds_transfers_and_fees(sessions: sessionmaker[Session], world: World) -> None:
    office = world.office_id
    elec, water = world.wallets["electric"], world.wallets["water.cold"]
    with sessions() as s, s.begin():
        ledger.sale(
            s, wallet=world.shared_wallet, amount=20000, office_id=office, idempotency_key="s"
        )
        ledger.transfer(
            s, source=world.shared_wallet, target=elec, amount=8000, idempotency_key="t1"
        )
        ledger.transfer(
            s, source=world.shared_wallet, target=water, amount=2000, idempotency_key="t2"
        )
        ledger.refund(
            s, wallet=world.shared_wallet, amount=4000, office_id=office, idempotency_key="r1"
        )
        ledger.refund(
            s, wallet=elec, amount=1000, office_id=office, method="payable", idempotency_key="r2"
        )
        with pytest.raises(InvalidInput, match="owes 1000 fen of refunds"):
            ledger.pay_refund(s, amount=1001, office_id=office, idempotency_key="r3", method="bank")
        ledger.pay_refund(s, amount=1000, office_id=office, idempotency_key="r3", method="bank")
        assert not ledger.pay_refund(
            s, amount=1000, office_id=office, idempotency_key="r3", method="bank"
        ).created
        ledger.charge_fee(
            s, amount=1500, office_id=office, idempotency_key="f1", customer_id=world.customer_id
        )
        with pytest.raises(InsufficientFunds, match="6000 fen available"):
            ledger.refund(
                s, wallet=world.shared_wallet, amount=6001, office_id=office, idempotency_key="r4"
            )
        with pytest.raises(InvalidInput, match="method"):
            ledger.refund(
                s, wallet=elec, amount=1, office_id=office, method="cheque", idempotency_key="r5"
            )
        with pytest.raises(InvalidInput, match="same wallet"):
            ledger.transfer(s, source=elec, target=elec, amount=1, idempotency_key="t3")
        with pytest.raises(InvalidInput, match="not a customer wallet"):
            ledger.transfer(
                s, source=f"cash:office:{office}", target=elec, amount=1, idempotency_key="t4"
            )
    with sessions() as s:
        assert available(s, world.shared_wallet) == 6000
        assert available(s, elec) == 7000
        assert available(s, water) == 2000
        assert acc.get_account(s, f"cash:office:{office}").balance == 20000 - 4000 + 1500
        assert acc.get_account(s, f"bank:office:{office}").balance == -1000
        assert acc.get_account(s, f"refunds:office:{office}").balance == 0
        assert acc.natural_balance(acc.get_account(s, f"fees:office:{office}")) == 1500
        assert ledger.verify(s).ok


def test_reversal_posts_the_opposite_once_with_a_reason(
    sessions: sessionmaker[Session], world: World
) -> None:
    wallet = world.wallets["electric"]
    with sessions() as s, s.begin():
        sale = ledger.sale(
            s, wallet=wallet, amount=100000, office_id=world.office_id, idempotency_key="oops"
        )
    with sessions() as s, s.begin():
        with pytest.raises(InvalidInput, match="reason_code"):
            ledger.reverse(s, sale.seq, reason_code="", idempotency_key="rev")
        rev = ledger.reverse(s, sale.seq, reason_code="operator_error", idempotency_key="rev")
    assert rev.kind == "reversal"
    assert dict(rev.postings) == {code: -amount for code, amount in sale.postings}
    with sessions() as s, s.begin():
        assert not ledger.reverse(
            s, sale.seq, reason_code="operator_error", idempotency_key="rev"
        ).created
        with pytest.raises(
            AlreadyReversed, match=f"#{sale.seq} is already reversed by transaction #{rev.seq}"
        ):
            ledger.reverse(s, "oops", reason_code="operator_error", idempotency_key="rev-again")
        with pytest.raises(InvalidInput, match="itself a reversal"):
            ledger.reverse(s, rev.seq, reason_code="operator_error", idempotency_key="rev-rev")
    with sessions() as s:
        assert available(s, wallet) == 0
        original = ledger.get_transaction(s, sale.seq)
        assert original.kind == "sale"  # untouched: corrected by a new entry, not an edit
        assert ledger.verify(s).ok


def test_reversal_that_would_overdraw_the_wallet_is_refused(
    sessions: sessionmaker[Session], world: World
) -> None:
    wallet = world.wallets["electric"]
    with sessions() as s, s.begin():
        sale = ledger.sale(
            s, wallet=wallet, amount=1000, office_id=world.office_id, idempotency_key="s"
        )
        ledger.consume(s, wallet=wallet, amount=600, idempotency_key="c")
    with sessions() as s, s.begin(), pytest.raises(InsufficientFunds, match="400 fen available"):
        ledger.reverse(s, sale.seq, reason_code="operator_error", idempotency_key="r")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_postings SET amount = amount + 1",
        "DELETE FROM ledger_postings",
        "UPDATE ledger_transactions SET memo = 'edited'",
        "DELETE FROM ledger_transactions",
        "UPDATE audit_events SET actor = 'someone else'",
        "DELETE FROM audit_events",
        "UPDATE ledger_head SET seq = seq - 1",
        "DELETE FROM ledger_head",
    ],
)
def test_database_refuses_to_change_posted_history(
    sessions: sessionmaker[Session], world: World, statement: str
) -> None:
    with sessions() as s, s.begin():
        ledger.sale(
            s,
            wallet=world.wallets["electric"],
            amount=100,
            office_id=world.office_id,
            idempotency_key="s",
        )
    with sessions() as s, s.begin(), pytest.raises(DBAPIError, match=r"append-only|advance"):
        s.execute(text(statement))


@pytest.mark.postgres
def test_truncate_is_refused_on_postgres(postgres, world_pg_url: str) -> None:  # type: ignore[no-untyped-def]
    from onecard.db import create_db_engine

    eng = create_db_engine(world_pg_url)
    with eng.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text("TRUNCATE ledger_postings CASCADE"))
    eng.dispose()


@pytest.fixture
def world_pg_url(postgres) -> str:  # type: ignore[no-untyped-def]
    return postgres.create()


def _bypass_and_edit(engine: Engine, sql: str) -> None:
    """Change the ledger as a superuser would: with the triggers out of the way."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(sql))
        else:
            triggers = conn.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
            ).all()
            for name, _ in triggers:
                conn.execute(text(f"DROP TRIGGER {name}"))
            conn.execute(text(sql))
            for _, ddl in triggers:
                conn.execute(text(ddl))


def _three_sales(sessions: sessionmaker[Session], world: World) -> list[ledger.Posted]:
    out = []
    with sessions() as s, s.begin():
        for i, amount in enumerate((1000, 2000, 3000)):
            out.append(
                ledger.sale(
                    s,
                    wallet=world.wallets["electric"],
                    amount=amount,
                    office_id=world.office_id,
                    idempotency_key=f"s{i}",
                )
            )
    return out


def test_editing_a_posting_behind_the_ledgers_back_is_detected(
    engine: Engine, sessions: sessionmaker[Session], world: World, db_url: str
) -> None:
    sales = _three_sales(sessions, world)
    target = sales[1]
    # Move 10 yuan of the second sale from the wallet to nobody: amounts and the cache both edited,
    # so only the hash chain can tell.
    _bypass_and_edit(
        engine,
        f"UPDATE ledger_postings SET amount = amount - 1000 WHERE transaction_id = {target.id} "
        "AND amount < 0",
    )
    _bypass_and_edit(
        engine,
        f"UPDATE ledger_postings SET amount = amount + 1000 WHERE transaction_id = {target.id} "
        "AND amount > 0",
    )
    with sessions() as s:
        report = ledger.verify(s)
    assert not report.ok
    assert report.first_bad_transaction == target.seq
    assert any("changed after posting" in str(p) for p in report.problems)

    result = CliRunner().invoke(cli, ["--database-url", db_url, "ledger", "verify"])
    assert result.exit_code == 1
    assert f"first bad transaction: #{target.seq}" in result.output
    assert f"transaction #{target.seq} key s1" in result.output


def test_deleting_a_transaction_is_detected(
    engine: Engine, sessions: sessionmaker[Session], world: World
) -> None:
    sales = _three_sales(sessions, world)
    victim = sales[1]
    _bypass_and_edit(engine, f"DELETE FROM ledger_postings WHERE transaction_id = {victim.id}")
    _bypass_and_edit(engine, f"DELETE FROM ledger_transactions WHERE id = {victim.id}")
    with sessions() as s:
        report = ledger.verify(s)
    assert not report.ok
    assert report.first_bad_transaction == sales[2].seq
    messages = " ".join(str(p) for p in report.problems)
    assert f"#{victim.seq} to #{victim.seq} are missing" in messages
    assert "cached balance" in messages


def test_editing_a_cached_balance_is_detected(
    engine: Engine, sessions: sessionmaker[Session], world: World
) -> None:
    _three_sales(sessions, world)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_accounts SET balance = balance - 1 WHERE code = :c"),
            {"c": world.wallets["electric"]},
        )
    with sessions() as s:
        report = ledger.verify(s)
    assert [p.account for p in report.problems] == [world.wallets["electric"]]
    assert report.first_bad_transaction is None


def test_verify_on_an_empty_ledger_is_ok(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        report = ledger.verify(s)
    assert report.ok and report.transactions == 0


# Batches ----------------------------------------------------------------------------------------


def test_consume_many_posts_a_batch_in_order_with_one_chain(
    sessions: sessionmaker[Session], world: World
) -> None:
    electric, heat = world.wallets["electric"], world.wallets["heat"]
    with sessions() as s, s.begin():
        ledger.sale(s, wallet=electric, amount=3000, office_id=world.office_id, idempotency_key="s")
        first = ledger.consume(s, wallet=heat, amount=100, idempotency_key="before")
    uses = [
        ledger.Use(electric, 2000, "u1"),
        ledger.Use(heat, 100, "before"),  # already stored: answered, not posted again
        ledger.Use(electric, 2000, "u2"),  # 1000 left: the rest is arrears
        ledger.Use(electric, 2000, "u1"),  # repeated in the batch: the first one's result
    ]
    with sessions() as s, s.begin():
        done = ledger.consume_many(s, uses)
    created = [p.created for p in done.posted]
    assert created == [True, False, True, False]
    assert done.posted[1].seq == first.seq and done.posted[3].seq == done.posted[0].seq
    assert done.posted[2].seq == done.posted[0].seq + 1
    assert dict(done.posted[2].postings) == {
        f"revenue:electric:office:{world.office_id}": -2000,
        electric: 1000,
        f"arrears:customer:{world.customer_id}": 1000,
    }
    assert done.balances == {electric: 0, heat: 0}  # heat's use went to arrears
    with sessions() as s:
        assert available(s, electric) == 0
        assert ledger.verify(s).ok
        # a stored batch answers a retry of the whole batch without writing
        before = ledger_state(s)
    with sessions() as s, s.begin():
        again = ledger.consume_many(s, uses)
    assert [p.seq for p in again.posted] == [p.seq for p in done.posted]
    assert not any(p.created for p in again.posted)
    with sessions() as s:
        assert ledger_state(s) == before


@pytest.mark.parametrize(
    ("uses", "error", "field"),
    [
        ([("electric", 100, "a"), ("nowhere", 100, "b")], UnknownAccount, "uses[1].wallet"),
        ([("electric", 100, "a"), ("electric", 0, "b")], InvalidInput, "uses[1].amount"),
        ([("electric", 100, "a"), ("electric", 200, "a")], IdempotencyConflict, "idempotency_key"),
        ([("electric", 100, "a"), ("electric", 100, "bad key!")], InvalidInput, "idempotency_key"),
    ],
)
def test_a_refused_use_refuses_the_whole_batch(
    sessions: sessionmaker[Session],
    world: World,
    uses: list[tuple[str, int, str]],
    error: type[Exception],
    field: str,
) -> None:
    batch = [
        ledger.Use(world.wallets.get(w, f"wallet:meter:{w}"), amount, key)
        for w, amount, key in uses
    ]
    with sessions() as s:
        before = ledger_state(s)
    with sessions() as s, s.begin(), pytest.raises(error) as err:
        ledger.consume_many(s, batch)
    assert getattr(err.value, "field", None) == field
    with sessions() as s:
        assert ledger_state(s) == before


def test_post_many_locked_leaves_the_locked_balances_as_they_were_when_it_refuses(
    sessions: sessionmaker[Session], world: World
) -> None:
    electric, heat = world.wallets["electric"], world.wallets["heat"]
    with sessions() as s, s.begin():
        ledger.sale(s, wallet=electric, amount=500, office_id=world.office_id, idempotency_key="s")
    with sessions() as s, s.begin():
        before = ledger_state(s)
        lock = ledger.lock_ledger(s)
        accounts = ledger.lock_accounts(lock, [electric, heat])
        balances = {code: accounts[code]["balance"] for code in (electric, heat)}
        entries = [
            ledger.Entry("t1", "transfer", [(electric, 300), (heat, -300)]),
            ledger.Entry("t2", "transfer", [(electric, 300), (heat, -300)]),  # 200 left
        ]
        with pytest.raises(InsufficientFunds):
            ledger.post_many_locked(s, lock, accounts, entries)
        assert {code: accounts[code]["balance"] for code in (electric, heat)} == balances
        assert ledger_state(s) == before
        # the lock is still good for a batch that fits, and moves on with it
        posted = ledger.post_many_locked(s, lock, accounts, entries[:1])
        assert lock.seq == posted[0].seq and lock.hash == posted[0].hash
    with sessions() as s:
        assert available(s, electric) == 200 and ledger.verify(s).ok
