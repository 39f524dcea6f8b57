"""Property tests: random sequences of sales, consumption (one use at a time, and batches of
uses posted together), refunds, transfers and reversals.

After every step: each transaction sums to zero, every cached balance equals the sum of its
postings, the hash chain holds, and each wallet holds exactly what a plain Python model says.
Refused operations (insufficient funds, double reversal) must change nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import ACTOR, BUILTIN_PLUGINS
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import func, select

from onecard import customers as cust
from onecard import ledger
from onecard import offices as off
from onecard.db import create_db_engine, session_factory
from onecard.errors import AlreadyReversed, InsufficientFunds
from onecard.ledger import accounts as acc
from onecard.models import LedgerAccount, LedgerPosting
from onecard.plugins import load_plugins

AMOUNTS = st.integers(min_value=1, max_value=500_000)


class LedgerMachine(RuleBasedStateMachine):
    template: Path

    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp())
        shutil.copyfile(self.template, self.dir / "db.sqlite")
        self.engine = create_db_engine(f"sqlite:///{self.dir / 'db.sqlite'}")
        self.sessions = session_factory(self.engine)
        utilities = load_plugins(BUILTIN_PLUGINS).utilities
        with self.sessions() as s, s.begin():
            self.office = off.create_office(s, ACTOR, code="O1", name="O1").id
            c = cust.open_account(
                s,
                ACTOR,
                utilities,
                office="O1",
                name="A",
                meters=[cust.MeterSpec("electric", "E1"), cust.MeterSpec("gas", "G1")],
                shared_wallet=True,
            )
            self.customer = c.id
            self.wallets = [acc.meter_wallet_code(m.id) for m in c.premises[0].meters]
            self.wallets.append(acc.shared_wallet_code(c.id))
        self.model = dict.fromkeys(self.wallets, 0)
        self.arrears = 0
        self.posted: list[tuple[int, dict[str, int], int]] = []  # seq, wallet deltas, arrears delta
        self.reversed: set[int] = set()
        self.n = 0
        self.last_use: ledger.Use | None = None

    def teardown(self) -> None:
        if hasattr(self, "engine"):
            self.engine.dispose()
            shutil.rmtree(self.dir, ignore_errors=True)

    def key(self) -> str:
        self.n += 1
        return f"k{self.n}"

    @rule(
        w=st.integers(0, 2), amount=AMOUNTS, fee=st.sampled_from([0, 0, 100]), retry=st.booleans()
    )
    def sell(self, w: int, amount: int, fee: int, retry: bool) -> None:
        wallet, key = self.wallets[w], self.key()
        with self.sessions() as s, s.begin():
            p = ledger.sale(
                s, wallet=wallet, amount=amount, fee=fee, office_id=self.office, idempotency_key=key
            )
        if retry:
            with self.sessions() as s, s.begin():
                again = ledger.sale(
                    s,
                    wallet=wallet,
                    amount=amount,
                    fee=fee,
                    office_id=self.office,
                    idempotency_key=key,
                )
            assert not again.created and again.seq == p.seq
        self.model[wallet] += amount
        self.posted.append((p.seq, {wallet: amount}, 0))

    @rule(w=st.integers(0, 1), amount=AMOUNTS)
    def consume(self, w: int, amount: int) -> None:
        wallet = self.wallets[w]
        with self.sessions() as s, s.begin():
            p = ledger.consume(s, wallet=wallet, amount=amount, idempotency_key=self.key())
        covered = min(amount, max(self.model[wallet], 0))
        self.model[wallet] -= covered
        self.arrears += amount - covered
        self.posted.append((p.seq, {wallet: -covered} if covered else {}, amount - covered))

    @rule(
        uses=st.lists(st.tuples(st.integers(0, 1), AMOUNTS), min_size=1, max_size=6),
        repeat=st.booleans(),
        replay=st.booleans(),
    )
    def consume_batch(self, uses: list[tuple[int, int]], repeat: bool, replay: bool) -> None:
        """A batch posts as its uses would one after another; a key repeated in the batch, or
        one already stored, posts nothing again."""
        batch = [ledger.Use(self.wallets[w], amount, self.key()) for w, amount in uses]
        if repeat:
            batch.append(batch[0])
        if replay and self.last_use is not None:
            batch.insert(0, self.last_use)
        with self.sessions() as s, s.begin():
            done = ledger.consume_many(s, batch)
        assert len(done.posted) == len(batch)
        seen: dict[str, int] = {}
        for use, p in zip(batch, done.posted, strict=True):
            if use is self.last_use and replay:
                assert not p.created
                continue
            if use.idempotency_key in seen:
                assert not p.created and p.seq == seen[use.idempotency_key]
                continue
            assert p.created
            seen[use.idempotency_key] = p.seq
            covered = min(use.amount, max(self.model[use.wallet], 0))
            self.model[use.wallet] -= covered
            self.arrears += use.amount - covered
            self.posted.append(
                (p.seq, {use.wallet: -covered} if covered else {}, use.amount - covered)
            )
            assert dict(p.postings).get(use.wallet, 0) == covered
        for wallet in {use.wallet for use in batch}:
            assert -done.balances[wallet] == self.model[wallet]
        self.last_use = batch[-1]

    @rule(w=st.integers(0, 2), amount=AMOUNTS, method=st.sampled_from(["cash", "bank", "payable"]))
    def refund(self, w: int, amount: int, method: str) -> None:
        wallet = self.wallets[w]
        try:
            with self.sessions() as s, s.begin():
                p = ledger.refund(
                    s,
                    wallet=wallet,
                    amount=amount,
                    office_id=self.office,
                    method=method,
                    idempotency_key=self.key(),
                )
        except InsufficientFunds:
            assert amount > self.model[wallet]
            return
        assert amount <= self.model[wallet]
        self.model[wallet] -= amount
        self.posted.append((p.seq, {wallet: -amount}, 0))

    @rule(src=st.integers(0, 2), dst=st.integers(0, 2), amount=AMOUNTS)
    def transfer(self, src: int, dst: int, amount: int) -> None:
        if src == dst:
            return
        a, b = self.wallets[src], self.wallets[dst]
        try:
            with self.sessions() as s, s.begin():
                p = ledger.transfer(
                    s, source=a, target=b, amount=amount, idempotency_key=self.key()
                )
        except InsufficientFunds:
            assert amount > self.model[a]
            return
        self.model[a] -= amount
        self.model[b] += amount
        self.posted.append((p.seq, {a: -amount, b: amount}, 0))

    @precondition(lambda self: bool(getattr(self, "posted", None)))
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        seq, deltas, arrears = data.draw(st.sampled_from(self.posted))
        try:
            with self.sessions() as s, s.begin():
                ledger.reverse(s, seq, reason_code="test_reversal", idempotency_key=self.key())
        except AlreadyReversed:
            assert seq in self.reversed
            return
        except InsufficientFunds:
            assert any(self.model[w] - d < 0 for w, d in deltas.items())
            return
        assert seq not in self.reversed
        self.reversed.add(seq)
        for wallet, delta in deltas.items():
            self.model[wallet] -= delta
        self.arrears -= arrears

    @invariant()
    def ledger_is_consistent(self) -> None:
        if not hasattr(self, "sessions"):
            return
        with self.sessions() as s:
            report = ledger.verify(s)
            assert report.ok, report.problems
            for wallet, expected in self.model.items():
                assert acc.natural_balance(acc.get_account(s, wallet)) == expected
            sums = dict(
                s.execute(
                    select(LedgerPosting.account_id, func.sum(LedgerPosting.amount)).group_by(
                        LedgerPosting.account_id
                    )
                ).all()
            )
            for account in s.execute(select(LedgerAccount)).scalars():
                assert account.balance == (sums.get(account.id) or 0)
            if self.arrears:
                assert acc.get_account(s, acc.arrears_code(self.customer)).balance == self.arrears


@pytest.fixture
def machine(sqlite_template: Path) -> type[LedgerMachine]:
    LedgerMachine.template = sqlite_template
    return LedgerMachine


def test_random_ledger_histories_stay_balanced(machine: type[LedgerMachine]) -> None:
    runner = machine.TestCase()
    runner.settings = settings(
        max_examples=40,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    runner.runTest()
