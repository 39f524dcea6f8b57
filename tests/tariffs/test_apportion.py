"""Public-area apportionment (公摊): the exact split, and runs against a real database."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from conftest import ACTOR
from helpers import available, ledger_state
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import onecard_rent
from onecard import customers as cust
from onecard import ledger
from onecard import offices as off
from onecard.cli import OnecardGroup, cli
from onecard.errors import Conflict, InvalidInput, NotFound, OnecardError
from onecard.ledger import accounts as acc
from onecard.models import AuditEvent, BillingRun, Meter, MeterReading, Premises
from onecard.money import format_fen, parse_yuan
from onecard.plugins import Plugins
from onecard.tariffs import add_version
from onecard_rent import apportion as ap
from onecard_rent.apportion import apportion, get_run, split

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "docs/tariffs/examples/apportion-building-a.yaml"
TZ = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)

# The exact split --------------------------------------------------------------------------------


def test_split_gives_the_remainder_to_the_largest_fractions() -> None:
    assert split(81110, [Decimal("85.50"), Decimal("120.00"), Decimal("44.50")]) == [
        27740,
        38933,
        14437,
    ]
    assert split(100, [1, 1, 1]) == [34, 33, 33]  # equal remainders: the first listed
    assert split(100, [1, 1, 1, 0]) == [34, 33, 33, 0]
    assert split(7, [1, 2, 3, 4]) == [1, 1, 2, 3]
    assert split(0, [1, 2]) == [0, 0]
    assert split(5, [0, 3]) == [0, 5]


@pytest.mark.parametrize(
    ("total", "weights", "field", "message"),
    [
        (100, [], "weights", "at least one tenant"),
        (100, [0, 0], "weights", "add up to zero"),
        (100, [1, -1], "weights[1]", "must not be negative"),
        (-1, [1], "total", "must not be negative"),
        (100, [1, 0.5], "weights[1]", "integer or a Decimal"),
        (100, [Decimal("NaN")], "weights[0]", "finite"),
    ],
)
def test_split_refuses_naming_the_field(
    total: int, weights: list[Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        split(total, weights)
    assert err.value.field == field


WEIGHTS = st.lists(
    st.one_of(
        st.integers(0, 10**6),
        st.decimals(min_value=0, max_value=100000, places=2, allow_nan=False),
    ),
    min_size=1,
    max_size=30,
).filter(lambda ws: sum(ws) > 0)
TOTALS = st.integers(0, 10**10)


@settings(max_examples=200, deadline=None)
@given(total=TOTALS, weights=WEIGHTS)
def test_split_sums_exactly_and_each_share_is_within_a_fen(
    total: int, weights: list[int | Decimal]
) -> None:
    shares = split(total, weights)
    assert sum(shares) == total
    whole = sum(Fraction(w) for w in weights)
    for share, w in zip(shares, weights, strict=True):
        exact = total * Fraction(w) / whole
        assert exact - 1 < share < exact + 1
        assert share >= 0
        if w == 0:
            assert share == 0


@settings(max_examples=200, deadline=None)
@given(total=TOTALS, weights=WEIGHTS)
def test_split_is_monotonic_in_weight(total: int, weights: list[int | Decimal]) -> None:
    shares = split(total, weights)
    for i, wi in enumerate(weights):
        for j, wj in enumerate(weights):
            if wi > wj:
                assert shares[i] >= shares[j]
            if wi == wj:
                assert abs(shares[i] - shares[j]) <= 1
                if i < j:
                    assert shares[i] >= shares[j]  # ties favour the tenant listed first


@settings(max_examples=200, deadline=None)
@given(total=TOTALS, weights=WEIGHTS, who=st.integers(0, 29), more=st.integers(1, 10**6))
def test_raising_a_weight_never_lowers_that_share(
    total: int, weights: list[int | Decimal], who: int, more: int
) -> None:
    i = who % len(weights)
    before = split(total, weights)[i]
    heavier = [*weights]
    heavier[i] = weights[i] + more
    assert split(total, heavier)[i] >= before


# The worked examples in docs/tariffs.md -------------------------------------------------------

BLOCK = re.compile(r"^```yaml\n(# worked example: apportionment (.+?)\n.*?)^```", re.M | re.S)


def doc_examples() -> list[tuple[str, dict[str, Any]]]:
    text = (ROOT / "docs/tariffs.md").read_text(encoding="utf-8")
    return [(m[2].strip(), yaml.safe_load(m[1])) for m in BLOCK.finditer(text)]


EXAMPLES = doc_examples()


def test_the_guide_has_apportionment_examples() -> None:
    assert len(EXAMPLES) >= 4
    assert len({i for i, _ in EXAMPLES}) == len(EXAMPLES)


@pytest.mark.parametrize(("example_id", "example"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_apportionment_worked_example(example_id: str, example: dict[str, Any]) -> None:
    total = parse_yuan(example["total"], "total") if example["total"] != "0.00" else 0
    assert example["rule"] in ap.RULES
    tenants = example["tenants"]
    shares = split(total, [Decimal(str(t["weight"])) for t in tenants])
    assert [format_fen(s) for s in shares] == [str(t["share"]) for t in tenants], example_id
    assert sum(shares) == total


# A building -------------------------------------------------------------------------------------

TARIFF = {
    "kind": "electric",
    "name": "common",
    "model": "tiered",
    "effective_from": "2026-01-01T00:00:00+08:00",
    "note": "illustrative: 0.60 yuan/kWh up to 1000 kWh a month, 0.90 above",
    "body": {
        "reset": "monthly",
        "tiers": [{"upto": "1000", "price": "0.60"}, {"upto": None, "price": "0.90"}],
    },
}
TENANTS = [
    # number, name, floor area, own meter, its March consumption (0.01 kWh)
    ("A01-0101", "一楼便利店", "85.50", "A-0101", 40000),
    ("A01-0102", "二楼茶室", "120.00", "A-0102", 100000),
    ("A01-0103", "三楼工作室", "44.50", "A-0103", 0),
]
# PUB-A-01: 1234.56 kWh -> 1000 x 0.60 + 234.56 x 0.90 = 811.104 -> 811.10 yuan
# PUB-A-02: 300.00 kWh -> 300 x 0.60 = 180.00 yuan
COSTS = [81110, 18000]


def at(day: int, month: int = 3, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=TZ)


@dataclass
class Building:
    office_id: int
    customers: dict[str, int]  # number -> id
    wallets: dict[str, str]  # number -> the wallet an apportionment charges


def read(session: Session, meter_id: int, when: dt.datetime, cumulative: int) -> None:
    session.add(
        MeterReading(meter_id=meter_id, source="remote", taken_at=when, cumulative=cumulative)
    )


def build(session: Session, plugins: Plugins) -> Building:
    office = off.create_office(session, ACTOR, code="A01", name="A座物业")
    off.create_office(session, ACTOR, code="B01", name="B座物业")
    customers, wallets = {}, {}
    for i, (number, name, area, serial, used) in enumerate(TENANTS):
        c = cust.open_account(
            session,
            ACTOR,
            plugins.utilities,
            office="A01",
            name=name,
            number=number,
            category="commercial",
            building="A",
            unit=number[-3:],
            floor_area=area,
            meters=[cust.MeterSpec("electric", serial)],
            shared_wallet=i == 0,
        )
        meter = c.premises[0].meters[0]
        read(session, meter.id, at(1), 500000)
        read(session, meter.id, at(31, hour=23), 500000 + used)
        customers[number] = c.id
        wallets[number] = (
            acc.shared_wallet_code(c.id) if i == 0 else acc.meter_wallet_code(meter.id)
        )
    public = Premises(customer_id=None, office_id=office.id, building="A", unit="公共区域")
    session.add(public)
    session.flush()
    common = []
    for serial in ("PUB-A-01", "PUB-A-02"):
        m = Meter(kind="electric", serial=serial, premises_id=public.id, protocol="modbus")
        session.add(m)
        session.flush()
        common.append(m)
    read(session, common[0].id, at(28, month=2, hour=23, minute=30), 1000000)
    read(session, common[0].id, at(15, hour=12), 1060000)
    read(session, common[0].id, at(31, hour=23, minute=45), 1123456)
    read(session, common[0].id, at(5, month=4), 1200000)  # after the period: not counted
    read(session, common[1].id, at(1), 500000)
    read(session, common[1].id, at(1, month=4), 530000)
    add_version(session, ACTOR, plugins.utilities, TARIFF)
    # the first tenant has 500.00 yuan in the shared wallet; the others have nothing
    ledger.sale(
        session,
        wallet=wallets["A01-0101"],
        amount=50000,
        office_id=office.id,
        idempotency_key="sale-1",
    )
    return Building(office.id, customers, wallets)


@pytest.fixture
def building(sessions: sessionmaker[Session], plugins: Plugins) -> Building:
    with sessions() as session, session.begin():
        return build(session, plugins)


def spec(**changes: Any) -> dict[str, Any]:
    base = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    base.update(changes)
    return base


def run(sessions: sessionmaker[Session], plugins: Plugins, raw: Any, **kw: Any) -> ap.Apportioned:
    with sessions() as session, session.begin():
        done = apportion(session, plugins.utilities, raw, actor=ACTOR, now=NOW, **kw)
        session.expunge(done.run)
        return done


def runs(session: Session) -> int:
    return session.execute(select(func.count()).select_from(BillingRun)).scalar_one()


def test_area_apportionment_posts_each_tenants_share(
    sessions: sessionmaker[Session], plugins: Plugins, building: Building
) -> None:
    done = run(sessions, plugins, spec())
    assert done.created
    s = done.statement
    assert (s["rule"], s["kind"], s["office"], s["unit"]) == ("area", "electric", "A01", "kWh")
    assert s["period"]["start"] == "2026-03-01" and s["period"]["last_day"] == "2026-03-31"

    one, two = s["meters"]
    assert one["ref"] == "electric:PUB-A-01" and one["tariff"] == "common"
    assert one["start_reading"]["cumulative"] == "10000.00"
    assert one["end_reading"]["cumulative"] == "11234.56"
    assert one["consumption"] == "1234.56" and one["units"] == 123456
    assert [(ln["label"], ln["quantity"], ln["amount"]) for ln in one["lines"]] == [
        ("tier 1", "1000.00", "600.0000"),
        ("tier 2", "234.56", "211.1040"),
    ]
    assert (one["cost_fen"], one["cost"]) == (81110, "811.10")
    assert two["consumption"] == "300.00" and two["cost_fen"] == 18000
    assert s["total_fen"] == sum(COSTS) == 99110

    weights = [Decimal(area) for _, _, area, _, _ in TENANTS]
    per_meter = [split(cost, weights) for cost in COSTS]
    assert per_meter == [[27740, 38933, 14437], [6156, 8640, 3204]]
    tenants = s["tenants"]
    assert [t["customer"] for t in tenants] == [n for n, *_ in TENANTS]
    for t, row in enumerate(tenants):
        assert row["basis"] == "floor area" and row["unit"] == "m²"
        assert row["weight"] == TENANTS[t][2]
        assert [x["fen"] for x in row["shares"]] == [per_meter[0][t], per_meter[1][t]]
        assert row["total_fen"] == per_meter[0][t] + per_meter[1][t]
        assert row["wallet"] == building.wallets[row["customer"]]
        assert row["idempotency_key"] == f"apportion:building-a-2026-03:{row['customer_id']}"
    for m in range(len(COSTS)):
        assert sum(row["shares"][m]["fen"] for row in tenants) == COSTS[m]
    assert sum(row["total_fen"] for row in tenants) == s["total_fen"]

    with sessions() as session:
        stored = get_run(session, "building-a-2026-03")
        assert stored.key == "apportion:building-a-2026-03"
        assert (stored.what, stored.kind, stored.total) == ("apportionment", "electric", 99110)
        assert (stored.period_start, stored.period_end) == (
            dt.date(2026, 3, 1),
            dt.date(2026, 4, 1),
        )
        assert stored.office_id == building.office_id and len(stored.transactions) == 3
        # the ledger: one consume per tenant, revenue of the common meters' kind
        for row in tenants:
            txn = ledger.get_transaction(session, row["idempotency_key"])
            assert txn.seq == row["transaction"] and txn.kind == "consume"
            assert txn.customer_id == row["customer_id"] and txn.id in stored.transactions
            assert "公摊" in txn.memo and "stair lighting" in txn.memo
        assert available(session, building.wallets["A01-0101"]) == 50000 - 33896
        for number in ("A01-0102", "A01-0103"):
            owed = acc.get_account(session, acc.arrears_code(building.customers[number]))
            row = next(r for r in tenants if r["customer"] == number)
            assert owed.balance == row["total_fen"]  # nothing in the wallet: arrears
        revenue = acc.get_account(session, acc.revenue_code("electric", building.office_id))
        assert acc.natural_balance(revenue) == 99110
        assert ledger.verify(session).ok
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "rent.apportion"))
        assert len(list(audit)) == 1


def test_a_rerun_returns_the_stored_run_and_posts_nothing(
    sessions: sessionmaker[Session], plugins: Plugins, building: Building
) -> None:
    first = run(sessions, plugins, spec())
    with sessions() as session:
        before = ledger_state(session)
    again = run(sessions, plugins, spec())
    assert not again.created and again.run.id == first.run.id
    assert again.statement == first.statement
    with sessions() as session:
        assert ledger_state(session) == before and runs(session) == 1
    with pytest.raises(Conflict) as err:
        run(sessions, plugins, spec(rule="fixed", tenants=[{"customer": "A01-0101", "share": 1}]))
    assert err.value.field == "key"


def test_consumption_and_fixed_rules(
    sessions: sessionmaker[Session], plugins: Plugins, building: Building
) -> None:
    by_use = run(sessions, plugins, spec(key="a-use", rule="consumption")).statement
    used = [40000, 100000, 0]
    assert [t["weight"] for t in by_use["tenants"]] == ["400.00", "1000.00", "0.00"]
    assert by_use["tenants"][0]["meters"] == ["A-0101"]
    expect = [sum(x) for x in zip(*(split(c, used) for c in COSTS), strict=True)]
    assert [t["total_fen"] for t in by_use["tenants"]] == expect
    nothing = by_use["tenants"][2]
    assert nothing["total_fen"] == 0 and nothing["transaction"] is None

    tenants = [
        {"customer": n, "share": s} for (n, *_), s in zip(TENANTS, ["20", 10, "10.0"], strict=True)
    ]
    fixed = run(sessions, plugins, spec(key="a-fixed", rule="fixed", tenants=tenants)).statement
    expect = [sum(x) for x in zip(*(split(c, [2, 1, 1]) for c in COSTS), strict=True)]
    assert [t["total_fen"] for t in fixed["tenants"]] == expect == [49555, 24778, 24777]
    assert [t["basis"] for t in fixed["tenants"]] == ["fixed share"] * 3
    assert [t["weight"] for t in fixed["tenants"]] == ["20", "10", "10.0"]  # as written


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"rule": "share"}, InvalidInput, "rule"),
        ({"key": "bad key!"}, InvalidInput, "key"),
        ({"period": {"start": "2026-03-01", "end": "2026-03-01"}}, InvalidInput, "period.end"),
        ({"period": {"start": "2026-04-01", "end": "2026-06-01"}}, InvalidInput, "period.end"),
        ({"office": "ZZZ"}, NotFound, "office"),
        ({"office": "B01"}, InvalidInput, "common_meters[0]"),
        ({"common_meters": []}, InvalidInput, "common_meters"),
        ({"common_meters": ["electric:PUB-A-01", "PUB-X"]}, NotFound, "common_meters[1]"),
        (
            {"common_meters": ["electric:PUB-A-01", "electric:PUB-A-01"]},
            InvalidInput,
            "common_meters[1]",
        ),
        (
            {"common_meters": ["electric:A-0101", "water.cold:W-A"]},
            InvalidInput,
            "common_meters[1]",
        ),
        ({"tenants": []}, InvalidInput, "tenants"),
        ({"tenants": ["A01-0101", "A01-0999"]}, NotFound, "tenants[1].customer"),
        ({"tenants": ["A01-0101", "A01-0101"]}, InvalidInput, "tenants[1].customer"),
        ({"tenants": [{"customer": "A01-0101", "share": 1}]}, InvalidInput, "tenants[0].share"),
        ({"rule": "fixed"}, InvalidInput, "tenants[0].share"),
        (
            {"rule": "fixed", "tenants": [{"customer": "A01-0101", "share": "-1"}]},
            InvalidInput,
            "tenants[0].share",
        ),
        (
            {"rule": "fixed", "tenants": [{"customer": "A01-0101", "share": 0}]},
            InvalidInput,
            "rule",
        ),
        ({"rule": "consumption", "tenants": ["A01-0103"]}, InvalidInput, "rule"),
        ({"tenants": ["A01-0101", "A01-NOAREA"]}, InvalidInput, "tenants[1].customer"),
        ({"tenants": ["A01-NOWALLET"]}, InvalidInput, "tenants[0].customer"),
        ({"tenants": ["B01-0001"]}, InvalidInput, "tenants[0].customer"),
        ({"common_meters": ["PUB-UNREAD"]}, InvalidInput, "common_meters[0]"),
        ({"extra": 1}, InvalidInput, "extra"),
    ],
)
def test_a_bad_spec_is_refused_by_field_and_nothing_is_stored(
    sessions: sessionmaker[Session],
    plugins: Plugins,
    building: Building,
    changes: dict[str, Any],
    error: type[OnecardError],
    field: str,
) -> None:
    with sessions() as session, session.begin():
        # a tenant without floor area, one without any wallet, one of another office, and a
        # common meter that was never read
        cust.open_account(
            session,
            ACTOR,
            plugins.utilities,
            office="A01",
            name="无面积",
            number="A01-NOAREA",
            meters=[cust.MeterSpec("electric", "A-NA")],
        )
        cust.open_account(
            session,
            ACTOR,
            plugins.utilities,
            office="A01",
            name="无钱包",
            number="A01-NOWALLET",
            floor_area="10",
        )
        cust.open_account(
            session,
            ACTOR,
            plugins.utilities,
            office="B01",
            name="B座",
            number="B01-0001",
            floor_area="10",
            shared_wallet=True,
        )
        session.add(Meter(kind="electric", serial="PUB-UNREAD"))
        cust.open_account(
            session,
            ACTOR,
            plugins.utilities,
            office="A01",
            name="水",
            number="A01-W",
            meters=[cust.MeterSpec("water.cold", "W-A")],
        )
        before = ledger_state(session)
    with pytest.raises(error) as err:
        run(sessions, plugins, spec(**changes))
    assert err.value.field == field, err.value.message
    assert err.value.message.startswith(field), err.value.message
    with sessions() as session:
        assert runs(session) == 0 and ledger_state(session) == before


def test_a_failure_after_posting_leaves_nothing_half_written(
    sessions: sessionmaker[Session],
    plugins: Plugins,
    building: Building,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with sessions() as session:
        before = ledger_state(session)
    calls = []

    def failing(session: Session, **kw: Any) -> Any:
        calls.append(kw["wallet"])
        if len(calls) == 3:
            raise InvalidInput("the third posting fails", field="wallet")
        return ledger.consume(session, **kw)

    monkeypatch.setattr(ap, "consume", failing)
    with pytest.raises(InvalidInput, match="third posting"):
        run(sessions, plugins, spec())
    with sessions() as session:
        assert ledger_state(session) == before and runs(session) == 0
    monkeypatch.undo()
    assert run(sessions, plugins, spec()).created


def test_a_meter_without_a_tariff_is_refused(
    sessions: sessionmaker[Session], plugins: Plugins, building: Building
) -> None:
    with sessions() as session, session.begin():
        session.add(Meter(kind="gas", serial="PUB-GAS"))
        session.flush()
        gas = session.scalar(select(Meter).where(Meter.serial == "PUB-GAS"))
        assert gas is not None
        read(session, gas.id, at(1), 0)
        read(session, gas.id, at(1, month=4), 100)
    with pytest.raises(NotFound, match="has no tariff") as err:
        run(sessions, plugins, spec(common_meters=["gas:PUB-GAS"]))
    assert err.value.field == "common_meters[0]"


def test_spec_in_json_and_bare_customer_numbers(
    sessions: sessionmaker[Session], plugins: Plugins, building: Building
) -> None:
    raw = json.loads(json.dumps(spec(key="json-run"), default=str))
    raw["tenants"] = [{"customer": "A01-0101"}, "A01-0102", {"customer": "A01-0103"}]
    done = run(sessions, plugins, raw)
    assert done.statement["spec"]["tenants"] == ["A01-0101", "A01-0102", "A01-0103"]
    assert done.statement["spec"]["period"] == {"start": "2026-03-01", "end": "2026-04-01"}


# The command line -------------------------------------------------------------------------------


def onecard() -> click.Group:
    """The ``onecard`` command with the rent plugin's commands (as ``main()`` adds them)."""
    group = OnecardGroup(
        name="onecard", callback=cli.callback, params=cli.params, commands=dict(cli.commands)
    )
    onecard_rent.onecard_register_commands(cli=group)
    return group


