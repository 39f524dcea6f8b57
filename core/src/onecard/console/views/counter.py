"""The counter: read a card, sell to its meters, pending sales, and card corrections.

Selling, as the clerk sees it: the customer's card goes on the reader and the sell page reads it
(customer, meters, what each meter last reported); the clerk types an amount per meter and sees the
tariff's itemised quote as they type; **Confirm** writes the card and opens the receipt.

The page carries a sale key made when it was rendered: a double-clicked Confirm or a browser retry
sends the same key, and the card desk then returns the sale it already made (never a second
credit). A card pulled out mid-write leaves a *pending* sale (recorded, not charged): the page says
so and offers **finish** (card back on the reader, written again) and **void**.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import abort, flash, jsonify, redirect, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard import receipts
from onecard.card.service import CardDesk, Manager, SaleItem
from onecard.console import kit, labels
from onecard.console.i18n import _, error_text
from onecard.customers import get_customer
from onecard.errors import (
    AuthenticationFailed,
    CardError,
    InvalidInput,
    NotFound,
    OnecardError,
    PermissionDenied,
)
from onecard.models import (
    Card,
    CardPurchase,
    Customer,
    Meter,
    MeterReading,
)
from onecard.tariffs.documents import tariff_names
from onecard.tariffs.meters import quote_meter
from onecard.web import db, runtime

bp = kit.console_blueprint("counter", __name__, "/console/counter")


METHODS = ("cash", "bank")
REASONS = ("lost", "broken", "stolen")


def desk() -> CardDesk:
    return runtime().card_desk()


def method_options() -> list[tuple[str, str]]:
    return labels.options("method", list(METHODS))


def reason_options() -> list[tuple[str, str]]:
    return labels.options("reason", list(REASONS))


# What the page shows about a card ---------------------------------------------------------------


@dataclass
class SlotView:
    """One slot of a customer's card, with its meter's last known state."""

    slot: int
    kind: str
    kind_name: str
    meter: str | None = None
    meter_id: int | None = None
    units_card: bool = False
    unit: str | None = None
    decimals: int = 0
    has_tariff: bool = False
    loaded_seq: int = 0
    last_seq: int | None = None
    on_card_seq: int | None = None
    remaining: str | None = None
    cumulative: str | None = None
    reading_at: dt.datetime | None = None
    flags: list[str] = field(default_factory=list)
    unloaded: CardPurchase | None = None
    pending: CardPurchase | None = None

    @property
    def amount_field(self) -> str:
        return f"amount-{self.meter}"

    @property
    def units_field(self) -> str:
        return f"units-{self.meter}"


@dataclass
class CardView:
    card: Card
    customer: Customer | None
    slots: list[SlotView]
    pending: list[CardPurchase]

    @property
    def meters(self) -> list[SlotView]:
        return [s for s in self.slots if s.meter]

    @property
    def active(self) -> bool:
        return self.card.status == "active"


kind_name = labels.kind_name


def _quantity(value: int | None, decimals: int) -> str | None:
    if value is None:
        return None
    return str(Decimal(value).scaleb(-decimals)) if decimals else str(value)


def card_view(session: Session, uid: str, read: Mapping[str, Any] | None = None) -> CardView:
    """The card ``uid`` as the database knows it (after a read: with what the card said)."""
    card = session.scalar(select(Card).where(Card.uid == uid.upper()))
    if card is None or card.card_type != "user":
        raise NotFound(f"no customer card {uid!r}", field="card")
    customer = session.get(Customer, card.customer_id) if card.customer_id else None
    utilities = runtime().utilities
    on_card = {s["slot"]: s for s in (read or {}).get("slots", [])}
    views = []
    for bound in sorted(card.slots, key=lambda s: s.slot):
        kind = utilities.get(bound.kind) if bound.kind in utilities else None
        layout = kind.card_layout if kind else None
        view = SlotView(
            slot=bound.slot,
            kind=bound.kind,
            kind_name=kind_name(bound.kind),
            units_card=getattr(layout, "amount", "money") == "units",
            unit=kind.unit if kind else None,
            decimals=kind.unit_decimals if kind else 0,
        )
        read_slot = on_card.get(bound.slot) or {}
        purchase = read_slot.get("purchase")
        if purchase:
            view.on_card_seq = purchase.get("seq")
        meter = bound.meter
        if meter is not None:
            view.meter, view.meter_id = meter.serial, meter.id
            view.has_tariff = bool(meter.tariff or tariff_names(session, meter.kind))
            _meter_state(session, view, meter)
        views.append(view)
    pending = list(
        session.scalars(
            select(CardPurchase)
            .where(CardPurchase.card_id == card.id, CardPurchase.status == "pending")
            .order_by(CardPurchase.id)
        )
    )
    return CardView(card, customer, views, pending)


def _meter_state(session: Session, view: SlotView, meter: Meter) -> None:
    reading = session.scalar(
        select(MeterReading)
        .where(MeterReading.meter_id == meter.id)
        .order_by(MeterReading.taken_at.desc(), MeterReading.id.desc())
        .limit(1)
    )
    loaded = session.scalar(
        select(func.max(MeterReading.last_seq)).where(MeterReading.meter_id == meter.id)
    )
    view.loaded_seq = int(loaded or 0)
    if reading is not None:
        view.reading_at = reading.taken_at
        view.cumulative = _quantity(reading.cumulative, view.decimals)
        if reading.remaining is not None:
            view.remaining = (
                _quantity(reading.remaining, view.decimals)
                if view.units_card
                else f"¥{Decimal(reading.remaining).scaleb(-2):,.2f}"
            )
        view.flags = [str(f) for f in (reading.detail or {}).get("flags", [])]
    last = session.scalar(
        select(CardPurchase)
        .where(
            CardPurchase.meter_id == meter.id,
            CardPurchase.status.in_(("pending", "confirmed")),
        )
        .order_by(CardPurchase.seq.desc())
        .limit(1)
    )
    if last is not None:
        view.last_seq = last.seq
        if last.status == "pending":
            view.pending = last
        elif last.seq > view.loaded_seq:
            view.unloaded = last


def _reader_choice(name: str | None) -> str | None:
    """The reader the form names (one of :func:`kit.reader_names`), else the default one."""
    if not name:
        return None
    if name not in kit.reader_names():
        raise InvalidInput(f"no card reader {name!r}", field="reader")
    return name


def _read_card() -> tuple[str | None, dict[str, Any] | CardError]:
    """Read the card on the reader the page names (``?reader=``, else the default one): the
    reader, and what the card desk read or why it could not."""
    reader = request.args.get("reader") or None
    if reader is not None and reader not in kit.reader_names():
        reader = None
    actor, grants = kit.who()
    try:
        with kit.open_reader(reader) as r:
            return reader, desk().read(r, actor, grants=grants)
    except CardError as exc:
        return reader, exc


def _uid_on(reader: Any) -> str:
    return bytes(reader.uid()).hex().upper()


# Sell -------------------------------------------------------------------------------------------


@bp.get("/sell")
@kit.page("sale.create")
def sell() -> ResponseReturnValue:
    """Read the card on the reader and show the sale form for its meters."""
    reader, result = _read_card()
    if isinstance(result, CardError):
        return _present("sale", result, reader)
    if result.get("card_type") != "user":
        return _present("sale", None, reader, tool=str(result.get("card_type")))
    view = card_view(db(), result["uid"], result)
    _require_sale(view.card.office_id)
    form = kit.Form({"method": "cash", "card": view.card.uid, "reader": reader or ""})
    return _sell_page(view, form, kit.new_key("sale"))


def _require_sale(office_id: int | None) -> None:
    """Refuse (403) unless the operator sells in the card's office."""
    if office_id is None:
        raise PermissionDenied("this card belongs to no office")
    kit.require_office("sale.create", office_id)


