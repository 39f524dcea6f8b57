"""Card sales priced by the meter's tariff: units, the ladder position, fixed charges."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from cardkit import ACTOR, blank_card, direct, keyed_site, make_desk
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard import customers as cust
from onecard import ledger, tariffs
from onecard import operators as ops
from onecard.card.meter import CardMeter, MeterSam
from onecard.card.service import CardDesk, Manager, SaleItem
from onecard.errors import InvalidInput
from onecard.ledger import accounts as acc
from onecard.models import CardPurchase, Meter
from onecard.plugins import Plugins

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "tariffs" / "examples"


def load(sessions: sessionmaker[Session], plugins: Plugins, name: str) -> None:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    with sessions() as s, s.begin():
        tariffs.add_version(s, ACTOR, plugins.utilities, doc)


@pytest.fixture
def desk(sessions: sessionmaker[Session], plugins: Plugins, world: object) -> CardDesk:
    return make_desk(sessions, plugins, keyed_site(sessions))


def customer(sessions: sessionmaker[Session], plugins: Plugins, kind: str, serial: str) -> str:
    with sessions() as s, s.begin():
        c = cust.open_account(
            s,
            ACTOR,
            plugins.utilities,
            office="E01",
            name="赵敏",
            heated_area="80",
            meters=[cust.MeterSpec(kind, serial)],
        )
        # installed long ago: no proration of fixed charges, whatever today's date
        for m in s.scalars(select(Meter).where(Meter.serial == serial)):
            m.installed_at = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        return c.number


def balance(session: Session, code: str) -> int:
    return acc.natural_balance(acc.get_account(session, code))


def test_a_heat_sale_pays_the_season_basic_fee_then_buys_heat(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    load(sessions, plugins, "heat-two-part.yaml")
    number = customer(sessions, plugins, "heat", "700001")
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")
    out = desk.sell(direct(card), ACTOR, sale_key="h-1", items=[SaleItem("700001", 100000)])
    assert out["status"] == "confirmed"
    with sessions() as s:
        p = s.scalar(select(CardPurchase).where(CardPurchase.sale_key == "h-1"))
        assert p is not None
        # 80 m² x 12 = 960.00 basic fee; 40.00 buys 0.900 GJ at 44.4448 (40.00032 -> 40.00)
        assert p.params["_fixed_fen"] == 96000
        assert p.units == 900
        assert [ln["item"] for ln in p.params["_quote"]["lines"]] == ["fixed", "energy"]
        wallet = acc.meter_wallet_code(p.meter_id)
        assert balance(s, wallet) == 100000 - 96000
        office = s.get(Meter, p.meter_id)
        assert office is not None
        assert ledger.verify(s).ok
    # the card carries the units of the quote
    read = desk.read(direct(card), ACTOR)
    assert read["slots"][1]["purchase"]["amount"] == 900

    # a units sale must be given the tariff's price for those units
    with pytest.raises(InvalidInput, match="cost") as err:
        desk.sell(direct(card), ACTOR, sale_key="h-2", items=[SaleItem("700001", 100, units=1000)])
    assert err.value.field == "items.0.amount"

    # cancelling the purchase gives the basic fee back too
    with sessions() as s, s.begin():
        boss = ops.create_operator(
            s, ACTOR, username="mgr", password="mgr-pass-1", roles=[("manager", "E01")]
        )
        boss_id = boss.id

    def manager(office_id: int) -> Manager:
        return Manager(id=boss_id, username="mgr")

    with sessions() as s:
        pid = s.scalar(select(CardPurchase.id).where(CardPurchase.sale_key == "h-1"))
    assert pid is not None
    desk.cancel(direct(card), ACTOR, purchase_id=pid, reason="wrong meter", authorize=manager)
    with sessions() as s:
        assert balance(s, wallet) == 0
        assert ledger.verify(s).ok


def test_the_ladder_position_comes_from_the_meter_s_purchases(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    load(sessions, plugins, "gas-residential.yaml")
    number = customer(sessions, plugins, "gas", "800001")
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")
    desk.sell(direct(card), ACTOR, sale_key="g-1", items=[SaleItem("800001", 91350)])
    with sessions() as s:
        first = s.scalar(select(CardPurchase).where(CardPurchase.sale_key == "g-1"))
        assert first is not None and first.units == 35000  # 350 m³ at 2.61: the whole first step
        store = desk.keystore
        sam = MeterSam(store.site_id(s), lambda uid, v: store.card_keys(s, uid, v))
        meter = CardMeter(plugins.utilities.get("gas"), "800001", sam)
        assert meter.insert(direct(card)).loaded  # the meter takes the purchase
    out = desk.sell(direct(card), ACTOR, sale_key="g-2", items=[SaleItem("800001", 28300)])
    with sessions() as s:
        second = s.scalar(select(CardPurchase).where(CardPurchase.sale_key == "g-2"))
        assert second is not None
        quote = second.params["_quote"]
        assert quote["used_before"] == "350.00"
        assert [ln["tier"] for ln in quote["lines"]] == [2]  # 100 m³ at 2.83
        assert second.units == 10000
    assert out["status"] == "confirmed"
