"""The dashboard page: a day's sales in the office's time zone, by kind and by operator, scoped to
the operator's offices; pending card sales; meters in alarm; read-only for an auditor."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from conftest import World
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard import ledger
from onecard.card.layout import STATUS_FLAGS
from onecard.models import Card, CardPurchase, Meter, MeterReading, Operator
from onecard.runtime import Runtime
from onecard.web import EXTENSION

from .conftest import login

UTC = dt.UTC


def _session(app: Flask) -> Session:
    rt: Runtime = app.extensions[EXTENSION]
    return rt.sessions()


def _op(s: Session, username: str) -> int:
    found = s.scalar(select(Operator.id).where(Operator.username == username))
    assert found is not None
    return found


def _meter(s: Session, serial: str) -> Meter:
    meter = s.scalar(select(Meter).where(Meter.serial == serial))
    assert meter is not None
    return meter


def _row(page: str, attr: str, key: str) -> str:
    found = re.search(rf'<tr {attr}="{re.escape(key)}">(.*?)</tr>', page, re.S)
    assert found, f"no row {attr}={key}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


@pytest.fixture
def sales(app: Flask, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sales on 2026-03-10 (Shanghai) by east at E01 and west at W01, and some either side."""
    with _session(app) as s, s.begin():
        east, west = _op(s, "east"), _op(s, "west")
        plan = [
            (dt.datetime(2026, 3, 9, 15, 59, tzinfo=UTC), world.wallets["electric"], 111, east),
            (dt.datetime(2026, 3, 10, 1, 0, tzinfo=UTC), world.wallets["electric"], 10000, east),
            (dt.datetime(2026, 3, 10, 2, 0, tzinfo=UTC), world.wallets["water.cold"], 2550, east),
            (dt.datetime(2026, 3, 10, 3, 0, tzinfo=UTC), world.other_wallet, 7000, west),
            # 23:59:30 in Shanghai: still the 10th
            (
                dt.datetime(2026, 3, 10, 15, 59, 30, tzinfo=UTC),
                world.wallets["electric"],
                300,
                east,
            ),
            # 00:00:30 on the 11th in Shanghai (still the 10th in UTC)
            (dt.datetime(2026, 3, 10, 16, 0, 30, tzinfo=UTC), world.wallets["electric"], 777, east),
        ]
        for i, (when, wallet, amount, op) in enumerate(plan):
            monkeypatch.setattr("onecard.ledger.core.utcnow", lambda when=when: when)
            office = world.other_office_id if wallet == world.other_wallet else world.office_id
            ledger.sale(
                s,
                wallet=wallet,
                amount=amount,
                office_id=office,
                idempotency_key=f"dash-{i}",
                operator_id=op,
            )
    monkeypatch.undo()


def test_boss_sees_every_office_cut_at_local_midnight(app: Flask, sales: None) -> None:
    page = login(app, "boss").get("/console/?day=2026-03-10").get_data(as_text=True)
    assert 'data-figure="count">4<' in page
    assert "¥198.50" in page  # 100 + 25.50 + 70 + 3, not the 1.11 before nor the 7.77 after
    assert _row(page, "data-kind", "electric") == "Electricity 3 ¥173.00"
    assert _row(page, "data-kind", "water.cold") == "Cold water 1 ¥25.50"
    assert _row(page, "data-operator", "east") == "East 3 ¥128.50 ¥0.00"
    assert _row(page, "data-operator", "west") == "West 1 ¥70.00 ¥0.00"


def test_cashier_sees_only_their_office(app: Flask, sales: None) -> None:
    page = login(app, "east").get("/console/?day=2026-03-10").get_data(as_text=True)
    assert 'data-figure="count">3<' in page
    assert 'data-operator="west"' not in page
    assert _row(page, "data-kind", "electric") == "Electricity 2 ¥103.00"
    page = login(app, "west").get("/console/?day=2026-03-10").get_data(as_text=True)
    assert 'data-figure="count">1<' in page and 'data-operator="east"' not in page