def _present(
    purpose: str, exc: OnecardError | None, reader: str | None, tool: str | None = None
) -> ResponseReturnValue:
    return kit.render(
        "console/counter_present.html",
        purpose=purpose,
        error=exc,
        tool=tool,
        reader=reader or "",
        readers=kit.reader_names(),
    )


def _sell_page(
    view: CardView, form: kit.Form, sale_key: str, status: int = 200
) -> ResponseReturnValue:
    return kit.render(
        "console/counter_sell.html",
        status=status,
        view=view,
        form=form,
        sale_key=sale_key,
        methods=method_options(),
        readers=kit.reader_names(),
    )


@bp.post("/sell")
@kit.page("sale.create")
def confirm() -> ResponseReturnValue:
    """Confirm a sale: check the form, write the card (same card as the page was made for),
    make the receipt, show the result. A retried form (same sale key) sells nothing twice."""
    form = kit.Form()
    sale_key = form["sale_key"].strip()
    if not sale_key:
        abort(400, description=_("This form has no sale key; read the card again."))
    view = card_view(db(), form["card"])
    _require_sale(view.card.office_id)
    reader = _reader_choice(form["reader"] or None)
    items = _parse_items(form, view)
    method = form.choice("method", list(METHODS))
    if not view.active:
        form.error("", _("This card is %(status)s: it may not be used.", status=view.card.status))
    if not form.ok or items is None or method is None:
        return _sell_page(view, form, sale_key)
    fields = {f"items.{n}.": item.meter for n, item in enumerate(items)}
    fields = {k: f"amount-{v}" for k, v in fields.items()} | {"method": "method", "sale_key": ""}
    expected = view.card.uid
    actor, grants = kit.who()  # from here on, no database objects of the request: see kit.who
    try:
        with kit.open_reader(reader) as r:
            uid = _uid_on(r)
            if uid != expected:
                form.error(
                    "",
                    _(
                        "The card on the reader (%(uid)s) is not the card this sale was made for "
                        "(%(expected)s). Put the customer's card on the reader and confirm again.",
                        uid=uid,
                        expected=expected,
                    ),
                )
                return _sell_page(card_view(db(), expected), form, sale_key)
            result = desk().sell(
                r, actor, sale_key=sale_key, items=items, method=method, grants=grants
            )
    except CardError as exc:
        if _pending_rows(db(), sale_key):
            return redirect(url_for("counter.sale", sale_key=sale_key, failed=exc.code))
        form.fail(exc, fields)
        return _sell_page(card_view(db(), expected), form, sale_key)
    except (AuthenticationFailed, PermissionDenied):
        raise
    except OnecardError as exc:
        form.fail(exc, fields)
        return _sell_page(card_view(db(), expected), form, sale_key)
    if result["status"] == "confirmed":
        receipts.issue_sale_receipt(db(), runtime().utilities, sale_key)
        db().commit()
    return redirect(url_for("counter.sale", sale_key=sale_key, new=1))


