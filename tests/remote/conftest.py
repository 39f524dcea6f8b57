"""Fixtures of the remote-meter tests: a fleet of emulated meters, a tariff, a reading service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from onecard import tariffs
from onecard.audit import Actor
from onecard.config import load_settings
from onecard.fleet.server import Fleet
from onecard.fleet.sim import SimClock, SimMeter
from onecard.ledger import accounts as acc
from onecard.ledger import operations as ops
from onecard.plugins import Plugins
from onecard.remote import inventory
from onecard.remote.fees import Policy
from onecard.remote.notices import make_notice_sender
from onecard.remote.service import ReadingService
from onecard.tariffs.meters import find_meter

ACTOR = Actor(name="test")
START = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)


def flat_tariff(kind: str = "electric", price: str = "0.5") -> dict[str, Any]:
    return {
        "kind": kind,
        "name": "flat",
        "model": "flat",
        "effective_from": "2026-01-01T00:00:00+08:00",
        "timezone": "Asia/Shanghai",
        "title": {"zh-CN": "平价", "en": "Flat"},
        "body": {"price": price},
    }


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    fleet = Fleet(SimClock(START))
    yield fleet


def modbus_port(
    fleet: Fleet, plugins: Plugins, name: str, meters: list[SimMeter], **kw: Any
) -> Any:
    proto = plugins.utilities.get("electric").protocols.get("modbus")
    return fleet.add_port(name, proto, meters=meters, **kw)


def attach_meter(
    sessions: sessionmaker[Session],
    plugins: Plugins,
    *,
    gateway: str,
    host: str = "127.0.0.1",
    port: int,
    serial: str,
    address: str,
    protocol: str = "modbus",
    load_tariff: bool = True,
    **options: Any,
) -> int:
    with sessions() as session, session.begin():
        try:
            gw = inventory.get_gateway(session, gateway)
        except Exception:
            gw = inventory.add_gateway(
                session,
                ACTOR,
                code=gateway,
                transport="tcp",
                host=host,
                port=port,
                timeout_ms=300,
                retries=1,
            )
        meter = find_meter(session, serial)
        if load_tariff and not tariffs.documents.tariff_names(session, meter.kind):
            tariffs.add_version(
                session, ACTOR, plugins.utilities, flat_tariff(meter.kind), allow_past=True
            )
        inventory.attach(
            session, plugins.utilities, meter, gw, protocol=protocol, address=address, **options
        )
        return meter.id


def make_service(
    sessions: sessionmaker[Session], plugins: Plugins, fleet: Fleet, settings: Any = None, **kw: Any
) -> ReadingService:
    runtime = SimpleNamespace(
        settings=settings or load_settings({"instance_path": "/tmp/onecard-test-none"}),
        plugins=plugins,
        utilities=plugins.utilities,
    )
    return ReadingService(
        sessions,
        plugins.utilities,
        policy=kw.pop("policy", Policy(alarm1=2000, alarm2=500)),
        clock=fleet.clock.now,
        notices=make_notice_sender(runtime),
        backoff=0.01,
        **kw,
    )


def meter(address: str, **kw: Any) -> SimMeter:
    kw.setdefault("rate", Decimal(10))
    return SimMeter(address=address, kind="electric", model="acrel-ddsy1352", **kw)


def credit(session: Session, meter_id: int) -> int:
    """The credit left in a meter's wallet (fen)."""
    return -acc.get_account(session, acc.meter_wallet_code(meter_id)).balance


def sell(session: Session, world: Any, amount: int, key: str) -> None:
    """Sell ``amount`` fen into the test customer's electric wallet, at their office."""
    ops.sale(
        session,
        wallet=world.wallets["electric"],
        amount=amount,
        office_id=world.office_id,
        idempotency_key=key,
    )
