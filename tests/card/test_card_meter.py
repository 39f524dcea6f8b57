"""The card meter emulator (onecard.card.meter) against cards written by the real office desk.

Cards are emulated MIFARE Classic cards driven directly (``MifareReader(card)``, no pcscd). The
office side is the real :class:`~onecard.card.service.CardDesk` on the test database; the
property tests use a bench card written with :class:`~onecard.card.cardio.CardIO` and fixed
master keys, so that they need no database.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard import customers as cust
from onecard import operators as ops
from onecard.audit import Actor
from onecard.card import profiles as prof
from onecard.card.cardio import CardIO, check_seal, seal, sector_keys
from onecard.card.emulator import MifareClassicCard
from onecard.card.keys import CardKeys, KeyStore
from onecard.card.layout import (
    HEADER_SECTOR,
    STATUS_FLAGS,
    TOOL_LAYOUTS,
    CardMap,
    Header,
    SlotLayout,
    allocate,
    tool_blocks,
)
from onecard.card.meter import CardMeter, MeterSam, Visit
from onecard.card.mifare import BLOCK_SIZE, GEOMETRY_1K
from onecard.card.reader import MifareReader
from onecard.card.service import CardDesk, SaleItem
from onecard.db import create_db_engine, session_factory
from onecard.errors import Conflict, InvalidInput, OnecardError
from onecard.models import MeterReading
from onecard.plugins import Plugins
from onecard.utility import UtilityKind

ACTOR = Actor(name="test")
SITE_ID = 4242
OTHER_SITE_ID = 4243
KEK = bytes(range(32))
START = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
#: The meters of the eight-meter card: slot label -> (kind, serial).
EIGHT = {
    "electric.1": ("electric", "100001"),
    "electric.2": ("electric", "100002"),
    "heat": ("heat", "300001"),
    "gas": ("gas", "400001"),
    "water.cold": ("water.cold", "500001"),
    "water.hot": ("water.hot", "500002"),
    "water.recycled": ("water.recycled", "500003"),
    "water.purified": ("water.purified", "500004"),
}
_uids = itertools.count(0x21000001)


def new_card() -> MifareClassicCard:
    return MifareClassicCard(next(_uids).to_bytes(4, "big"))


class Clock:
    """A clock that moves on one second per reading (so every record gets its own time)."""

    def __init__(self, start: dt.datetime = START) -> None:
        self.t = start

    def __call__(self) -> dt.datetime:
        self.t += dt.timedelta(seconds=1)
        return self.t


def changed_blocks(before: bytes, after: bytes) -> set[int]:
    return {
        b
        for b in range(len(before) // BLOCK_SIZE)
        if before[b * BLOCK_SIZE : (b + 1) * BLOCK_SIZE]
        != after[b * BLOCK_SIZE : (b + 1) * BLOCK_SIZE]
    }


# The office ------------------------------------------------------------------------------------


@dataclass
class Site:
    """A keyed site with one customer holding the eight card meters of :data:`EIGHT`."""

    sessions: sessionmaker[Session]
    plugins: Plugins
    keystore: KeyStore
    desk: CardDesk
    customer: str
    clock: Clock
    sales: Iterator[int]

    def keys_for(self, uid: bytes, version: int) -> CardKeys:
        with self.sessions() as session:
            return self.keystore.card_keys(session, uid, version)

    @property
    def sam(self) -> MeterSam:
        return MeterSam(SITE_ID, self.keys_for)

    def kind(self, code: str) -> UtilityKind:
        return self.plugins.utilities.get(code)

    def meter(self, label: str) -> CardMeter:
        kind, serial = EIGHT[label]
        return CardMeter(self.kind(kind), serial, self.sam, clock=self.clock)

    def issue(self) -> MifareClassicCard:
        card = new_card()
        self.desk.issue(MifareReader(card), ACTOR, customer=self.customer, profile="eight")
        return card

    def sell(self, card: MifareClassicCard, **amounts: Any) -> dict[str, Any]:
        """Sell to meters by slot label: an amount in fen, or (fen, params)."""
        items = []
        for label, spec in amounts.items():
            amount, params = spec if isinstance(spec, tuple) else (spec, None)
            items.append(SaleItem(meter=EIGHT[label][1], amount=amount, params=params))
        key = f"sale-{next(self.sales)}"
        return self.desk.sell(MifareReader(card), ACTOR, sale_key=key, items=items)

    def read(self, card: MifareClassicCard) -> dict[str, Any]:
        return self.desk.read(MifareReader(card), ACTOR)

    def tool(self, card_type: str, **data: Any) -> MifareClassicCard:
        card = new_card()
        operator = data.pop("operator", None)
        self.desk.issue_tool(
            MifareReader(card), ACTOR, card_type=card_type, operator=operator, data=data
        )
        return card

    def card_map(self) -> CardMap:
        with self.sessions() as session:
            return prof.card_map(prof.get_profile(session, "eight"), self.plugins.utilities)


@pytest.fixture
def site(sessions: sessionmaker[Session], world: object, plugins: Plugins) -> Site:
    """The site (``world`` makes the offices and roles)."""
    keystore = KeyStore(KEK)
    with sessions() as session, session.begin():
        keystore.init_site(session, SITE_ID, "meter test site")
        customer = cust.open_account(
            session,
            ACTOR,
            plugins.utilities,
            office="E01",
            name="赵敏",
            meters=[cust.MeterSpec(kind, serial) for kind, serial in EIGHT.values()],
        )
        number = customer.number
    desk = CardDesk(sessions, plugins.utilities, keystore)
    return Site(sessions, plugins, keystore, desk, number, Clock(), itertools.count(1))


def insert(meter: CardMeter, card: MifareClassicCard) -> Visit:
    return meter.insert(MifareReader(card))


def refused_cleanly(meter: CardMeter, card: MifareClassicCard, code: str) -> Visit:
    """Insert ``card``: refused with ``code``, nothing written, the meter unchanged."""
    before_card, before_meter = card.memory, meter.state()
    visit = insert(meter, card)
    assert (visit.accepted, visit.code) == (False, code), visit
    assert card.memory == before_card
    after = meter.state()
    assert after.pop("events")[-1]["code"] == code
    before_meter.pop("events")
    assert after == before_meter
    return visit


# Loading purchases -----------------------------------------------------------------------------


def test_eight_meters_each_load_only_their_own_slot(site: Site) -> None:
    card = site.issue()
    amounts = {label: 1000 * (i + 3) for i, label in enumerate(EIGHT)}  # above alarm1 (20 yuan)
    amounts["heat"] = 7600  # 2 GJ at 38.00 yuan/GJ
    site.sell(card, **amounts)
    card_map = site.card_map()
    slots = {s.label: s for s in card_map.slots}
    meters = {label: site.meter(label) for label in EIGHT}
    for label, meter in meters.items():
        before = card.memory
        visit = insert(meter, card)
        expected = 2000 if label == "heat" else amounts[label]  # heat carries units (0.001 GJ)
        assert visit == Visit(
            True, "loaded", visit.message, loaded=expected, seq=1, card_type="user", returned=True
        )
        assert meter.credit == expected and meter.last_seq == 1 and not meter.relay_open
        # the meter wrote its own return record and nothing else
        assert changed_blocks(before, card.memory) == set(slots[label].return_blocks)

    stranger = CardMeter(site.kind("electric"), "999999", site.sam, clock=site.clock)
    refused_cleanly(stranger, card, "not_my_card")

    read = site.read(card)
    for entry in read["slots"]:
        ret = entry["return"]
        assert ret["meter_serial"] == EIGHT[entry["label"]][1]
        assert ret["last_seq"] == 1 and ret["cumulative"] == 0 and ret["flags"] == []
        assert ret["remaining"] == (2000 if entry["label"] == "heat" else amounts[entry["label"]])
        assert entry["reading_stored"] is True
    by_label = {e["label"]: e["return"] for e in read["slots"]}
    assert Decimal(by_label["electric.1"]["peak_power"]) == 0
    assert {"supply_temp", "return_temp", "flow_volume"} <= set(by_label["heat"])

    # inserted again: already loaded, the credit stays, the return record is written afresh
    meter = meters["electric.1"]
    meter.run(2, Decimal("1.5"))
    visit = insert(meter, card)
    assert (visit.accepted, visit.code, visit.loaded, visit.seq) == (True, "already_loaded", 0, 1)
    assert meter.credit == amounts["electric.1"] - Decimal("3") * Decimal("54.83")
    ret = {e["label"]: e["return"] for e in site.read(card)["slots"]}["electric.1"]
    assert ret["cumulative"] == 300 and ret["remaining"] == 2835  # 30.00 - 3 kWh x 0.5483
    assert Decimal(ret["peak_power"]) == Decimal("1.5")  # kW, the highest rate of run()


def test_replay_of_an_older_card_image_is_refused(site: Site) -> None:
    card = site.issue()
    meter = site.meter("electric.1")
    site.sell(card, **{"electric.1": 5000})
    first = card.memory  # purchase #1, not yet loaded
    assert insert(meter, card).code == "loaded"
    site.sell(card, **{"electric.1": 3000})
    assert insert(meter, card).code == "loaded"
    assert (meter.last_seq, meter.credit) == (2, 8000)

    old = MifareClassicCard(card.uid, memory=first)  # the customer kept an image of #1
    visit = refused_cleanly(meter, old, "replay")
    assert visit.seq == 1
    assert visit.message == "purchase #1 is older than the meter's #2"


def test_sequence_gap_is_refused(site: Site, tmp_path: Path) -> None:
    card = site.issue()
    meter = site.meter("gas")
    assert insert(meter, card).code == "nothing_to_load"
    meter.save(tmp_path / "gas.json")  # the meter as it was before purchase #1

    site.sell(card, gas=2000)
    assert insert(meter, card).code == "loaded"
    site.sell(card, gas=2000)  # purchase #2

    earlier = site.meter("gas")
    earlier.load(tmp_path / "gas.json")  # a meter that never saw #1
    assert earlier.last_seq == 0 and earlier.state() != meter.state()
    visit = refused_cleanly(earlier, card, "sequence_gap")
    assert visit.message == (
        "a purchase between #0 and #2 was never loaded; ask the office to re-purchase"
    )
    # the meter that loaded #1 takes #2
    assert insert(meter, card).code == "loaded" and meter.credit == 4000


def test_save_and_load_round_trip(site: Site, tmp_path: Path) -> None:
    card = site.issue()
    site.sell(card, heat=(3800, {"overdraft": "0.5"}))
    meter = site.meter("heat")
    insert(meter, card)
    meter.consume(Decimal("0.125"))
    meter.battery_low = True
    meter.save(tmp_path / "heat.json")
    copy = site.meter("heat")
    copy.load(tmp_path / "heat.json")
    assert copy.state() == meter.state()
    assert (copy.credit, copy.cumulative, copy.params["overdraft"]) == (875, 125, Decimal("0.5"))
    other = site.meter("gas")
    with pytest.raises(Exception, match="not of gas meter 400001"):
        other.load(tmp_path / "heat.json")


# Forged and foreign cards ----------------------------------------------------------------------


def test_an_edited_purchase_record_is_refused(site: Site) -> None:
    card = site.issue()
    site.sell(card, **{"water.cold": 2000})
    slot = next(s for s in site.card_map().slots if s.label == "water.cold")
    block = slot.purchase_blocks[0]
    data = bytearray(card.block(block))
    data[13] ^= 0x01  # the low byte of the amount: 20.00 yuan becomes 20.01
    card.poke(block, bytes(data))
    meter = site.meter("water.cold")
    refused_cleanly(meter, card, "edited")
    assert meter.credit == 0 and meter.last_seq == 0


def test_clones_and_edited_headers(site: Site) -> None:
    card = site.issue()
    site.sell(card, **{"electric.2": 5000})
    meter = site.meter("electric.2")
    uid = bytes.fromhex("0BADC0DE")
    clone = card.clone_to(uid)
    visit = refused_cleanly(meter, clone, "wrong_key")
    assert "clone" in visit.message

    # Were the attacker able to key the clone with the keys of its new UID (they cannot: the
    # keys are diversified from the site's master key), the header MAC still binds it to the UID.
    keys = site.keys_for(uid, 1)
    geo = GEOMETRY_1K
    for sector in range(geo.sectors):
        trailer = geo.trailer_block(sector)
        raw = clone.block(trailer)
        sk = sector_keys(geo, sector, keys)
        clone.poke(trailer, sk.key_a + raw[6:10] + sk.key_b)
    visit = refused_cleanly(meter, clone, "cloned_or_edited")
    assert "clone" in visit.message

    # an edited header on the genuine card
    genuine = card.memory
    block = GEOMETRY_1K.data_blocks(HEADER_SECTOR)[0]
    data = bytearray(card.block(block))
    data[15] ^= 0x02  # the customer number
    card.poke(block, bytes(data))
    refused_cleanly(meter, card, "cloned_or_edited")
    assert insert(meter, MifareClassicCard(card.uid, memory=genuine)).code == "loaded"


def test_not_our_card_and_another_sites_card(
    site: Site, tmp_path: Path, sqlite_template: Path, plugins: Plugins
) -> None:
    meter = site.meter("electric.1")
    refused_cleanly(meter, new_card(), "not_our_card")

    path = tmp_path / "other-site.db"
    shutil.copyfile(sqlite_template, path)
    engine = create_db_engine(f"sqlite:///{path}")
    try:
        other = session_factory(engine)
        keystore = KeyStore(bytes(32))
        with other() as session, session.begin():
            keystore.init_site(session, OTHER_SITE_ID, "another site")
        desk = CardDesk(other, plugins.utilities, keystore)
        system = new_card()
        desk.issue_tool(MifareReader(system), ACTOR, card_type="system", data={"phases": "three"})
    finally:
        engine.dispose()
    visit = refused_cleanly(meter, system, "foreign_site")
    assert str(OTHER_SITE_ID) in visit.message
    assert not meter.commissioned


# Use, alarms, exhaustion -----------------------------------------------------------------------


def test_alarms_exhaustion_and_a_new_purchase(site: Site) -> None:
    card = site.issue()
    site.sell(card, **{"electric.1": 5000})  # 50 yuan; alarms at 20 and 5 yuan, no overdraft
    meter = site.meter("electric.1")
    insert(meter, card)
    price = Decimal("54.83")  # fen per kWh
    assert meter.consume(Decimal(50)) == 50
    assert meter.credit == 5000 - 50 * price and meter.alarm == 0
    assert meter.consume(Decimal(5)) == 5  # 50 - 30.16 = 19.84 yuan: the first alarm
    assert meter.alarm == 1 and [e.code for e in meter.events[-1:]] == ["alarm1"]
    meter.consume(Decimal(1))  # still at level 1: not recorded again
    assert [e.code for e in meter.events].count("alarm1") == 1
    meter.run(hours=5, rate=Decimal("5"))  # 25 kWh: 13.71 yuan, down to 5.59 yuan
    assert meter.alarm == 1
    meter.run(hours=1, rate=Decimal("1.1"))  # 0.60 yuan: 4.98 yuan, the second alarm
    assert meter.alarm == 2 and meter.events[-1].code == "alarm2"
    metered = meter.run(hours=100, rate=Decimal("2"))  # would be 200 kWh; stops at exhaustion
    assert metered == Decimal("9.10")  # ceil(499.xx fen / 54.83 fen) to 0.01 kWh
    assert meter.relay_open and meter.exhausted and meter.events[-1].code == "exhausted"
    assert Decimal(-55) < meter.credit <= 0
    assert meter.consume(Decimal(3)) == 0 and meter.run(1, Decimal(1)) == 0  # no supply
    codes = [e.code for e in meter.events]
    assert [c for c in codes if c in ("alarm1", "alarm2", "exhausted")] == [
        "alarm1",
        "alarm2",
        "exhausted",
    ]
    insert(meter, card)
    ret = {e["label"]: e["return"] for e in site.read(card)["slots"]}["electric.1"]
    assert set(ret["flags"]) == {"relay_open", "alarm1", "alarm2", "exhausted"}
    assert ret["remaining"] == meter.remaining == -1  # -0.496 fen, floored

    site.sell(card, **{"electric.1": 3000})  # 30 yuan: above both alarm levels
    credit = meter.credit
    visit = insert(meter, card)
    assert visit.code == "loaded" and meter.credit == credit + 3000
    assert not meter.relay_open and meter.alarm == 0
    assert [e.code for e in meter.events[-3:]] == ["alarm_cleared", "relay_closed", "loaded"]
    assert meter.consume(Decimal(1)) == 1
    ret = {e["label"]: e["return"] for e in site.read(card)["slots"]}["electric.1"]
    assert ret["flags"] == [] and ret["last_seq"] == 2


def test_overdraft_lets_credit_go_negative(site: Site) -> None:
    card = site.issue()
    site.sell(card, **{"water.hot": (1000, {"overdraft": "10", "alarm1": "8", "alarm2": "2"})})
    meter = site.meter("water.hot")  # 25.00 yuan/m³
    insert(meter, card)
    assert meter.params["overdraft"] == 10 and meter.exhaustion_level == -1000
    assert meter.consume(Decimal("0.8")) == Decimal("0.8")  # 20 yuan: credit -10.00 yuan
    assert meter.credit == -1000 and meter.relay_open and meter.alarm == 2
    meter2 = site.meter("water.purified")  # 8.00 yuan/m³, no overdraft
    site.sell(card, **{"water.purified": 1000})
    insert(meter2, card)
    assert meter2.consume(Decimal(5)) == Decimal("1.25") and meter2.credit == 0
    assert meter2.relay_open
    insert(meter, card)
    ret = {e["label"]: e["return"] for e in site.read(card)["slots"]}
    assert ret["water.hot"]["remaining"] == -1000
    assert "exhausted" in ret["water.hot"]["flags"] and ret["water.hot"]["cumulative"] == 80
    # with the default parameters (no overdraft) a purchase that leaves a debt keeps it closed
    site.sell(card, **{"water.hot": 500})
    insert(meter, card)
    assert meter.credit == -500 and meter.relay_open
    site.sell(card, **{"water.hot": 2000})
    insert(meter, card)
    assert meter.credit == 1500 and not meter.relay_open


def test_heat_meter_counts_units(site: Site) -> None:
    card = site.issue()
    site.sell(card, heat=(7600, {"overdraft": "0.1"}))  # 2 GJ at 38.00 yuan/GJ
    meter = site.meter("heat")
    insert(meter, card)
    assert meter.credit == 2000 and not meter.money  # 0.001 GJ
    assert (meter.alarm1_level, meter.alarm2_level, meter.exhaustion_level) == (1000, 200, -100)
    assert meter.consume(Decimal("0.4567")) == Decimal("0.4567")
    assert meter.credit == Decimal("1543.3") and meter.cumulative == 456 and meter.remaining == 1543
    meter.run(hours=10, rate=Decimal("0.06"))  # 0.6 GJ
    assert meter.credit == Decimal("943.3") and meter.alarm == 1
    meter.consume(Decimal("0.75"))
    assert meter.alarm == 2
    assert meter.consume(Decimal(5)) == Decimal("0.294")  # to -0.1 GJ: 0.1933 -> 0.294
    assert meter.credit == Decimal("-100.7") and meter.relay_open
    assert meter.cumulative == 2100  # 0.4567 + 0.6 + 0.75 + 0.294 GJ, floored
    insert(meter, card)
    ret = {e["label"]: e["return"] for e in site.read(card)["slots"]}["heat"]
    assert (ret["remaining"], ret["cumulative"]) == (-101, 2100)
    assert ret["supply_temp"] == ret["return_temp"] == "20.0"  # no heat flows, the valve shut
    assert Decimal(ret["flow_volume"]) == Decimal("20.07")  # 2.1007 GJ at a 25 K difference


# Tool cards ------------------------------------------------------------------------------------


def test_system_card_commissions_and_manager_card_is_refused(site: Site) -> None:
    meter = site.meter("electric.1")
    assert not meter.commissioned
    card = site.tool("system", phases="three")
    before = card.memory
    visit = insert(meter, card)
    assert card.memory == before  # the meter writes nothing onto a system card
    assert (visit.accepted, visit.code, visit.card_type) == (True, "commissioned", "system")
    assert meter.commissioned and meter.site_id == SITE_ID and meter.phases == "three"

    with site.sessions() as session, session.begin():
        ops.create_operator(
            session,
            ACTOR,
            username="chief",
            password="chief-pass-1",
            roles=[("administrator", None)],
        )
    refused_cleanly(meter, site.tool("manager", operator="chief"), "not_for_meters")


def test_settings_card_changes_the_price_of_its_kind_only(site: Site) -> None:
    card = site.issue()
    site.sell(card, **{"electric.1": 5000, "water.cold": 5000})
    electric, water = site.meter("electric.1"), site.meter("water.cold")
    insert(electric, card)
    insert(water, card)
    settings_card = site.tool("settings", kind="electric", price="1.2", alarm1="30", alarm2="10")
    before = settings_card.memory
    visit = insert(electric, settings_card)
    assert visit.code == "settings_applied" and settings_card.memory == before
    assert electric.params["price"] == Decimal("1.2") and electric.alarm1_level == 3000
    assert electric.alarm == 0
    electric.consume(Decimal(10))
    assert electric.credit == 5000 - 1200 and electric.alarm == 0
    electric.consume(Decimal(1))  # 38.00 - 1.20 = 36.80: nothing yet
    electric.consume(Decimal(7))  # 28.40: below 30, the first alarm
    assert electric.alarm == 1
    refused_cleanly(water, settings_card, "wrong_kind")
    assert water.params["price"] == Decimal("3.45")

    # a settings card whose payload was edited
    data = bytearray(settings_card.block(8))
    data[0] ^= 0x20  # "electric" -> "Electric"
    settings_card.poke(8, bytes(data))
    refused_cleanly(electric, settings_card, "edited")


def test_reset_card_clears_a_tamper(site: Site) -> None:
    card = site.issue()
    site.sell(card, gas=5000)
    meter = site.meter("gas")
    insert(meter, card)
    meter.detect_tamper()
    assert meter.tamper and meter.relay_open and meter.consume(Decimal(1)) == 0
    insert(meter, card)
    ret = {e["label"]: e["return"] for e in site.read(card)["slots"]}["gas"]
    assert set(ret["flags"]) == {"tamper", "relay_open"}
    visit = insert(meter, site.tool("reset"))
    assert visit.code == "reset" and not meter.tamper and not meter.relay_open
    assert meter.consume(Decimal(1)) == 1


def test_clear_card_resets_the_purchase_count(site: Site) -> None:
    card = site.issue()
    # the office issues clear cards only for meters without purchases (commissioning)
    other_meter, this_meter = site.tool("clear", meter="100001"), site.tool("clear", meter="100002")
    clear = site.tool("clear", meter="400001")
    with pytest.raises(InvalidInput, match="serial"):
        site.tool("clear")  # a clear card for "any meter" is not issued
    site.sell(card, **{"electric.2": 5000})
    with pytest.raises(Conflict, match="has purchases"):
        site.tool("clear", meter="100002")
    meter = site.meter("electric.2")
    insert(meter, card)
    meter.consume(Decimal(20))
    refused_cleanly(meter, other_meter, "wrong_meter")
    visit = insert(meter, this_meter)
    assert visit.code == "cleared"
    assert (meter.last_seq, meter.credit, meter.alarm, meter.cumulative) == (0, 0, 0, 2000)
    assert meter.relay_open  # no credit left

    site.sell(card, gas=3000)
    gas = site.meter("gas")
    insert(gas, card)
    data = bytearray(clear.block(8))
    data[0] = 0xAB  # not even BCD any more
    clear.poke(8, bytes(data))
    refused_cleanly(gas, clear, "edited")
    assert gas.credit == 3000


def test_check_card_collects_meter_states(site: Site) -> None:
    card = site.issue()
    site.sell(card, **{"electric.1": 5000, "heat": 3800, "water.cold": 3000})
    meters = [site.meter(label) for label in ("electric.1", "heat", "water.cold")]
    for meter in meters:
        insert(meter, card)
    meters[0].consume(Decimal("12.34"))
    meters[1].consume(Decimal("0.5"))
    meters[2].detect_tamper()
    check = site.tool("check")
    runs = tool_blocks(GEOMETRY_1K, TOOL_LAYOUTS["check"])
    for n, meter in enumerate(meters):
        before = check.memory
        visit = insert(meter, check)
        assert (visit.code, visit.returned) == ("checked", True)
        assert changed_blocks(before, check.memory) == set(runs[n])

    tool = site.read(check)["tool"]
    records = tool["records"]
    assert [(r["kind"], r["meter_serial"], r["valid"], r["reading_stored"]) for r in records] == [
        ("electric", "100001", True, True),
        ("heat", "300001", True, True),
        ("water.cold", "500001", True, True),
    ]
    assert [r["cumulative"] for r in records] == [1234, 500, 0]
    assert [r["remaining"] for r in records] == [meters[0].remaining, 500, 3000]
    assert records[2]["status"] == STATUS_FLAGS["relay_open"] | STATUS_FLAGS["tamper"]
    with site.sessions() as session:
        rows = session.scalars(
            select(MeterReading).where(MeterReading.source == "check_card")
        ).all()
        assert sorted(r.cumulative for r in rows) == [0, 500, 1234]


def test_a_full_check_card_is_refused(site: Site) -> None:
    check = site.tool("check")
    meter = site.meter("gas")
    runs = tool_blocks(GEOMETRY_1K, TOOL_LAYOUTS["check"])
    for _ in runs:
        assert insert(meter, check).code == "checked"
    refused_cleanly(meter, check, "check_card_full")


# Properties (no database) ----------------------------------------------------------------------

BENCH_SITE = 77
BENCH_CARD_MASTER, BENCH_MAC_MASTER = bytes(range(16)), bytes(range(16, 32))


def bench_keys(uid: bytes, version: int | None) -> CardKeys:
    return CardKeys.derive(BENCH_CARD_MASTER, BENCH_MAC_MASTER, uid, BENCH_SITE, version or 1)


def bench_card(kind: UtilityKind, serial: str, amount: int, **params: Any) -> MifareClassicCard:
    """A one-slot user card carrying purchase #1, written as the office writes it."""
    layout = kind.card_layout
    assert isinstance(layout, SlotLayout)
    card_map = allocate("bench", "1k", [(kind.code, kind.code, layout)])
    card = new_card()
    io = CardIO(MifareReader(card), bench_keys, BENCH_SITE)
    keys = bench_keys(card.uid, 1)
    header = Header("user", BENCH_SITE, 1, 1, 1, 1, 0, START, card_map.slot_starts)
    io.format(header, keys, card_map=card_map, initial={})
    slot = card_map.slot(0)
    values = {"meter_serial": serial, "seq": 1, "amount": amount, "time": START}
    values |= layout.resolve_params(params)
    io.write_purchases(keys, {0: io.seal_purchase(slot, values, keys)}, card_map)
    return card


