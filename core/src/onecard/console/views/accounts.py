"""Account changes: transfer of ownership (过户), meter replacement (换表), suspension and
resumption (报停/恢复), closure (销户). The work is done by :mod:`onecard.lifecycle`.

Every page needs ``customer.manage`` in the customer's office. Every form carries a hidden key
(``kit.new_key``): submitting it twice does the action once.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import flash, redirect, request, url_for
from flask.typing import ResponseReturnValue

from onecard import lifecycle
from onecard.console import kit
from onecard.console.i18n import _, yuan
from onecard.console.views.customers import (
    categories,
    context,
    counts_money,
    viewable,
)
from onecard.customers import customer_file
from onecard.errors import OnecardError
from onecard.models import Customer
from onecard.web import db, runtime

bp = kit.console_blueprint("accounts", __name__, "/console/customers")

#: Service field names -> form field names, for errors shown next to their field.
FIELDS = {"key": "", "customer": "", "meter": "meter", "office_id": ""}


def managed(number: str) -> Customer:
    """The customer, refused (403) unless the operator may manage accounts of its office."""
    customer = viewable(number)
    kit.require_office("customer.manage", customer.office_id)
    return customer


def start(form: kit.Form, prefix: str) -> None:
    """A fresh form: its key, so that a double submit is recognised."""
    if request.method == "GET":
        form.values.setdefault("key", kit.new_key(prefix))


def decimal_units(form: kit.Form, name: str, decimals: int, *, required: bool) -> int | None:
    """A quantity typed in the kind's unit (``1234.5``) as an integer of its smallest unit."""
    raw = form[name].strip().replace(",", "")
    if not raw:
        if required:
            form.error(name, _("Required."))
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        form.error(name, _("Enter a number, like 1234.5."))
        return None
    if not value.is_finite() or value < 0:
        form.error(name, _("Enter a number, not negative."))
        return None
    scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        form.error(name, _("At most %(n)s decimals.", n=decimals))
        return None
    if scaled > 10**15:
        form.error(name, _("Too large."))
        return None
    return int(scaled)


def signedyuan(form: kit.Form, name: str) -> int | None:
    """Yuan that may be negative (a meter in overdraft), as fen; empty: None."""
    raw = form[name].strip()
    if not raw:
        return None
    negative = raw.startswith("-")
    form.values[name] = raw.lstrip("-").strip()
    try:
        fen = form.yuan(name, required=False, allow_zero=True)
    finally:
        form.values[name] = raw
    if fen is None:
        return None
    return -fen if negative else fen


def done(customer: Customer, message: str, replayed: bool) -> ResponseReturnValue:
    if replayed:
        flash(_("This form was already submitted; nothing was done twice."), "info")
    else:
        flash(message, "success")
    return redirect(url_for("customers.show", number=customer.number))


def page(template: str, customer: Customer, form: kit.Form, **extra: Any) -> ResponseReturnValue:
    return kit.render(template, c=customer, form=form, **extra, **context())


# Transfer of ownership ------------------------------------------------------------------------


@bp.route("/<number>/transfer", methods=["GET", "POST"])
@kit.page("customer.manage")
def transfer(number: str) -> ResponseReturnValue:
    """Transfer the account to a new owner (过户): the number, meters, card and money stay."""
    customer = managed(number)
    form = kit.Form()
    start(form, "transfer")
    if request.method == "GET":
        form.values.setdefault("category", customer.category)
    extra = {"categories": categories(), "arrears_fen": lifecycle.arrears(db(), customer.id)}
    if request.method == "GET":
        return page("console/account_transfer.html", customer, form, **extra)
    name = form.text("name", max_length=200)
    phone = form.text("phone", required=False, max_length=32)
    id_number = form.text("id_number", required=False, max_length=32)
    category = form.choice("category", list(categories()))
    reason = form.text("reason", max_length=lifecycle.MAX_REASON)
    if not form.ok:
        return page("console/account_transfer.html", customer, form, **extra)
    session_ = db()
    replayed = lifecycle.already_done(session_, customer.id, "customer.transfer", form["key"])
    try:
        lifecycle.transfer_ownership(
            session_,
            kit.actor(),
            number,
            name=name or "",
            phone=phone,
            id_number=id_number,
            category=category,
            reason=reason or "",
            key=form["key"],
        )
        session_.commit()
    except OnecardError as exc:
        session_.rollback()
        form.fail(exc, FIELDS)
        return page("console/account_transfer.html", customer, form, **extra)
    return done(
        customer, _("Account %(n)s now belongs to %(name)s.", n=number, name=name), replayed
    )