def _parse_units(form: kit.Form, name: str, slot: SlotView) -> int | None:
    raw = form[name].strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        form.error(name, _("Enter a number of %(unit)s.", unit=slot.unit or ""))
        return None
    if not value.is_finite() or value <= 0:
        form.error(name, _("The units must be more than zero."))
        return None
    scaled = value.scaleb(slot.decimals)
    if scaled != scaled.to_integral_value():
        form.error(name, _("At most %(n)s decimals.", n=slot.decimals))
        return None
    if scaled > 10**12:
        form.error(name, _("Too many units."))
        return None
    return int(scaled)


def _parse_items(form: kit.Form, view: CardView) -> list[SaleItem] | None:
    """The sale's items from ``amount-<serial>`` / ``units-<serial>``; errors by field."""
    meters = {s.meter: s for s in view.meters}
    for name in form.values:
        prefix, _sep, serial = name.partition("-")
        if prefix in ("amount", "units") and serial not in meters and form[name].strip():
            form.error("", _("There is no meter %(serial)s on this card.", serial=serial))
    items: list[SaleItem] = []
    for slot in view.meters:
        serial = str(slot.meter)
        amount = form.yuan(slot.amount_field, required=False)
        units = None
        if form[slot.units_field].strip():
            if not slot.units_card:
                form.error(
                    slot.amount_field,
                    _("%(kind)s is sold in money on the card, not in units.", kind=slot.kind_name),
                )
                continue
            units = _parse_units(form, slot.units_field, slot)
            if units is None:
                continue
            if amount is None:
                amount = _price_of_units(form, slot, units)
                if amount is None:
                    continue
        if amount is None:
            continue
        if slot.pending is not None:
            form.error(
                slot.amount_field,
                _("This meter has a pending sale: finish or void it first."),
            )
            continue
        items.append(SaleItem(serial, amount, units))
    if form.ok and not items and view.meters:
        form.error(view.meters[0].amount_field, _("Enter an amount for at least one meter."))
    if not view.meters:
        form.error("", _("This card carries no meters."))
    return items if form.ok else None