def bench_meter(plugins: Plugins, code: str) -> Callable[..., CardMeter]:
    def make(amount: int, **params: Any) -> CardMeter:
        kind = plugins.utilities.get(code)
        meter = CardMeter(kind, "12345", MeterSam(BENCH_SITE, bench_keys), clock=Clock())
        assert insert(meter, bench_card(kind, "12345", amount, **params)).code == "loaded"
        return meter

    return make


quantities = st.decimals(min_value=0, max_value=40, places=3, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    price=st.decimals(min_value=Decimal("0.0001"), max_value=5, places=4),
    steps=st.lists(quantities, min_size=1, max_size=25),
)
def test_consumption_never_drifts(plugins: Plugins, price: Decimal, steps: list[Decimal]) -> None:
    meter = bench_meter(plugins, "electric")(5000, price=price, overdraft="3")
    metered_total = Decimal(0)
    for q in steps:
        was_open = meter.relay_open
        metered = meter.consume(q)
        assert metered <= q and (metered == 0 if was_open else True)
        metered_total += metered
        # the credit drop is exactly the sum of every step's cost: no fen is ever rounded away
        assert Decimal(5000) - meter.credit == metered_total * price * 100
        assert meter.cumulative == int((metered_total * 100).to_integral_value(ROUND_FLOOR))
        # never further below the overdraft than one resolution step costs
        assert meter.credit > meter.exhaustion_level - price
        assert meter.relay_open == (meter.credit <= -300)
    levels = [e.code for e in meter.events if e.code in ("alarm1", "alarm2", "exhausted")]
    assert levels == ["alarm1", "alarm2", "exhausted"][: len(levels)]