# Meter replacement ----------------------------------------------------------------------------


@bp.route("/<number>/replace-meter", methods=["GET", "POST"])
@kit.page("customer.manage")
def replace_meter(number: str) -> ResponseReturnValue:
    """Replace a meter (换表): final reading of the old one, the new serial; the wallet and the
    card slot move to the new meter."""
    customer = managed(number)
    form = kit.Form()
    start(form, "replace")
    data = customer_file(db(), customer)
    meters = [row["meter"] for row in data["meters"]]
    if request.method == "GET":
        form.values.setdefault(
            "meter", request.args.get("meter", meters[0].serial if meters else "")
        )
    utilities = runtime().utilities
    chosen = next((m for m in meters if m.serial == form["meter"]), None)
    kind = utilities.get(chosen.kind) if chosen and chosen.kind in utilities else None
    extra = {
        "meters": data["meters"],
        "chosen": chosen,
        "unit": kind.unit if kind else "",
        "money": counts_money(chosen.kind) if chosen else True,
    }
    if request.method == "GET":
        return page("console/account_replace.html", customer, form, **extra)
    if lifecycle.already_done(db(), customer.id, "meter.replace", form["key"]):
        return done(customer, "", True)
    if chosen is None:
        form.error("meter", _("Choose the meter to replace."))
        return page("console/account_replace.html", customer, form, **extra)
    decimals = kind.unit_decimals if kind else 0
    new_serial = form.text("new_serial", max_length=64)
    new_model = form.text("new_model", required=False, max_length=64)
    final = decimal_units(form, "final_reading", decimals, required=True)
    if extra["money"]:
        left = form.yuan("remaining", required=False, allow_zero=True)
    else:
        left = decimal_units(form, "remaining", decimals, required=False)
    reason = form.text("reason", max_length=lifecycle.MAX_REASON)
    if not form.ok:
        return page("console/account_replace.html", customer, form, **extra)
    session_ = db()
    try:
        result = lifecycle.replace_meter(
            session_,
            kit.actor(),
            utilities,
            number,
            meter=chosen.serial,
            new_serial=new_serial or "",
            new_model=new_model or "",
            final_reading=final or 0,
            remaining=left,
            reason=reason or "",
            key=form["key"],
        )
        session_.commit()
    except OnecardError as exc:
        session_.rollback()
        form.fail(exc, FIELDS)
        return page("console/account_replace.html", customer, form, **extra)
    return done(
        customer,
        _(
            "Meter %(old)s replaced by %(new)s; ¥%(fen)s carried to the new meter's wallet.",
            old=result["old"]["serial"],
            new=result["new"]["serial"],
            fen=yuan(result["carried_fen"]),
        ),
        bool(result.get("replayed")),
    )


# Suspension and resumption --------------------------------------------------------------------


@bp.route("/<number>/suspend", methods=["GET", "POST"])
@kit.page("customer.manage")
def suspend(number: str) -> ResponseReturnValue:
    """Suspend the account (报停): no sales and no new card until it is resumed."""
    return _status(number, "suspend")


@bp.route("/<number>/resume", methods=["GET", "POST"])
@kit.page("customer.manage")
def resume(number: str) -> ResponseReturnValue:
    """Resume a suspended account."""
    return _status(number, "resume")


