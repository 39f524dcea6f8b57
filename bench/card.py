"""Card sales through the real PC/SC path: APDUs and wall time per sale to 1, 4 and 8 meters.

What it measures
----------------
One eight-meter card (MIFARE Classic 1K, our emulator) sits in a virtual reader of ``pcscd``
(vsmartcard's vpcd driver); the office sells to 1, 4 or 8 of its meters with
``CardDesk.sell`` through pyscard. A sale is the whole counter operation: read and check the
header, read the sold slots' return records, commit the purchases as pending, write and verify
them, post them to the ledger (SQLite, a temporary file) and confirm.

Between two sales the card "visits its meters": the card meter emulators load the purchases
straight from the card object (not timed), so the next sale is allowed; then the office reader
connects to the card again, as when a customer presents it (timed apart, as ``connect``).

Beside each figure:

* ``minimum``: the fewest APDUs such a sale needs (``onecard.card.cardio.sale_apdu_budget``:
  UID, header, key loads, one authentication per sector and pass, the return-record reads and
  the purchase writes); onecard adds one verify read per written block, nothing else.
* the baseline: the same sale on the same code with the emulator called in-process (no pcscd),
  measured in the same run; ``pcsc_over_direct`` is the ratio of the two wall times.

Target: APDUs no more than ``minimum`` + one verify read per written block, and at least 10
sales per second through pcscd.

Run
---
From the repository root (pcscd and vsmartcard-vpcd installed, as ``make install`` does)::

    .venv/bin/python bench/card.py            # about 25 s
    .venv/bin/python bench/card.py --quick    # a smoke run

It starts its own pcscd (or reuses one that already serves onecard's virtual readers) and stops
what it started. The last line is ``RESULT name=value ...``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from onecard import customers as cust
from onecard import ledger
from onecard import offices as off
from onecard.audit import Actor
from onecard.card import profiles as prof
from onecard.card.cardio import sale_apdu_budget
from onecard.card.emulator import MifareClassicCard
from onecard.card.keys import KeyStore
from onecard.card.meter import CardMeter, MeterSam
from onecard.card.pcscd import PcscdService
from onecard.card.reader import MifareReader, PcscTransport, wait_for_card
from onecard.card.service import CardDesk, SaleItem
from onecard.card.vpcd import VirtualCardSlot
from onecard.db import create_db_engine, session_factory, upgrade
from onecard.operators import ensure_default_roles
from onecard.plugins import load_plugins

ACTOR = Actor(name="bench")
KINDS = ("electric", "electric", "heat", "gas", "water.cold", "water.hot", "water.recycled",
         "water.purified")  # fmt: skip
SIZES = (1, 4, 8)


class Site:
    """A temporary installation with one customer, eight card meters and an issued card."""

    def __init__(self, folder: Path) -> None:
        self.engine = create_db_engine(f"sqlite:///{folder / 'bench.db'}")
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        self.plugins = load_plugins()
        self.store = KeyStore(bytes(range(32)))
        with self.sessions() as s, s.begin():
            ensure_default_roles(s)
            off.create_office(s, ACTOR, code="E01", name="Bench office")
            self.store.init_site(s, 9001, "bench")
            customer = cust.open_account(
                s,
                ACTOR,
                self.plugins.utilities,
                office="E01",
                name="Bench",
                meters=[cust.MeterSpec(k, str(700000000001 + i)) for i, k in enumerate(KINDS)],
            )
            self.customer = customer.number
            self.serials = [m.serial for p in customer.premises for m in p.meters]
            self.card_map = prof.card_map(prof.get_profile(s, "eight"), self.plugins.utilities)
        self.desk = CardDesk(self.sessions, self.plugins.utilities, self.store)
        sam = MeterSam(9001, self._card_keys)
        self.meters = [
            CardMeter(self.plugins.utilities.get(k), s, sam)
            for k, s in zip(KINDS, self.serials, strict=True)
        ]
        self.card = MifareClassicCard(bytes.fromhex("5A5A0001"))
        self.desk.issue(MifareReader(self.card), ACTOR, customer=self.customer, profile="eight")
        self.keys = 0

    def _card_keys(self, uid: bytes, version: int) -> Any:
        with self.sessions() as s:  # a short transaction: SQLite has one writer at a time
            return self.store.card_keys(s, uid, version)

    def visit_meters(self, count: int) -> None:
        """The card goes to its meters: each loads its purchase (in-process, not timed)."""
        for meter in self.meters[:count]:
            visit = meter.insert(MifareReader(self.card))
            if not visit.accepted:
                raise RuntimeError(f"meter {meter.serial} refused the card: {visit.message}")

    def sale(self, reader: MifareReader, count: int) -> dict[str, Any]:
        self.keys += 1
        items = [SaleItem(s, 100) for s in self.serials[:count]]
        return self.desk.sell(reader, ACTOR, sale_key=f"bench-{self.keys}", items=items)

    def close(self) -> None:
        with self.sessions() as s:
            report = ledger.verify(s)
        self.engine.dispose()
        if not report.ok:
            raise RuntimeError(f"the ledger does not verify after the benchmark: {report}")


def measure(
    site: Site, count: int, seconds: float, connect: Callable[[], MifareReader]
) -> dict[str, float]:
    times, connects, apdus = [], [], []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        site.visit_meters(count)
        t0 = time.perf_counter()
        reader = connect()
        t1 = time.perf_counter()
        out = site.sale(reader, count)
        t2 = time.perf_counter()
        if out["status"] != "confirmed":
            raise RuntimeError(f"sale not confirmed: {out}")
        connects.append(t1 - t0)
        times.append(t2 - t1)
        apdus.append(reader.apdu_count)
    if len(set(apdus)) != 1:
        raise RuntimeError(f"APDU counts vary between equal sales: {sorted(set(apdus))}")
    return {
        "sales": len(times),
        "ms": statistics.median(times) * 1000,
        "connect_ms": statistics.median(connects) * 1000,
        "per_s": 1 / statistics.median(times),
        "apdus": apdus[0],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="per size and path")
    parser.add_argument("--quick", action="store_true", help="0.5 s per size and path")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = 0.5 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="onecard-bench-card-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        service = PcscdService(folder / "pcscd")
        service.start()
        stack.callback(service.stop)  # whatever fails below, pcscd does not outlive the run
        reader_name = service.reader_names()[0]
        slot = VirtualCardSlot(service.port_of(reader_name))
        site = Site(folder)
        stack.callback(site.close)
        transport: list[PcscTransport] = []
        slot.insert(site.card)
        stack.callback(slot.remove)
        stack.callback(lambda: [t.close() for t in transport])
        if not wait_for_card(reader_name, present=True, timeout=5):
            raise RuntimeError(f"pcscd does not see the card in {reader_name}")

        def through_pcscd() -> MifareReader:
            for old in transport:
                old.close()
            transport[:] = [PcscTransport.open(reader_name)]
            return MifareReader(transport[0])

        def direct() -> MifareReader:
            return MifareReader(site.card)

        rows = []
        for count in SIZES:
            minimum, verify = sale_apdu_budget(site.card_map, site.card_map.slots[:count])
            base = measure(site, count, seconds, direct)
            real = measure(site, count, seconds, through_pcscd)
            rows.append((count, minimum, verify, base, real))

    print(f"{'meters':>6} {'APDUs':>6} {'minimum':>8} {'+verify':>8} {'pcscd ms':>9} "
          f"{'sales/s':>8} {'direct ms':>10} {'ratio':>6} {'connect ms':>11}")  # fmt: skip
    result = []
    ok = True
    for count, minimum, verify, base, real in rows:
        ratio = real["ms"] / base["ms"]
        print(
            f"{count:>6} {real['apdus']:>6} {minimum:>8} {minimum + verify:>8} "
            f"{real['ms']:>9.1f} {real['per_s']:>8.1f} {base['ms']:>10.1f} {ratio:>6.2f} "
            f"{real['connect_ms']:>11.1f}"
        )
        ok = ok and real["apdus"] <= minimum + verify and real["per_s"] >= 10
        result += [
            f"apdus_{count}={real['apdus']}",
            f"min_apdus_{count}={minimum}",
            f"sales_per_s_{count}={real['per_s']:.1f}",
            f"pcsc_over_direct_{count}={ratio:.2f}",
        ]
    print("targets (APDUs <= minimum + verify reads, >= 10 sales/s):", "met" if ok else "NOT met")
    print("RESULT " + " ".join(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
