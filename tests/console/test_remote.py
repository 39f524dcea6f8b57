"""The remote-meter pages: the list (office scope, filters, flags, the gateways), one meter's page
(readings, events, relay commands), the manual relay commands (a reason is required, permission in
the meter's office, a trip and a close against the meter emulator, a gateway offline, a meter that
does not obey, a busy gateway), the menu link and the customer page's remote meters."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from conftest import World
from flask import Flask
from remote.conftest import attach_meter, fleet, make_service, meter  # noqa: F401 (fleet: fixture)
from sqlalchemy import select

from onecard.admin_ops import create_role
from onecard.audit import Actor
from onecard.errors import Conflict
from onecard.fleet.server import Fleet
from onecard.fleet.sim import SimMeter
from onecard.models import (
    AuditEvent,
    Gateway,
    Meter,
    MeterEvent,
    Office,
    RelayCommand,
    RemoteMeter,
)
from onecard.operators import create_operator
from onecard.remote import inventory
from onecard.remote.service import ReadingService
from onecard.runtime import Runtime
from onecard.web import EXTENSION

from .conftest import PASSWORDS, login, post

LIST = "/console/remote/"
EAST = "/console/remote/meters/electric:E0001"
WEST = "/console/remote/meters/electric:E9001"


@dataclass
class Buses:
    """Two gateways of the meter emulator: g-east carries the east customer's E0001 (unit 4),
    g-west the west customer's E9001 (unit 5)."""

    app: Flask
    rt: Runtime
    fleet: Fleet
    world: World
    east: SimMeter
    west: SimMeter
    east_id: int
    west_id: int


@pytest.fixture
def buses(app: Flask, world: World, fleet: Fleet) -> Iterator[Buses]:  # noqa: F811
    rt: Runtime = app.extensions[EXTENSION]
    modbus = rt.utilities.get("electric").protocols.get("modbus")
    east, west = meter("4"), meter("5")
    fleet.add_port("east-bus", modbus, meters=[east])
    fleet.add_port("west-bus", modbus, meters=[west])
    with fleet.running():
        ids = [
            attach_meter(
                rt.sessions,
                rt.plugins,
                gateway=gateway,
                port=fleet.ports[bus].port,
                serial=serial,
                address=address,
            )
            for gateway, bus, serial, address in (
                ("g-east", "east-bus", "E0001", "4"),
                ("g-west", "west-bus", "E9001", "5"),
            )
        ]
        yield Buses(app, rt, fleet, world, east, west, ids[0], ids[1])


def set_state(b: Buses, meter_id: int, **values: Any) -> None:
    """Put a remote meter in a state (as the reading service would leave it)."""
    with b.rt.sessions() as s, s.begin():
        remote = s.get(RemoteMeter, meter_id)
        assert remote is not None
        for name, value in values.items():
            setattr(remote, name, value)


def cycle(b: Buses, gateway: str) -> None:
    """One reading cycle of ``gateway`` by the reading service, at the emulator's time."""
    service = make_service(b.rt.sessions, b.rt.plugins, b.fleet)
    with b.rt.sessions() as s:
        gateway_id = s.scalar(select(Gateway.id).where(Gateway.code == gateway))
    assert gateway_id is not None
    asyncio.run(service.cycle(gateway_id))


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def row(page: str, attr: str, key: str) -> str:
    """The HTML of the table row ``<tr attr="key" ...>``."""
    found = re.search(rf'<tr {attr}="{re.escape(key)}"[^>]*>(.*?)</tr>', page, re.S)
    assert found, f"no row {attr}={key}"
    return found.group(1)


def section(page: str, ident: str) -> str:
    found = re.search(rf'<section[^>]* id="{ident}"[^>]*>(.*?)</section>', page, re.S)
    assert found, f"no section {ident}"
    return found.group(1)


def commands(b: Buses) -> list[tuple[str, str, str]]:
    with b.rt.sessions() as s:
        return [
            (c.command, c.status, c.reason)
            for c in s.scalars(select(RelayCommand).order_by(RelayCommand.id))
        ]


def audited(b: Buses) -> list[str]:
    with b.rt.sessions() as s:
        return [
            a.action for a in s.scalars(select(AuditEvent).where(AuditEvent.action.like("meter.%")))
        ]


# The list -------------------------------------------------------------------------------------


