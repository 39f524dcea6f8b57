"""The tariff API, ``/api/v1/tariffs`` and ``/api/v1/meters/<meter>/…``: versions and quotes.

Tariffs are installation-wide: any operator may read them and quote; storing a version needs
``tariff.manage``. A refused document changes nothing: the tariff in force stays as it was.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from onecard import tariffs
from onecard.errors import InvalidInput, NotFound
from onecard.models import Customer, Meter, Premises, Tariff
from onecard.tariffs import meters as tm
from onecard.tariffs import requests as rq
from onecard.tariffs.documents import describe_versions
from onecard.web import auth, db, runtime
from onecard.web.api import body, json_only

tariff_api = Blueprint("tariff_api", __name__, url_prefix="/api/v1")
tariff_api.before_request(json_only)


def _versions(rows: list[Tariff]) -> list[dict[str, Any]]:
    return describe_versions(db(), runtime().utilities, rows, documents=True)


@tariff_api.get("/tariffs")
def list_tariffs() -> ResponseReturnValue:
    """Every version of every tariff (``?kind=`` for one kind), each marked in force, scheduled
    or past."""
    auth.current_operator()
    kind = request.args.get("kind") or None
    return jsonify({"tariffs": _versions(tariffs.list_tariffs(db(), kind))}), 200


@tariff_api.get("/tariffs/<kind>/<name>")
def get_tariff(kind: str, name: str) -> ResponseReturnValue:
    """The versions of one tariff, oldest first."""
    auth.current_operator()
    rows = [r for r in tariffs.list_tariffs(db(), kind) if r.name == name]
    if not rows:
        tariffs.schedule(db(), runtime().utilities, kind, name)  # NotFound with the known names
    return jsonify({"versions": _versions(rows)}), 200


@tariff_api.post("/tariffs")
@auth.require("tariff.manage")
def add_tariff() -> ResponseReturnValue:
    """Store a tariff document as the next version (``?allow_past=1`` to take effect in the
    past). 400 names the bad field; nothing is stored."""
    auth.grants().require("tariff.manage", None)
    allow_past = request.args.get("allow_past") in ("1", "true", "yes")
    row = tariffs.add_version(
        db(), auth.actor(), runtime().utilities, body(), allow_past=allow_past
    )
    db().commit()
    return jsonify(_versions([row])[0]), 201


@tariff_api.post("/tariffs/check")
def check_tariff() -> ResponseReturnValue:
    """Validate a tariff document without storing it; answers the normalised document."""
    auth.current_operator()
    return jsonify({"document": tariffs.validate_document(runtime().utilities, body())}), 200


@tariff_api.post("/tariffs/<kind>/<name>/quote")
def quote_tariff(kind: str, name: str) -> ResponseReturnValue:
    """Quote a hypothetical position: ``units`` or ``amount``, ``used_this_period``, ``at``,
    ``until``, ``by_band``, ``category``, ``fixed_due``, areas and dates."""
    auth.current_operator()
    sched = tariffs.schedule(db(), runtime().utilities, kind, name)
    quote = rq.run(sched, rq.parse(sched, body()))
    return jsonify(quote.to_dict()), 200


def _meter(ref: str, permission: str) -> Meter:
    meter = tm.find_meter(db(), ref)
    premises = db().get(Premises, meter.premises_id) if meter.premises_id else None
    customer = (
        db().get(Customer, premises.customer_id) if premises and premises.customer_id else None
    )
    office_id = customer.office_id if customer else (premises.office_id if premises else None)
    if not auth.grants().allows(permission, office_id):
        raise NotFound(f"no meter {ref!r}", field="meter")  # another office's meter is unknown
    return meter


@tariff_api.post("/meters/<ref>/quote")
@auth.require("customer.view")
def quote_for_meter(ref: str) -> ResponseReturnValue:
    """Quote a purchase for a meter (``SERIAL`` or ``KIND:SERIAL``): ``amount`` or ``units``,
    optional ``at`` and ``until``; its tariff, category and tier position come from the meter."""
    meter = _meter(ref, "customer.view")
    data = body()
    extra = sorted(set(data) - {"amount", "units", "unit", "at", "until"})
    if extra:
        raise InvalidInput(
            f"{extra[0]}: a meter's position comes from the meter; send amount or units, unit, "
            "at, until",
            field=extra[0],
        )
    sched = tm.meter_schedule(db(), runtime().utilities, meter)
    parsed = rq.parse(sched, data)
    quote = tm.quote_meter(
        db(),
        runtime().utilities,
        meter,
        at=parsed.at,
        until=parsed.until,
        amount=parsed.amount,
        units=parsed.units,
    )
    return jsonify(quote.to_dict()), 200


@tariff_api.put("/meters/<ref>/tariff")
@auth.require("customer.manage")
def assign_tariff(ref: str) -> ResponseReturnValue:
    """Set a meter's tariff by name (``{"tariff": "residential"}``; ``null`` for the kind's
    only tariff)."""
    meter = _meter(ref, "customer.manage")
    data = body()
    if "tariff" not in data:
        raise InvalidInput("tariff is required (a name, or null)", field="tariff")
    name = data["tariff"]
    if name is not None and not isinstance(name, str):
        raise InvalidInput("tariff must be a name or null", field="tariff")
    before = meter.tariff
    tm.assign(db(), runtime().utilities, meter, name)
    from onecard.audit import record

    record(
        db(),
        auth.actor(),
        "meter.tariff",
        [f"meter:{meter.kind}:{meter.serial}"],
        detail={"from": before, "to": name},
    )
    db().commit()
    return jsonify({"meter": meter.serial, "kind": meter.kind, "tariff": meter.tariff}), 200
