"""The card API, ``/api/v1/card``: readers, profiles, issue, read, sell, and corrections.

Each view acts on a PC/SC reader of the server (``reader`` in the body, else ``ONECARD_READER``,
else the only reader present). Card operations own their database transactions: a sale is
recorded as pending before the card is written, so a failed write leaves a visible pending sale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from onecard import offices as off
from onecard.audit import Actor
from onecard.card import profiles as prof
from onecard.card.reader import list_readers
from onecard.card.service import Manager, SaleItem, open_pcsc_reader
from onecard.errors import InvalidInput
from onecard.operators import Grants
from onecard.web import auth, db, runtime
from onecard.web import schemas as s
from onecard.web.api import body, json_only

card_api = Blueprint("card_api", __name__, url_prefix="/api/v1/card")
card_api.before_request(json_only)


def _out(data: Mapping[str, Any], status: int = 200) -> ResponseReturnValue:
    """The service's answer as JSON (decimals and times are already strings)."""
    return jsonify(dict(data)), status


def _who() -> tuple[Actor, Grants]:
    """The operator and their grants; then the request's own transaction ends.

    The card desk runs its own transactions, and on SQLite every transaction takes the write
    lock, so the request must not hold one while the desk works.
    """
    who, grants = auth.actor(), auth.grants()
    db().rollback()
    return who, grants


def _reader(name: str | None) -> Any:
    return open_pcsc_reader(name or runtime().settings_reader())


@card_api.get("/readers")
@auth.require("customer.view")
def readers() -> ResponseReturnValue:
    """The PC/SC readers the server sees."""
    return _out({"readers": list_readers(), "default": runtime().settings_reader()})


@card_api.get("/profiles")
@auth.require("customer.view")
def profiles() -> ResponseReturnValue:
    """Card profiles usable in the operator's offices, with their slots."""
    offices = auth.grants().offices("customer.view")
    check = prof.check_profiles(db(), runtime().utilities)
    rows = prof.list_profiles(db(), None if offices is None else sorted(offices))
    return _out(
        {"profiles": [p.describe() | {"unavailable": check.unavailable.get(p.code)} for p in rows]}
    )


@card_api.post("/profiles")
@auth.require("office.manage")
def create_profile() -> ResponseReturnValue:
    """Define a card profile (which kinds, in which order, on a 1K or 4K card)."""
    data = s.CardProfileRequest().load(body())
    session_ = db()
    office_id = off.get_office(session_, data["office"]).id if data["office"] else None
    auth.grants().require("office.manage", office_id)
    p = prof.create_profile(
        session_,
        runtime().utilities,
        auth.actor(),
        code=data["code"],
        names=data["names"],
        slots=data["slots"],
        card_size=data["card_size"],
        office_id=office_id,
    )
    session_.commit()
    return _out(p.describe(), 201)


@card_api.post("/read")
@auth.require("customer.view")
def read_card() -> ResponseReturnValue:
    """Read the card on the reader; meters' return records are stored as readings."""
    data = s.ReaderChoice().load(body())
    who, grants = _who()
    with _reader(data["reader"]) as r:
        out = runtime().card_desk().read(r, who, grants=grants)
    return _out(out)


@card_api.post("/issue")
@auth.require("card.issue")
def issue_card() -> ResponseReturnValue:
    """Issue the blank card on the reader to a customer, with a profile (four, six, eight ...)."""
    data = s.CardIssueRequest().load(body())
    who, grants = _who()
    with _reader(data["reader"]) as r:
        out = (
            runtime()
            .card_desk()
            .issue(
                r,
                who,
                customer=data["customer"],
                profile=data["profile"],
                meters=data["meters"],
                grants=grants,
            )
        )
    return _out(out, 201)


@card_api.post("/sales")
@auth.require("sale.create")
def sell() -> ResponseReturnValue:
    """Sell to meters on the card on the reader. Retrying with the same ``sale_key`` returns
    the confirmed sale (``replayed: true``) or finishes a pending one; it never credits twice."""
    data = s.CardSaleRequest().load(body())
    who, grants = _who()
    items = [
        SaleItem(meter=i["meter"], amount=i["amount_fen"], units=i["units"], params=i["params"])
        for i in data["items"]
    ]
    with _reader(data["reader"]) as r:
        out = (
            runtime()
            .card_desk()
            .sell(
                r,
                who,
                sale_key=data["sale_key"],
                items=items,
                method=data["method"],
                grants=grants,
            )
        )
    return _out(out, 200 if out["replayed"] else 201)


@card_api.get("/sales/pending")
@auth.require("sale.create")
def pending() -> ResponseReturnValue:
    """Sales whose card write was not verified: finish or void each with its card."""
    _, grants = _who()
    offices = grants.offices("sale.create")
    rows = runtime().card_desk().pending(office_ids=None if offices is None else sorted(offices))
    return _out({"pending": rows})