def test_list_shows_the_offices_meters_with_their_state_and_gateways(buses: Buses) -> None:
    at = dt.datetime(2026, 11, 2, 1, 30, tzinfo=dt.UTC)
    set_state(
        buses,
        buses.east_id,
        stale=True,
        missed=3,
        last_error="timeout: no answer",
        alarm_level=2,
        relay="closed",
        tripped="auto",
        bypass=True,
        last_cumulative=123450,
        last_read_at=at,
    )
    set_state(buses, buses.west_id, keep_power=True, relay="closed", last_read_at=at)
    page = login(buses.app, "east").get(LIST).get_data(as_text=True)
    east = row(page, "data-meter", "electric:E0001")
    words = text(east)
    assert "g-east" in words and "#4" in words and "E0001" in words
    assert f'href="/console/customers/{buses.world.customer_number}"' in east
    assert "王芳" in words
    assert "1234.50 kWh" in words and "2026-11-02 09:30" in words  # Shanghai time
    assert 'data-level="alarm2"' in east and "Alarm 2" in words
    assert 'data-relay="closed"' in east and "Closed: supply on" in words
    for flag in ("stale", "bypass", "tripped"):
        assert f'data-flag="{flag}"' in east, flag
    assert (
        'class="badge bad" data-flag="stale"' in east
        and 'class="badge bad" data-flag="bypass"' in east
    )
    assert "Tripped for no credit" in words and 'data-flag="keep"' not in east
    assert f'href="{EAST}"' in east
    assert "E9001" not in page  # another office's meter
    gateways = section(page, "gateways")
    assert 'data-gateway="g-east"' in gateways and "g-west" not in gateways
    g_east = text(row(gateways, "data-gateway", "g-east"))
    assert f"127.0.0.1:{buses.fleet.ports['east-bus'].port}" in g_east
    assert g_east.endswith(" 1 1 1 never —"), g_east  # a meter, stale, in alarm; never cycled

    west = login(buses.app, "west").get(LIST).get_data(as_text=True)
    assert "E0001" not in west and "g-east" not in west
    w = row(west, "data-meter", "electric:E9001")
    assert 'data-flag="keep"' in w and "Keep power" in text(w) and 'data-level="none"' in w
    assert 'data-flag="stale"' not in w

    boss = login(buses.app, "boss").get(LIST).get_data(as_text=True)
    assert 'data-meter="electric:E0001"' in boss and 'data-meter="electric:E9001"' in boss
    assert 'data-gateway="g-east"' in boss and 'data-gateway="g-west"' in boss


def test_a_meter_at_no_premises_belongs_to_its_gateways_office(buses: Buses) -> None:
    """A meter at no premises (a spare, a public-area meter) is for operators of every office
    while its gateway has no office, and for its gateway's office once it has one."""
    with buses.rt.sessions() as s, s.begin():
        spare = Meter(kind="electric", serial="E5555")  # imported, not yet given to a customer
        s.add(spare)
        s.flush()
        gateway = inventory.get_gateway(s, "g-east")
        inventory.attach(s, buses.rt.utilities, spare, gateway, protocol="modbus", address="6")
    east = login(buses.app, "east")
    assert "E5555" not in east.get(LIST).get_data(as_text=True)
    assert east.get("/console/remote/meters/electric:E5555").status_code == 403
    boss = login(buses.app, "boss")
    line = row(boss.get(LIST).get_data(as_text=True), "data-meter", "electric:E5555")
    assert "#6" in text(line) and "never read" in text(line) and "—" in text(line)
    assert boss.get("/console/remote/meters/electric:E5555").status_code == 200

    with buses.rt.sessions() as s, s.begin():
        gateway = inventory.get_gateway(s, "g-east")
        gateway.office_id = s.scalar(select(Office.id).where(Office.code == "E01"))
    assert 'data-meter="electric:E5555"' in east.get(LIST).get_data(as_text=True)
    assert east.get("/console/remote/meters/electric:E5555").status_code == 200
    page = login(buses.app, "mgr").get("/console/remote/meters/electric:E5555")
    assert 'id="commands"' in page.get_data(as_text=True)  # E01's manager controls it
    west = login(buses.app, "west")
    assert "E5555" not in west.get(LIST).get_data(as_text=True)
    assert west.get("/console/remote/meters/electric:E5555").status_code == 403