def _status(number: str, verb: str) -> ResponseReturnValue:
    customer = managed(number)
    form = kit.Form()
    start(form, verb)
    template = "console/account_status.html"
    if request.method == "GET":
        return page(template, customer, form, verb=verb)
    reason = form.text("reason", required=verb == "suspend", max_length=lifecycle.MAX_REASON)
    if not form.ok:
        return page(template, customer, form, verb=verb)
    session_ = db()
    action = lifecycle.suspend if verb == "suspend" else lifecycle.resume
    replayed = lifecycle.already_done(session_, customer.id, f"customer.{verb}", form["key"])
    try:
        action(session_, kit.actor(), number, key=form["key"], reason=reason or "")
        session_.commit()
    except OnecardError as exc:
        session_.rollback()
        form.fail(exc, FIELDS)
        return page(template, customer, form, verb=verb)
    message = (
        _("Account %(n)s is suspended.", n=number)
        if verb == "suspend"
        else _("Account %(n)s is active again.", n=number)
    )
    return done(customer, message, replayed)


# Closure --------------------------------------------------------------------------------------


@bp.route("/<number>/close", methods=["GET", "POST"])
@kit.page("customer.manage")
def close(number: str) -> ResponseReturnValue:
    """Close the account (销户): settle every wallet and the arrears, retire the cards, remove
    the meters, print a settlement receipt."""
    customer = managed(number)
    form = kit.Form()
    start(form, "close")
    session_ = db()
    preview = lifecycle.closing_preview(session_, customer)
    utilities = runtime().utilities
    if request.method == "GET":
        form.values.setdefault("method", "cash")
        form.values.setdefault("collect_method", "cash")
        for row in preview["meters"]:
            m, reading = row["meter"], row["reading"]
            if reading is not None and reading.remaining is not None and counts_money(m.kind):
                left = reading.remaining + row["unloaded_fen"]
                form.values.setdefault(f"left_{m.id}", yuan(left).replace(",", ""))
    extra = {"preview": preview, "units": {}}
    for row in preview["meters"]:
        m = row["meter"]
        if m.kind in utilities:
            extra["units"][m.id] = utilities.get(m.kind).unit or ""
    template = "console/account_close.html"
    if request.method == "GET":
        return page(template, customer, form, **extra)
    method = form.choice("method", list(lifecycle.REFUND_METHODS))
    collect = form.choice("collect_method", list(lifecycle.COLLECT_METHODS))
    reason = form.text("reason", max_length=lifecycle.MAX_REASON)
    closings: dict[int, lifecycle.MeterClosing] = {}
    for row in preview["meters"]:
        m = row["meter"]
        decimals = utilities.get(m.kind).unit_decimals if m.kind in utilities else 0
        final = decimal_units(form, f"final_{m.id}", decimals, required=False)
        left = signedyuan(form, f"left_{m.id}")
        closings[m.id] = lifecycle.MeterClosing(final_reading=final, left=left)
    if form["confirm"] != "1":
        form.error("confirm", _("Tick to confirm that the account is to be closed."))
    if not form.ok:
        return page(template, customer, form, **extra)
    fields = dict(FIELDS)
    for m_id in closings:
        fields[f"meters.{m_id}.left"] = f"left_{m_id}"
        fields[f"meters.{m_id}.final_reading"] = f"final_{m_id}"
    try:
        result = lifecycle.close_account(
            session_,
            kit.actor(),
            number,
            office_id=customer.office_id,
            key=form["key"],
            reason=reason or "",
            method=method or "cash",
            collect_method=collect or "cash",
            meters=closings,
        )
        session_.commit()
    except OnecardError as exc:
        session_.rollback()
        form.fail(exc, fields)
        preview = lifecycle.closing_preview(session_, customer)
        extra["preview"] = preview
        return page(template, customer, form, **extra)
    return done(
        customer,
        _("Account %(n)s closed; settlement receipt %(r)s.", n=number, r=result["receipt"]),
        bool(result.get("replayed")),
    )