def test_the_cli_apportions_and_prints_the_statement(
    db_url: str, building: Building, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(onecard(), ["--database-url", db_url, *args])

    r = invoke("rent", "apportion", str(SAMPLE))
    assert r.exit_code == 0, r.output
    assert "公摊 apportionment building-a-2026-03" in r.output
    assert "electric:PUB-A-01" in r.output and "11234.56" in r.output
    assert "tier 2" in r.output and re.search(r"cost +811\.10\n", r.output)
    assert "A01-0102" in r.output and re.search(r"total +475\.73  \(wallet:meter:", r.output)
    assert "total 991.10 yuan" in r.output

    r = invoke("rent", "apportion", str(SAMPLE), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["created"] is False and out["statement"]["total_fen"] == 99110

    r = invoke("rent", "statement", "building-a-2026-03", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["tenants"][1]["total"] == "475.73"
    r = invoke("rent", "statement", "building-a-2026-03")
    assert r.exit_code == 0 and "rule: area" in r.output

    r = invoke("rent", "statement", "nope")
    assert r.exit_code == 1 and "no apportionment with key 'nope' [key]" in r.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(SAMPLE.read_text(encoding="utf-8").replace("A01-0103", "A01-0999"))
    bad.write_text(bad.read_text().replace("building-a-2026-03", "another"))
    r = invoke("rent", "apportion", str(bad))
    assert r.exit_code == 1
    assert "tenants[2].customer: no customer with number 'A01-0999'" in r.output
    with sessions() as session:
        assert runs(session) == 1
