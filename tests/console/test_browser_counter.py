"""The counter end to end in headless Chromium, with cards on the real PC/SC path.

pyscard -> pcscd -> vsmartcard's vpcd -> our card emulator, for the counter's reader and for the
card slot of the meters; the meters are our card meter emulators. The test is the customer's
hands: it puts the card on the reader, carries it to the meters and back.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from cardkit import new_uid
from flask import Flask
from pypdf import PdfReader
from sqlalchemy import func, select

from onecard import ledger
from onecard.card.emulator import MifareClassicCard
from onecard.card.meter import CardMeter, MeterSam
from onecard.card.reader import MifareReader, PcscTransport, wait_for_card
from onecard.card.vpcd import VirtualCardSlot
from onecard.demo import load_demo_tariffs
from onecard.ledger import accounts as acc
from onecard.models import CardPurchase, Customer, LedgerTransaction, Meter, MeterReading
from onecard.runtime import Runtime
from onecard.web import EXTENSION

from .conftest import LiveServer, browser_login, screenshot

pytestmark = [pytest.mark.pcsc, pytest.mark.browser]

SIX = ["electric", "heat", "gas", "water.cold", "water.hot", "water.recycled"]
SERIALS = {kind: f"{71000 + i}" for i, kind in enumerate(SIX)}
SOLD = {"electric": "100", "gas": "80.50", "water.cold": "50"}  # yuan, three meters
LANG = ["zh_CN"]  # the language of the running test, for the screenshots' names


class Hands:
    """The card's trips: on the counter's reader, and into a meter's card slot."""

    def __init__(self, pcscd_service: Any) -> None:
        names = pcscd_service.reader_names()
        self.counter_name, self.meter_name = names[0], names[1]
        self.counter = VirtualCardSlot(pcscd_service.port_of(self.counter_name))
        self.meter_slot = VirtualCardSlot(pcscd_service.port_of(self.meter_name))

    def to_counter(self, card: MifareClassicCard) -> None:
        self.off_counter()
        self.counter.insert(card)
        assert wait_for_card(self.counter_name, present=True, timeout=5)

    def off_counter(self) -> None:
        if self.counter.present:
            self.counter.remove()
        wait_for_card(self.counter_name, present=False, timeout=5)

    def into_meter(self, meter: CardMeter, card: MifareClassicCard) -> str:
        """Insert the card into the meter (it loads and writes its return record); take it out."""
        self.meter_slot.insert(card)
        try:
            transport = PcscTransport.open(self.meter_name, wait=5)
            try:
                return meter.insert(MifareReader(transport)).code
            finally:
                transport.close()
        finally:
            self.meter_slot.remove()
            wait_for_card(self.meter_name, present=False, timeout=5)

    def close(self) -> None:
        self.off_counter()
        if self.meter_slot.present:
            self.meter_slot.remove()


@pytest.fixture
def hands(pcscd_service: Any) -> Iterator[Hands]:
    h = Hands(pcscd_service)
    try:
        yield h
    finally:
        h.close()


def runtime_of(app: Flask) -> Runtime:
    rt: Runtime = app.extensions[EXTENSION]
    return rt


def meters_for(app: Flask) -> dict[str, CardMeter]:
    """One card meter emulator per meter of the new customer, keyed by the site's keys."""
    rt = runtime_of(app)
    store = rt.card_desk().keystore

    def keys_for(uid: bytes, version: int) -> Any:
        with rt.sessions() as session:  # short: on SQLite a held read would block the server
            return store.card_keys(session, uid, version)

    with rt.sessions() as session:
        site_id = store.site_id(session)
    sam = MeterSam(site_id, keys_for)
    return {k: CardMeter(rt.utilities.get(k), SERIALS[k], sam) for k in SIX}


def sale_count(app: Flask) -> tuple[int, int]:
    with runtime_of(app).sessions() as s:
        purchases = s.scalar(select(func.count()).select_from(CardPurchase))
        sales = s.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.kind == "sale")
        )
        return int(purchases or 0), int(sales or 0)


