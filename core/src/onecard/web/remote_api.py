"""The remote-meter API, ``/api/v1/remote/…``: gateways, meter states and events, manual relay
commands (trip, close, keep power, release: each audited) and remote recharge.

Reading the state needs ``customer.view``; commands need ``meter.control`` in the meter's office;
a recharge needs ``sale.create`` there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from onecard.errors import InvalidInput, NotFound
from onecard.models import Meter, RemoteRecharge
from onecard.remote import inventory
from onecard.remote import service as svc
from onecard.remote.cli import describe_meters, make_service
from onecard.tariffs.meters import find_meter
from onecard.web import auth, db, runtime, schemas
from onecard.web.api import body, json_only

remote_api = Blueprint("remote_api", __name__, url_prefix="/api/v1/remote")
remote_api.before_request(json_only)


def _meter(ref: str) -> Meter:
    return find_meter(db(), ref)


def _office_of(meter: Meter) -> int | None:
    """The office that runs the meter: who sees and controls it."""
    return inventory.office_of(db(), meter.id)


@remote_api.get("/gateways")
@auth.require("customer.view")
def list_gateways() -> ResponseReturnValue:
    """The gateways: their link, meters, stale meters, meters in alarm and how the last cycle
    went. An operator of some offices only sees the gateways of those offices and those carrying
    their meters, and counts only their offices' meters."""
    found = inventory.describe_gateways(db(), auth.grants().offices("customer.view"))
    return jsonify({"gateways": found}), 200


@remote_api.get("/meters")
@auth.require("customer.view")
def list_meters() -> ResponseReturnValue:
    """Remote meters of the operator's offices and their state (``?gateway=``, ``?stale=1``):
    last reading, stale, alarm level, relay, keep power, bypass."""
    rows = describe_meters(
        db(),
        gateway=request.args.get("gateway") or None,
        stale=request.args.get("stale") == "1",
        offices=auth.grants().offices("customer.view"),
    )
    return jsonify({"meters": rows}), 200


def _command(ref: str, command: str) -> ResponseReturnValue:
    data = body()
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("reason is required: why is this command sent?", field="reason")
    meter = _meter(ref)
    auth.grants().require("meter.control", _office_of(meter))
    actor = auth.actor()
    meter_id = meter.id
    db().rollback()  # the command runs in its own transactions
    result = asyncio.run(make_service(runtime()).manual(meter_id, command, actor, reason))
    status = 200 if result.get("status") == "done" else 502
    return jsonify(result), status


@remote_api.post("/meters/<ref>/trip")
@auth.require("meter.control")
def trip(ref: str) -> ResponseReturnValue:
    """Open the meter's relay now (``{"reason": …}``); 502 when the meter did not obey."""
    return _command(ref, "trip")


@remote_api.post("/meters/<ref>/close")
@auth.require("meter.control")
def close(ref: str) -> ResponseReturnValue:
    """Close the meter's relay now (``{"reason": …}``)."""
    return _command(ref, "close")


@remote_api.post("/meters/<ref>/keep")
@auth.require("meter.control")
def keep(ref: str) -> ResponseReturnValue:
    """Keep the meter's power on whatever its credit until released (``{"reason": …}``)."""
    return _command(ref, "keep")


@remote_api.post("/meters/<ref>/release")
@auth.require("meter.control")
def release(ref: str) -> ResponseReturnValue:
    """End keep-power (``{"reason": …}``)."""
    return _command(ref, "release")


@remote_api.post("/meters/<ref>/recharges")
@auth.require("sale.create")
def recharge(ref: str) -> ResponseReturnValue:
    """Sell credit to a meter that keeps its own (``{"amount_fen": …, "idempotency_key": …,
    "method": "cash"}``, at the meter's office) and push it at once with the next recharge count.
    A retry with the same key returns the first recharge (200) and sells nothing again."""
    data = schemas.RemoteRechargeRequest().load(body())
    meter = _meter(ref)
    runs = _office_of(meter)
    if runs is None or not auth.grants().allows("sale.create", runs):
        # outside the operator's offices a meter is as good as unknown, as for a sale
        raise NotFound(f"no meter with serial {ref!r}", field="meter")
    office_id = svc.meter_office(db(), meter.id)  # its customer's office takes the money
    if office_id is None:
        raise InvalidInput(
            f"meter {ref} is at no customer's premises: there is no one to sell to",
            field="meter",
        )
    session = db()
    key = data["idempotency_key"]
    earlier = session.scalar(select(RemoteRecharge.id).where(RemoteRecharge.idempotency_key == key))
    push = svc.recharge(
        session,
        auth.actor(),
        meter.id,
        amount=data["amount_fen"],
        office_id=office_id,
        idempotency_key=key,
        method=data["method"],
    )
    session.commit()
    push_id, count, amount = push.id, push.count, push.amount
    result: dict[str, Any] = asyncio.run(svc.push_recharge(make_service(runtime()), push_id))
    result.update({"count": count, "amount_fen": amount, "created": earlier is None})
    return jsonify(result), 201 if earlier is None else 200
