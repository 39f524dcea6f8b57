"""The counter's sale from "confirm" to "receipt ready", beside the sum of its parts.

What it measures
----------------
One customer holds four card meters (electric, gas, cold and hot water, each under the demo's
sample tariff) on one issued card (profile ``six``, MIFARE Classic 1K, our emulator) in a virtual
reader of ``pcscd`` (vsmartcard's vpcd driver). A *sale* is what the console does when the cashier
confirms a sale of 100 yuan to each of the four meters:

1. connect to the card through pyscard and ``CardDesk.sell`` (read and check the card and its
   return records, quote each meter under its tariff, commit the purchases as pending, write and
   verify the four purchase records, post them to the ledger and confirm);
2. make the sale's receipt (``receipts.issue_sale_receipt``, committed);
3. render it to PDF (``receipts.render_pdf``, weasyprint): the receipt is ready.

Its parts are measured alone in the same run, on the same installation:

card
    writing and verifying the same four purchase records (the bytes the last sale wrote) through
    pcscd, on an open connection: authentications, block writes, read-backs;
ledger
    four ledger sale postings (one per meter wallet) in one committed transaction, as the
    confirmation posts them;
pdf
    rendering the last receipt to PDF again.

``whole_over_parts`` is the sale's median time over the sum of the parts' medians: what the rest
(connecting, reading and checking the card, quoting, the pending commit, the receipt's data and
number) costs on top. Between two sales the card visits its four meters (card meter emulators,
in-process, not timed), so that the next sale is allowed. The first sale and render are a warm-up
(weasyprint loads its fonts) and are not counted.

Run
---
From the repository root (pcscd and vsmartcard-vpcd installed, as ``make install`` does)::

    .venv/bin/python bench/counter.py             # 20 sales, about 15 s
    .venv/bin/python bench/counter.py --quick     # 3 sales, a smoke run
    .venv/bin/python bench/counter.py --sales 50

It starts its own pcscd (or reuses one that already serves onecard's virtual readers) and stops
what it started. The last line is ``RESULT name=value ...`` (times in milliseconds, medians).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from onecard import customers as cust
from onecard import ledger, receipts
from onecard import offices as off
from onecard.audit import Actor
from onecard.card import profiles as prof
from onecard.card.cardio import CardIO
from onecard.card.emulator import MifareClassicCard
from onecard.card.keys import CardKeys, KeyStore
from onecard.card.meter import CardMeter, MeterSam
from onecard.card.pcscd import PcscdService
from onecard.card.reader import MifareReader, PcscTransport, wait_for_card
from onecard.card.service import CardDesk, SaleItem
from onecard.card.vpcd import VirtualCardSlot
from onecard.db import create_db_engine, session_factory, upgrade
from onecard.demo import load_demo_tariffs
from onecard.ledger import accounts as acc
from onecard.models import CardPurchase, Meter
from onecard.operators import ensure_default_roles
from onecard.plugins import load_plugins

ACTOR = Actor(name="bench")
KINDS = ("electric", "gas", "water.cold", "water.hot")
PROFILE = "six"
SITE_ID = 9002
FEN = 10_000  # 100 yuan per meter per sale


# The receipt: the one place that knows the receipts module's functions -------------------------


def make_receipt(site: Site, sale_key: str) -> bytes:
    """Make the sale's receipt (committed) and render it: the PDF the cashier prints."""
    with site.sessions() as session:
        with session.begin():
            receipt = receipts.issue_sale_receipt(session, site.plugins.utilities, sale_key)
        return render_receipt(site, receipt.number)


def render_receipt(site: Site, number: str) -> bytes:
    with site.sessions() as session:
        return receipts.render_pdf(receipts.get_receipt(session, number), locale="zh_CN")


# The installation -------------------------------------------------------------------------------


