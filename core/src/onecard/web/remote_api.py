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

from onecard.errors import InvalidInput
from onecard.models import Meter, Premises
from onecard.remote import inventory
from onecard.remote import service as svc
from onecard.remote.cli import describe_meters, make_service
from onecard.tariffs.meters import find_meter
from onecard.web import auth, db, runtime
from onecard.web.api import body, json_only

remote_api = Blueprint("remote_api", __name__, url_prefix="/api/v1/remote")
remote_api.before_request(json_only)


def _meter(ref: str) -> Meter:
    return find_meter(db(), ref)


def _office_of(meter: Meter) -> int | None:
    if meter.premises_id is None:
        return None
    premises = db().get(Premises, meter.premises_id)
    return premises.office_id if premises else None


@remote_api.get("/gateways")
@auth.require("customer.view")
def list_gateways() -> ResponseReturnValue:
    """Every gateway: its link, meters, stale meters and how its last cycle went."""
    return jsonify({"gateways": inventory.describe_gateways(db())}), 200


@remote_api.get("/meters")
@auth.require("customer.view")
def list_meters() -> ResponseReturnValue:
    """Remote meters and their state (``?gateway=``, ``?stale=1``): last reading, stale, alarm
    level, relay, keep power, bypass."""
    rows = describe_meters(
        db(), gateway=request.args.get("gateway") or None, stale=request.args.get("stale") == "1"
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
    """Sell credit to a meter that keeps its own: ``{"amount": fen, "idempotency_key": …,
    "office_id": …, "method": "cash"}``; pushed at once with the next recharge count."""
    data = body()
    amount = data.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidInput("amount must be a positive whole number of fen", field="amount")
    key = data.get("idempotency_key")
    if not isinstance(key, str) or not key:
        raise InvalidInput("idempotency_key is required", field="idempotency_key")
    office_id = data.get("office_id")
    if isinstance(office_id, bool) or not isinstance(office_id, int):
        raise InvalidInput("office_id must be an office id", field="office_id")
    auth.grants().require("sale.create", office_id)
    meter = _meter(ref)
    session = db()
    push = svc.recharge(
        session,
        auth.actor(),
        meter.id,
        amount=amount,
        office_id=office_id,
        idempotency_key=key,
        method=str(data.get("method") or "cash"),
    )
    session.commit()
    push_id, count = push.id, push.count
    result: dict[str, Any] = asyncio.run(svc.push_recharge(make_service(runtime()), push_id))
    result.update({"count": count, "amount": amount})
    return jsonify(result), 201
