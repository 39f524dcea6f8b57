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
