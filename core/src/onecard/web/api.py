"""The JSON API, version 1. Each view's docstring is its API description.

State-changing requests must be JSON (``Content-Type: application/json``), which a browser will not
send cross-site without CORS: that, with the ``SameSite=Lax`` session cookie, is the CSRF defence
for the API. Every state change writes an audit event in the same database transaction.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from onecard import customers as cust
from onecard import ledger
from onecard import offices as off
from onecard import operators as ops
from onecard.audit import Actor, record
from onecard.errors import InvalidInput, NotFound, UnknownAccount
from onecard.ledger import accounts as acc
from onecard.models import AuditEvent, Operator
from onecard.web import auth, db, runtime
from onecard.web import schemas as s

api = Blueprint("api", __name__, url_prefix="/api/v1")


@api.before_request
def json_only() -> None:
    needs_json = request.method in ("POST", "PUT", "PATCH") or bool(request.content_length)
    if request.method != "GET" and needs_json and not request.is_json:
        raise InvalidInput("send the request body as application/json", field="body")


def body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object", field="body")
    return data


def transaction_out(posted: ledger.Posted) -> dict[str, Any]:
    out: dict[str, Any] = s.TransactionOut().dump(
        {
            "seq": posted.seq,
            "idempotency_key": posted.idempotency_key,
            "kind": posted.kind,
            "hash": posted.hash,
            "created_at": posted.created_at,
            "created": posted.created,
            "postings": [{"account": a, "amount_fen": n} for a, n in posted.postings],
        }
    )
    return out


# Session ----------------------------------------------------------------------------------------


@api.post("/session")
def login() -> ResponseReturnValue:
    """Log in with username and password; the answer sets the session cookie."""
    data = s.LoginRequest().load(body())
    session_ = db()
    who = Actor(name=data["username"], remote_addr=request.remote_addr)
    try:
        op = ops.authenticate(session_, data["username"], data["password"])
    except Exception:
        record(session_, who, "operator.login_failed", [f"username:{data['username']}"])
        session_.commit()
        raise
    record(
        session_,
        Actor(op.username, op.id, remote_addr=request.remote_addr),
        "operator.login",
        [f"operator:{op.id}"],
    )
    session_.commit()
    auth.login(op)
    return jsonify(operator_out(op)), 200


@api.delete("/session")
def logout() -> ResponseReturnValue:
    """Log out."""
    auth.logout()
    return jsonify({"status": "logged out"}), 200


@api.get("/session")
def whoami() -> ResponseReturnValue:
    """The logged-in operator, with roles and permissions."""
    return jsonify(operator_out(auth.current_operator())), 200


def operator_out(op: Operator) -> dict[str, Any]:
    grants = ops.grants_for(db(), op)
    out: dict[str, Any] = s.OperatorOut().dump(
        {
            "username": op.username,
            "full_name": op.full_name,
            "is_active": op.is_active,
            "roles": [
                {"role": a.role.name, "office": a.office.code if a.office else None}
                for a in op.assignments
            ],
            "permissions": {
                p: (None if o is None else sorted(o))
                for p, o in sorted(grants.by_permission.items())
            },
        }
    )
    return out


# Plugins ----------------------------------------------------------------------------------------


@api.get("/plugins")
def plugins() -> ResponseReturnValue:
    """The loaded plugins and the utility kinds each registered."""
    auth.current_operator()
    return jsonify(s.PluginsOut().dump({"plugins": runtime().plugins.describe()})), 200


# Offices and operators --------------------------------------------------------------------------


@api.get("/offices")
def list_offices() -> ResponseReturnValue:
    """All offices (codes, names, parents)."""
    auth.current_operator()
    out = [
        {
            "code": o.code,
            "name": o.name,
            "parent": o.parent.code if o.parent else None,
            "timezone": o.timezone,
        }
        for o in off.list_offices(db())
    ]
    return jsonify({"offices": s.OfficeOut(many=True).dump(out)}), 200


@api.post("/offices")
@auth.require("office.manage")
def create_office() -> ResponseReturnValue:
    """Create an office (with its cash, bank, fees and refunds accounts)."""
    data = s.OfficeRequest().load(body())
    auth.grants().require("office.manage", None)
    office = off.create_office(db(), auth.actor(), **data)
    db().commit()
    return jsonify(s.OfficeOut().dump({**data, "code": office.code})), 201


@api.post("/operators")
@auth.require("operator.manage")
def create_operator() -> ResponseReturnValue:
    """Create an operator with roles: ``roles: [{"role": "cashier", "office": "A01"}]``."""
    data = s.OperatorRequest().load(body())
    roles = []
    for i, r in enumerate(data["roles"]):
        if "role" not in r:
            raise InvalidInput(f"roles[{i}].role is required", field=f"roles[{i}].role")
        office_code = r.get("office")
        office_id = off.get_office(db(), office_code).id if office_code else None
        auth.grants().require("operator.manage", office_id)
        roles.append((r["role"], office_code))
    op = ops.create_operator(
        db(),
        auth.actor(),
        username=data["username"],
        password=data["password"],
        full_name=data["full_name"],
        roles=roles,
    )
    db().commit()
    db().refresh(op)
    return jsonify(operator_out(op)), 201


# Customers --------------------------------------------------------------------------------------


@api.post("/customers")
@auth.require("customer.manage")
def open_customer() -> ResponseReturnValue:
    """Open an account: customer, premises, meters and their wallets."""
    data = s.CustomerRequest().load(body())
    office = off.get_office(db(), data["office"])
    auth.grants().require("customer.manage", office.id)
    meters = [cust.MeterSpec(**m) for m in data.pop("meters")]
    customer = cust.open_account(db(), auth.actor(), runtime().utilities, meters=meters, **data)
    db().commit()
    return jsonify(s.CustomerOut().dump(cust.customer_summary(db(), customer))), 201


@api.get("/customers")
@auth.require("customer.view")
def search_customers() -> ResponseReturnValue:
    """Search customers by name, number, phone, meter serial, building or unit (``?q=``)."""
    q = request.args.get("q", "").strip()
    if not q:
        raise InvalidInput("give a search text in q", field="q")
    found = cust.search_customers(db(), q, auth.grants().offices("customer.view"))
    out = [
        {"number": c.number, "name": c.name, "phone": c.phone, "status": c.status} for c in found
    ]
    return jsonify(s.CustomerListOut().dump({"customers": out})), 200


@api.get("/customers/<number>")
@auth.require("customer.view")
def show_customer(number: str) -> ResponseReturnValue:
    """A customer with premises, meters, balances, cards and recent transactions."""
    customer = cust.get_customer(db(), number)
    if not auth.grants().allows("customer.view", customer.office_id):
        raise NotFound(f"no customer with number {number!r}", field="customer")
    return jsonify(s.CustomerOut().dump(cust.customer_summary(db(), customer))), 200


# Ledger -----------------------------------------------------------------------------------------


@api.post("/sales")
@auth.require("sale.create")
def create_sale() -> ResponseReturnValue:
    """Sell credit into one wallet (by wallet code or meter). Retrying with the same
    ``idempotency_key`` returns the first sale (``created: false``) and credits nothing."""
    data = s.SaleRequest().load(body())
    session_ = db()
    if data["meter"]:
        meter = cust.find_meter(session_, data["meter"], data["kind"])
        wallet_code = acc.meter_wallet_code(meter.id)
    else:
        wallet_code = data["wallet"]
    wallet = acc.get_account(session_, wallet_code, field="wallet")
    if wallet.office_id is None or not auth.grants().allows("sale.create", wallet.office_id):
        # Outside the operator's offices a meter or wallet is as good as unknown: answer exactly
        # as for one that does not exist.
        if data["meter"]:
            raise NotFound(f"no meter with serial {data['meter']!r}", field="meter")
        raise UnknownAccount(
            f"no ledger account {wallet_code!r}", field="wallet", account=wallet_code
        )
    if ledger.find_posted(session_, data["idempotency_key"]) is None:
        cust.require_active(session_, wallet.customer_id)
    posted = ledger.sale(
        session_,
        wallet=wallet_code,
        amount=data["amount_fen"],
        fee=data["fee_fen"],
        office_id=wallet.office_id,
        method=data["method"],
        idempotency_key=data["idempotency_key"],
        operator_id=auth.current_operator().id,
        memo=data["memo"],
    )
    if posted.created:
        record(
            session_,
            auth.actor(),
            "ledger.sale",
            [f"ledger:#{posted.seq}", f"account:{wallet_code}"],
            detail={
                "amount_fen": data["amount_fen"],
                "fee_fen": data["fee_fen"],
                "method": data["method"],
            },
            office_id=wallet.office_id,
            customer_id=wallet.customer_id,
        )
    session_.commit()
    return jsonify(transaction_out(posted)), 201 if posted.created else 200


@api.get("/ledger/transactions/<int:seq>")
@auth.require("customer.view")
def show_transaction(seq: int) -> ResponseReturnValue:
    """One ledger transaction with its postings."""
    txn = ledger.get_transaction(db(), seq)
    if txn.office_id is not None and not auth.grants().allows("customer.view", txn.office_id):
        raise NotFound(f"no ledger transaction {seq}", field="transaction")
    return jsonify(transaction_out(ledger.load_posted(db(), txn.id))), 200


@api.post("/ledger/transactions/<int:seq>/reversal")
@auth.require("sale.correct")
def reverse_transaction(seq: int) -> ResponseReturnValue:
    """Reverse a transaction with a reason code (needs ``sale.correct`` at its office)."""
    data = s.ReversalRequest().load(body())
    session_ = db()
    txn = ledger.get_transaction(session_, seq)
    auth.grants().require("sale.correct", txn.office_id)
    posted = ledger.reverse(
        session_,
        seq,
        reason_code=data["reason_code"],
        idempotency_key=data["idempotency_key"],
        memo=data["memo"],
        operator_id=auth.current_operator().id,
    )
    if posted.created:
        record(
            session_,
            auth.actor(),
            "ledger.reverse",
            [f"ledger:#{seq}", f"ledger:#{posted.seq}"],
            detail={"reason_code": data["reason_code"]},
            office_id=txn.office_id,
            customer_id=txn.customer_id,
        )
    session_.commit()
    return jsonify(transaction_out(posted)), 201 if posted.created else 200


@api.get("/ledger/verify")
@auth.require("audit.view")
def verify_ledger() -> ResponseReturnValue:
    """Check the hash chain, zero sums and cached balances of the whole ledger."""
    report = ledger.verify(db())
    return jsonify(s.VerifyOut().dump(report.to_dict())), 200


@api.get("/audit")
@auth.require("audit.view")
def audit_log() -> ResponseReturnValue:
    """Audit events, newest first; filter with ``?action=``, ``?operator=``, ``?limit=``."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    if action := request.args.get("action"):
        stmt = stmt.where(AuditEvent.action == action)
    if username := request.args.get("operator"):
        stmt = stmt.where(AuditEvent.actor == username)
    try:
        limit = int(request.args.get("limit", "100"))
    except ValueError:
        raise InvalidInput("limit must be a whole number", field="limit") from None
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be from 1 to 1000", field="limit")
    offices = auth.grants().offices("audit.view")
    if offices is not None:
        stmt = stmt.where(AuditEvent.office_id.in_(offices))
    events = [
        {
            "id": e.id,
            "at": e.at.isoformat(),
            "actor": e.actor,
            "action": e.action,
            "objects": e.objects,
            "detail": e.detail,
            "remote_addr": e.remote_addr,
        }
        for e in db().execute(stmt.limit(limit)).scalars()
    ]
    return jsonify(s.AuditOut().dump({"events": events})), 200