@settings(max_examples=30, deadline=None)
@given(steps=st.lists(st.decimals(min_value=0, max_value=2, places=4), min_size=1, max_size=20))
def test_units_meter_credit_follows_use(plugins: Plugins, steps: list[Decimal]) -> None:
    meter = bench_meter(plugins, "heat")(3000)  # 3 GJ
    for q in steps:
        meter.consume(q)
        assert meter.credit == 3000 - meter.usage * 1000
        assert meter.credit > -1  # no overdraft: stops within one 0.001 GJ
    assert meter.cumulative == int(meter.usage * 1000)


# Problems found on the office side, fixed --------------------------------------------------------


def test_check_seal_answers_false_for_a_non_bcd_edit() -> None:
    layout = TOOL_LAYOUTS["clear"]
    uid, key = bytes.fromhex("01020304"), bytes(16)
    raw = bytearray(seal(layout, {"meter_serial": "100001", "time": START}, uid, 8, key))
    assert check_seal(layout, bytes(raw), uid, 8, key)
    raw[0] = 0xAB
    assert check_seal(layout, bytes(raw), uid, 8, key) is False


def test_same_serial_meters_of_two_kinds_on_one_card(site: Site) -> None:
    with site.sessions() as session, session.begin():
        customer = cust.open_account(
            session,
            ACTOR,
            site.plugins.utilities,
            office="E01",
            name="钱进",
            meters=[cust.MeterSpec("water.cold", "777777"), cust.MeterSpec("water.hot", "777777")],
        )
        number = customer.number
    card = new_card()
    try:
        site.desk.issue(MifareReader(card), ACTOR, customer=number, profile="six")
    except OnecardError:
        return  # refusing such a card would be a fix too
    site.desk.sell(
        MifareReader(card),
        ACTOR,
        sale_key="same-serial",
        items=[SaleItem(meter="water.cold", amount=2000), SaleItem(meter="water.hot", amount=3000)],
    )
    hot = CardMeter(site.kind("water.hot"), "777777", site.sam, clock=site.clock)
    assert insert(hot, card).loaded == 3000  # it loads the cold-water purchase (2000)


def test_check_card_reading_of_a_serial_with_a_leading_zero(site: Site) -> None:
    with site.sessions() as session, session.begin():
        cust.open_account(
            session,
            ACTOR,
            site.plugins.utilities,
            office="E01",
            name="孙丽",
            meters=[cust.MeterSpec("gas", "012345")],
        )
    check = site.tool("check")
    meter = CardMeter(site.kind("gas"), "012345", site.sam, clock=site.clock)
    assert insert(meter, check).code == "checked"
    (record,) = site.read(check)["tool"]["records"]
    assert record["valid"] and record["reading_stored"] is True
