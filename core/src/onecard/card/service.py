"""The office's card operations: issue, sell, read, finish/void, re-purchase, cancel, reissue.

:class:`CardDesk` owns its database transactions (it is given a ``sessionmaker``), because a sale
must be committed as *pending* before the card is written: a card pulled out mid-write then leaves
a pending sale that the operator finishes or voids, and never a lost or doubled credit.

A sale, step by step:

1. read and check the card (header MAC, site, status), its slots' return records (stored as
   meter readings), and that no earlier purchase still waits on the card to be loaded;
2. commit the purchases as ``pending`` (each with the meter's next sequence number);
3. write the purchase records, read them back;
4. commit: post each purchase to the ledger (idempotency key = the purchase's) and mark it
   ``confirmed``.

A retried sale (same ``sale_key``) returns the confirmed result, or finishes a pending one.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any, TypeVar, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard import audit, ledger
from onecard import operators as ops
from onecard.audit import Actor
from onecard.card import profiles as prof
from onecard.card.cardio import CardIO, check_seal, is_blank, now_utc, seal
from onecard.card.keys import CardKeys, KeyStore
from onecard.card.layout import (
    CARD_TYPES,
    SETTINGS_MASK,
    TOOL_LAYOUTS,
    CardMap,
    Header,
    PlacedSlot,
    SlotLayout,
    flags_of,
    slot_bytes,
    split_blocks,
    tool_blocks,
)
from onecard.card.mifare import geometry
from onecard.card.reader import MifareReader
from onecard.customers import get_customer
from onecard.errors import (
    AuthenticationFailed,
    CardError,
    CardRefused,
    CardTampered,
    Conflict,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    OnecardError,
    PermissionDenied,
)
from onecard.ledger import accounts as acc
from onecard.models import (
    Card,
    CardPurchase,
    CardSlot,
    Customer,
    LedgerTransaction,
    Meter,
    MeterReading,
    Operator,
)
from onecard.money import format_fen
from onecard.operators import Grants
from onecard.tariffs.documents import tariff_names
from onecard.tariffs.engine import Quote
from onecard.tariffs.meters import quote_meter
from onecard.utility import UtilityRegistry

F = TypeVar("F", bound=Callable[..., Any])
_reader_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
MAX_SALE_KEY = 64  # leaves room for ':<meter id>' and 'card:' in ledger keys
MAX_SALE_ITEM = 10_000_000  # fen per meter per sale (100 000 yuan)


@contextmanager
def open_pcsc_reader(name: str | None) -> Iterator[MifareReader]:
    """The PC/SC reader ``name`` (or the only one), held by this thread until released.

    One card operation at a time per reader: two operators' requests on one reader would
    interleave their APDUs, so the second waits for the first.
    """
    from onecard.card.reader import PcscTransport

    with _locks_guard:
        lock = _reader_locks.setdefault(name or "", threading.Lock())
    with lock:
        transport = PcscTransport.open(name)
        try:
            yield MifareReader(transport)
        finally:
            transport.close()


@dataclass(frozen=True)
class SaleItem:
    """One meter of a sale: by meter serial or slot label; money in fen, or units."""

    meter: str
    amount: int
    units: int | None = None
    params: Mapping[str, Any] | None = None


class _Rekey(Exception):
    """The card is on an older key version: re-key it (in its own transaction) first."""


def _rekeying(method: F) -> F:
    """Run a card operation; if the card needs re-keying, re-key it, commit, and run it again.

    The re-key is its own transaction, so it stays recorded whatever the operation then does.
    """

    @functools.wraps(method)
    def wrapper(self: CardDesk, reader: MifareReader, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, reader, *args, **kwargs)
        except _Rekey:
            with self._tx() as session:
                self._open(session, reader, card_type=None, rekey=True)
            return method(self, reader, *args, **kwargs)

    return cast(F, wrapper)


@dataclass(frozen=True)
class Manager:
    """The manager who authorised a correction."""

    id: int
    username: str


@dataclass
class OpenCard:
    """A checked card on the reader, with its database row and map."""

    io: CardIO
    header: Header
    keys: CardKeys
    card: Card
    card_map: CardMap | None
    slots: dict[int, CardSlot]


def _sale_request(items: Sequence[SaleItem], method: str) -> list[Any]:
    return [[i.meter, i.amount, i.units, sorted((i.params or {}).items())] for i in items] + [
        method
    ]


class CardDesk:
    """Card work at the counter: one per app or command; thread-safe (no per-call state)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        utilities: UtilityRegistry,
        keystore: KeyStore,
    ) -> None:
        self.sessions = sessions
        self.utilities = utilities
        self.keystore = keystore

    # Plumbing --------------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self.sessions() as session, session.begin():
            yield session

    def _io(self, session: Session, reader: MifareReader) -> CardIO:
        site_id = self.keystore.site_id(session)

        def keys_for(uid: bytes, version: int | None) -> CardKeys:
            return self.keystore.card_keys(session, uid, version)

        return CardIO(reader, keys_for, site_id)

    def _open(
        self,
        session: Session,
        reader: MifareReader,
        *,
        card_type: str | None = "user",
        allow_inactive: bool = False,
        rekey: bool = False,
    ) -> OpenCard:
        io = self._io(session, reader)
        header, keys = io.read_header()
        uid = io.uid.hex().upper()
        card = session.scalar(select(Card).where(Card.uid == uid))
        if card is None or card.id != header.card_serial:
            raise CardTampered(
                f"card {uid} carries card number {header.card_serial}, which this site never "
                "issued to it",
                uid=uid,
            )
        if card.status != "active" and not allow_inactive:
            when = card.status_changed_at.date().isoformat() if card.status_changed_at else "?"
            replaced = session.get(Card, card.replaced_by_id) if card.replaced_by_id else None
            extra = f"; replaced by card {replaced.uid}" if replaced else ""
            raise CardRefused(
                f"card {uid} is {card.status} since {when}{extra}: it may not be used",
                uid=uid,
                status=card.status,
            )
        if card_type is not None and header.card_type != card_type:
            raise CardRefused(
                f"this is a {header.card_type} card; a {card_type} card is needed here", uid=uid
            )
        card_map = None
        if header.card_type == "user":
            profile = prof.get_profile(session, header.profile)
            card_map = prof.card_map_from_starts(profile, self.utilities, header.slot_starts)
            io.geometry = geometry(profile.card_size)
        slots = {s.slot: s for s in card.slots}
        opened = OpenCard(io, header, keys, card, card_map, slots)
        current = self.keystore.current_version(session)
        if header.key_version < current and card.status == "active":
            if not rekey:
                raise _Rekey()
            self._rekey(session, opened, current)
        return opened

    def _rekey(self, session: Session, oc: OpenCard, version: int) -> None:
        """Move a card onto the current key version: re-seal every record, re-key every sector."""
        io = oc.io
        new_keys = self.keystore.card_keys(session, io.uid, version)
        initial: dict[int, bytes] = {}
        tool = []
        if oc.card_map is not None:
            read = io.read_slots(oc.card_map, oc.keys, oc.card_map.slots, purchase=True)
            for slot in oc.card_map.slots:
                item = read[slot.index]
                if item["purchase_ok"]:
                    raw = seal(
                        slot.layout.purchase,
                        item["purchase"],
                        io.uid,
                        slot.start_block,
                        new_keys.mac,
                    )
                    initial.update(split_blocks(raw, slot.purchase_blocks))
                if item["return_ok"]:
                    raw = seal(
                        slot.layout.returned,
                        item["return"],
                        io.uid,
                        slot.return_blocks[0],
                        new_keys.mac,
                    )
                    initial.update(split_blocks(raw, slot.return_blocks))
        else:
            layout = TOOL_LAYOUTS.get(oc.header.card_type)
            if layout is not None:
                tool = tool_blocks(io.geometry, layout)
                blocks = [b for entry in tool for b in entry]
                data = io.read_blocks(blocks, "B", oc.keys.data_b)
                for entry in tool:
                    raw = slot_bytes(entry, data)
                    if not is_blank(raw) and check_seal(layout, raw, io.uid, entry[0], oc.keys.mac):
                        fresh = seal(layout, layout.decode(raw), io.uid, entry[0], new_keys.mac)
                        initial.update(split_blocks(fresh, entry))
        header = Header(**{**oc.header.__dict__, "key_version": version})
        io.format(
            header,
            new_keys,
            card_map=oc.card_map,
            initial=initial,
            tool_blocks=[b for entry in tool for b in entry],
            old_keys=oc.keys,
        )
        oc.card.key_version = version
        audit.record(
            session,
            Actor(name="system"),
            "card.rekey",
            [f"card:{oc.card.uid}"],
            detail={"from": oc.header.key_version, "to": version},
            office_id=oc.card.office_id,
            customer_id=oc.card.customer_id,
        )
        oc.header, oc.keys = header, new_keys

    def _check(self, grants: Grants | None, permission: str, office_id: int | None) -> None:
        if grants is not None and not grants.allows(permission, office_id):
            # the card is on the reader, so it is known to exist: say what is missing
            raise PermissionDenied(f"you need the permission {permission!r} for this card")

    def _customer(self, session: Session, card: Card) -> Customer:
        customer = session.get(Customer, card.customer_id) if card.customer_id else None
        if customer is None:
            raise CardRefused(f"card {card.uid} belongs to no customer")
        return customer

    # Reading ---------------------------------------------------------------------------------

    def _upload(
        self,
        session: Session,
        oc: OpenCard,
        read: Mapping[int, Mapping[str, Any]],
    ) -> list[dict[str, Any]]:
        """Store the meters' return records as readings; describe each slot."""
        out = []
        assert oc.card_map is not None
        for slot in oc.card_map.slots:
            if slot.index not in read:
                continue
            item = read[slot.index]
            bound = oc.slots.get(slot.index)
            meter = bound.meter if bound else None
            entry: dict[str, Any] = {
                "slot": slot.index,
                "kind": slot.kind,
                "label": slot.label,
                "meter": meter.serial if meter else None,
            }
            if "purchase" in item:
                entry["purchase"] = _public(item["purchase"]) if item["purchase"] else None
                entry["purchase_valid"] = item["purchase_ok"] or is_blank(item["purchase_raw"])
            ret = item["return"]
            if ret is None:
                entry["return"] = None
            elif not item["return_ok"]:
                entry["return"] = None
                entry["return_error"] = "the return record's MAC does not verify: not stored"
            else:
                entry["return"] = _public(ret) | {"flags": flags_of(ret["status"])}
                if meter is not None and ret["meter_serial"] == meter.serial.lstrip("0"):
                    entry["reading_stored"] = _store_reading(session, meter, ret, oc.card.id)
            out.append(entry)
        return out

    @_rekeying
    def read(
        self, reader: MifareReader, actor: Actor, *, grants: Grants | None = None
    ) -> dict[str, Any]:
        """Read the card on the reader: header, every slot; return records become readings."""
        with self._tx() as session:
            oc = self._open(session, reader, card_type=None, allow_inactive=True)
            self._check(grants, "customer.view", oc.card.office_id)
            result: dict[str, Any] = {
                "uid": oc.card.uid,
                "card_type": oc.header.card_type,
                "card_id": oc.card.id,
                "status": oc.card.status,
                "key_version": oc.header.key_version,
                "reissue_count": oc.header.reissue_count,
                "issued_at": oc.header.issued_at.isoformat(),
            }
            if oc.card.status != "active":
                result["warning"] = f"this card is {oc.card.status}: do not use it"
            if oc.card_map is not None:
                customer = self._customer(session, oc.card)
                result["customer"] = {"number": customer.number, "name": customer.name}
                result["profile"] = oc.card_map.profile
                read = oc.io.read_slots(oc.card_map, oc.keys, oc.card_map.slots, purchase=True)
                result["slots"] = self._upload(session, oc, read)
                result["pending"] = [
                    _purchase_dict(p) for p in _pending_for_card(session, oc.card.id)
                ]
            else:
                result["tool"] = self._read_tool(session, oc)
            audit.record(
                session,
                actor,
                "card.read",
                [f"card:{oc.card.uid}"],
                office_id=oc.card.office_id,
                customer_id=oc.card.customer_id,
            )
            result["apdus"] = oc.io.reader.apdu_count
            return result

    # Issuing ---------------------------------------------------------------------------------

    def issue(
        self,
        reader: MifareReader,
        actor: Actor,
        *,
        customer: str,
        profile: str,
        meters: Mapping[str, str] | None = None,
        grants: Grants | None = None,
    ) -> dict[str, Any]:
        """Issue a blank card to a customer (account opening): header and empty slots.

        ``meters`` maps slot labels to meter serials; by default each slot takes the customer's
        next card meter of its kind.
        """
        with self._tx() as session:
            cust = _customer_in_scope(session, customer, grants, "card.issue")
            if cust.status != "active":
                raise Conflict(f"customer {customer} is {cust.status}", field="customer")
            current = session.scalar(
                select(Card).where(
                    Card.customer_id == cust.id, Card.status == "active", Card.card_type == "user"
                )
            )
            if current is not None:
                raise Conflict(
                    f"customer {customer} already holds card {current.uid}; reissue it instead",
                    field="customer",
                )
            pr = prof.get_profile(session, profile)
            if pr.office_id is not None and pr.office_id != cust.office_id:
                raise NotFound(f"no card profile {profile!r}", field="profile")
            card_map = prof.card_map(pr, self.utilities)
            bindings = self._bind(session, cust, card_map, meters or {})
            io = self._io(session, reader)
            self._refuse_known(session, io)
            version = self.keystore.current_version(session)
            row = Card(
                uid=io.uid.hex().upper(),
                card_type="user",
                profile=pr.code,
                customer_id=cust.id,
                key_version=version,
                office_id=cust.office_id,
                data={},
            )
            session.add(row)
            session.flush()
            for slot in card_map.slots:
                meter = bindings.get(slot.index)
                session.add(
                    CardSlot(
                        card_id=row.id,
                        slot=slot.index,
                        kind=slot.kind,
                        start_block=slot.start_block,
                        meter_id=meter.id if meter else None,
                    )
                )
            session.flush()
            self._write_new_card(session, io, row, card_map, bindings, version)
            audit.record(
                session,
                actor,
                "card.issue",
                [f"card:{row.uid}", f"customer:{cust.id}"],
                detail={
                    "profile": pr.code,
                    "meters": {
                        s: m.serial
                        for s, m in ((card_map.slot(i).label, m) for i, m in bindings.items())
                    },
                },
                office_id=cust.office_id,
                customer_id=cust.id,
            )
            return {
                "uid": row.uid,
                "card_id": row.id,
                "customer": cust.number,
                "profile": pr.code,
                "key_version": version,
                "slots": [
                    {
                        "slot": s.index,
                        "kind": s.kind,
                        "label": s.label,
                        "meter": bindings[s.index].serial if s.index in bindings else None,
                    }
                    for s in card_map.slots
                ],
            }

    def _refuse_known(self, session: Session, io: CardIO) -> None:
        uid = io.uid.hex().upper()
        known = session.scalar(select(Card).where(Card.uid == uid))
        if known is not None:
            if known.status in ("lost", "blacklisted"):
                raise CardRefused(f"card {uid} is {known.status}: it may not be issued again")
            raise Conflict(f"card {uid} is already issued (card #{known.id}, {known.status})")

    def _bind(
        self, session: Session, cust: Customer, card_map: CardMap, wanted: Mapping[str, str]
    ) -> dict[int, Meter]:
        meters = list(
            session.scalars(
                select(Meter)
                .join(Meter.premises)
                .where(Meter.premises.has(customer_id=cust.id), Meter.state != "removed")
                .order_by(Meter.id)
            )
        )
        labels = {s.label: s for s in card_map.slots}
        unknown = set(wanted) - set(labels)
        if unknown:
            raise InvalidInput(
                f"the profile has no slot {sorted(unknown)[0]!r} (slots: {', '.join(labels)})",
                field="meters",
            )
        taken: set[int] = set()
        out: dict[int, Meter] = {}
        for slot in card_map.slots:
            if slot.label in wanted:
                serial = wanted[slot.label]
                meter = next((m for m in meters if m.serial == serial), None)
                if meter is None or meter.kind != slot.kind:
                    raise InvalidInput(
                        f"meters.{slot.label}: {serial!r} is not a {slot.kind} meter of this "
                        "customer",
                        field=f"meters.{slot.label}",
                    )
            else:
                meter = next(
                    (
                        m
                        for m in meters
                        if m.kind == slot.kind and m.protocol == "card" and m.id not in taken
                    ),
                    None,
                )
                if meter is None:
                    continue
            _card_serial(meter, slot)
            same = [m for m in out.values() if m.serial.lstrip("0") == meter.serial.lstrip("0")]
            if same:
                raise InvalidInput(
                    f"meters {same[0].kind}:{same[0].serial} and {meter.kind}:{meter.serial} "
                    "would carry the same serial on one card, and a meter finds its slot by "
                    "serial: give one of them another slot card or change a serial",
                    field=f"meters.{slot.label}",
                )
            taken.add(meter.id)
            out[slot.index] = meter
        kinds = {m.kind for m in meters if m.protocol == "card"}
        left = [m for m in meters if m.protocol == "card" and m.id not in taken]
        if left and not wanted:
            slot_kinds = {s.kind for s in card_map.slots}
            missing = sorted({m.kind for m in left} - slot_kinds)
            if missing and kinds:
                raise InvalidInput(
                    f"profile {card_map.profile!r} has no slot for the customer's "
                    f"{', '.join(missing)} meter(s); choose a larger profile",
                    field="profile",
                )
        return out

    def _write_new_card(
        self,
        session: Session,
        io: CardIO,
        row: Card,
        card_map: CardMap,
        bindings: Mapping[int, Meter],
        version: int,
        old_keys: CardKeys | None = None,
    ) -> None:
        keys = self.keystore.card_keys(session, io.uid, version)
        initial: dict[int, bytes] = {}
        now = now_utc()
        for slot in card_map.slots:
            meter = bindings.get(slot.index)
            if meter is None:
                continue
            values = _empty_purchase(slot, meter, now)
            initial.update(
                split_blocks(
                    seal(slot.layout.purchase, values, io.uid, slot.start_block, keys.mac),
                    slot.purchase_blocks,
                )
            )
        header = Header(
            card_type="user",
            site_id=io.site_id,
            card_serial=row.id,
            customer_no=row.customer_id or 0,
            profile=prof.get_profile(session, card_map.profile).number,
            key_version=version,
            reissue_count=row.reissue_count,
            issued_at=now,
            slot_starts=card_map.slot_starts,
        )
        io.geometry = card_map.geometry
        io.format(header, keys, card_map=card_map, initial=initial, old_keys=old_keys)

    # Selling ---------------------------------------------------------------------------------

    @_rekeying
    def sell(
        self,
        reader: MifareReader,
        actor: Actor,
        *,
        sale_key: str,
        items: Sequence[SaleItem],
        method: str = "cash",
        office_id: int | None = None,
        grants: Grants | None = None,
    ) -> dict[str, Any]:
        """Sell to one or more meters on the card on the reader (see the module docstring)."""
        sale_key = ledger.core.check_key(sale_key, "sale_key")
        if len(sale_key) > MAX_SALE_KEY:
            raise InvalidInput(f"sale_key: at most {MAX_SALE_KEY} characters", field="sale_key")
        if not items:
            raise InvalidInput("a sale needs at least one meter", field="items")
        if method not in ("cash", "bank"):
            raise InvalidInput(f"unknown payment method {method!r}", field="method")
        with self._tx() as session:
            oc = self._open(session, reader)
            cust = self._customer(session, oc.card)
            self._check(grants, "sale.create", cust.office_id)
            existing = list(
                session.scalars(
                    select(CardPurchase)
                    .where(CardPurchase.sale_key == sale_key)
                    .order_by(CardPurchase.slot)
                )
            )
            if existing:
                fingerprint = _sale_request(items, method)
                if existing[0].params.get("_request") != _jsonable(fingerprint):
                    raise IdempotencyConflict(
                        f"sale key {sale_key!r} was used for another sale", field="sale_key"
                    )
                if existing[0].card_id != oc.card.id:
                    raise CardRefused(
                        f"sale {sale_key} was made on card {existing[0].card.uid}, not this one"
                    )
                if all(p.status == "confirmed" for p in existing):
                    return self._sale_result(session, existing, replayed=True, apdus=oc.io)
                # a retried sale whose write failed: finish it
            else:
                existing = self._prepare(
                    session, oc, cust, actor, sale_key, items, method, office_id
                )
            ids = [p.id for p in existing if p.status == "pending"]
            records = self._records(oc, [p for p in existing if p.status == "pending"])
            io, card_map, keys = oc.io, oc.card_map, oc.keys
        # committed: the purchases are pending. Now the card.
        assert card_map is not None
        self._write_verify(io, keys, card_map, records, ids)
        with self._tx() as session:
            done = self._confirm(session, ids, actor)
            rows = list(
                session.scalars(select(CardPurchase).where(CardPurchase.sale_key == sale_key))
            )
            result = self._sale_result(session, rows, replayed=False, apdus=io)
            result["confirmed_now"] = done
            return result

    def _prepare(
        self,
        session: Session,
        oc: OpenCard,
        cust: Customer,
        actor: Actor,
        sale_key: str,
        items: Sequence[SaleItem],
        method: str,
        office_id: int | None,
    ) -> list[CardPurchase]:
        assert oc.card_map is not None
        if cust.status != "active":
            raise Conflict(f"customer {cust.number} is {cust.status}: no sales", field="card")
        chosen: dict[int, SaleItem] = {}
        for n, item in enumerate(items):
            slot = self._find_slot(oc, item.meter, f"items.{n}.meter")
            if slot.index in chosen:
                raise InvalidInput(
                    f"items.{n}.meter: meter {item.meter} is listed twice", field=f"items.{n}.meter"
                )
            chosen[slot.index] = item
        read = oc.io.read_slots(
            oc.card_map, oc.keys, [oc.card_map.slot(i) for i in chosen], purchase=False
        )
        for index, found in read.items():
            if not found["return_blank"] and not found["return_ok"]:
                raise CardTampered(
                    f"the meter data of slot {oc.card_map.slot(index).label} on this card fails "
                    "its MAC: the card was edited; nothing was sold",
                    uid=oc.card.uid,
                    slot=index,
                )
        self._upload(session, oc, read)
        now = now_utc()
        made = []
        fingerprint = _jsonable(_sale_request(items, method))
        for index, item in chosen.items():
            slot = oc.card_map.slot(index)
            bound = oc.slots[index]
            meter = bound.meter
            assert meter is not None
            where = f"items.{list(chosen).index(index)}"
            if meter.state != "active":
                raise Conflict(
                    f"{where}.meter: meter {meter.serial} is {meter.state}", field=f"{where}.meter"
                )
            amount, units, quote = self._amounts(session, meter, slot, item, where, now)
            params = slot.layout.resolve_params(item.params)
            pending = session.scalar(
                select(CardPurchase).where(
                    CardPurchase.meter_id == meter.id, CardPurchase.status == "pending"
                )
            )
            if pending is not None:
                raise Conflict(
                    f"meter {meter.serial} has a pending sale ({pending.sale_key}, purchase "
                    f"#{pending.seq}): finish or void it first",
                    field=f"{where}.meter",
                    pending=pending.id,
                )
            last = _last_live(session, meter.id)
            ret = read[index]["return"] if read[index]["return_ok"] else None
            loaded = ret["last_seq"] if ret else _last_loaded(session, meter.id)
            if last is not None and last.seq > loaded:
                raise Conflict(
                    f"the card still carries purchase #{last.seq} for meter {meter.serial}, which "
                    "the meter has not loaded yet: insert the card into the meter first (or "
                    "cancel that purchase)",
                    field=f"{where}.meter",
                )
            purchase = CardPurchase(
                idempotency_key=f"{sale_key}:{meter.id}",
                sale_key=sale_key,
                meter_id=meter.id,
                card_id=oc.card.id,
                customer_id=cust.id,
                office_id=office_id or cust.office_id,
                operator_id=actor.operator_id,
                slot=index,
                seq=(last.seq if last else 0) + 1,
                amount=amount,
                units=units,
                method=method,
                params={k: str(v) for k, v in params.items()}
                | {"_request": fingerprint}
                | ({"_quote": quote.to_dict(), "_fixed_fen": quote.fixed} if quote else {}),
                status="pending",
                written_at=now,
            )
            session.add(purchase)
            made.append(purchase)
        session.flush()
        audit.record(
            session,
            actor,
            "card.sale.pending",
            [f"card:{oc.card.uid}", *(f"card_purchase:{p.id}" for p in made)],
            detail={"sale_key": sale_key, "total": format_fen(sum(p.amount for p in made))},
            office_id=cust.office_id,
            customer_id=cust.id,
        )
        return made

    def _quote(
        self,
        session: Session,
        meter: Meter,
        where: str,
        at: dt.datetime,
        *,
        amount: int | None = None,
        units: int | None = None,
    ) -> Quote | None:
        """The tariff's quote for this meter's purchase, or None while its kind has no tariff."""
        if not meter.tariff and not tariff_names(session, meter.kind):
            return None
        try:
            return quote_meter(session, self.utilities, meter, at=at, amount=amount, units=units)
        except OnecardError as exc:
            field = f"{where}.{exc.field or 'amount'}"
            raise InvalidInput(f"{field}: {exc.message}", field=field) from None

    def _amounts(
        self,
        session: Session,
        meter: Meter,
        slot: PlacedSlot,
        item: SaleItem,
        where: str,
        at: dt.datetime,
    ) -> tuple[int, int | None, Quote | None]:
        """What the customer pays, the units it buys, and the tariff's quote (with a tariff).

        With a tariff, the units come from the meter's tariff and position; a units card given
        both must be given the quote's price for those units."""
        amount = item.amount
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise InvalidInput(
                f"{where}.amount must be a positive number of fen", field=f"{where}.amount"
            )
        if amount > MAX_SALE_ITEM:
            raise InvalidInput(
                f"{where}.amount: at most {format_fen(MAX_SALE_ITEM)} yuan per meter per sale",
                field=f"{where}.amount",
            )
        if slot.layout.amount == "money":
            if item.units is not None:
                raise InvalidInput(
                    f"{where}.units: {slot.kind} cards carry money, not units",
                    field=f"{where}.units",
                )
            quote = self._quote(session, meter, where, at, amount=amount)
            return amount, (quote.units if quote else None), quote
        kind = self.utilities.get(slot.kind)
        if item.units is not None:
            if isinstance(item.units, bool) or not isinstance(item.units, int) or item.units <= 0:
                raise InvalidInput(
                    f"{where}.units must be a positive whole number", field=f"{where}.units"
                )
            quote = self._quote(session, meter, where, at, units=item.units)
            if quote is not None and quote.amount != amount:
                raise InvalidInput(
                    f"{where}.amount: {quote.quantity} {kind.unit} cost {format_fen(quote.amount)} "
                    f"under tariff {quote.tariff}, not {format_fen(amount)}",
                    field=f"{where}.amount",
                )
            return amount, item.units, quote
        quote = self._quote(session, meter, where, at, amount=amount)
        if quote is not None:
            return amount, quote.units, quote
        # units from money at the purchase's price; what rounding leaves stays as credit
        price = slot.layout.resolve_params(item.params).get("price")
        if price is None:
            raise InvalidInput(f"{where}.units: give the units bought", field=f"{where}.units")
        quantity = (Decimal(amount) / 100 / price).quantize(
            Decimal(1).scaleb(-kind.unit_decimals), rounding=ROUND_DOWN
        )
        units = int(quantity.scaleb(kind.unit_decimals))
        if units <= 0:
            raise InvalidInput(f"{where}.amount buys less than one unit", field=f"{where}.amount")
        return amount, units, None

    def _find_slot(self, oc: OpenCard, ref: str, field: str) -> PlacedSlot:
        assert oc.card_map is not None
        for slot in oc.card_map.slots:
            bound = oc.slots.get(slot.index)
            if slot.label == ref or (bound and bound.meter and bound.meter.serial == ref):
                if bound is None or bound.meter is None:
                    raise InvalidInput(f"{field}: slot {slot.label} carries no meter", field=field)
                return slot
        kinds = {k for k, _ in ((s.kind, s) for s in oc.card_map.slots)}
        if ref in self.utilities and ref not in kinds:
            raise InvalidInput(
                f"{field}: a {oc.card_map.profile!r} card has no {ref} slot", field=field
            )
        raise InvalidInput(f"{field}: no meter {ref!r} on this card", field=field)

    def _records(self, oc: OpenCard, purchases: Sequence[CardPurchase]) -> dict[int, bytes]:
        assert oc.card_map is not None
        out = {}
        for p in purchases:
            slot = oc.card_map.slot(p.slot)
            out[p.slot] = oc.io.seal_purchase(slot, _purchase_values(slot, p), oc.keys)
        return out

    def _write_verify(
        self,
        io: CardIO,
        keys: CardKeys,
        card_map: CardMap,
        records: Mapping[int, bytes],
        ids: Sequence[int],
    ) -> None:
        try:
            bad = io.write_purchases(keys, records, card_map)
        except CardError as exc:
            exc.detail.setdefault("pending", list(ids))
            exc.message += " — the sale is pending: present the card again and finish or void it"
            exc.args = (exc.message,)
            raise
        if bad:
            raise CardError(
                f"blocks {bad} did not read back as written — the sale is pending: present the "
                "card again and finish or void it",
                pending=list(ids),
            )

    def _confirm(self, session: Session, ids: Sequence[int], actor: Actor) -> int:
        done = 0
        for pid in ids:
            p = session.get(CardPurchase, pid, with_for_update=True)
            if p is None or p.status != "pending":
                continue
            posted = ledger.sale(
                session,
                wallet=acc.meter_wallet_code(p.meter_id),
                amount=p.amount,
                office_id=p.office_id,
                idempotency_key=f"card:{p.idempotency_key}",
                method=p.method,
                operator_id=p.operator_id,
                memo=f"card purchase #{p.seq} for meter {p.meter.serial}",
            )
            fixed = int(p.params.get("_fixed_fen", 0) or 0)
            if fixed:
                # the billing period's fixed charges (a heat basic fee) are revenue now
                ledger.consume(
                    session,
                    wallet=acc.meter_wallet_code(p.meter_id),
                    amount=fixed,
                    idempotency_key=f"card:{p.idempotency_key}:fixed",
                    memo=f"fixed charges with purchase #{p.seq} for meter {p.meter.serial}",
                    operator_id=p.operator_id,
                )
            p.status = "confirmed"
            p.transaction_id = posted.id
            p.confirmed_at = now_utc()
            done += 1
            audit.record(
                session,
                actor,
                "card.sale",
                [
                    f"card_purchase:{p.id}",
                    f"meter:{p.meter.kind}:{p.meter.serial}",
                    f"ledger:#{posted.seq}",
                ],
                detail={"seq": p.seq, "amount": format_fen(p.amount), "sale_key": p.sale_key},
                office_id=p.office_id,
                customer_id=p.customer_id,
            )
        return done

    def _sale_result(
        self, session: Session, rows: Sequence[CardPurchase], *, replayed: bool, apdus: CardIO
    ) -> dict[str, Any]:
        return {
            "sale_key": rows[0].sale_key,
            "replayed": replayed,
            "status": "confirmed" if all(r.status == "confirmed" for r in rows) else "pending",
            "total": sum(r.amount for r in rows),
            "purchases": [_purchase_dict(r) for r in rows],
            "apdus": apdus.reader.apdu_count,
        }

    # Pending sales ---------------------------------------------------------------------------

    def pending(self, *, office_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """The sales waiting to be finished or voided."""
        with self._tx() as session:
            q = select(CardPurchase).where(CardPurchase.status == "pending")
            if office_ids is not None:
                q = q.where(CardPurchase.office_id.in_(office_ids))
            return [_purchase_dict(p) for p in session.scalars(q.order_by(CardPurchase.id))]

    @_rekeying
    def finish(
        self, reader: MifareReader, actor: Actor, *, sale_key: str, grants: Grants | None = None
    ) -> dict[str, Any]:
        """Finish a pending sale: write what is missing on the card, verify, confirm."""
        with self._tx() as session:
            oc = self._open(session, reader)
            rows = self._pending_rows(session, oc, sale_key, grants)
            assert oc.card_map is not None
            slots = [oc.card_map.slot(p.slot) for p in rows]
            read = oc.io.read_slots(oc.card_map, oc.keys, slots, purchase=True)
            self._upload(session, oc, read)
            records = self._records(oc, rows)
            todo = {i: raw for i, raw in records.items() if read[i]["purchase_raw"] != raw}
            for p in rows:
                on_card = read[p.slot]["purchase"]
                if p.slot in todo and read[p.slot]["purchase_ok"] and on_card["seq"] >= p.seq:
                    raise Conflict(
                        f"the card carries purchase #{on_card['seq']} for meter "
                        f"{p.meter.serial}, not pending #{p.seq}: void the pending sale",
                        field="sale_key",
                    )
                p.rewrites += 1 if p.slot in todo else 0
            ids = [p.id for p in rows]
            io, keys, card_map = oc.io, oc.keys, oc.card_map
        if todo:
            self._write_verify(io, keys, card_map, todo, ids)
        else:  # everything landed before the card was pulled: just read it back once more
            written = {}
            for index, raw in records.items():
                written.update(split_blocks(raw, card_map.slot(index).purchase_blocks))
            bad = io.verify(written, "B", keys.data_b)
            if bad:
                raise CardError(f"blocks {bad} do not read back as written", pending=ids)
        with self._tx() as session:
            self._confirm(session, ids, actor)
            audit.record(
                session,
                actor,
                "card.sale.finish",
                [f"sale:{sale_key}"],
                detail={"rewritten": len(todo)},
            )
            rows = list(
                session.scalars(select(CardPurchase).where(CardPurchase.sale_key == sale_key))
            )
            result = self._sale_result(session, rows, replayed=False, apdus=io)
            result["rewritten"] = len(todo)
            return result

    def _pending_rows(
        self, session: Session, oc: OpenCard, sale_key: str, grants: Grants | None
    ) -> list[CardPurchase]:
        rows = list(
            session.scalars(
                select(CardPurchase)
                .where(CardPurchase.sale_key == sale_key, CardPurchase.status == "pending")
                .order_by(CardPurchase.slot)
            )
        )
        if not rows:
            raise NotFound(f"no pending sale {sale_key!r}", field="sale_key")
        self._check(grants, "sale.create", rows[0].office_id)
        if rows[0].card_id != oc.card.id:
            raise CardRefused(
                f"pending sale {sale_key} belongs to card {rows[0].card.uid}, not to this card"
            )
        return rows

    @_rekeying
    def void(
        self,
        reader: MifareReader,
        actor: Actor,
        *,
        sale_key: str,
        reason: str,
        grants: Grants | None = None,
    ) -> dict[str, Any]:
        """Void a pending sale: take it off the card if it landed there; no money moves."""
        if not reason or not reason.strip():
            raise InvalidInput("say why the sale is voided", field="reason")
        with self._tx() as session:
            oc = self._open(session, reader)
            rows = self._pending_rows(session, oc, sale_key, grants)
            assert oc.card_map is not None
            slots = [oc.card_map.slot(p.slot) for p in rows]
            read = oc.io.read_slots(oc.card_map, oc.keys, slots, purchase=True)
            self._upload(session, oc, read)
            restore: dict[int, bytes] = {}
            for p in rows:
                item = read[p.slot]
                ret = item["return"] if item["return_ok"] else None
                if ret is not None and ret["last_seq"] >= p.seq:
                    raise Conflict(
                        f"meter {p.meter.serial} has already loaded purchase #{p.seq}: finish "
                        "the sale instead (the customer has the credit)",
                        field="sale_key",
                    )
                if (item["purchase_ok"] and item["purchase"]["seq"] == p.seq) or (
                    not item["purchase_ok"] and not is_blank(item["purchase_raw"])
                ):
                    restore[p.slot] = self._previous_record(session, oc, p)
            io, keys, card_map = oc.io, oc.keys, oc.card_map
            ids = [p.id for p in rows]
        if restore:
            self._write_verify(io, keys, card_map, restore, ids)
        with self._tx() as session:
            for pid in ids:
                row = session.get(CardPurchase, pid)
                assert row is not None
                if row.status == "pending":
                    row.status = "voided"
                    row.closed_at = now_utc()
                    row.close_reason = reason.strip()
            audit.record(
                session,
                actor,
                "card.sale.void",
                [f"sale:{sale_key}", *(f"card_purchase:{i}" for i in ids)],
                detail={"reason": reason.strip(), "erased_from_card": len(restore)},
            )
            return {"sale_key": sale_key, "voided": len(ids), "erased_from_card": len(restore)}

    def void_without_card(
        self,
        actor: Actor,
        *,
        sale_key: str,
        reason: str,
        authorize: Callable[[int], Manager],
        grants: Grants | None = None,
    ) -> dict[str, Any]:
        """Void a pending sale whose card is gone for good (lost, stolen, broken).

        A manager authorises it. Nothing is charged, and the sequence number is used again by
        the next sale; should the old card turn up and still carry the purchase, a meter could
        load it before the new card's: that is why the old card must be reported lost first.
        """
        if not reason or not reason.strip():
            raise InvalidInput("say why the sale is voided", field="reason")
        with self._tx() as session:
            rows = list(
                session.scalars(
                    select(CardPurchase).where(
                        CardPurchase.sale_key == sale_key, CardPurchase.status == "pending"
                    )
                )
            )
            if not rows:
                raise NotFound(f"no pending sale {sale_key!r}", field="sale_key")
            self._check(grants, "sale.create", rows[0].office_id)
            office_id = rows[0].office_id
            card = rows[0].card
            if card.status == "active":
                raise Conflict(
                    f"card {card.uid} is still active: void the sale with the card on the reader, "
                    "or report the card lost first",
                    field="sale_key",
                )
        manager = authorize(office_id)
        with self._tx() as session:
            ids = []
            for row in session.scalars(
                select(CardPurchase).where(
                    CardPurchase.sale_key == sale_key, CardPurchase.status == "pending"
                )
            ):
                row.status = "voided"
                row.closed_at = now_utc()
                row.close_reason = reason.strip()
                row.authorized_by_id = manager.id
                ids.append(row.id)
            audit.record(
                session,
                actor,
                "card.sale.void_without_card",
                [f"sale:{sale_key}", *(f"card_purchase:{i}" for i in ids)],
                detail={"reason": reason.strip(), "authorized_by": manager.username},
                office_id=office_id,
            )
            return {"sale_key": sale_key, "voided": len(ids), "erased_from_card": 0}

    def report_lost(
        self, actor: Actor, *, uid: str, reason: str = "lost", grants: Grants | None = None
    ) -> dict[str, Any]:
        """Report a card lost or stolen: it is refused from now on (reissue gives a new one)."""
        if reason not in ("lost", "stolen", "broken"):
            raise InvalidInput("reason must be lost, stolen or broken", field="reason")
        with self._tx() as session:
            card = session.scalar(select(Card).where(Card.uid == uid.upper()))
            if card is None or (
                grants is not None and not grants.allows("card.issue", card.office_id)
            ):
                raise NotFound(f"no card {uid!r}", field="uid")
            if card.status != "active":
                raise Conflict(f"card {card.uid} is already {card.status}", field="uid")
            card.status = "lost"
            card.status_changed_at = now_utc()
            card.status_reason = reason
            audit.record(
                session,
                actor,
                "card.report_lost",
                [f"card:{card.uid}"],
                detail={"reason": reason},
                office_id=card.office_id,
                customer_id=card.customer_id,
            )
            return {"uid": card.uid, "status": card.status}

    def _previous_record(self, session: Session, oc: OpenCard, p: CardPurchase) -> bytes:
        """The purchase record the slot held before ``p``: the last confirmed one, or empty."""
        assert oc.card_map is not None
        slot = oc.card_map.slot(p.slot)
        prev = session.scalar(
            select(CardPurchase)
            .where(
                CardPurchase.meter_id == p.meter_id,
                CardPurchase.status == "confirmed",
                CardPurchase.seq < p.seq,
            )
            .order_by(CardPurchase.seq.desc())
            .limit(1)
        )
        if prev is None:
            values = _empty_purchase(slot, p.meter, p.written_at)
        else:
            values = _purchase_values(slot, prev)
        return oc.io.seal_purchase(slot, values, oc.keys)

    # Corrections that need a manager ----------------------------------------------------------

    def authorize(
        self,
        office_id: int,
        *,
        username: str | None = None,
        password: str | None = None,
        manager_reader: MifareReader | None = None,
    ) -> Manager:
        """A manager's authorisation: a manager card on a reader, or a manager's password.

        Runs in its own transaction, committed even when the password is wrong, so failed
        attempts count towards the login lockout and are audited.
        """
        with self.sessions() as session:
            session.begin()
            try:
                if manager_reader is not None:
                    oc = self._open(session, manager_reader, card_type="manager", rekey=True)
                    op = session.get(Operator, oc.card.operator_id) if oc.card.operator_id else None
                    how = f"manager card {oc.card.uid}"
                elif username and password:
                    how = f"password of {username}"
                    op = ops.authenticate(session, username, password)
                else:
                    raise InvalidInput(
                        "a manager must authorise this: a manager card on the reader, or a "
                        "manager's username and password",
                        field="authorization",
                    )
                if op is None or not op.is_active:
                    raise PermissionDenied(f"{how} belongs to no active operator")
                correct = ops.grants_for(session, op).offices("sale.correct")
                if correct == frozenset() or (
                    office_id is not None and correct is not None and office_id not in correct
                ):
                    raise PermissionDenied(
                        f"{how}: {op.username} may not authorise corrections here"
                    )
                manager = Manager(op.id, op.username)
                session.commit()
                return manager
            except AuthenticationFailed:
                audit.record(
                    session,
                    Actor(name=f"authorize:{username}"),
                    "card.authorize_failed",
                    [f"operator:{username}"],
                    office_id=office_id,
                )
                session.commit()
                raise

    @_rekeying
    def repurchase(
        self,
        reader: MifareReader,
        actor: Actor,
        *,
        purchase_id: int,
        authorize: Callable[[int], Manager],
        grants: Grants | None = None,
    ) -> dict[str, Any]:
        """Write a confirmed purchase again whose card write was lost (补购); no new money."""
        manager = authorize(self._purchase_office(purchase_id, grants))
        with self._tx() as session:
            p = self._purchase(session, purchase_id, grants)
            if p.status != "confirmed":
                raise Conflict(
                    f"purchase {purchase_id} is {p.status}; only a confirmed purchase "
                    "can be written again",
                    field="purchase_id",
                )
            oc = self._open(session, reader)
            slot, item = self._check_unloaded(session, oc, p)
            raw = self._records(oc, [p])[slot.index]
            if item["purchase_raw"] == raw:
                raise Conflict(f"the card already carries purchase #{p.seq}", field="purchase_id")
            p.rewrites += 1
            p.authorized_by_id = manager.id
            if p.card_id != oc.card.id:
                p.card_id = oc.card.id
            audit.record(
                session,
                actor,
                "card.repurchase",
                [f"card_purchase:{p.id}", f"card:{oc.card.uid}"],
                detail={"seq": p.seq, "authorized_by": manager.username},
                office_id=p.office_id,
                customer_id=p.customer_id,
            )
            io, keys, card_map = oc.io, oc.keys, oc.card_map
            assert card_map is not None
            # the write happens inside the transaction: if it fails, nothing is recorded
            self._write_verify(io, keys, card_map, {slot.index: raw}, [])
            return _purchase_dict(p) | {"apdus": io.reader.apdu_count}

    @_rekeying
    def cancel(
        self,
        reader: MifareReader,
        actor: Actor,
        *,
        purchase_id: int,
        reason: str,
        authorize: Callable[[int], Manager],
        grants: Grants | None = None,
    ) -> dict[str, Any]:
        """Cancel a confirmed purchase no meter has loaded: erase it, reverse its sale."""
        if not reason or not reason.strip():
            raise InvalidInput("say why the purchase is cancelled", field="reason")
        manager = authorize(self._purchase_office(purchase_id, grants))
        with self._tx() as session:
            p = self._purchase(session, purchase_id, grants)
            if p.status != "confirmed":
                raise Conflict(f"purchase {purchase_id} is {p.status}", field="purchase_id")
            oc = self._open(session, reader)
            if p.card_id != oc.card.id:
                raise CardRefused(
                    f"purchase #{p.seq} was written to card {p.card.uid}; present that card"
                )
            slot, item = self._check_unloaded(session, oc, p)
            restore = None
            if item["purchase_ok"] and item["purchase"]["seq"] == p.seq:
                restore = self._previous_record(session, oc, p)
            assert p.transaction_id is not None
            txn = session.get(LedgerTransaction, p.transaction_id)
            assert txn is not None
            fixed = ledger.find_posted(session, f"card:{p.idempotency_key}:fixed")
            if fixed is not None:  # the fixed charges it carried go back too
                ledger.reverse(
                    session,
                    fixed.seq,
                    reason_code="purchase_cancelled",
                    idempotency_key=f"card-cancel:{p.idempotency_key}:fixed",
                    memo=reason.strip()[:200],
                    operator_id=actor.operator_id,
                )
            reversal = ledger.reverse(
                session,
                txn.seq,
                reason_code="purchase_cancelled",
                idempotency_key=f"card-cancel:{p.idempotency_key}",
                memo=reason.strip()[:200],
                operator_id=actor.operator_id,
            )
            p.status = "cancelled"
            p.reversal_id = reversal.id
            p.closed_at = now_utc()
            p.close_reason = reason.strip()
            p.authorized_by_id = manager.id
            audit.record(
                session,
                actor,
                "card.cancel",
                [f"card_purchase:{p.id}", f"ledger:#{reversal.seq}"],
                detail={
                    "seq": p.seq,
                    "reason": reason.strip(),
                    "authorized_by": manager.username,
                    "amount": format_fen(p.amount),
                },
                office_id=p.office_id,
                customer_id=p.customer_id,
            )
            if restore is not None:
                assert oc.card_map is not None
                self._write_verify(oc.io, oc.keys, oc.card_map, {slot.index: restore}, [])
            return _purchase_dict(p) | {"reversal_seq": reversal.seq}

    def _purchase_office(self, purchase_id: int, grants: Grants | None) -> int:
        with self._tx() as session:
            return self._purchase(session, purchase_id, grants).office_id

    def _purchase(self, session: Session, purchase_id: int, grants: Grants | None) -> CardPurchase:
        p = session.get(CardPurchase, purchase_id)
        if p is None or (
            grants is not None
            and not grants.allows("sale.correct", p.office_id)
            and not grants.allows("sale.create", p.office_id)
        ):
            raise NotFound(f"no purchase {purchase_id}", field="purchase_id")
        return p

    def _check_unloaded(
        self, session: Session, oc: OpenCard, p: CardPurchase
    ) -> tuple[PlacedSlot, dict[str, Any]]:
        assert oc.card_map is not None
        if oc.card.customer_id != p.customer_id:
            raise CardRefused("this card belongs to another customer")
        bound = next((s for s in oc.slots.values() if s.meter_id == p.meter_id), None)
        if bound is None:
            raise CardRefused(f"meter {p.meter.serial} is not on this card")
        slot = oc.card_map.slot(bound.slot)
        read = oc.io.read_slots(oc.card_map, oc.keys, [slot], purchase=True)
        self._upload(session, oc, read)
        item = read[slot.index]
        ret = item["return"] if item["return_ok"] else None
        loaded = max(ret["last_seq"] if ret else 0, _last_loaded(session, p.meter_id))
        if loaded >= p.seq:
            raise Conflict(
                f"meter {p.meter.serial} has already loaded purchase #{p.seq}", field="purchase_id"
            )
        latest = _last_live(session, p.meter_id)
        if latest is not None and latest.seq != p.seq:
            raise Conflict(
                f"purchase #{p.seq} is not the meter's latest (#{latest.seq})", field="purchase_id"
            )
        return slot, item

    # Reissue ---------------------------------------------------------------------------------

    def reissue(
        self,
        reader: MifareReader,
        actor: Actor,
        *,
        customer: str,
        reason: str = "lost",
        grants: Grants | None = None,
    ) -> dict[str, Any]:
        """Reissue a lost or broken card (补卡) onto the blank card on the reader.

        The old card is blacklisted; the new one gets the same profile and meters. Purchase
        sequence numbers continue, so a found old card cannot load a purchase twice; a purchase
        the old card carried but no meter loaded is written again with :meth:`repurchase`.
        """
        if reason not in ("lost", "broken", "stolen"):
            raise InvalidInput("reason must be lost, broken or stolen", field="reason")
        with self._tx() as session:
            cust = _customer_in_scope(session, customer, grants, "card.issue")
            old = session.scalar(
                select(Card).where(
                    Card.customer_id == cust.id,
                    Card.status.in_(("active", "lost")),
                    Card.card_type == "user",
                    Card.replaced_by_id.is_(None),
                )
            )
            if old is None:
                raise NotFound(f"customer {customer} holds no card to reissue", field="customer")
            waiting = _pending_for_card(session, old.id)
            if waiting:
                raise Conflict(
                    f"card {old.uid} has a pending sale ({waiting[0].sale_key}): finish or void it "
                    "with that card first; if the card is gone, report it lost and void the sale "
                    "without the card (a manager authorises)",
                    field="customer",
                )
            io = self._io(session, reader)
            self._refuse_known(session, io)
            pr = prof.get_profile(session, old.profile or "")
            version = self.keystore.current_version(session)
            new = Card(
                uid=io.uid.hex().upper(),
                card_type="user",
                profile=pr.code,
                customer_id=cust.id,
                key_version=version,
                reissue_count=old.reissue_count + 1,
                office_id=cust.office_id,
                data={},
            )
            session.add(new)
            session.flush()
            old.status = "blacklisted"
            old.status_changed_at = now_utc()
            old.status_reason = reason
            old.replaced_by_id = new.id
            starts = [s.start_block for s in old.slots]
            card_map = prof.card_map_from_starts(pr, self.utilities, starts)
            bindings = {}
            for s in old.slots:
                session.add(
                    CardSlot(
                        card_id=new.id,
                        slot=s.slot,
                        kind=s.kind,
                        start_block=s.start_block,
                        meter_id=s.meter_id,
                    )
                )
                if s.meter is not None:
                    bindings[s.slot] = s.meter
            session.flush()
            self._write_new_card(session, io, new, card_map, bindings, version)
            unloaded = [
                _purchase_dict(p)
                for m in bindings.values()
                if (p := _last_live(session, m.id)) is not None
                and p.status == "confirmed"
                and p.seq > _last_loaded(session, m.id)
            ]
            audit.record(
                session,
                actor,
                "card.reissue",
                [f"card:{old.uid}", f"card:{new.uid}"],
                detail={"reason": reason, "reissue_count": new.reissue_count},
                office_id=cust.office_id,
                customer_id=cust.id,
            )
            return {
                "uid": new.uid,
                "card_id": new.id,
                "replaces": old.uid,
                "reissue_count": new.reissue_count,
                "unloaded_purchases": unloaded,
            }

    # Tool cards ------------------------------------------------------------------------------

    def issue_tool(
        self,
        reader: MifareReader,
        actor: Actor,
        *,
        card_type: str,
        office_id: int | None = None,
        operator: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Issue a tool card: system, manager, settings, reset, clear or check."""
        if card_type not in CARD_TYPES or card_type == "user":
            raise InvalidInput(
                f"card_type must be one of {', '.join(t for t in CARD_TYPES if t != 'user')}",
                field="card_type",
            )
        data = dict(data or {})
        with self._tx() as session:
            io = self._io(session, reader)
            self._refuse_known(session, io)
            op = None
            if card_type == "manager":
                if not operator:
                    raise InvalidInput("a manager card belongs to an operator", field="operator")
                op = session.scalar(select(Operator).where(Operator.username == operator))
                if op is None:
                    raise NotFound(f"no operator {operator!r}", field="operator")
                correct = ops.grants_for(session, op).offices("sale.correct")
                if correct == frozenset() or (
                    office_id is not None and correct is not None and office_id not in correct
                ):
                    raise InvalidInput(
                        f"{operator} may not authorise corrections, so gets no manager card",
                        field="operator",
                    )
            payload = self._tool_payload(session, card_type, data)
            version = self.keystore.current_version(session)
            row = Card(
                uid=io.uid.hex().upper(),
                card_type=card_type,
                key_version=version,
                office_id=office_id,
                operator_id=op.id if op else None,
                data={k: str(v) for k, v in data.items()},
            )
            session.add(row)
            session.flush()
            keys = self.keystore.card_keys(session, io.uid, version)
            layout = TOOL_LAYOUTS.get(card_type)
            initial: dict[int, bytes] = {}
            entries = tool_blocks(io.geometry, layout) if layout is not None else []
            if layout is not None and payload is not None:
                initial.update(
                    split_blocks(seal(layout, payload, io.uid, entries[0][0], keys.mac), entries[0])
                )
            header = Header(
                card_type=card_type,
                site_id=io.site_id,
                card_serial=row.id,
                customer_no=0,
                profile=0,
                key_version=version,
                reissue_count=0,
                issued_at=now_utc(),
                slot_starts=(),
            )
            io.format(
                header,
                keys,
                card_map=None,
                initial=initial,
                tool_blocks=[b for e in entries for b in e],
            )
            audit.record(
                session,
                actor,
                "card.issue_tool",
                [f"card:{row.uid}"],
                detail={"card_type": card_type, "operator": operator, **row.data},
                office_id=office_id,
            )
            return {
                "uid": row.uid,
                "card_id": row.id,
                "card_type": card_type,
                "operator": operator,
                "data": row.data,
            }

    def _tool_payload(
        self, session: Session, card_type: str, data: dict[str, Any]
    ) -> dict[str, Any] | None:
        now = now_utc()
        if card_type == "system":
            phases = data.setdefault("phases", "both")
            if phases not in ("single", "three", "both"):
                raise InvalidInput("phases must be single, three or both", field="phases")
            return {"phases": phases, "time": now}
        if card_type == "settings":
            kind = data.get("kind")
            if kind not in self.utilities or self.utilities.get(str(kind)).card_layout is None:
                raise InvalidInput("kind must be a utility kind with card meters", field="kind")
            layout = self.utilities.get(str(kind)).card_layout
            assert isinstance(layout, SlotLayout)
            given = {k: v for k, v in data.items() if k != "kind"}
            unknown = set(given) - set(SETTINGS_MASK)
            if unknown or not given:
                raise InvalidInput(
                    f"a settings card sets some of {', '.join(SETTINGS_MASK)}", field="set"
                )
            checked = layout.resolve_params(given)
            values: dict[str, Any] = {"kind": kind, "time": now, "mask": 0}
            for name, bit in SETTINGS_MASK.items():
                values[name] = checked[name] if name in given else Decimal(0)
                if name in given:
                    values["mask"] |= bit
            return values
        if card_type == "clear":
            # A clear card restarts a meter's purchase count (commissioning, 清零). The office's
            # sequence for a meter that has purchases would then run ahead of the meter's, so a
            # clear card names one meter and only one that has none.
            serial = str(data.get("meter", ""))
            if not serial.isdigit() or len(serial) > 12 or not serial.lstrip("0"):
                raise InvalidInput(
                    "meter: the serial (digits) of the card meter to clear", field="meter"
                )
            meter = session.scalar(
                select(Meter).where(func.ltrim(Meter.serial, "0") == serial.lstrip("0"))
            )
            if meter is not None and _last_live(session, meter.id) is not None:
                raise Conflict(
                    f"meter {serial} has purchases: a clear card would restart its purchase "
                    "count under them; replace the meter instead",
                    field="meter",
                )
            return {"meter_serial": serial, "time": now}
        return None  # manager, reset: the header says it all; check: meters fill it

    def _read_tool(self, session: Session, oc: OpenCard) -> dict[str, Any]:
        card_type = oc.header.card_type
        out: dict[str, Any] = {"operator": None}
        if oc.card.operator_id:
            op = session.get(Operator, oc.card.operator_id)
            out["operator"] = op.username if op else None
        layout = TOOL_LAYOUTS.get(card_type)
        if layout is None:
            return out
        entries = tool_blocks(oc.io.geometry, layout)
        data = oc.io.read_blocks([b for e in entries for b in e], "B", oc.keys.data_b)
        records = []
        for entry in entries:
            raw = slot_bytes(entry, data)
            if is_blank(raw):
                continue
            ok = check_seal(layout, raw, oc.io.uid, entry[0], oc.keys.mac)
            values = layout.decode(raw)
            rec = _public(values) | {"valid": ok}
            if card_type == "check" and ok:
                meter = session.scalar(
                    select(Meter).where(
                        Meter.kind == values["kind"],
                        func.ltrim(Meter.serial, "0") == values["meter_serial"].lstrip("0"),
                    )
                )
                rec["reading_stored"] = (
                    _store_reading(session, meter, values, None, source="check_card")
                    if meter is not None
                    else False
                )
            records.append(rec)
        out["records"] = records
        return out


# Helpers ----------------------------------------------------------------------------------------


def _customer_in_scope(
    session: Session, number: str, grants: Grants | None, permission: str
) -> Customer:
    """The customer, answered exactly as an unknown one when outside the operator's offices."""
    customer = get_customer(session, number)
    if grants is not None and not grants.allows(permission, customer.office_id):
        raise NotFound(f"no customer with number {number!r}", field="customer")
    return customer


def _card_serial(meter: Meter, slot: PlacedSlot) -> None:
    f = slot.layout.purchase.by_name["meter_serial"]
    if not meter.serial.isdigit() or len(meter.serial) > 2 * f.length:
        raise InvalidInput(
            f"meter {meter.serial!r} cannot go on a card: card meter serials are up to "
            f"{2 * f.length} digits",
            field=f"meters.{slot.label}",
        )


def _empty_purchase(slot: PlacedSlot, meter: Meter, when: dt.datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"meter_serial": meter.serial, "seq": 0, "amount": 0, "time": when}
    values.update(slot.layout.resolve_params({}))
    return values


def _purchase_values(slot: PlacedSlot, p: CardPurchase) -> dict[str, Any]:
    values: dict[str, Any] = {
        "meter_serial": p.meter.serial,
        "seq": p.seq,
        "amount": p.units if slot.layout.amount == "units" else p.amount,
        "time": p.written_at,
    }
    params = {k: v for k, v in p.params.items() if not k.startswith("_")}
    values.update({k: Decimal(v) for k, v in params.items()})
    return values


def _last_live(session: Session, meter_id: int) -> CardPurchase | None:
    return session.scalar(
        select(CardPurchase)
        .where(CardPurchase.meter_id == meter_id, CardPurchase.status.in_(("pending", "confirmed")))
        .order_by(CardPurchase.seq.desc())
        .limit(1)
    )


def _last_loaded(session: Session, meter_id: int) -> int:
    value = session.scalar(
        select(func.max(MeterReading.last_seq)).where(MeterReading.meter_id == meter_id)
    )
    return int(value or 0)


def _pending_for_card(session: Session, card_id: int) -> list[CardPurchase]:
    return list(
        session.scalars(
            select(CardPurchase).where(
                CardPurchase.card_id == card_id, CardPurchase.status == "pending"
            )
        )
    )


def _store_reading(
    session: Session,
    meter: Meter,
    values: Mapping[str, Any],
    card_id: int | None,
    *,
    source: str = "card",
) -> bool:
    """Store a meter's reported state once (reading the same card twice stores nothing new)."""
    taken_at = values["time"]
    exists = session.scalar(
        select(MeterReading.id).where(
            MeterReading.meter_id == meter.id,
            MeterReading.source == source,
            MeterReading.taken_at == taken_at,
            MeterReading.cumulative == values["cumulative"],
        )
    )
    if exists is not None:
        return False
    extra = {
        k: str(v)
        for k, v in values.items()
        if k
        not in (
            "meter_serial",
            "last_seq",
            "cumulative",
            "remaining",
            "status",
            "time",
            "mac",
            "kind",
        )
    }
    session.add(
        MeterReading(
            meter_id=meter.id,
            source=source,
            taken_at=taken_at,
            cumulative=values["cumulative"],
            remaining=values["remaining"],
            last_seq=values["last_seq"],
            status=values["status"],
            card_id=card_id,
            detail=extra | {"flags": flags_of(values["status"])},
        )
    )
    session.flush()
    return True


def _public(values: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if k == "mac":
            continue
        if isinstance(v, dt.datetime):
            v = v.isoformat()
        elif isinstance(v, Decimal):
            v = str(v)
        elif isinstance(v, bytes):
            v = v.hex()
        out[k] = v
    return out


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _purchase_dict(p: CardPurchase) -> dict[str, Any]:
    return {
        "id": p.id,
        "sale_key": p.sale_key,
        "meter": p.meter.serial,
        "kind": p.meter.kind,
        "slot": p.slot,
        "seq": p.seq,
        "amount": p.amount,
        "amount_yuan": format_fen(p.amount),
        "units": p.units,
        "status": p.status,
        "params": {k: v for k, v in p.params.items() if not k.startswith("_")},
        "quote": p.params.get("_quote"),
        "written_at": p.written_at.isoformat(),
        "rewrites": p.rewrites,
        "transaction_id": p.transaction_id,
    }