def _price_of_units(form: kit.Form, slot: SlotView, units: int) -> int | None:
    """What ``units`` cost under the meter's tariff (the form gave units and no amount)."""
    meter = db().get(Meter, slot.meter_id)
    if meter is None or not slot.has_tariff:
        form.error(slot.amount_field, _("Enter the amount for these units."))
        return None
    try:
        quote = quote_meter(db(), runtime().utilities, meter, at=_now(), units=units)
    except OnecardError as exc:
        form.error(slot.units_field, str(error_text(exc)))
        return None
    return quote.amount


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# The live quote ---------------------------------------------------------------------------------


@bp.post("/quote")
@kit.page("sale.create")
def quote() -> ResponseReturnValue:
    """The tariff's itemised quote for one meter, as the clerk types (JSON for counter.js):
    ``{"meter", "amount"}`` (yuan) or ``{"meter", "units"}``."""
    data = request.get_json(silent=True) or request.form
    serial = str(data.get("meter", ""))
    meter = db().scalar(select(Meter).where(Meter.serial == serial))
    office_id = _meter_office(meter)
    if meter is None or not kit.allowed("sale.create", office_id):
        return jsonify({"ok": False, "error": _("No such meter."), "field": "meter"}), 404
    form = kit.Form({k: str(v) for k, v in data.items() if v is not None})
    utilities = runtime().utilities
    kind = utilities.get(meter.kind) if meter.kind in utilities else None
    layout = kind.card_layout if kind else None
    slot = SlotView(
        slot=0,
        kind=meter.kind,
        kind_name=kind_name(meter.kind),
        units_card=getattr(layout, "amount", "money") == "units",
        unit=kind.unit if kind else None,
        decimals=kind.unit_decimals if kind else 0,
    )
    amount = form.yuan("amount", required=False)
    units = None
    if form["units"].strip():
        if not slot.units_card:
            form.error(
                "amount",
                _("%(kind)s is sold in money on the card, not in units.", kind=slot.kind_name),
            )
        else:
            units = _parse_units(form, "units", slot)
    if not form.ok:
        name, message = next(iter(form.errors.items()))
        return jsonify({"ok": False, "field": name, "error": message}), 422
    if amount is None and units is None:
        return jsonify({"ok": True, "empty": True, "lines": []})
    if not meter.tariff and not tariff_names(db(), meter.kind):
        return jsonify(
            {
                "ok": True,
                "lines": [],
                "amount_fen": amount,
                "note": _("No tariff: the meter prices the credit itself."),
            }
        )
    try:
        q = quote_meter(
            db(),
            utilities,
            meter,
            at=_now(),
            amount=None if units is not None else amount,
            units=units,
        )
    except OnecardError as exc:
        return jsonify({"ok": False, "field": "amount", "error": str(error_text(exc))}), 422
    out = q.to_dict()
    from onecard.receipts import item_label

    return jsonify(
        {
            "ok": True,
            "amount_fen": q.amount,
            "amount": f"{Decimal(q.amount).scaleb(-2):,.2f}",
            "quantity": out["quantity"],
            "unit": out["unit"],
            "tariff": out["tariff"],
            "credit_fen": out["credit_fen"],
            "credit": f"{Decimal(out['credit_fen'] or 0).scaleb(-2):,.2f}",
            "lines": [
                {
                    "label": item_label(str(line.get("label", "")), _),
                    "quantity": line.get("quantity"),
                    "unit": line.get("unit"),
                    "price": line.get("price"),
                    "amount": receipts._yuan_text(line.get("amount")),
                }
                for line in out["lines"]
            ],
        }
    )


