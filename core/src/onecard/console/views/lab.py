"""The demo lab (``/lab/``, only with ``ONECARD_LAB``): the demo's emulated hardware.

The customer's hands and the meters in the field: a wallet of emulated cards to put on the
counter or manager reader, and the card meters of each customer card, to carry the card to and
to run. Any logged-in operator may use it. The service is :class:`onecard.console.lab.Lab`,
found in ``app.extensions`` (``onecard demo`` puts one there with the virtual readers); without
one, a lab without readers is made on first use in ``instance/lab``.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import current_app, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue

from onecard.console import kit
from onecard.console.i18n import _, error_text
from onecard.console.lab import EXTENSION, PLACES, SIZES, Lab, parse_rate
from onecard.errors import InvalidInput, OnecardError
from onecard.web import db, runtime

bp = kit.console_blueprint("lab", __name__, "/lab")
_made = threading.Lock()


def service() -> Lab:
    """The app's lab (made without readers on first use if the app has none).

    The request's own transaction ends first: the lab and the card desk run their own, and on
    SQLite a held transaction would block them (as :func:`kit.who` does)."""
    db().rollback()
    lab = current_app.extensions.get(EXTENSION)
    if lab is None:
        with _made:
            lab = current_app.extensions.get(EXTENSION)
            if lab is None:
                rt = runtime()
                lab = Lab(
                    rt.settings.instance_path / "lab",
                    rt.sessions,
                    rt.utilities,
                    rt.card_desk().keystore,
                    unavailable=_("the demo was started without virtual card readers"),
                )
                current_app.extensions[EXTENSION] = lab
    assert isinstance(lab, Lab)
    return lab


def _back(anchor: str = "") -> ResponseReturnValue:
    return redirect(url_for("lab.index") + (f"#{anchor}" if anchor else ""))


def _failed(exc: OnecardError) -> None:
    flash(str(error_text(exc)), "error")


def _place_name(place: str) -> str:
    return str(_("counter reader") if place == "counter" else _("manager reader"))


@bp.get("/")
@kit.page()
def index() -> ResponseReturnValue:
    """The wallet, the readers and the meters of each customer card."""
    lab = service()
    cards = lab.cards()
    meters: dict[str, list[dict[str, Any]]] = {}
    for card in cards:
        if card.get("card_type") == "user":
            meters[card["uid"]] = [
                lab.meter_state(ref.kind, ref.serial) for ref in lab.meters_of(card["uid"])
            ]
    return kit.render(
        "console/lab.html",
        lab=lab,
        cards=cards,
        readers=lab.readers(),
        meters=meters,
        sizes=SIZES,
        place_name=_place_name,
    )


@bp.post("/cards")
@kit.page()
def new_card() -> ResponseReturnValue:
    """A new blank card in the wallet."""
    size = request.form.get("size", "1k")
    try:
        uid = service().new_card(size, request.form.get("label", ""))
    except OnecardError as exc:
        _failed(exc)
        return _back()
    flash(_("New blank card %(uid)s in the wallet.", uid=uid), "success")
    return _back(f"card-{uid}")


@bp.post("/cards/<uid>/put")
@kit.page()
def put(uid: str) -> ResponseReturnValue:
    """Put a card on the counter or the manager reader."""
    place = request.form.get("place", "counter")
    try:
        if place not in PLACES:
            raise InvalidInput(f"no reader {place!r}", field="place")
        service().put(uid, place)
    except OnecardError as exc:
        _failed(exc)
        return _back(f"card-{uid}")
    flash(_("Card %(uid)s is on the %(reader)s.", uid=uid, reader=_place_name(place)), "success")
    return _back(f"card-{uid}")


@bp.post("/take")
@kit.page()
def take() -> ResponseReturnValue:
    """Take the card off a reader, back into the wallet."""
    place = request.form.get("place", "counter")
    try:
        if place not in PLACES:
            raise InvalidInput(f"no reader {place!r}", field="place")
        uid = service().take(place)
    except OnecardError as exc:
        _failed(exc)
        return _back()
    if uid:
        flash(_("Card %(uid)s is back in the wallet.", uid=uid), "success")
    return _back(f"card-{uid}" if uid else "")


@bp.post("/meters/<kind>/<serial>/insert")
@kit.page()
def insert(kind: str, serial: str) -> ResponseReturnValue:
    """Carry a card to a meter and insert it."""
    uid = request.form.get("uid", "")
    try:
        visit = service().carry(uid, kind, serial)
    except OnecardError as exc:
        _failed(exc)
        return _back(f"card-{uid}")
    flash(
        _("Meter %(serial)s: %(message)s", serial=serial, message=visit.message),
        "success" if visit.accepted else "error",
    )
    return _back(f"meter-{kind}-{serial}")


@bp.post("/meters/<kind>/<serial>/run")
@kit.page()
def run(kind: str, serial: str) -> ResponseReturnValue:
    """Let a meter run for some hours at a rate (use)."""
    lab = service()
    try:
        hours = request.form.get("hours", "24").strip() or "24"
        if not hours.isdigit() or not 1 <= int(hours) <= 24 * 366:
            raise InvalidInput("hours: a whole number from 1 to 8784", field="hours")
        rate = parse_rate(request.form.get("rate", ""))
        used = lab.run(kind, serial, int(hours), rate)
        state = lab.meter_state(kind, serial)
    except OnecardError as exc:
        _failed(exc)
        return _back(f"meter-{kind}-{serial}")
    flash(
        _(
            "Meter %(serial)s ran %(hours)s h and metered %(used)s %(unit)s; credit %(credit)s.",
            serial=serial,
            hours=hours,
            used=used,
            unit=state["unit"],
            credit=state["credit_text"],
        ),
        "success",
    )
    return _back(f"meter-{kind}-{serial}")
