"""Demo data: a group with two branch offices, operators of every role, customers with meters of
every registered utility kind, and some sales, use and a correction; a tariff for each metered
kind (``console/demo_tariffs/*.yaml``); and the demo lab's wallet of emulated cards (blank cards,
two customers' cards and manager1's manager card). Deterministic; made once."""

from __future__ import annotations

import random
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard import customers as cust
from onecard import ledger
from onecard import offices as off
from onecard import operators as ops
from onecard.audit import Actor
from onecard.card.emulator import MifareClassicCard
from onecard.card.reader import MifareReader
from onecard.card.service import CardDesk
from onecard.console.lab import Lab
from onecard.ledger import accounts as acc
from onecard.models import Card, Customer, Meter, Office
from onecard.tariffs.documents import add_version, read_file, tariff_names
from onecard.utility import UtilityRegistry

DEMO_PASSWORD = "onecard-demo"
GROUP = "GRP"
BRANCHES = {"E01": "东区营业厅 East office", "W01": "西区营业厅 West office"}
SURNAMES = "王李张刘陈杨赵黄周吴徐孙马朱胡郭"
GIVEN = [
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "娟",
    "涛",
    "明",
]
#: Sample tariffs, one per metered kind (copies of docs/tariffs/examples).
DEMO_TARIFFS = Path(__file__).parent / "console" / "demo_tariffs"
#: The lab's first cards: fixed UIDs, so the demo is the same on every machine.
BLANK_UIDS = ("DE000001", "DE000002", "DE000003")
MANAGER_CARD = ("DE0000A1", "manager1")
CUSTOMER_UIDS = ("DE0000C1", "DE0000C2")
DEMO_PROFILE = "eight"


def build_demo(session: Session, utilities: UtilityRegistry, *, customers: int = 12) -> str:
    """Create the demo data unless it is there; return a one-line summary. Does not commit."""
    tariffs = load_demo_tariffs(session, utilities)
    loaded = f"; tariffs loaded: {', '.join(tariffs)}" if tariffs else ""
    if session.execute(select(Office.id).where(Office.code == GROUP)).first():
        return "demo data is already present" + loaded
    who = Actor(name="demo")
    rng = random.Random(20261121)
    ops.ensure_default_roles(session)
    off.create_office(session, who, code=GROUP, name="示范集团 Demo group")
    for code, name in BRANCHES.items():
        off.create_office(session, who, code=code, name=name, parent=GROUP)
    people: list[tuple[str, str, list[tuple[str, str | None]]]] = [
        ("admin", "系统管理员 Administrator", [("administrator", None)]),
        ("cashier1", "东区收费员 East cashier", [("cashier", "E01")]),
        ("cashier2", "西区收费员 West cashier", [("cashier", "W01")]),
        ("manager1", "东区主管 East manager", [("manager", "E01")]),
        ("auditor", "集团审计 Group auditor", [("auditor", GROUP)]),
    ]
    for username, full_name, roles in people:
        ops.create_operator(
            session,
            who,
            username=username,
            password=DEMO_PASSWORD,
            full_name=full_name,
            roles=roles,
        )
    metered = [k for k in utilities if not k.money_only]
    opened = 0
    sales = 0
    for n in range(1, customers + 1):
        office = "E01" if n % 2 else "W01"
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
        building = f"{rng.randint(1, 9)}号楼"
        unit = f"{rng.randint(1, 4)}单元{rng.randint(1, 18):02d}{rng.randint(1, 4):02d}"
        area = f"{rng.randint(45, 140)}.{rng.randint(0, 99):02d}"
        meters = [  # card meter serials are digits: kind, office, customer
            cust.MeterSpec(kind=k.code, serial=f"{i + 1:02d}{1 if office == 'E01' else 2}{n:05d}")
            for i, k in enumerate(metered)
        ]
        customer = cust.open_account(
            session,
            who,
            utilities,
            office=office,
            name=name,
            phone=f"138{rng.randint(10000000, 99999999)}",
            building=building,
            unit=unit,
            floor_area=area,
            heated_area=area,
            meters=meters,
            shared_wallet=n % 3 == 0,
        )
        opened += 1
        office_id = customer.office_id
        for meter in session.execute(
            select(Meter).join(Meter.premises).where(Meter.premises.has(customer_id=customer.id))
        ).scalars():
            wallet = acc.meter_wallet_code(meter.id)
            amount = rng.choice((5000, 10000, 20000, 30000))
            ledger.sale(
                session,
                wallet=wallet,
                amount=amount,
                office_id=office_id,
                idempotency_key=f"demo-sale-{meter.kind}-{meter.serial}",
                method=rng.choice(("cash", "cash", "bank")),
            )
            sales += 1
            used = rng.randint(0, amount)
            if used:
                ledger.consume(
                    session,
                    wallet=wallet,
                    amount=used,
                    idempotency_key=f"demo-use-{meter.kind}-{meter.serial}",
                )
    # A clerk keys 1000 yuan instead of 100, reverses it with a reason, and sells again.
    first_meter = session.execute(select(Meter).order_by(Meter.id)).scalars().first()
    if first_meter is not None:
        wallet = acc.meter_wallet_code(first_meter.id)
        owner = acc.get_account(session, wallet)
        assert owner.office_id is not None
        wrong = ledger.sale(
            session,
            wallet=wallet,
            amount=100000,
            office_id=owner.office_id,
            idempotency_key="demo-mistake",
        )
        ledger.reverse(
            session,
            wrong.seq,
            reason_code="operator_error",
            idempotency_key="demo-reversal",
            memo="demo: 1000 keyed instead of 100",
        )
        ledger.sale(
            session,
            wallet=wallet,
            amount=10000,
            office_id=owner.office_id,
            idempotency_key="demo-mistake-corrected",
        )
    return (
        f"demo data: {len(BRANCHES) + 1} offices, {len(people)} operators, {opened} customers "
        f"with {len(metered)} meter kinds, {sales} sales{loaded}"
    )