def test_list_filters_by_gateway_stale_and_alarm(buses: Buses) -> None:
    set_state(buses, buses.east_id, stale=True, missed=4)
    set_state(buses, buses.west_id, alarm_level=1)
    boss = login(buses.app, "boss")

    def meters(query: str) -> list[str]:
        page = boss.get(LIST + query).get_data(as_text=True)
        return re.findall(r'<tr data-meter="([^"]+)"', section(page, "meters"))

    assert meters("") == ["electric:E0001", "electric:E9001"]
    assert meters("?stale=1") == ["electric:E0001"]
    assert meters("?alarm=1") == ["electric:E9001"]
    assert meters("?gateway=g-west") == ["electric:E9001"]
    assert meters("?gateway=g-east&stale=1") == ["electric:E0001"]
    page = boss.get(LIST + "?gateway=g-east&alarm=1").get_data(as_text=True)
    assert "No remote meter matches these filters." in page
    assert '<option value="g-east" selected>' in page
    assert re.search(r'name="alarm" value="1" checked', page)
    assert not re.search(r'name="stale" value="1" checked', page)
    assert f'<a href="{LIST}">All meters</a>' in page
    alarm = row(boss.get(LIST).get_data(as_text=True), "data-meter", "electric:E9001")
    assert 'class="badge warn" data-level="alarm1"' in alarm and "Alarm 1" in text(alarm)


# One meter ------------------------------------------------------------------------------------


def test_meter_page_shows_readings_events_and_commands_newest_first(buses: Buses) -> None:
    cycle(buses, "g-east")  # the first reading: no credit in the wallet, so it is tripped
    buses.fleet.advance(dt.timedelta(hours=1))
    cycle(buses, "g-east")
    assert not buses.east.relay_closed
    page = login(buses.app, "audit").get(EAST).get_data(as_text=True)
    assert "Tripped for no credit" in text(page[page.index('id="meter-state"') :][:2000])
    readings = section(page, "readings")
    times = re.findall(r"<td>(2026-11-02 \d\d:\d\d:\d\d)</td>", readings)
    assert times == ["2026-11-02 09:00:00", "2026-11-02 08:00:00"]  # newest first
    assert "Remote reading" in text(readings)
    events = section(page, "events")
    assert re.findall(r'<tr data-event="([^"]+)"', events) == ["trip", "exhausted"]
    words = text(events)
    assert "Credit exhausted" in words and "Relay opened (tripped)" in words
    assert "by the reading service" in words and "credit ¥0.00" in words
    sent = section(page, "relay-commands")
    assert 'data-command="trip" data-status="done"' in sent
    assert "Reading service" in text(sent) and "Done" in text(sent)
    state = text(section(page, "state"))
    assert "Open: supply cut" in state and "alarm 1 at ¥20.00, alarm 2 at ¥5.00" in state
    assert 'id="commands"' not in page  # an auditor sends no commands
    assert "recharges" not in page  # billed by the server: no remote recharges

    zh = login(buses.app, "east", lang="zh_CN").get(EAST).get_data(as_text=True)
    assert "欠费自动拉闸/关阀" in zh and "近期读数" in zh
    assert "余额耗尽" in section(zh, "events") and "Credit exhausted" not in zh
    assert "<dt>保电</dt>" in zh and "Keep power" not in zh


def test_a_meter_that_keeps_its_credit_shows_what_it_reported(buses: Buses) -> None:
    set_state(buses, buses.east_id, billing="meter")
    buses.east.remaining, buses.east.price = Decimal("12.34"), Decimal("0.5")
    cycle(buses, "g-east")
    east = login(buses.app, "east")
    line = row(east.get(LIST).get_data(as_text=True), "data-meter", "electric:E0001")
    assert "¥12.34" in text(line) and 'data-level="alarm1"' in line  # under 20 yuan
    page = east.get(EAST).get_data(as_text=True)
    assert "¥12.34 on the meter" in text(section(page, "state"))
    assert "Meter keeps its credit" in text(section(page, "facts"))
    assert "No remote recharges yet." in section(page, "recharges")


def test_meter_page_is_for_the_meters_office(buses: Buses) -> None:
    west = login(buses.app, "west")
    r = west.get(EAST)
    assert r.status_code == 403 and "Not allowed" in r.get_data(as_text=True)
    assert west.get(WEST).status_code == 200
    r = west.get("/console/remote/meters/electric:NOPE")
    assert r.status_code == 404
    r = login(buses.app, "east").get("/console/remote/meters/water.cold:W0001")
    assert r.status_code == 404
    assert "Meter water.cold:W0001 is not read remotely." in r.get_data(as_text=True)