def _meter_office(meter: Meter | None) -> int | None:
    if meter is None or meter.premises is None:
        return None
    premises = meter.premises
    if premises.customer_id:
        customer = db().get(Customer, premises.customer_id)
        if customer is not None:
            return customer.office_id
    return premises.office_id


# The sale's page: done, or pending -------------------------------------------------------------


def _pending_rows(session: Session, sale_key: str) -> list[CardPurchase]:
    return list(
        session.scalars(
            select(CardPurchase).where(
                CardPurchase.sale_key == sale_key, CardPurchase.status == "pending"
            )
        )
    )


def _sale_rows(sale_key: str) -> list[CardPurchase]:
    rows = list(
        db().scalars(
            select(CardPurchase)
            .where(CardPurchase.sale_key == sale_key)
            .order_by(CardPurchase.slot, CardPurchase.id)
        )
    )
    if not rows or not kit.allowed("customer.view", rows[0].office_id):
        raise NotFound(f"no sale {sale_key!r}", field="sale_key")
    return rows


@bp.get("/sales/<sale_key>")
@kit.page("customer.view")
def sale(sale_key: str) -> ResponseReturnValue:
    """A sale: its purchases and receipt, or (pending) what to do about it."""
    return _sale_page(sale_key, kit.Form({"reason": ""}))


def _sale_page(sale_key: str, form: kit.Form, status: int = 200) -> ResponseReturnValue:
    rows = _sale_rows(sale_key)
    receipt = receipts.receipt_for_sale(db(), sale_key)
    customer = db().get(Customer, rows[0].customer_id)
    pending = [r for r in rows if r.status == "pending"]
    return kit.render(
        "console/counter_sale.html",
        status=status,
        sale_key=sale_key,
        rows=rows,
        pending=pending,
        card=rows[0].card,
        customer=customer,
        receipt=receipt,
        form=form,
        readers=kit.reader_names(),
        failed=request.args.get("failed"),
        new=request.args.get("new") == "1",
        kind_name=kind_name,
        tz=kit.office_timezone(rows[0].office_id),
    )


# Pending sales ----------------------------------------------------------------------------------


@bp.get("/pending")
@kit.page("sale.create")
def pending() -> ResponseReturnValue:
    """Sales whose card write did not finish, in the operator's offices."""
    offices = kit.scope("sale.create")
    query = select(CardPurchase).where(CardPurchase.status == "pending")
    if offices is not None:
        query = query.where(CardPurchase.office_id.in_(sorted(offices)))
    rows = list(db().scalars(query.order_by(CardPurchase.id)))
    sales: dict[str, list[CardPurchase]] = {}
    for row in rows:
        sales.setdefault(row.sale_key, []).append(row)
    customers = {
        c.id: c
        for c in db().scalars(
            select(Customer).where(Customer.id.in_({r.customer_id for r in rows}))
        )
    }
    return kit.render(
        "console/counter_pending.html",
        sales=sales,
        customers=customers,
        kind_name=kind_name,
    )