def load_demo_tariffs(session: Session, utilities: UtilityRegistry) -> list[str]:
    """Load each demo tariff whose kind is registered and has no tariff yet ("the kind's only
    tariff" then prices every meter of the kind); the ``kind/name`` of those loaded."""
    loaded = []
    for path in sorted(DEMO_TARIFFS.glob("*.yaml")):
        raw = read_file(path)
        kind = raw.get("kind") if isinstance(raw, dict) else None
        if not isinstance(kind, str) or kind not in utilities or tariff_names(session, kind):
            continue
        row = add_version(session, Actor(name="demo"), utilities, raw)
        loaded.append(f"{row.kind}/{row.name}")
    return loaded


def seed_lab(lab: Lab, desk: CardDesk) -> str:
    """Fill an empty lab wallet: three blank cards, the cards of the first two customers of the
    East office (profile ``eight``) and manager1's manager card. A summary ("" if the wallet
    already has cards). Cards the database already knows (a wallet deleted, the database kept)
    are left out: their images are gone."""
    if lab.cards():
        return ""
    who = Actor(name="demo")
    with desk.sessions() as session:
        known = set(session.scalars(select(Card.uid)))
        east = session.scalar(select(Office).where(Office.code == "E01"))
        numbers = list(
            session.scalars(
                select(Customer.number)
                .where(Customer.office_id == (east.id if east else -1))
                .order_by(Customer.id)
                .limit(len(CUSTOMER_UIDS))
            )
        )
        east_id = east.id if east else None
    made = []
    for uid in BLANK_UIDS:
        if uid not in known:
            lab.add_card(MifareClassicCard(bytes.fromhex(uid)))
            made.append("blank")
    for uid, number in zip(CUSTOMER_UIDS, numbers, strict=False):
        if uid in known:
            continue
        card = MifareClassicCard(bytes.fromhex(uid))
        desk.issue(MifareReader(card), who, customer=number, profile=DEMO_PROFILE)
        lab.add_card(card)
        made.append(f"customer {number}")
    uid, username = MANAGER_CARD
    if uid not in known:
        card = MifareClassicCard(bytes.fromhex(uid))
        desk.issue_tool(
            MifareReader(card), who, card_type="manager", operator=username, office_id=east_id
        )
        lab.add_card(card, username)
        made.append(f"manager card of {username}")
    return f"lab wallet: {', '.join(made)}" if made else ""