# Commands -------------------------------------------------------------------------------------


def test_a_command_needs_a_reason_and_sends_nothing_without_it(buses: Buses) -> None:
    mgr = login(buses.app, "mgr")
    r = post(mgr, EAST + "/trip", {"reason": "   "})
    assert r.status_code == 422
    page = r.get_data(as_text=True)
    form = page[page.index('id="command-trip"') : page.index('id="command-close"')]
    assert 'id="reason-trip-error"' in form
    assert "A reason is required: say why the command is sent" in text(form)
    assert 'aria-invalid="true"' in form
    assert 'id="reason-close-error"' not in page  # only the form that was sent
    assert buses.east.relay_closed and commands(buses) == [] and audited(buses) == []


def test_commands_need_meter_control_in_the_meters_office(buses: Buses) -> None:
    for who in ("east", "audit"):  # a cashier and an auditor: no meter.control
        client = login(buses.app, who)
        page = client.get(EAST).get_data(as_text=True)
        assert 'id="commands"' not in page and "/trip" not in page
        r = post(client, EAST + "/trip", {"reason": "unpaid"})
        assert r.status_code == 403 and "Not allowed" in r.get_data(as_text=True)
    west = login(buses.app, "west")
    assert post(west, EAST + "/trip", {"reason": "unpaid"}).status_code == 403
    mgr = login(buses.app, "mgr")  # a manager of E01: not of the west meter
    assert post(mgr, WEST + "/trip", {"reason": "unpaid"}).status_code == 403
    assert post(mgr, EAST + "/explode", {"reason": "x"}).status_code == 404
    assert buses.east.relay_closed and buses.west.relay_closed
    assert commands(buses) == [] and audited(buses) == []


def test_trip_keep_release_close_against_the_emulator(buses: Buses) -> None:
    mgr = login(buses.app, "mgr")
    page = mgr.get(EAST).get_data(as_text=True)
    for c in ("trip", "close", "keep", "release"):
        assert f'action="{EAST}/{c}"' in page
    r = post(mgr, EAST + "/trip", {"reason": "unpaid arrears"})
    assert r.status_code == 302 and r.headers["Location"].endswith(EAST)
    assert not buses.east.relay_closed
    page = mgr.get(EAST).get_data(as_text=True)
    assert "Trip: done. The relay reads Open: supply cut." in page
    sent = row(section(page, "relay-commands"), "data-command", "trip")
    assert "Mgr" in text(sent) and "unpaid arrears" in text(sent)
    assert "Tripped by an operator" in page
    assert post(mgr, EAST + "/keep", {"reason": "patient at home"}).status_code == 302
    assert buses.east.keep_power
    assert 'data-flag="keep"' in mgr.get(EAST).get_data(as_text=True)
    assert post(mgr, EAST + "/release", {"reason": "patient moved"}).status_code == 302
    assert post(mgr, EAST + "/close", {"reason": "arrears paid"}).status_code == 302
    assert buses.east.relay_closed and not buses.east.keep_power
    assert commands(buses) == [
        ("trip", "done", "unpaid arrears"),
        ("keep", "done", "patient at home"),
        ("release", "done", "patient moved"),
        ("close", "done", "arrears paid"),
    ]
    assert audited(buses) == ["meter.trip", "meter.keep", "meter.release", "meter.close"]
    customer = mgr.get(f"/console/customers/{buses.world.customer_number}")
    history = text(section(customer.get_data(as_text=True), "history"))
    assert "Meter relay closed mgr arrears paid" in history  # the counter sees why
    assert history.index("Meter relay closed") < history.index("Meter tripped")  # newest first
    zh = login(buses.app, "mgr", lang="zh_CN")
    r = post(zh, EAST + "/trip", {"reason": "欠费"})
    assert r.status_code == 302
    assert "拉闸/关阀：成功。读回状态：断：拉闸/关阀。" in zh.get(EAST).get_data(as_text=True)


def test_a_gateway_that_is_offline_is_reported(buses: Buses) -> None:
    buses.fleet.set_offline("east-bus")
    mgr = login(buses.app, "mgr")
    r = post(mgr, EAST + "/trip", {"reason": "unpaid arrears"})
    assert r.status_code == 502
    page = r.get_data(as_text=True)
    outcome = re.search(r'<p class="form-error" role="alert" id="command-outcome">(.*?)</p>', page)
    assert outcome and outcome.group(1).startswith(
        "Trip: not done. The gateway cannot be reached (offline:"
    ), outcome
    assert buses.east.relay_closed
    assert commands(buses) == [("trip", "failed", "unpaid arrears")]
    assert 'data-command="trip" data-status="failed"' in page and "Failed" in page