def wallet_fen(app: Flask, serial: str) -> int:
    with runtime_of(app).sessions() as s:
        meter = s.scalar(select(Meter).where(Meter.serial == serial))
        assert meter is not None
        return acc.natural_balance(acc.get_account(s, acc.meter_wallet_code(meter.id)))


def open_account(page: Any) -> str:
    """Fill in the account form for a six-meter customer and issue the card; the number."""
    page.goto("/console/customers/new")
    page.select_option("#office", "E01")
    page.fill("#name", "赵敏")
    page.fill("#phone", "13800001234")
    page.fill("#building", "3号楼")
    page.fill("#unit", "2单元0502")
    page.fill("#floor_area", "86.50")
    page.fill("#heated_area", "80")
    rows = page.locator("select[id^=kind_]").count()
    for i in range(rows):
        kind = SIX[i] if i < len(SIX) else ""
        page.select_option(f"#kind_{i}", kind)
        page.fill(f"#serial_{i}", SERIALS[kind] if kind else "")
    page.check("input[name=issue]")
    page.select_option("#profile", "six")
    screenshot(page, f"open-account-{LANG[0]}")
    page.click("form.card button[type=submit]")
    page.wait_for_load_state()
    match = re.search(r"/console/customers/([A-Za-z0-9-]+)", page.url)
    assert match, page.url
    return match.group(1)