@bp.post("/sales/<sale_key>/finish")
@kit.page("sale.create")
def finish(sale_key: str) -> ResponseReturnValue:
    """Finish a pending sale with its card on the reader: write it again, confirm, receipt."""
    form = kit.Form()
    rows = _sale_rows(sale_key)
    kit.require_office("sale.create", rows[0].office_id)
    reader = _reader_choice(form["reader"] or None)
    actor, grants = kit.who()
    try:
        with kit.open_reader(reader) as r:
            result = desk().finish(r, actor, sale_key=sale_key, grants=grants)
    except (AuthenticationFailed, PermissionDenied):
        raise
    except OnecardError as exc:
        form.fail(exc, {"sale_key": "", "reader": "reader"})
        return _sale_page(sale_key, form)
    if result["status"] == "confirmed":
        receipts.issue_sale_receipt(db(), runtime().utilities, sale_key)
        db().commit()
    flash(_("The sale is finished: the card carries the purchase."), "success")
    return redirect(url_for("counter.sale", sale_key=sale_key, new=1))


@bp.post("/sales/<sale_key>/void")
@kit.page("sale.create")
def void(sale_key: str) -> ResponseReturnValue:
    """Void a pending sale with its card on the reader: nothing is charged."""
    form = kit.Form()
    rows = _sale_rows(sale_key)
    kit.require_office("sale.create", rows[0].office_id)
    reason = form.text("reason", max_length=200)
    reader = _reader_choice(form["reader"] or None)
    if reason is None:
        return _sale_page(sale_key, form)
    actor, grants = kit.who()
    try:
        with kit.open_reader(reader) as r:
            desk().void(r, actor, sale_key=sale_key, reason=reason, grants=grants)
    except (AuthenticationFailed, PermissionDenied):
        raise
    except OnecardError as exc:
        form.fail(exc, {"sale_key": "", "reason": "reason"})
        return _sale_page(sale_key, form)
    flash(_("The sale is voided; nothing was charged."), "success")
    return redirect(url_for("counter.pending"))


@bp.post("/sales/<sale_key>/void-without-card")
@kit.page("sale.create")
def void_without_card(sale_key: str) -> ResponseReturnValue:
    """Void a pending sale whose card is reported lost; a manager authorises it."""
    form = kit.Form()
    rows = _sale_rows(sale_key)
    kit.require_office("sale.create", rows[0].office_id)
    reason = form.text("reason", max_length=200)
    authorize = _authorizer(form, None)
    if reason is None or authorize is None or not form.ok:
        return _sale_page(sale_key, form)
    actor, grants = kit.who()
    try:
        desk().void_without_card(
            actor, sale_key=sale_key, reason=reason, authorize=authorize, grants=grants
        )
    except _Refused as refused:
        form.errors[refused.field] = str(error_text(refused.exc))
        return _sale_page(sale_key, form)
    except (AuthenticationFailed, PermissionDenied):
        raise
    except OnecardError as exc:
        form.fail(exc, {"sale_key": "", "reason": "reason"})
        return _sale_page(sale_key, form)
    flash(_("The sale is voided; nothing was charged."), "success")
    return redirect(url_for("counter.pending"))


# Manager authorisation --------------------------------------------------------------------------


class _Refused(Exception):
    """The manager's authorisation failed: show ``exc`` under the form field ``field``."""

    def __init__(self, exc: OnecardError, field_name: str) -> None:
        super().__init__(exc.message)
        self.exc = exc
        self.field = field_name


