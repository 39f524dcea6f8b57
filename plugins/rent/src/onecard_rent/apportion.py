"""Public-area apportionment (公摊): split what the common meters cost among the tenants they serve.

:func:`split` is the exact, pure arithmetic: an integer number of fen shared by weights, the
remainder of the rounding given out by a documented rule, so the shares always add up to the
total. :func:`apportion` is the database operation: it reads each common meter's consumption over
the period from its readings, prices it with the meter's tariff (itemized), splits each meter's
cost among the tenants by floor area, by their own consumption or by fixed shares, charges each
tenant once on the ledger (``consume``) and keeps the statement in ``billing_runs``. It takes a
session and does not commit: the caller's transaction holds all of it or none of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates
from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.audit import Actor, record
from onecard.customers import get_customer
from onecard.errors import Conflict, InvalidInput, NotFound, OnecardError
from onecard.ledger import accounts as acc
from onecard.ledger import consume
from onecard.ledger.core import lock_ledger
from onecard.models import (
    BillingRun,
    Customer,
    LedgerAccount,
    Meter,
    MeterReading,
    Premises,
    utcnow,
)
from onecard.money import format_fen
from onecard.offices import get_office, office_and_descendants
from onecard.pricing import to_quantity
from onecard.tariffs.engine import line_dict, quote_units
from onecard.tariffs.fields import Exact, LocalDate, load, plain, refuse
from onecard.tariffs.meters import (
    consumption,
    customer_category,
    find_meter,
    meter_schedule,
)
from onecard.utility import UtilityRegistry

RULES = ("area", "consumption", "fixed")
WHAT = "apportionment"
KEY_PREFIX = "apportion:"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
MAX_TENANTS = 10_000
MAX_METERS = 100

ROUNDING_RULE = (
    "each tenant gets floor(total x weight / total weight) fen; the fen left over go one each "
    "to the tenants with the largest fractional remainders, ties to the tenant listed first"
)


# The arithmetic ---------------------------------------------------------------------------------


def _weight(value: Any, field: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, Fraction)):
        raise InvalidInput(
            f"{field} must be an integer or a Decimal, not {type(value).__name__}", field=field
        )
    if isinstance(value, Decimal) and not value.is_finite():
        raise InvalidInput(f"{field} must be a finite number, not {value}", field=field)
    exact = Fraction(value)
    if exact < 0:
        raise InvalidInput(f"{field} must not be negative, got {value}", field=field)
    return exact


def split(
    total: int, weights: Sequence[int | Decimal | Fraction], field: str = "weights"
) -> list[int]:
    """Split ``total`` fen among tenants by ``weights``, exactly; the shares sum to ``total``.

    Tenant ``i`` gets ``floor(total * w_i / W)`` fen (``W`` the sum of the weights); the fen
    that leaves (fewer than the number of tenants) go one each to the tenants with the largest
    fractional remainders ``total * w_i / W - floor(...)``, and of equal remainders to the one
    listed first. All arithmetic is exact (rationals): no rounding error can creep in.
    """
    if isinstance(total, bool) or not isinstance(total, int):
        raise InvalidInput(f"total must be a whole number of fen, not {total!r}", field="total")
    if total < 0:
        raise InvalidInput(f"total must not be negative, got {total}", field="total")
    if not weights:
        raise InvalidInput(f"{field}: give at least one tenant to share among", field=field)
    exact = [_weight(w, f"{field}[{i}]") for i, w in enumerate(weights)]
    whole = sum(exact, Fraction(0))
    if whole == 0:
        raise InvalidInput(
            f"{field}: the weights add up to zero, so there is nothing to share by", field=field
        )
    shares: list[int] = []
    remainders: list[Fraction] = []
    for w in exact:
        q = total * w / whole
        floor = q.numerator // q.denominator
        shares.append(floor)
        remainders.append(q - floor)
    left = total - sum(shares)
    # largest remainder first; of equal remainders, the tenant listed first
    order = sorted(range(len(exact)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        shares[i] += 1
    return shares


# The spec ---------------------------------------------------------------------------------------


class PeriodSchema(Schema):
    start = LocalDate(required=True)
    end = LocalDate(required=True)


class TenantSchema(Schema):
    customer = fields.String(required=True, validate=validate.Length(1, 32))
    share = Exact(load_default=None, allow_none=True)


class SpecSchema(Schema):
    key = fields.String(required=True)
    office = fields.String(required=True, validate=validate.Length(1, 32))
    period = fields.Nested(PeriodSchema, required=True)
    rule = fields.String(
        required=True,
        validate=validate.OneOf(RULES, error="must be one of area, consumption, fixed"),
    )
    common_meters = fields.List(
        fields.String(validate=validate.Length(1, 100)),
        required=True,
        validate=validate.Length(1, MAX_METERS, error=f"give 1 to {MAX_METERS} common meters"),
    )
    tenants = fields.List(
        fields.Nested(TenantSchema),
        required=True,
        validate=validate.Length(1, MAX_TENANTS, error=f"give 1 to {MAX_TENANTS} tenants"),
    )
    memo = fields.String(load_default="", validate=validate.Length(0, 200))

    @validates("key")
    def _key(self, value: str, **_: Any) -> None:
        if not _KEY.match(value):
            raise ValidationError(
                "must be 1 to 80 letters, digits, '.', '_' or '-', like 'building-a-2026-03'"
            )

    @pre_load
    def _plain_tenants(self, data: Any, **_: Any) -> Any:
        """A tenant may be given as a bare customer number."""
        if isinstance(data, Mapping) and isinstance(data.get("tenants"), list):
            data = dict(data)
            data["tenants"] = [
                {"customer": t} if isinstance(t, (str, int)) and not isinstance(t, bool) else t
                for t in data["tenants"]
            ]
            data["tenants"] = [
                {**t, "customer": str(t["customer"])}
                if isinstance(t, Mapping) and isinstance(t.get("customer"), int)
                else t
                for t in data["tenants"]
            ]
        return data


@dataclass(frozen=True)
class Tenant:
    customer: str
    share: Decimal | None


@dataclass(frozen=True)
class Spec:
    """A checked apportionment request. ``end`` is the first day not included."""

    key: str
    office: str
    start: dt.date
    end: dt.date
    rule: str
    meters: tuple[str, ...]
    tenants: tuple[Tenant, ...]
    memo: str = ""

    def to_dict(self) -> dict[str, Any]:
        tenants: list[Any] = [
            {"customer": t.customer, "share": plain(t.share)} if t.share is not None else t.customer
            for t in self.tenants
        ]
        return {
            "key": self.key,
            "office": self.office,
            "period": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "rule": self.rule,
            "common_meters": list(self.meters),
            "tenants": tenants,
            "memo": self.memo,
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


def parse_spec(raw: Any) -> Spec:
    """Check an apportionment spec (a mapping, as read from YAML or JSON); name any bad field."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(
            f"spec must be a mapping (key: value), not {type(raw).__name__}", field="spec"
        )
    data = load(SpecSchema(), raw)
    start, end = data["period"]["start"], data["period"]["end"]
    if end <= start:
        raise refuse(
            "period.end",
            f"must be after period.start ({start.isoformat()}); end is the first day not included",
        )
    seen: dict[str, int] = {}
    for i, ref in enumerate(data["common_meters"]):
        if ref in seen:
            raise refuse(f"common_meters[{i}]", f"{ref!r} is listed twice (also [{seen[ref]}])")
        seen[ref] = i
    tenants = []
    numbers: dict[str, int] = {}
    for i, t in enumerate(data["tenants"]):
        number = t["customer"].strip()
        if number in numbers:
            raise refuse(
                f"tenants[{i}].customer", f"{number!r} is listed twice (also [{numbers[number]}])"
            )
        numbers[number] = i
        if data["rule"] == "fixed" and t["share"] is None:
            raise refuse(f"tenants[{i}].share", "the fixed rule needs a share for every tenant")
        if data["rule"] != "fixed" and t["share"] is not None:
            raise refuse(
                f"tenants[{i}].share",
                f"only the fixed rule takes shares; the {data['rule']} rule computes them",
            )
        tenants.append(Tenant(number, t["share"]))
    return Spec(
        key=data["key"],
        office=data["office"],
        start=start,
        end=end,
        rule=data["rule"],
        meters=tuple(data["common_meters"]),
        tenants=tuple(tenants),
        memo=data["memo"],
    )