def test_next_day_and_bad_day(app: Flask, sales: None) -> None:
    client = login(app, "boss")
    page = client.get("/console/?day=2026-03-11").get_data(as_text=True)
    assert 'data-figure="count">1<' in page and "¥7.77" in page
    page = client.get("/console/?day=10.3.2026").get_data(as_text=True)
    assert 'id="day-error"' in page


def test_today_and_links_in_chinese(app: Flask) -> None:
    page = login(app, "east", lang="zh_CN").get("/console/").get_data(as_text=True)
    assert "今日销售" in page and 'href="/console/counter/sell"' in page
    assert "No sales." not in page and "暂无销售" in page


def test_pending_sales_listed_with_age_and_links(app: Flask, world: World) -> None:
    now = dt.datetime.now(UTC)
    with _session(app) as s, s.begin():
        card = Card(uid="0A0B0C0D", customer_id=world.customer_id, office_id=world.office_id)
        s.add(card)
        s.flush()
        s.add(
            CardPurchase(
                idempotency_key="pend-1",
                sale_key="sale-pend-1",
                meter_id=_meter(s, "E0001").id,
                card_id=card.id,
                customer_id=world.customer_id,
                office_id=world.office_id,
                operator_id=_op(s, "east"),
                slot=0,
                seq=1,
                amount=5000,
                written_at=now - dt.timedelta(minutes=95),
                created_at=now - dt.timedelta(minutes=95),
            )
        )
    page = login(app, "east").get("/console/").get_data(as_text=True)
    row = _row(page, "data-sale", "sale-pend-1")
    assert "1 h 35 min" in row and "E0001" in row and "¥50.00" in row and "east" in row
    assert 'href="/console/counter/pending"' in page
    assert world.customer_number in row
    # the other office does not see it
    page = login(app, "west").get("/console/").get_data(as_text=True)
    assert "sale-pend-1" not in page and "No card sales are pending." in page


def test_meters_in_alarm_listed_and_scoped(app: Flask, world: World) -> None:
    t = dt.datetime(2026, 3, 10, 1, 0, tzinfo=UTC)
    with _session(app) as s, s.begin():
        for serial, status, remaining in [
            ("E0001", STATUS_FLAGS["alarm1"], 1500),
            ("H0001", STATUS_FLAGS["exhausted"] | STATUS_FLAGS["relay_open"], -20),
            ("E9001", STATUS_FLAGS["alarm2"] | STATUS_FLAGS["alarm1"], 300),
        ]:
            s.add(
                MeterReading(
                    meter_id=_meter(s, serial).id,
                    source="card",
                    taken_at=t,
                    cumulative=1,
                    remaining=remaining,
                    status=status,
                )
            )
    page = login(app, "east").get("/console/").get_data(as_text=True)
    assert 'data-meter="E9001"' not in page
    heat = re.search(r'<tr data-meter="H0001" data-level="exhausted">(.*?)</tr>', page, re.S)
    assert heat and "Credit exhausted" in heat.group(1) and "Supply cut" in heat.group(1)
    assert world.customer_number in heat.group(1)
    assert page.index('data-meter="H0001"') < page.index('data-meter="E0001"')  # worst first
    page = login(app, "west").get("/console/").get_data(as_text=True)
    assert 'data-meter="E9001" data-level="alarm2"' in page and 'data-meter="H0001"' not in page


def test_auditor_reads_the_dashboard_without_forms(app: Flask, sales: None) -> None:
    client = login(app, "audit")
    page = client.get("/console/?day=2026-03-10").get_data(as_text=True)
    assert 'data-figure="count">4<' in page
    assert "/console/counter/sell" not in page.split("<main")[1]
    assert 'method="post"' not in page.split("<main")[1]
    assert client.post("/console/").status_code in (400, 405)