def test_a_meter_that_does_not_obey_is_a_bypass(buses: Buses) -> None:
    buses.east.relay_stuck = True
    mgr = login(buses.app, "mgr")
    r = post(mgr, EAST + "/trip", {"reason": "unpaid arrears"})
    assert r.status_code == 502
    page = r.get_data(as_text=True)
    assert "Trip: the meter did not obey. Its relay still reads Closed: supply on." in page
    assert 'data-flag="bypass"' in page
    events = section(page, "events")
    assert re.findall(r'<tr data-event="([^"]+)"', events) == ["trip", "bypass"]  # newest first
    assert "Bypass: supply on while tripped" in text(events)
    assert commands(buses) == [("trip", "mismatch", "unpaid arrears")]
    with buses.rt.sessions() as s:
        events = s.scalars(select(MeterEvent).order_by(MeterEvent.id))
        assert [e.event for e in events] == ["bypass", "trip"]


def test_a_busy_gateway_answers_409(buses: Buses, monkeypatch: pytest.MonkeyPatch) -> None:
    async def busy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise Conflict("the gateway is busy (held by other-host); try again shortly")

    monkeypatch.setattr(ReadingService, "manual", busy)
    mgr = login(buses.app, "mgr")
    r = post(mgr, EAST + "/close", {"reason": "arrears paid"})
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    form = page[page.index('id="command-close"') : page.index('id="command-keep"')]
    assert "The gateway is busy" in form and "held by other-host" in form
    assert 'value="arrears paid"' in form  # the reason stays for the retry
    assert commands(buses) == []


# Menu and customer page -----------------------------------------------------------------------


def test_menu_link_for_operators_who_see_customers(
    buses: Buses, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = login(buses.app, "east").get("/console/").get_data(as_text=True)
    nav = page[page.index("<nav") : page.index("</nav>")]
    assert f'<a href="{LIST}" accesskey="8"' in nav and "Remote meters" in nav
    zh = login(buses.app, "east", lang="zh_CN").get(LIST).get_data(as_text=True)
    nav = zh[zh.index("<nav") : zh.index("</nav>")]
    assert "远程表计" in nav and 'aria-current="page"' in nav
    with buses.rt.sessions() as s, s.begin():
        create_role(s, Actor(name="test"), name="teller", permissions=["sale.create"])
        create_operator(
            s, Actor(name="test"), username="teller", password="teller-pass-1",
            roles=[("teller", "E01")],
        )  # fmt: skip
    monkeypatch.setitem(PASSWORDS, "teller", "teller-pass-1")
    teller = login(buses.app, "teller")
    page = teller.get("/console/").get_data(as_text=True)
    assert LIST not in page
    assert teller.get(LIST).status_code == 403


def test_customer_page_shows_the_remote_meters(buses: Buses) -> None:
    number = buses.world.customer_number
    page = login(buses.app, "east").get(f"/console/customers/{number}").get_data(as_text=True)
    assert 'id="remote-events"' not in page  # never read: nothing happened yet
    cycle(buses, "g-east")  # no credit in the wallet: exhausted, and tripped
    set_state(buses, buses.east_id, stale=True)
    page = login(buses.app, "east").get(f"/console/customers/{number}").get_data(as_text=True)
    remote = section(page, "remote-meters")
    line = row(remote, "data-meter", "electric:E0001")
    assert f'href="{EAST}"' in line and "g-east" in text(line)
    assert 'data-flag="stale"' in line and "Tripped for no credit" in text(line)
    assert "Open: supply cut" in text(line)
    assert "W0001" not in remote  # the water meter is a card meter
    # why the supply is off, without leaving the customer's page
    events = remote[remote.index('id="remote-events"') :]
    assert re.findall(r'<tr data-event="([^"]+)" data-meter="electric:E0001"', events) == [
        "trip",
        "exhausted",
    ]
    words = text(events)
    assert "Relay opened (tripped)" in words and "by the reading service" in words
    assert "Credit exhausted" in words and "credit ¥0.00" in words
    zh = login(buses.app, "east", lang="zh_CN").get(f"/console/customers/{number}")
    assert "近期表计事件" in zh.get_data(as_text=True)