# The database operation -------------------------------------------------------------------------


@dataclass
class Apportioned:
    """A stored run and whether this call made it (False: the key had run before)."""

    run: BillingRun
    created: bool

    @property
    def statement(self) -> dict[str, Any]:
        return self.run.statement


def run_key(key: str) -> str:
    """The ``billing_runs.key`` of the apportionment ``key``."""
    return key if key.startswith(KEY_PREFIX) else f"{KEY_PREFIX}{key}"


def find_run(session: Session, key: str) -> BillingRun | None:
    return session.scalar(
        select(BillingRun).where(BillingRun.key == run_key(key), BillingRun.what == WHAT)
    )


def get_run(session: Session, key: str) -> BillingRun:
    """A stored apportionment by its key (with or without the ``apportion:`` prefix)."""
    found = find_run(session, key)
    if found is None:
        raise NotFound(f"no apportionment with key {key!r}", field="key")
    return found


def _at(exc: OnecardError, field: str) -> OnecardError:
    """The same error, blamed on ``field`` of the spec."""
    return type(exc)(f"{field}: {exc.message}", field=field, **exc.detail)


def _reading(
    session: Session, meter_id: int, when: dt.datetime, after: bool
) -> MeterReading | None:
    q = select(MeterReading).where(MeterReading.meter_id == meter_id)
    if after:
        q = q.where(MeterReading.taken_at > when).order_by(MeterReading.taken_at, MeterReading.id)
    else:
        q = q.where(MeterReading.taken_at <= when).order_by(
            MeterReading.taken_at.desc(), MeterReading.id.desc()
        )
    return session.scalar(q.limit(1))