def _authorizer(form: kit.Form, customer_reader: str | None) -> Callable[[int], Manager] | None:
    """How a manager authorises this correction: a manager card on another reader, or a
    manager's username and password. Errors go under their fields (None when there are any)."""
    manager_reader = form["manager_reader"]
    names = kit.reader_names()
    if manager_reader:
        if manager_reader not in names:
            form.error("manager_reader", _("Choose one of the options."))
            return None
        if manager_reader == (customer_reader or (names[0] if len(names) == 1 else None)):
            form.error(
                "manager_reader",
                _(
                    "The manager card needs a reader of its own: the customer's card is on this "
                    "one. Choose the other reader, or use the manager's password."
                ),
            )
            return None
        if customer_reader is None and len(names) > 1 and manager_reader == names[0]:
            form.error("reader", _("Choose the reader of the customer's card."))
            return None

        def by_card(office_id: int) -> Manager:
            try:
                with kit.open_reader(manager_reader) as r:
                    return desk().authorize(office_id, manager_reader=r)
            except (CardError, PermissionDenied, InvalidInput) as exc:
                raise _Refused(exc, "manager_reader") from exc

        return by_card
    username = form.text("manager_username", max_length=64)
    password = form.text("manager_password", max_length=200)
    if username is None or password is None:
        return None

    def by_password(office_id: int) -> Manager:
        try:
            return desk().authorize(office_id, username=username, password=password)
        except AuthenticationFailed as exc:
            raise _Refused(exc, "manager_password") from exc
        except (PermissionDenied, InvalidInput) as exc:
            raise _Refused(exc, "manager_username") from exc

    return by_password


# Read card --------------------------------------------------------------------------------------


@bp.get("/card")
@kit.page("customer.view")
def read() -> ResponseReturnValue:
    """Read the card on the reader: header, customer, slots, pending purchases; the meters'
    return records are stored as readings."""
    reader, result = _read_card()
    if isinstance(result, CardError):
        return _present("read", result, reader)
    view = card_view(db(), result["uid"], result) if result.get("card_type") == "user" else None
    return kit.render(
        "console/counter_card.html",
        result=result,
        view=view,
        reader=reader or "",
        readers=kit.reader_names(),
        can_sell=view is not None and kit.allowed("sale.create", view.card.office_id),
        can_issue=view is not None and kit.allowed("card.issue", view.card.office_id),
        kind_name=kind_name,
        tz=kit.office_timezone(view.card.office_id if view else None),
    )


# Corrections: re-purchase, cancel ---------------------------------------------------------------


def _purchase(purchase_id: int) -> CardPurchase:
    p = db().get(CardPurchase, purchase_id)
    if p is None or not kit.allowed("sale.create", p.office_id):
        raise NotFound(f"no purchase {purchase_id}", field="purchase_id")
    return p


@bp.route("/purchases/<int:purchase_id>/<any(repurchase, cancel):action>", methods=["GET", "POST"])
@kit.page("sale.create")
def correct(purchase_id: int, action: str) -> ResponseReturnValue:
    """Re-purchase (write a confirmed purchase onto the card again, no new money) or cancel a
    purchase no meter has loaded (erase it, reverse its sale). A manager authorises both."""
    p = _purchase(purchase_id)
    form = kit.Form()
    if request.method == "GET":
        return _correct_page(p, action, form)
    reader = _reader_choice(form["reader"] or None)
    reason = form.text("reason", max_length=200) if action == "cancel" else ""
    authorize = _authorizer(form, reader)
    if reason is None or authorize is None or not form.ok:
        return _correct_page(p, action, form)
    actor, grants = kit.who()
    fields = {"purchase_id": "", "reason": "reason", "authorization": "manager_username"}
    try:
        with kit.open_reader(reader) as r:
            if action == "repurchase":
                desk().repurchase(
                    r, actor, purchase_id=purchase_id, authorize=authorize, grants=grants
                )
            else:
                desk().cancel(
                    r,
                    actor,
                    purchase_id=purchase_id,
                    reason=reason,
                    authorize=authorize,
                    grants=grants,
                )
    except _Refused as refused:
        form.errors[refused.field] = str(error_text(refused.exc))
        return _correct_page(_purchase(purchase_id), action, form)
    except (AuthenticationFailed, PermissionDenied):
        raise
    except OnecardError as exc:
        form.fail(exc, fields)
        return _correct_page(_purchase(purchase_id), action, form)
    if action == "repurchase":
        flash(_("Purchase no. %(n)s is on the card again.", n=p.seq), "success")
    else:
        flash(_("Purchase no. %(n)s is cancelled and its money reversed.", n=p.seq), "success")
    return redirect(url_for("counter.read", reader=reader or None))


