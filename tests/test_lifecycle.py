"""onecard.lifecycle on SQLite and PostgreSQL: transfer, replace a meter, suspend, close."""

from __future__ import annotations

import pytest
from conftest import ACTOR, World
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard import lifecycle
from onecard.errors import Conflict, InvalidInput, NotFound
from onecard.ledger import accounts as acc
from onecard.ledger import operations as ops
from onecard.models import (
    AuditEvent,
    Customer,
    LedgerTransaction,
    Meter,
    MeterReading,
    Receipt,
)
from onecard.plugins import Plugins


def balance(s: Session, code: str) -> int:
    return acc.natural_balance(acc.get_account(s, code))


def sell(s: Session, world: World, wallet: str, amount: int, key: str) -> None:
    ops.sale(s, wallet=wallet, amount=amount, office_id=world.office_id, idempotency_key=key)


def test_transfer_keeps_account_and_history(sessions: sessionmaker[Session], world: World) -> None:
    with sessions() as s, s.begin():
        sell(s, world, world.wallets["electric"], 5000, "t-sale")
        lifecycle.transfer_ownership(
            s,
            ACTOR,
            world.customer_number,
            name="李娜",
            phone="13700000000",
            id_number="110101199001011234",
            reason="sold the flat",
            key="transfer-key-1",
        )
    with sessions() as s, s.begin():
        c = s.get(Customer, world.customer_id)
        assert c is not None and c.name == "李娜" and c.number == world.customer_number
        assert balance(s, world.wallets["electric"]) == 5000
        history = lifecycle.ownership_history(s, c.id)
        assert history[0]["from"]["name"] == "王芳" and history[0]["to"]["name"] == "李娜"
        # the same key again: nothing more happens
        lifecycle.transfer_ownership(
            s,
            ACTOR,
            world.customer_number,
            name="X",
            phone=None,
            id_number=None,
            key="transfer-key-1",
        )
        assert s.get(Customer, world.customer_id).name == "李娜"  # type: ignore[union-attr]
        n = s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "customer.transfer")
        )
        assert n == 1


def test_transfer_refuses_bad_input_and_arrears(
    sessions: sessionmaker[Session], world: World
) -> None:
    with sessions() as s, s.begin():
        for kw, field in (
            ({"name": " "}, "name"),
            ({"name": "A", "phone": "abc"}, "phone"),
            ({"name": "王芳", "phone": "13800000001"}, "name"),  # the same owner
        ):
            args = {"phone": None, "id_number": None} | kw
            with pytest.raises(InvalidInput) as exc:
                lifecycle.transfer_ownership(
                    s,
                    ACTOR,
                    world.customer_number,
                    key="transfer-key-2",
                    **args,  # type: ignore[arg-type]
                )
            assert exc.value.field == field
        ops.consume(s, wallet=world.wallets["water.cold"], amount=300, idempotency_key="use-1")
        with pytest.raises(Conflict):
            lifecycle.transfer_ownership(
                s,
                ACTOR,
                world.customer_number,
                name="新",
                phone=None,
                id_number=None,
                key="transfer-key-3",
            )


def test_replace_meter_carries_wallet(
    sessions: sessionmaker[Session], world: World, plugins: Plugins
) -> None:
    with sessions() as s, s.begin():
        sell(s, world, world.wallets["electric"], 8000, "r-sale")
        result = lifecycle.replace_meter(
            s,
            ACTOR,
            plugins.utilities,
            world.customer_number,
            meter="E0001",
            new_serial="E0002",
            final_reading=123456,
            remaining=2500,
            reason="broken",
            key="replace-key-1",
        )
        assert result["carried_fen"] == 8000 and not result["replayed"]
    with sessions() as s, s.begin():
        old = s.scalar(select(Meter).where(Meter.serial == "E0001"))
        new = s.scalar(select(Meter).where(Meter.serial == "E0002"))
        assert old is not None and new is not None
        assert old.state == "removed" and old.removed_at is not None
        assert new.state == "active" and new.premises_id == old.premises_id
        assert balance(s, acc.meter_wallet_code(old.id)) == 0
        assert balance(s, acc.meter_wallet_code(new.id)) == 8000
        closing = s.scalar(select(MeterReading).where(MeterReading.meter_id == old.id))
        assert closing is not None and closing.source == "closing"
        assert (closing.cumulative, closing.remaining) == (123456, 2500)
        again = lifecycle.replace_meter(
            s,
            ACTOR,
            plugins.utilities,
            world.customer_number,
            meter="E0002",
            new_serial="E0003",
            final_reading=1,
            key="replace-key-1",
        )
        assert again["replayed"] and s.scalar(select(Meter).where(Meter.serial == "E0003")) is None
        # a taken serial, a removed meter, a reading below the last one, no reason
        for kw, err in (
            ({"meter": "W0001", "new_serial": "E9001", "final_reading": 1}, None),
            ({"meter": "W0001", "new_serial": "W0001", "final_reading": 1}, Conflict),
            ({"meter": "E0001", "new_serial": "E0009", "final_reading": 1}, "meter"),
            ({"meter": "E0002", "new_serial": "E0009", "final_reading": -1}, "final_reading"),
            ({"meter": "E0002", "new_serial": "bad serial", "final_reading": 1}, "new_serial"),
        ):
            if err is None:
                continue
            with pytest.raises((InvalidInput, Conflict, NotFound)) as exc:
                lifecycle.replace_meter(
                    s,
                    ACTOR,
                    plugins.utilities,
                    world.customer_number,
                    key="replace-key-2",
                    reason="x",
                    **kw,  # type: ignore[arg-type]
                )
            if isinstance(err, str):
                assert exc.value.field == err
        with pytest.raises(InvalidInput) as exc2:
            lifecycle.replace_meter(
                s,
                ACTOR,
                plugins.utilities,
                world.customer_number,
                meter="E0002",
                new_serial="E0009",
                final_reading=1,
                reason="",
                key="replace-key-3",
            )
        assert exc2.value.field == "reason"