def _reading_dict(row: MeterReading, decimals: int, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "cumulative": str(to_quantity(row.cumulative, decimals)),
        "taken_at": row.taken_at.astimezone(tz).isoformat(),
        "source": row.source,
    }


def _tenant_meters(session: Session, customer_id: int, kind: str) -> list[Meter]:
    return list(
        session.scalars(
            select(Meter)
            .join(Premises, Meter.premises_id == Premises.id)
            .where(Premises.customer_id == customer_id, Meter.kind == kind)
            .order_by(Meter.id)
        )
    )


def _account_exists(session: Session, code: str) -> bool:
    return session.scalar(select(LedgerAccount.id).where(LedgerAccount.code == code)) is not None


def _wallet(
    session: Session, customer: Customer, kind: str, own: Sequence[Meter], field: str
) -> str:
    """The tenant's shared wallet, else the wallet of their (first live) meter of ``kind``."""
    shared = acc.shared_wallet_code(customer.id)
    if _account_exists(session, shared):
        return shared
    for meter in sorted(own, key=lambda m: (m.state == "removed", m.id)):
        code = acc.meter_wallet_code(meter.id)
        if _account_exists(session, code):
            return code
    raise InvalidInput(
        f"{field}: customer {customer.number} has neither a shared wallet nor a {kind} meter "
        "wallet to charge; open a shared wallet for them",
        field=field,
    )


def _weights(
    session: Session,
    spec: Spec,
    customers: Sequence[Customer],
    owned: Sequence[Sequence[Meter]],
    kind: str,
    unit: str,
    decimals: int,
    start: dt.datetime,
    end: dt.datetime,
) -> list[tuple[Decimal | int, dict[str, Any]]]:
    """Each tenant's weight, and what the statement says about it."""
    out: list[tuple[Decimal | int, dict[str, Any]]] = []
    for i, (tenant, customer) in enumerate(zip(spec.tenants, customers, strict=True)):
        field = f"tenants[{i}].customer"
        if spec.rule == "fixed":
            assert tenant.share is not None
            out.append((tenant.share, {"weight": plain(tenant.share), "basis": "fixed share"}))
        elif spec.rule == "area":
            areas = [p.floor_area for p in customer.premises if p.floor_area is not None]
            if not areas:
                raise InvalidInput(
                    f"{field}: customer {customer.number} has no floor area on record; set the "
                    "premises' floor area or use fixed shares",
                    field=field,
                )
            area = sum(areas, Decimal(0))
            out.append((area, {"weight": plain(area), "basis": "floor area", "unit": "m²"}))
        else:
            meters = owned[i]
            if not meters:
                raise InvalidInput(
                    f"{field}: customer {customer.number} has no {kind} meter of their own, so "
                    "the consumption rule cannot weigh them",
                    field=field,
                )
            used = sum(consumption(session, m.id, start, end) for m in meters)
            out.append(
                (
                    used,
                    {
                        "weight": str(to_quantity(used, decimals)),
                        "basis": "own consumption",
                        "unit": unit,
                        "meters": [m.serial for m in meters],
                    },
                )
            )
    return out