def _correct_page(p: CardPurchase, action: str, form: kit.Form) -> ResponseReturnValue:
    return kit.render(
        "console/counter_correct.html",
        p=p,
        action=action,
        form=form,
        customer=db().get(Customer, p.customer_id),
        readers=kit.reader_names(),
        kind_name=kind_name,
        tz=kit.office_timezone(p.office_id),
    )


# Reissue, report lost ---------------------------------------------------------------------------


def _customer_for(number: str, permission: str) -> Customer:
    customer = get_customer(db(), number)
    if not kit.allowed(permission, customer.office_id):
        raise NotFound(f"no customer with number {number!r}", field="customer")
    return customer


def _cards_of(customer: Customer) -> list[Card]:
    return list(
        db().scalars(
            select(Card)
            .where(Card.customer_id == customer.id, Card.card_type == "user")
            .order_by(Card.id.desc())
        )
    )


@bp.route("/reissue", methods=["GET", "POST"])
@kit.page("card.issue")
def reissue() -> ResponseReturnValue:
    """Reissue a lost, broken or stolen card (补卡) onto the blank card on the reader; the old
    card stops working. Purchases the old card carried but no meter loaded are listed for
    re-purchase."""
    number = request.values.get("customer", "").strip()
    if not number:
        raise NotFound("which customer? (…/reissue?customer=<number>)", field="customer")
    customer = _customer_for(number, "card.issue")
    form = kit.Form({"reason": "lost"} if request.method == "GET" else None)
    result = None
    if request.method == "POST":
        reason = form.choice("reason", list(REASONS))
        reader = _reader_choice(form["reader"] or None)
        if reason is not None:
            number = customer.number
            actor, grants = kit.who()
            try:
                with kit.open_reader(reader) as r:
                    result = desk().reissue(r, actor, customer=number, reason=reason, grants=grants)
            except (AuthenticationFailed, PermissionDenied):
                raise
            except OnecardError as exc:
                form.fail(exc, {"customer": "", "reason": "reason"})
            customer = _customer_for(number, "card.issue")
    unloaded = []
    if result is not None:
        ids = [p["id"] for p in result["unloaded_purchases"]]
        unloaded = [p for p in (db().get(CardPurchase, i) for i in ids) if p is not None]
    return kit.render(
        "console/counter_reissue.html",
        customer=customer,
        cards=_cards_of(customer),
        form=form,
        result=result,
        unloaded=unloaded,
        reasons=reason_options(),
        readers=kit.reader_names(),
        kind_name=kind_name,
        tz=kit.office_timezone(customer.office_id),
    )


@bp.post("/lost")
@kit.page("card.issue")
def report_lost() -> ResponseReturnValue:
    """Report a customer's card lost, stolen or broken: refused from now on."""
    form = kit.Form()
    number = form["customer"].strip()
    customer = _customer_for(number, "card.issue")
    reason = form.choice("lost_reason", list(REASONS))
    uid = form["uid"].strip()
    if reason is not None:
        actor, grants = kit.who()
        try:
            desk().report_lost(actor, uid=uid, reason=reason, grants=grants)
        except (AuthenticationFailed, PermissionDenied):
            raise
        except OnecardError as exc:
            form.fail(exc, {"uid": "", "reason": "lost_reason"})
        else:
            flash(
                _(
                    "Card %(uid)s is reported %(reason)s: it is refused from now on.",
                    uid=uid.upper(),
                    reason=dict(reason_options())[reason],
                ),
                "success",
            )
            return redirect(url_for("counter.reissue", customer=customer.number))
    return kit.render(
        "console/counter_reissue.html",
        customer=customer,
        cards=_cards_of(customer),
        form=form,
        result=None,
        unloaded=[],
        reasons=reason_options(),
        readers=kit.reader_names(),
        kind_name=kind_name,
        tz=kit.office_timezone(customer.office_id),
    )