@card_api.post("/sales/<sale_key>/finish")
@auth.require("sale.create")
def finish(sale_key: str) -> ResponseReturnValue:
    """Finish a pending sale with its card on the reader: write what is missing, confirm."""
    data = s.ReaderChoice().load(body())
    who, grants = _who()
    with _reader(data["reader"]) as r:
        out = runtime().card_desk().finish(r, who, sale_key=sale_key, grants=grants)
    return _out(out)


@card_api.post("/sales/<sale_key>/void")
@auth.require("sale.create")
def void(sale_key: str) -> ResponseReturnValue:
    """Void a pending sale with its card on the reader; nothing is charged."""
    data = s.CardVoidRequest().load(body())
    who, grants = _who()
    with _reader(data["reader"]) as r:
        out = (
            runtime()
            .card_desk()
            .void(r, who, sale_key=sale_key, reason=data["reason"], grants=grants)
        )
    return _out(out)


@card_api.post("/sales/<sale_key>/void-without-card")
@auth.require("sale.create")
def void_without_card(sale_key: str) -> ResponseReturnValue:
    """Void a pending sale whose card is reported lost; a manager authorises it."""
    data = s.CardCorrectionRequest().load(body())
    if not data["reason"]:
        raise InvalidInput("say why the sale is voided", field="reason")
    authorize = _authorizer(data["authorization"], data["reader"])
    who, grants = _who()
    out = (
        runtime()
        .card_desk()
        .void_without_card(
            who, sale_key=sale_key, reason=data["reason"], authorize=authorize, grants=grants
        )
    )
    return _out(out)


@card_api.post("/cards/<uid>/lost")
@auth.require("card.issue")
def report_lost(uid: str) -> ResponseReturnValue:
    """Report a card lost, stolen or broken: it is refused from now on."""
    data = s.CardLostRequest().load(body())
    who, grants = _who()
    out = runtime().card_desk().report_lost(who, uid=uid, reason=data["reason"], grants=grants)
    return _out(out)


def _authorizer(auth_data: Mapping[str, Any], reader: str | None) -> Callable[[int], Manager]:
    desk = runtime().card_desk()
    manager_reader = auth_data.get("reader")
    if manager_reader and manager_reader == (reader or runtime().settings_reader()):
        raise InvalidInput(
            "the manager card needs a reader of its own (the customer's card is on this one), "
            "or give the manager's username and password",
            field="authorization.reader",
        )

    def authorize(office_id: int) -> Manager:
        if manager_reader:
            with open_pcsc_reader(manager_reader) as r:
                return desk.authorize(office_id, manager_reader=r)
        return desk.authorize(
            office_id, username=auth_data["username"], password=auth_data["password"]
        )

    return authorize


@card_api.post("/purchases/<int:purchase_id>/repurchase")
@auth.require("sale.create")
def repurchase(purchase_id: int) -> ResponseReturnValue:
    """Write a purchase whose card write was lost onto the card again (补购); a manager
    authorises it with a manager card or a password. No money moves."""
    data = s.CardCorrectionRequest().load(body())
    who, grants = _who()
    with _reader(data["reader"]) as r:
        out = (
            runtime()
            .card_desk()
            .repurchase(
                r,
                who,
                purchase_id=purchase_id,
                authorize=_authorizer(data["authorization"], data["reader"]),
                grants=grants,
            )
        )
    return _out(out)


@card_api.post("/purchases/<int:purchase_id>/cancel")
@auth.require("sale.create")
def cancel(purchase_id: int) -> ResponseReturnValue:
    """Cancel a purchase no meter has loaded: erase it from the card and reverse its sale;
    a manager authorises it."""
    data = s.CardCorrectionRequest().load(body())
    who, grants = _who()
    if not data["reason"]:
        raise InvalidInput("say why the purchase is cancelled", field="reason")
    with _reader(data["reader"]) as r:
        out = (
            runtime()
            .card_desk()
            .cancel(
                r,
                who,
                purchase_id=purchase_id,
                reason=data["reason"],
                authorize=_authorizer(data["authorization"], data["reader"]),
                grants=grants,
            )
        )
    return _out(out)


@card_api.post("/reissue")
@auth.require("card.issue")
def reissue() -> ResponseReturnValue:
    """Reissue a customer's lost card onto the blank card on the reader (补卡)."""
    data = s.CardReissueRequest().load(body())
    who, grants = _who()
    with _reader(data["reader"]) as r:
        out = (
            runtime()
            .card_desk()
            .reissue(
                r,
                who,
                customer=data["customer"],
                reason=data["reason"],
                grants=grants,
            )
        )
    return _out(out, 201)


@card_api.post("/tools")
@auth.require("office.manage")
def issue_tool() -> ResponseReturnValue:
    """Issue a tool card: system, manager, settings, reset, clear or check."""
    data = s.CardToolRequest().load(body())
    office_id = off.get_office(db(), data["office"]).id if data["office"] else None
    who, grants = _who()
    grants.require("office.manage", office_id)
    with _reader(data["reader"]) as r:
        out = (
            runtime()
            .card_desk()
            .issue_tool(
                r,
                who,
                card_type=data["card_type"],
                operator=data["operator"],
                office_id=office_id,
                data=data["data"],
            )
        )
    return _out(out, 201)