def sell_three(page: Any) -> str:
    """Read the card for a sale, enter three amounts, watch the quotes, confirm; the sale page."""
    page.goto("/console/counter/sell")
    for kind, yuan in SOLD.items():
        page.fill(f"#amount-{SERIALS[kind]}", yuan)
    quote = page.locator(f"tr[data-meter='{SERIALS['electric']}'] [data-quote]")
    page.wait_for_function("el => el.textContent.trim().length > 0", arg=quote.element_handle())
    assert "100.00" in page.inner_text("#sale-total") or "230.50" in page.inner_text("#sale-total")
    page.wait_for_function(
        "() => document.querySelector('#sale-total').textContent.trim() === '230.50'"
    )
    screenshot(page, f"sell-{LANG[0]}")
    # a double click on confirm: one sale
    page.dblclick("#sale-form button[type=submit]")
    page.wait_for_selector("#receipt-link")
    screenshot(page, f"sale-done-{LANG[0]}")
    href = page.get_attribute("#receipt-link", "href")
    assert href
    return str(href)


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_a_day_at_the_counter(
    page: Any, live: LiveServer, live_app: Flask, hands: Hands, chromium: Any, lang: str
) -> None:
    LANG[0] = "zh" if lang == "zh_CN" else "en"
    rt = runtime_of(live_app)
    with rt.sessions() as s, s.begin():
        load_demo_tariffs(s, rt.utilities)
    card = MifareClassicCard(new_uid())
    hands.to_counter(card)

    # log in and open an account with a six-meter card issued on the emulated reader
    browser_login(page, "east", lang)
    page.goto("/console/")
    screenshot(page, f"dashboard-{LANG[0]}")
    number = open_account(page)
    body = page.inner_text("main")
    assert "赵敏" in body and card.uid.hex().upper() in body.upper()
    with rt.sessions() as s:
        customer = s.scalar(select(Customer).where(Customer.number == number))
        assert customer is not None and customer.office.code == "E01"

    # sell to three meters: the quote updates as we type; a double-clicked confirm sells once
    before = sale_count(live_app)
    receipt_url = sell_three(page)
    after = sale_count(live_app)
    assert after[0] - before[0] == 3
    assert after[1] - before[1] >= 1
    for kind, yuan in SOLD.items():
        assert wallet_fen(live_app, SERIALS[kind]) == int(Decimal(yuan) * 100)

    # the receipt: download it and read its text
    pdf = page.request.get(receipt_url)
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages)
    assert "赵敏" in text
    assert "230.50" in text
    for kind, yuan in SOLD.items():
        assert SERIALS[kind] in text
        assert f"{Decimal(yuan):.2f}" in text
    number_on_receipt = re.search(r"E01-\d{8}-\d{6}", text)
    assert number_on_receipt, text
    assert card.uid.hex().upper() in text.upper()

    # carry the card to the three meters: each loads its purchase and writes back its use
    hands.off_counter()
    meters = meters_for(live_app)
    for kind in SOLD:
        meter = meters[kind]
        assert hands.into_meter(meter, card) == "loaded"
        meter.consume(Decimal("12.5"))
        assert hands.into_meter(meter, card) == "already_loaded"  # writes the return record
    used = {kind: meters[kind].cumulative for kind in SOLD}
    assert all(v > 0 for v in used.values())

    # read the card back at the counter: the use the meters wrote is uploaded and shown
    hands.to_counter(card)
    page.goto("/console/counter/card")
    shown = page.inner_text("main")
    screenshot(page, f"read-card-{LANG[0]}")
    with rt.sessions() as s:
        readings = {
            r.meter_id: r
            for r in s.scalars(select(MeterReading).where(MeterReading.source == "card"))
        }
        wanted = select(Meter).where(Meter.serial.in_(SERIALS.values()))
        by_serial = {m.serial: m.id for m in s.scalars(wanted)}
    for kind in SOLD:
        reading = readings.get(by_serial[SERIALS[kind]])
        assert reading is not None and reading.cumulative == used[kind]
        assert reading.last_seq == 1
    assert "12.5" in shown
    page.goto(f"/console/customers/{number}")
    assert "12.5" in page.inner_text("main")
    screenshot(page, f"customer-{LANG[0]}")

    # a cashier of the other office is refused the customer
    other = chromium.new_context(base_url=live.url)
    try:
        west = other.new_page()
        browser_login(west, "west")
        response = west.goto(f"/console/customers/{number}")
        assert response is not None and response.status == 403
        assert "赵敏" not in west.inner_text("main")
    finally:
        other.close()

    # the card is pulled during the write: a pending sale, finished without double credit
    page.goto("/console/counter/sell")
    page.fill(f"#amount-{SERIALS['water.hot']}", "30")
    page.wait_for_function(
        "() => document.querySelector('#sale-total').textContent.trim() === '30.00'"
    )
    real_transmit = card.transmit
    writes = {"n": 0}

    def pull_after_first_write(apdu: bytes) -> bytes:
        answer = real_transmit(apdu)
        if apdu[:2] == b"\xff\xd6":
            writes["n"] += 1
            if writes["n"] == 1:
                hands.counter.cut_after(1, execute=False)
        return answer

    card.transmit = pull_after_first_write  # type: ignore[method-assign]
    page.click("#sale-form button[type=submit]")
    page.wait_for_selector("form[action*='/finish']")
    screenshot(page, f"pending-sale-{LANG[0]}")
    card.transmit = real_transmit  # type: ignore[method-assign]
    hot = SERIALS["water.hot"]
    with rt.sessions() as s:
        pending = s.scalars(select(CardPurchase).where(CardPurchase.status == "pending")).all()
        assert [p.amount for p in pending] == [3000]
    assert wallet_fen(live_app, hot) == 0
    hands.off_counter()
    hands.to_counter(card)  # the customer puts the card back
    page.click("form[action*='/finish'] button[type=submit]")
    page.wait_for_selector("#receipt-link")
    page.reload()  # a browser retry of the finished sale
    assert wallet_fen(live_app, hot) == 3000
    with rt.sessions() as s:
        assert s.scalars(select(CardPurchase).where(CardPurchase.status == "pending")).all() == []
        report = ledger.verify(s)
        assert report.ok, report
    assert hands.into_meter(meters["water.hot"], card) == "loaded"
    assert meters["water.hot"].credit > 0
