"""The demo lab: the customer's hands and the meters in the field, emulated for ``onecard demo``.

A :class:`Lab` keeps, in a folder of the instance (``instance/lab/``):

``cards.json`` and ``cards/<UID>.bin``
    a wallet of emulated MIFARE Classic cards: each card's memory image (as
    :meth:`MifareClassicCard.save` writes it) and a label;
``meters/<kind>-<serial>.json``
    the state of each card meter emulator (:class:`~onecard.card.meter.CardMeter`), whose
    security module derives card keys from the installation's :class:`KeyStore`.

A card can be put on the office's *counter* reader or on the *manager* reader (for a manager's
authorisation), taken off again, or carried to a meter: the meter reads it in-process (a
:class:`MifareReader` over the card object, as in the field there is no PC/SC), loads its
purchase and writes its return record. The card on a reader is the wallet's own object, so what
the counter writes is what the meter later reads; its image is saved after every lab operation.

The readers are *slots*: :class:`~onecard.card.vpcd.VirtualCardSlot` behind pcscd (the demo), or
:class:`MemorySlot` in-process (tests, :meth:`Lab.open_reader` as the app's reader factory). A
missing slot is a reader that is not available. No Flask here; every method is thread-safe.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard.card.emulator import MifareClassicCard
from onecard.card.keys import CardKeys, KeyStore
from onecard.card.layout import SlotLayout
from onecard.card.meter import CardMeter, MeterSam, Visit
from onecard.card.reader import MifareReader
from onecard.errors import InvalidInput, NoCard, NoReader, NotFound
from onecard.models import Card, CardSlot, Customer, Meter, Operator, utcnow
from onecard.utility import UtilityRegistry

#: ``app.extensions`` key of the app's lab.
EXTENSION = "onecard_lab"
#: The lab's readers: the office's counter reader, and the manager's reader for authorisations.
PLACES = ("counter", "manager")
SIZES = ("1k", "4k")
INDEX_FORMAT = 1
#: Use per hour when the lab page gives no rate: about one yuan's worth an hour on a money meter
#: (at the meter's price), twenty of the kind's smallest units on a units meter. Kind-neutral: the
#: core names no utility.
YUAN_PER_HOUR = Decimal(1)
UNITS_PER_HOUR = 20
_UID = re.compile(r"^(?:[0-9A-F]{8}|[0-9A-F]{14})$")
_EVENTS_SHOWN = 6


class Slot(Protocol):
    """A reader slot a card can be put into (VirtualCardSlot or MemorySlot)."""

    @property
    def present(self) -> bool: ...

    @property
    def card(self) -> MifareClassicCard | None: ...

    def insert(self, card: MifareClassicCard) -> None: ...

    def remove(self) -> None: ...


class MemorySlot:
    """An in-process reader slot: :meth:`open` gives a reader on the card in it (no PC/SC)."""

    def __init__(self) -> None:
        self._card: MifareClassicCard | None = None
        self._present = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = f"card {self._card.uid.hex().upper()}" if self._present and self._card else "empty"
        return f"MemorySlot({state})"

    @property
    def present(self) -> bool:
        return self._present

    @property
    def card(self) -> MifareClassicCard | None:
        return self._card

    def insert(self, card: MifareClassicCard) -> None:
        with self._lock:
            if self._present:
                raise RuntimeError(f"{self!r} already holds a card: remove() it first")
            self._card, self._present = card, True
            card.reset()

    def remove(self) -> None:
        with self._lock:
            self._present = False

    @contextmanager
    def open(self) -> Iterator[MifareReader]:
        """A reader on the card in the slot (NoCard when it is empty)."""
        with self._lock:
            card = self._card if self._present else None
        if card is None:
            raise NoCard("no card on the reader: put the card on it")
        yield MifareReader(card)


@dataclass(frozen=True)
class MeterRef:
    """A meter of a card in the wallet: its kind and serial, as the meter emulator knows it."""

    kind: str
    serial: str

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.serial}"


class Lab:
    """The demo's emulated cards and meters (see the module docstring)."""

    def __init__(
        self,
        folder: Path | str,
        sessions: sessionmaker[Session],
        utilities: UtilityRegistry,
        keystore: KeyStore,
        *,
        slots: Mapping[str, Slot | None] | None = None,
        reader_names: Mapping[str, str] | None = None,
        unavailable: str = "",
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.sessions = sessions
        self.utilities = utilities
        self.keystore = keystore
        self.slots: dict[str, Slot | None] = {p: (slots or {}).get(p) for p in PLACES}
        self.reader_names: dict[str, str] = dict(reader_names or {})
        #: Why the readers are not available (shown in the lab), if they are not.
        self.unavailable = unavailable
        self._clock = clock
        self._lock = threading.RLock()
        self._cards: dict[str, MifareClassicCard] = {}
        self._meters: dict[str, CardMeter] = {}
        self._sam: MeterSam | None = None
        (self.folder / "cards").mkdir(parents=True, exist_ok=True)
        (self.folder / "meters").mkdir(parents=True, exist_ok=True)
        self._index = self._read_index()

    def __repr__(self) -> str:
        return f"Lab({self.folder}, {len(self._index)} cards)"

    # The wallet -----------------------------------------------------------------------------

    @property
    def index_file(self) -> Path:
        return self.folder / "cards.json"

    def _read_index(self) -> dict[str, dict[str, str]]:
        if not self.index_file.exists():
            return {}
        data = json.loads(self.index_file.read_text("utf-8"))
        if data.get("format") != INDEX_FORMAT:
            raise InvalidInput(f"{self.index_file}: not a lab wallet of format {INDEX_FORMAT}")
        return {str(c["uid"]): {k: str(v) for k, v in c.items()} for c in data["cards"]}

    def _write_index(self) -> None:
        body = {"format": INDEX_FORMAT, "cards": list(self._index.values())}
        tmp = self.index_file.with_name(self.index_file.name + ".tmp")
        tmp.write_text(json.dumps(body, ensure_ascii=False, indent=2) + "\n", "utf-8")
        os.replace(tmp, self.index_file)

    def _image(self, uid: str) -> Path:
        return self.folder / "cards" / f"{uid}.bin"

    def _save_card(self, card: MifareClassicCard) -> None:
        uid = card.uid.hex().upper()
        path = self._image(uid)
        tmp = path.with_name(path.name + ".tmp")
        card.save(tmp)
        os.replace(tmp, path)

    def card(self, uid: str) -> MifareClassicCard:
        """The wallet's card ``uid`` (the same object for as long as the lab runs)."""
        uid = _norm_uid(uid)
        with self._lock:
            if uid not in self._index:
                raise NotFound(f"no card {uid} in the lab's wallet", field="uid")
            found = self._cards.get(uid)
            if found is None:
                found = MifareClassicCard.load(self._image(uid), uid=bytes.fromhex(uid))
                self._cards[uid] = found
            return found

    def add_card(self, card: MifareClassicCard, label: str = "") -> str:
        """Put ``card`` in the wallet (its image is saved); its UID."""
        uid = card.uid.hex().upper()
        with self._lock:
            if uid in self._index:
                raise InvalidInput(f"card {uid} is already in the wallet", field="uid")
            self._cards[uid] = card
            self._save_card(card)
            self._index[uid] = {
                "uid": uid,
                "label": label.strip()[:60],
                "size": card.size,
                "added": utcnow().replace(microsecond=0).isoformat(),
            }
            self._write_index()
            return uid

    def new_card(self, size: str = "1k", label: str = "") -> str:
        """A new blank card (transport keys, a random 4-byte UID) in the wallet; its UID."""
        if size not in SIZES:
            raise InvalidInput(f"a card is 1k or 4k, not {size!r}", field="size")
        with self._lock:
            while True:
                uid = secrets.token_bytes(4)
                if uid[0] != 0x88 and uid.hex().upper() not in self._index:
                    break
            return self.add_card(MifareClassicCard(uid, size), label)

    def label(self, uid: str, label: str) -> None:
        with self._lock:
            self.card(uid)
            self._index[_norm_uid(uid)]["label"] = label.strip()[:60]
            self._write_index()

    def cards(self) -> list[dict[str, Any]]:
        """Every card of the wallet, oldest first: label, size, where it is, and what the
        database knows of it (type, status, customer or operator)."""
        with self._lock:
            self.sync()
            rows: list[dict[str, Any]] = [dict(entry) for entry in self._index.values()]
            where = {uid: place for place, uid in self._on_readers().items()}
        known = self._known([r["uid"] for r in rows])
        for row in rows:
            row["where"] = where.get(row["uid"])
            row.update(known.get(row["uid"], {"card_type": None}))
        return rows

    def _known(self, uids: list[str]) -> dict[str, dict[str, Any]]:
        if not uids:
            return {}
        out: dict[str, dict[str, Any]] = {}
        with self.sessions() as session:
            for card in session.scalars(select(Card).where(Card.uid.in_(uids))):
                info: dict[str, Any] = {
                    "card_type": card.card_type,
                    "status": card.status,
                    "profile": card.profile,
                }
                if card.customer_id is not None:
                    customer = session.get(Customer, card.customer_id)
                    if customer is not None:
                        info["customer"] = {"number": customer.number, "name": customer.name}
                if card.operator_id is not None:
                    op = session.get(Operator, card.operator_id)
                    if op is not None:
                        info["operator"] = op.username
                out[card.uid] = info
        return out

    # The readers ----------------------------------------------------------------------------

    def available(self, place: str) -> bool:
        return self.slots.get(place) is not None

    def _on_readers(self) -> dict[str, str]:
        """Place -> UID of the card on that reader."""
        out = {}
        for place, slot in self.slots.items():
            if slot is not None and slot.present and slot.card is not None:
                out[place] = slot.card.uid.hex().upper()
        return out

    def readers(self) -> list[dict[str, Any]]:
        """Each reader: its place, name, whether it is there, the card on it."""
        with self._lock:
            on = self._on_readers()
            return [
                {
                    "place": place,
                    "name": self.reader_names.get(place, ""),
                    "available": self.available(place),
                    "uid": on.get(place),
                }
                for place in PLACES
            ]

    def on_reader(self, place: str) -> str | None:
        with self._lock:
            return self._on_readers().get(place)

    def _slot(self, place: str) -> Slot:
        if place not in PLACES:
            raise InvalidInput(f"a reader is one of {', '.join(PLACES)}, not {place!r}")
        slot = self.slots.get(place)
        if slot is None:
            why = f": {self.unavailable}" if self.unavailable else ""
            raise NoReader(f"the lab's {place} reader is not available{why}")
        return slot

    def put(self, uid: str, place: str = "counter") -> None:
        """Put the card on a reader, taking it off any other one; a card already on that
        reader goes back to the wallet."""
        with self._lock:
            card = self.card(uid)
            slot = self._slot(place)
            self._take_off(card)
            if slot.present:
                self._remove(slot)
            try:
                slot.insert(card)
            except (ConnectionError, OSError) as exc:
                raise NoReader(f"the {place} reader does not answer: {exc}") from None

    def take(self, place: str) -> str | None:
        """Take the card off a reader (saved in the wallet); its UID, or None if it was empty."""
        with self._lock:
            slot = self._slot(place)
            if not slot.present or slot.card is None:
                return None
            uid = slot.card.uid.hex().upper()
            self._remove(slot)
            return uid

    def _remove(self, slot: Slot) -> None:
        card = slot.card
        slot.remove()
        if card is not None:
            self._save_card(card)

    def _take_off(self, card: MifareClassicCard) -> None:
        for slot in self.slots.values():
            if slot is not None and slot.present and slot.card is card:
                self._remove(slot)

    def sync(self) -> None:
        """Save the images of the cards on the readers (the counter may have written them)."""
        with self._lock:
            for slot in self.slots.values():
                if slot is not None and slot.present and slot.card is not None:
                    self._save_card(slot.card)

    @contextmanager
    def open_reader(self, name: str | None = None) -> Iterator[MifareReader]:
        """A reader factory for ``ONECARD_READER_FACTORY`` when the slots are in-process: the
        manager reader by its name, else the counter reader."""
        place = "manager" if name and name == self.reader_names.get("manager") else "counter"
        slot = self._slot(place)
        if not isinstance(slot, MemorySlot):
            raise NoReader(f"the {place} reader is not in-process: use PC/SC")
        try:
            with slot.open() as reader:
                yield reader
        finally:
            self.sync()

    def close(self) -> None:
        """Take every card off the readers (saving them)."""
        with self._lock:
            for slot in self.slots.values():
                if slot is not None and slot.present:
                    self._remove(slot)

    # The meters -----------------------------------------------------------------------------

    def _keys_for(self, uid: bytes, version: int) -> CardKeys:
        with self.sessions() as session:
            return self.keystore.card_keys(session, uid, version)

    def sam(self) -> MeterSam:
        """The meters' security module: the site's id and its card keys."""
        with self._lock:
            if self._sam is None:
                with self.sessions() as session:
                    site = self.keystore.site_id(session)
                self._sam = MeterSam(site, self._keys_for)
            return self._sam

    def _meter_file(self, ref: MeterRef) -> Path:
        return self.folder / "meters" / f"{ref.key}.json"

    def meter(self, kind: str, serial: str) -> CardMeter:
        """The emulator of meter ``kind``/``serial`` (loaded from its file, or a fresh one)."""
        ref = MeterRef(kind, str(serial))
        with self._lock:
            found = self._meters.get(ref.key)
            if found is None:
                if kind not in self.utilities:
                    raise NotFound(f"no utility kind {kind!r}", field="kind")
                found = CardMeter(
                    self.utilities.get(kind), ref.serial, self.sam(), clock=self._clock
                )
                path = self._meter_file(ref)
                if path.exists():
                    found.load(path)
                self._meters[ref.key] = found
            return found

    def _save_meter(self, meter: CardMeter) -> None:
        meter.save(self._meter_file(MeterRef(meter.kind.code, meter.serial)))

    def meters_of(self, uid: str) -> list[MeterRef]:
        """The card meters the database binds to the slots of card ``uid`` (a user card)."""
        uid = _norm_uid(uid)
        with self.sessions() as session:
            rows = session.execute(
                select(Meter.kind, Meter.serial)
                .join(CardSlot, CardSlot.meter_id == Meter.id)
                .join(Card, Card.id == CardSlot.card_id)
                .where(Card.uid == uid, Card.card_type == "user")
                .order_by(CardSlot.slot)
            ).all()
        return [
            MeterRef(kind, serial)
            for kind, serial in rows
            if kind in self.utilities
            and isinstance(self.utilities.get(kind).card_layout, SlotLayout)
        ]

    def carry(self, uid: str, kind: str, serial: str) -> Visit:
        """Take the card off any reader and insert it into the meter: it loads its purchase and
        writes its return record (see :meth:`CardMeter.insert`)."""
        with self._lock:
            card = self.card(uid)
            meter = self.meter(kind, serial)
            self._take_off(card)
            card.reset()
            visit = meter.insert(MifareReader(card))
            self._save_meter(meter)
            self._save_card(card)
            return visit

    def run(
        self, kind: str, serial: str, hours: float = 24, rate: Decimal | None = None
    ) -> Decimal:
        """Meter ``hours`` of use at ``rate`` units an hour (default: the kind's typical rate);
        the quantity metered (less when the credit runs out)."""
        if isinstance(hours, bool) or not 0 < hours <= 24 * 366:
            raise InvalidInput("hours: more than 0 and at most a year", field="hours")
        with self._lock:
            meter = self.meter(kind, serial)
            used = meter.run(hours, rate if rate is not None else default_rate(meter))
            self._save_meter(meter)
            return used

    def meter_state(self, kind: str, serial: str) -> dict[str, Any]:
        """What the meter's display shows: credit, purchase count, register, relay, alarms,
        its latest events (newest first)."""
        with self._lock:
            meter = self.meter(kind, serial)
            unit = meter.kind.unit or ""
            usage = Decimal(meter.cumulative).scaleb(-meter.kind.unit_decimals)
            return {
                "kind": meter.kind.code,
                "serial": meter.serial,
                "money": meter.money,
                "credit": meter.credit,
                "credit_text": meter.describe_amount(meter.credit),
                "last_seq": meter.last_seq,
                "register_text": f"{usage} {unit}".strip(),
                "relay_open": meter.relay_open,
                "alarm": meter.alarm,
                "exhausted": meter.exhausted,
                "tamper": meter.tamper,
                "commissioned": meter.commissioned,
                "rate": default_rate(meter),
                "unit": unit,
                "events": [e.to_json() for e in reversed(meter.events[-_EVENTS_SHOWN:])],
            }


def default_rate(meter: CardMeter) -> Decimal:
    """Use per hour (in the kind's unit) when none is given: see ``YUAN_PER_HOUR``."""
    price = meter.params.get("price")
    if meter.money and price:
        return (YUAN_PER_HOUR / price).quantize(meter.resolution)
    return meter.resolution * UNITS_PER_HOUR


def parse_rate(text: str) -> Decimal | None:
    """A rate from a form ("" for the default); InvalidInput when it is not a number >= 0."""
    text = text.strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidInput("rate: not a number", field="rate") from None
    if not value.is_finite() or value < 0 or value > 10_000:
        raise InvalidInput("rate: from 0 to 10000 units an hour", field="rate")
    return value


def _norm_uid(uid: str) -> str:
    text = uid.strip().upper()
    if not _UID.match(text):
        raise NotFound(f"no card {uid!r}: a UID is 8 or 14 hex digits", field="uid")
    return text


__all__ = [
    "EXTENSION",
    "PLACES",
    "Lab",
    "MemorySlot",
    "MeterRef",
    "Slot",
    "default_rate",
    "parse_rate",
]
