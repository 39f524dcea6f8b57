"""Marshmallow schemas: one for each request body, one success schema for each view."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from onecard.ledger.core import MAX_AMOUNT

KEY = validate.Regexp(r"^[A-Za-z0-9._:@/+=-]{1,128}$", error="1 to 128 letters, digits or ._:@/+=-")
FEN = validate.Range(min=1, max=MAX_AMOUNT, error="must be from {min} to {max} fen")


class LoginRequest(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))


class OperatorOut(Schema):
    username = fields.String()
    full_name = fields.String()
    is_active = fields.Boolean()
    roles = fields.List(fields.Dict())
    permissions = fields.Dict(keys=fields.String(), values=fields.Raw())


class OfficeRequest(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    parent = fields.String(load_default=None)
    timezone = fields.String(load_default="Asia/Shanghai")


class OfficeOut(Schema):
    code = fields.String()
    name = fields.String()
    parent = fields.String(allow_none=True)
    timezone = fields.String()


class OperatorRequest(Schema):
    username = fields.String(required=True)
    password = fields.String(required=True, load_only=True)
    full_name = fields.String(load_default="")
    roles = fields.List(
        fields.Dict(keys=fields.String(), values=fields.String(allow_none=True)), load_default=list
    )


class MeterIn(Schema):
    kind = fields.String(required=True)
    serial = fields.String(required=True)
    model = fields.String(load_default="")
    protocol = fields.String(load_default="card")


class CustomerRequest(Schema):
    office = fields.String(required=True)
    name = fields.String(required=True)
    phone = fields.String(load_default=None)
    id_number = fields.String(load_default=None)
    category = fields.String(load_default="residential")
    building = fields.String(load_default="")
    unit = fields.String(load_default="")
    address = fields.String(load_default="")
    floor_area = fields.Raw(load_default=None)
    heated_area = fields.Raw(load_default=None)
    meters = fields.List(fields.Nested(MeterIn), load_default=list)
    shared_wallet = fields.Boolean(load_default=False)
    number = fields.String(load_default=None)


class CustomerOut(Schema):
    number = fields.String()
    name = fields.String()
    phone = fields.String(allow_none=True)
    category = fields.String()
    status = fields.String()
    office = fields.String()
    premises = fields.List(fields.Dict())
    meters = fields.List(fields.Dict())
    accounts = fields.List(fields.Dict())
    cards = fields.List(fields.Dict())
    transactions = fields.List(fields.Dict())


class CustomerListOut(Schema):
    customers = fields.List(fields.Dict())


class SaleRequest(Schema):
    """A sale to one wallet: name the wallet account, or the meter (serial, and kind if needed)."""

    wallet = fields.String(load_default=None)
    meter = fields.String(load_default=None)
    kind = fields.String(load_default=None)
    amount_fen = fields.Integer(required=True, strict=True, validate=FEN)
    fee_fen = fields.Integer(
        load_default=0, strict=True, validate=validate.Range(min=0, max=MAX_AMOUNT)
    )
    method = fields.String(load_default="cash", validate=validate.OneOf(["cash", "bank"]))
    idempotency_key = fields.String(required=True, validate=KEY)
    memo = fields.String(load_default="", validate=validate.Length(max=500))

    @validates_schema
    def one_target(self, data: dict[str, Any], **_: Any) -> None:
        if bool(data.get("wallet")) == bool(data.get("meter")):
            raise ValidationError("give either wallet or meter", field_name="wallet")


class RemoteRechargeRequest(Schema):
    """Credit sold to a meter that keeps its own, pushed to it with the next recharge count."""

    amount_fen = fields.Integer(required=True, strict=True, validate=FEN)
    method = fields.String(load_default="cash", validate=validate.OneOf(["cash", "bank"]))
    idempotency_key = fields.String(required=True, validate=KEY)


class ReversalRequest(Schema):
    reason_code = fields.String(required=True)
    idempotency_key = fields.String(required=True, validate=KEY)
    memo = fields.String(load_default="", validate=validate.Length(max=500))


class TransactionOut(Schema):
    seq = fields.Integer()
    idempotency_key = fields.String()
    kind = fields.String()
    hash = fields.String()
    created_at = fields.DateTime()
    created = fields.Boolean()
    postings = fields.List(fields.Dict())


class VerifyOut(Schema):
    ok = fields.Boolean()
    transactions = fields.Integer()
    postings = fields.Integer()
    accounts = fields.Integer()
    first_bad_transaction = fields.Integer(allow_none=True)
    problems = fields.List(fields.Dict())


class AuditOut(Schema):
    events = fields.List(fields.Dict())


class PluginsOut(Schema):
    plugins = fields.List(fields.Dict())


class HealthOut(Schema):
    status = fields.String()
    database = fields.String()
    plugins = fields.List(fields.String())
    utility_kinds = fields.List(fields.String())


# Cards ------------------------------------------------------------------------------------------


class ReaderChoice(Schema):
    """Which PC/SC reader to use (default: the server's ONECARD_READER, or the only one)."""

    reader = fields.String(load_default=None, validate=validate.Length(min=1, max=200))


class CardIssueRequest(ReaderChoice):
    customer = fields.String(required=True, validate=validate.Length(min=1, max=32))
    profile = fields.String(required=True, validate=validate.Length(min=1, max=32))
    meters = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


class CardSaleItemIn(Schema):
    meter = fields.String(required=True, validate=validate.Length(min=1, max=64))
    amount_fen = fields.Integer(required=True, strict=True, validate=FEN)
    units = fields.Integer(load_default=None, strict=True, validate=validate.Range(min=1))
    params = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict)


class CardSaleRequest(ReaderChoice):
    sale_key = fields.String(
        required=True, validate=[KEY, validate.Length(max=64, error="at most 64 characters")]
    )
    items = fields.List(
        fields.Nested(CardSaleItemIn), required=True, validate=validate.Length(min=1, max=15)
    )
    method = fields.String(load_default="cash", validate=validate.OneOf(["cash", "bank"]))


class CardVoidRequest(ReaderChoice):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=300))


class ManagerAuthorization(Schema):
    """A manager's username and password, or a reader holding a manager card."""

    username = fields.String(load_default=None)
    password = fields.String(load_default=None, load_only=True)
    reader = fields.String(load_default=None)

    @validates_schema
    def one_way(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("reader") and not (data.get("username") and data.get("password")):
            raise ValidationError(
                "give a manager's username and password, or a reader with a manager card",
                field_name="username",
            )


class CardCorrectionRequest(ReaderChoice):
    reason = fields.String(load_default="", validate=validate.Length(max=300))
    authorization = fields.Nested(ManagerAuthorization, required=True)


class CardReissueRequest(ReaderChoice):
    customer = fields.String(required=True, validate=validate.Length(min=1, max=32))
    reason = fields.String(
        load_default="lost", validate=validate.OneOf(["lost", "broken", "stolen"])
    )


class CardLostRequest(Schema):
    reason = fields.String(
        load_default="lost", validate=validate.OneOf(["lost", "stolen", "broken"])
    )


class CardToolRequest(ReaderChoice):
    card_type = fields.String(
        required=True,
        validate=validate.OneOf(["system", "manager", "settings", "reset", "clear", "check"]),
    )
    operator = fields.String(load_default=None)
    office = fields.String(load_default=None)
    data = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict)


class CardProfileRequest(Schema):
    code = fields.String(required=True)
    names = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    card_size = fields.String(load_default="1k", validate=validate.OneOf(["1k", "4k"]))
    slots = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1, max=15))
    office = fields.String(load_default=None)