def test_suspend_and_resume(sessions: sessionmaker[Session], world: World) -> None:
    with sessions() as s, s.begin():
        with pytest.raises(InvalidInput):
            lifecycle.suspend(s, ACTOR, world.customer_number, key="suspend-key-1", reason="")
        lifecycle.suspend(s, ACTOR, world.customer_number, key="suspend-key-1", reason="vacant")
        lifecycle.suspend(s, ACTOR, world.customer_number, key="suspend-key-1", reason="vacant")
        assert s.get(Customer, world.customer_id).status == "suspended"  # type: ignore[union-attr]
        with pytest.raises(Conflict):
            lifecycle.suspend(s, ACTOR, world.customer_number, key="suspend-key-2", reason="x")
        lifecycle.resume(s, ACTOR, world.customer_number, key="resume-key-1")
        assert s.get(Customer, world.customer_id).status == "active"  # type: ignore[union-attr]
        with pytest.raises(Conflict):
            lifecycle.resume(s, ACTOR, world.customer_number, key="resume-key-2")


def test_close_settles_everything_once(sessions: sessionmaker[Session], world: World) -> None:
    with sessions() as s, s.begin():
        sell(s, world, world.wallets["electric"], 10000, "c-sale-1")
        sell(s, world, world.wallets["water.cold"], 3000, "c-sale-2")
        sell(s, world, world.shared_wallet, 2000, "c-sale-3")
        # the heat meter used 500 more than its (empty) wallet held: arrears
        ops.consume(s, wallet=world.wallets["heat"], amount=500, idempotency_key="c-use")
        meters = {m.serial: m.id for m in s.scalars(select(Meter))}
        cash = acc.office_account_code("cash", world.office_id)
        cash_before = balance(s, cash)
    with sessions() as s, s.begin():
        result = lifecycle.close_account(
            s,
            ACTOR,
            world.customer_number,
            office_id=world.office_id,
            key="close-key-1",
            reason="moved out",
            meters={
                # 60 yuan left on the electric meter: 40 yuan were used
                meters["E0001"]: lifecycle.MeterClosing(final_reading=4200, left=6000),
            },
        )
        assert result["consumed_fen"] == 4000
        assert result["refunded_fen"] == 6000 + 3000 + 2000
        assert result["collected_fen"] == 500
        assert result["total_fen"] == 500 - 11000
    with sessions() as s, s.begin():
        c = s.get(Customer, world.customer_id)
        assert c is not None and c.status == "closed" and c.closed_at is not None
        for code in (*world.wallets.values(), world.shared_wallet):
            assert balance(s, code) == 0
        assert lifecycle.arrears(s, world.customer_id) == 0
        mine = select(Meter).where(Meter.serial.in_(("E0001", "W0001", "H0001")))
        assert {m.state for m in s.scalars(mine)} == {"removed"}
        assert balance(s, cash) == cash_before - 11000 + 500
        receipt = s.scalar(select(Receipt).where(Receipt.number == result["receipt"]))
        assert receipt is not None and receipt.kind == "settlement" and receipt.total == -10500
        txns = s.scalar(select(func.count()).select_from(LedgerTransaction))
        again = lifecycle.close_account(
            s,
            ACTOR,
            world.customer_number,
            office_id=world.office_id,
            key="close-key-1",
            reason="moved out",
        )
        assert again["replayed"] and again["receipt"] == result["receipt"]
        assert s.scalar(select(func.count()).select_from(LedgerTransaction)) == txns
        with pytest.raises(Conflict):
            lifecycle.close_account(
                s,
                ACTOR,
                world.customer_number,
                office_id=world.office_id,
                key="close-key-2",
                reason="again",
            )


def test_close_refuses_more_credit_than_the_wallet(
    sessions: sessionmaker[Session], world: World
) -> None:
    with sessions() as s, s.begin():
        meter = s.scalar(select(Meter).where(Meter.serial == "E0001"))
        assert meter is not None
        with pytest.raises(InvalidInput) as exc:
            lifecycle.close_account(
                s,
                ACTOR,
                world.customer_number,
                office_id=world.office_id,
                key="close-key-3",
                reason="x",
                meters={meter.id: lifecycle.MeterClosing(left=100)},
            )
        assert exc.value.field == f"meters.{meter.id}.left"
        with pytest.raises(InvalidInput):
            lifecycle.close_account(
                s,
                ACTOR,
                world.customer_number,
                office_id=world.office_id,
                key="close-key-4",
                reason="x",
                method="gold",
            )