def apportion(
    session: Session,
    utilities: UtilityRegistry,
    raw: Any,
    *,
    actor: Actor | None = None,
    now: dt.datetime | None = None,
) -> Apportioned:
    """Apportion the common meters' cost over a period among the tenants; post and keep it.

    ``raw`` is the spec (a mapping, or a :class:`Spec`). Running a key again returns the stored
    run and posts nothing; the same key with a different spec is a Conflict. Does not commit.
    """
    spec = raw if isinstance(raw, Spec) else parse_spec(raw)
    lock_ledger(session)  # one run at a time: the check below and the posting cannot interleave
    existing = find_run(session, spec.key)
    if existing is not None:
        if existing.statement.get("spec_hash") != spec.fingerprint():
            raise Conflict(
                f"key: apportionment {spec.key!r} already ran with a different spec; use a new key",
                field="key",
            )
        return Apportioned(existing, False)

    try:
        office = get_office(session, spec.office)
    except OnecardError as exc:
        raise _at(exc, "office") from None
    scope = office_and_descendants(session, office.id)
    tz = ZoneInfo(office.timezone)
    start = dt.datetime.combine(spec.start, dt.time(0), tz)
    end = dt.datetime.combine(spec.end, dt.time(0), tz)
    if end > (now or utcnow()):
        raise refuse("period.end", f"the period has not ended yet (it ends {end.isoformat()})")

    # the common meters: readings, consumption, cost ------------------------------------------
    kind_code: str | None = None
    common: list[Meter] = []
    for i, ref in enumerate(spec.meters):
        field = f"common_meters[{i}]"
        try:
            meter = find_meter(session, ref)
        except OnecardError as exc:
            raise _at(exc, field) from None
        kind = utilities.get(meter.kind)
        if kind.money_only:
            raise InvalidInput(
                f"{field}: {meter.kind} is billed in money only; a common meter measures use",
                field=field,
            )
        if kind_code is None:
            kind_code = meter.kind
        elif meter.kind != kind_code:
            raise InvalidInput(
                f"{field}: meter {meter.serial} is {meter.kind}, the others are {kind_code}; "
                "apportion one kind per run",
                field=field,
            )
        premises = session.get(Premises, meter.premises_id) if meter.premises_id else None
        if premises is not None and premises.office_id not in scope:
            raise InvalidInput(
                f"{field}: meter {meter.serial} is not in office {office.code}", field=field
            )
        common.append(meter)
    assert kind_code is not None
    kind = utilities.get(kind_code)
    unit = kind.unit or ""
    decimals = kind.unit_decimals
    common_ids = {m.id for m in common}

    meter_rows: list[dict[str, Any]] = []
    costs: list[int] = []
    for i, meter in enumerate(common):
        field = f"common_meters[{i}]"
        last = _reading(session, meter.id, end, after=False)
        if last is None:
            raise InvalidInput(
                f"{field}: meter {meter.serial} has no reading at or before the end of the "
                f"period ({end.isoformat()})",
                field=field,
            )
        first = _reading(session, meter.id, start, after=False) or _reading(
            session, meter.id, start, after=True
        )
        assert first is not None
        used = consumption(session, meter.id, start, end)
        try:
            sched = meter_schedule(session, utilities, meter)
            quote = quote_units(
                sched,
                units=used,
                at=start,
                until=end,
                category=customer_category(session, meter),
            )
        except OnecardError as exc:
            raise _at(exc, field) from None
        costs.append(quote.amount)
        meter_rows.append(
            {
                "ref": f"{meter.kind}:{meter.serial}",
                "serial": meter.serial,
                "kind": meter.kind,
                "tariff": quote.tariff,
                "category": quote.category,
                "versions": quote.versions,
                "start_reading": _reading_dict(first, decimals, tz),
                "end_reading": _reading_dict(last, decimals, tz),
                "consumption": str(to_quantity(used, decimals)),
                "units": used,
                "unit": unit,
                "lines": [line_dict(ln) for ln in quote.lines],
                "exact": str(quote.exact),
                "cost_fen": quote.amount,
                "cost": format_fen(quote.amount),
            }
        )
    # the tenants: who, what they weigh, which wallet ------------------------------------------
    customers: list[Customer] = []
    owned: list[list[Meter]] = []
    wallets: list[str] = []
    for i, tenant in enumerate(spec.tenants):
        field = f"tenants[{i}].customer"
        try:
            customer = get_customer(session, tenant.customer)
        except OnecardError as exc:
            raise _at(exc, field) from None
        if customer.office_id not in scope:
            raise InvalidInput(
                f"{field}: customer {customer.number} is not a customer of office {office.code}",
                field=field,
            )
        own = [m for m in _tenant_meters(session, customer.id, kind_code) if m.id not in common_ids]
        customers.append(customer)
        owned.append(own)
        wallets.append(_wallet(session, customer, kind_code, own, field))
    weighed = _weights(session, spec, customers, owned, kind_code, unit, decimals, start, end)
    weights = [w for w, _ in weighed]
    if sum(weights) == 0:
        what = {
            "consumption": f"the tenants used no {kind_code} in the period",
            "area": "the tenants' floor areas add up to zero",
            "fixed": "the shares add up to zero",
        }[spec.rule]
        raise InvalidInput(
            f"rule: {what}, so there is nothing to share by; use another rule", field="rule"
        )
    by_meter = [split(cost, weights) for cost in costs]
    totals = [sum(shares[t] for shares in by_meter) for t in range(len(customers))]
    grand = sum(costs)
    assert sum(totals) == grand

    # post, one transaction per tenant ---------------------------------------------------------
    memo = (
        f"公摊 apportionment {spec.key}: {kind_code} {spec.start.isoformat()} to "
        f"{(spec.end - dt.timedelta(days=1)).isoformat()}"
    )
    if spec.memo:
        memo = f"{memo}; {spec.memo}"
    tenant_rows: list[dict[str, Any]] = []
    transaction_ids: list[int] = []
    for t, customer in enumerate(customers):
        row: dict[str, Any] = {
            "customer": customer.number,
            "customer_id": customer.id,
            "name": customer.name,
            **weighed[t][1],
            "shares": [
                {
                    "meter": meter_rows[m]["ref"],
                    "fen": by_meter[m][t],
                    "amount": format_fen(by_meter[m][t]),
                }
                for m in range(len(common))
            ],
            "total_fen": totals[t],
            "total": format_fen(totals[t]),
            "wallet": wallets[t],
            "transaction": None,
            "idempotency_key": None,
        }
        if totals[t] > 0:
            key = f"apportion:{spec.key}:{customer.id}"
            posted = consume(
                session,
                wallet=wallets[t],
                amount=totals[t],
                idempotency_key=key,
                kind=kind_code,
                memo=memo[:500],
                operator_id=actor.operator_id if actor else None,
            )
            row["transaction"] = posted.seq
            row["idempotency_key"] = key
            transaction_ids.append(posted.id)
        tenant_rows.append(row)

    statement: dict[str, Any] = {
        "key": spec.key,
        "what": WHAT,
        "kind": kind_code,
        "unit": unit,
        "office": office.code,
        "period": {
            "start": spec.start.isoformat(),
            "end": spec.end.isoformat(),
            "last_day": (spec.end - dt.timedelta(days=1)).isoformat(),
            "from": start.isoformat(),
            "to": end.isoformat(),
            "timezone": office.timezone,
        },
        "rule": spec.rule,
        "rounding": ROUNDING_RULE,
        "meters": meter_rows,
        "tenants": tenant_rows,
        "total_fen": grand,
        "total": format_fen(grand),
        "memo": spec.memo,
        "spec": spec.to_dict(),
        "spec_hash": spec.fingerprint(),
    }
    run = BillingRun(
        key=run_key(spec.key),
        kind=kind_code,
        what=WHAT,
        period_start=spec.start,
        period_end=spec.end,
        office_id=office.id,
        total=grand,
        statement=statement,
        transactions=transaction_ids,
        created_by_id=actor.operator_id if actor else None,
    )
    session.add(run)
    session.flush()
    if actor is not None:
        record(
            session,
            actor,
            "rent.apportion",
            [
                f"billing_run:{run.id}",
                *(f"ledger:#{r['transaction']}" for r in tenant_rows if r["transaction"]),
            ],
            detail={"key": spec.key, "kind": kind_code, "rule": spec.rule, "total_fen": grand},
            office_id=office.id,
        )
    return Apportioned(run, True)