class Site:
    """A temporary installation: one office, one customer with four card meters, one card."""

    def __init__(self, folder: Path) -> None:
        self.engine = create_db_engine(f"sqlite:///{folder / 'bench.db'}")
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        self.plugins = load_plugins()
        self.store = KeyStore(bytes(range(32)))
        with self.sessions() as s, s.begin():
            ensure_default_roles(s)
            off.create_office(s, ACTOR, code="E01", name="Bench office")
            self.store.init_site(s, SITE_ID, "bench")
            load_demo_tariffs(s, self.plugins.utilities)
            customer = cust.open_account(
                s,
                ACTOR,
                self.plugins.utilities,
                office="E01",
                name="Bench",
                floor_area="80",
                heated_area="80",
                meters=[cust.MeterSpec(k, str(710000000001 + i)) for i, k in enumerate(KINDS)],
            )
            self.customer = customer.number
            self.office_id = customer.office_id
            self.serials = [m.serial for p in customer.premises for m in p.meters]
            self.wallets = [
                acc.meter_wallet_code(m.id) for p in customer.premises for m in p.meters
            ]
            self.card_map = prof.card_map(prof.get_profile(s, PROFILE), self.plugins.utilities)
        self.desk = CardDesk(self.sessions, self.plugins.utilities, self.store)
        sam = MeterSam(SITE_ID, self.card_keys)
        self.meters = [
            CardMeter(self.plugins.utilities.get(k), s, sam)
            for k, s in zip(KINDS, self.serials, strict=True)
        ]
        self.card = MifareClassicCard(bytes.fromhex("5A5A0002"))
        self.desk.issue(MifareReader(self.card), ACTOR, customer=self.customer, profile=PROFILE)
        self.sales = 0
        self.postings = 0

    def card_keys(self, uid: bytes, version: int | None = None) -> CardKeys:
        with self.sessions() as s:  # a short transaction: SQLite has one writer at a time
            return self.store.card_keys(s, uid, version)

    def visit_meters(self) -> None:
        """The card goes to its meters: each loads its purchase (in-process, not timed)."""
        for meter in self.meters:
            visit = meter.insert(MifareReader(self.card))
            if not visit.accepted:
                raise RuntimeError(f"meter {meter.serial} refused the card: {visit.message}")

    def sell(self, reader: MifareReader) -> str:
        self.sales += 1
        key = f"bench-counter-{self.sales}"
        items = [SaleItem(s, FEN) for s in self.serials]
        out = self.desk.sell(reader, ACTOR, sale_key=key, items=items)
        if out["status"] != "confirmed":
            raise RuntimeError(f"sale not confirmed: {out}")
        return key

    def written_records(self, sale_key: str) -> dict[int, bytes]:
        """Slot index -> the purchase record bytes the sale wrote (as they are on the card)."""
        with self.sessions() as s:
            slots = list(
                s.scalars(
                    select(CardPurchase.slot)
                    .where(CardPurchase.sale_key == sale_key)
                    .order_by(CardPurchase.slot)
                )
            )
        return {
            i: b"".join(self.card.block(b) for b in self.card_map.slot(i).purchase_blocks)
            for i in slots
        }

    def post_to_ledger(self) -> None:
        """Four ledger sales in one transaction, as the confirmation posts them."""
        with self.sessions() as s, s.begin():
            for wallet in self.wallets:
                self.postings += 1
                ledger.sale(
                    s,
                    wallet=wallet,
                    amount=FEN,
                    office_id=self.office_id,
                    idempotency_key=f"bench-ledger-{self.postings}",
                    method="cash",
                )

    def close(self) -> None:
        with self.sessions() as s:
            report = ledger.verify(s)
        self.engine.dispose()
        if not report.ok:
            raise RuntimeError(f"the ledger does not verify after the benchmark: {report}")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sales", type=int, default=20, help="sales measured (default 20)")
    parser.add_argument("--quick", action="store_true", help="3 sales: a smoke run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    n = 3 if args.quick else max(1, args.sales)
    whole: list[float] = []
    parts: dict[str, list[float]] = {"card": [], "ledger": [], "pdf": []}
    pdf_size = 0
    with tempfile.TemporaryDirectory(prefix="onecard-bench-counter-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        service = PcscdService(folder / "pcscd")
        service.start()
        stack.callback(service.stop)  # whatever fails below, pcscd does not outlive the run
        reader_name = service.reader_names()[0]
        slot = VirtualCardSlot(service.port_of(reader_name))
        site = Site(folder)
        stack.callback(site.close)
        slot.insert(site.card)
        stack.callback(slot.remove)
        if not wait_for_card(reader_name, present=True, timeout=5):
            raise RuntimeError(f"pcscd does not see the card in {reader_name}")
        keys = site.card_keys(site.card.uid)

        def sale_to_receipt() -> tuple[str, bytes]:
            transport = PcscTransport.open(reader_name)
            try:
                key = site.sell(MifareReader(transport))
            finally:
                transport.close()
            return key, make_receipt(site, key)

        card_apdus: list[int] = []

        def card_alone(records: dict[int, bytes]) -> float:
            transport = PcscTransport.open(reader_name)
            try:
                reader = MifareReader(transport)
                io = CardIO(reader, site.card_keys, SITE_ID)
                ms, bad = timed(lambda: io.write_purchases(keys, records, site.card_map))
            finally:
                transport.close()
            if bad:
                raise RuntimeError(f"blocks {bad} did not read back")
            card_apdus[:] = [reader.apdu_count]
            return ms

        for i in range(n + 1):  # the first round is a warm-up
            site.visit_meters()
            ms, (key, pdf) = timed(sale_to_receipt)
            records = site.written_records(key)
            card_ms = card_alone(records)
            ledger_ms, _ = timed(site.post_to_ledger)
            pdf_ms, again = timed(partial(render_receipt, site, receipt_number(site, key)))
            if i == 0:
                continue
            whole.append(ms)
            parts["card"].append(card_ms)
            parts["ledger"].append(ledger_ms)
            parts["pdf"].append(pdf_ms)
            pdf_size = len(again)
            if not pdf.startswith(b"%PDF") or len(records) != len(KINDS):
                raise RuntimeError("the sale did not make a four-meter receipt")
        with site.sessions() as s:
            meters = s.scalar(select(func.count()).select_from(Meter))

    med = {name: statistics.median(values) for name, values in parts.items()}
    total = statistics.median(whole)
    parts_sum = sum(med.values())
    print(f"{n} sales of 4 x {FEN // 100} yuan through pcscd ({meters} meters, PDF {pdf_size} B)")
    print(f"{'':<28}{'median ms':>10}{'min ms':>9}{'max ms':>9}")
    rows = [("confirm -> receipt ready", whole)] + [
        (f"  {name} alone", values) for name, values in parts.items()
    ]
    for label, values in rows:
        print(
            f"{label:<28}{statistics.median(values):>10.1f}{min(values):>9.1f}{max(values):>9.1f}"
        )
    print(f"{'  sum of the parts':<28}{parts_sum:>10.1f}")
    print(f"whole / sum of parts: {total / parts_sum:.2f}")
    result = [
        f"sales={n}",
        f"sale_to_receipt_ms={total:.1f}",
        f"card_write_verify_ms={med['card']:.1f}",
        f"card_write_verify_apdus={card_apdus[0]}",
        f"ledger_postings_ms={med['ledger']:.1f}",
        f"pdf_render_ms={med['pdf']:.1f}",
        f"parts_sum_ms={parts_sum:.1f}",
        f"whole_over_parts={total / parts_sum:.2f}",
    ]
    print("RESULT " + " ".join(result), flush=True)
    return 0


def receipt_number(site: Site, sale_key: str) -> str:
    with site.sessions() as s:
        found = receipts.receipt_for_sale(s, sale_key)
        if found is None:
            raise RuntimeError(f"no receipt for {sale_key}")
        return found.number


if __name__ == "__main__":
    sys.exit(main())
