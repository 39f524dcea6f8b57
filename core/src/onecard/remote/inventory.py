"""Gateways, reading groups and the meters on them; the CSV import for a quick start.

``onecard meters import FILE`` reads one CSV: a row per meter, with the columns of its gateway.
A gateway is made from its first row and every later row that names it must agree (or leave
the gateway columns empty). Every row is checked, all errors are reported by row and column, and
nothing is stored unless every row is good.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from onecard.audit import Actor, record
from onecard.errors import Conflict, InvalidInput, NotFound
from onecard.ledger import accounts as acc
from onecard.models import Customer, Gateway, Meter, Office, Premises, ReadingGroup, RemoteMeter
from onecard.remote.types import GatewayLink
from onecard.utility import UtilityRegistry

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_SERIAL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")
TRANSPORTS = ("tcp", "serial")
FRAMERS = ("socket", "rtu")
PARITIES = ("N", "E", "O")
BILLING = ("server", "meter")
GATEWAY_COLUMNS = (
    "transport",
    "host",
    "port",
    "device",
    "baudrate",
    "parity",
    "framer",
    "group",
    "office",
)
COLUMNS = (
    "gateway",
    *GATEWAY_COLUMNS,
    "meter",
    "kind",
    "protocol",
    "address",
    "model",
    "customer",
    "tariff",
    "billing",
    "meter_group",
    "alarm1",
    "alarm2",
    "keep_power",
)
REQUIRED = ("gateway", "meter", "kind", "protocol", "address")


def link_of(gateway: Gateway) -> GatewayLink:
    """The connection settings of a gateway, as the bus takes them."""
    return GatewayLink(
        code=gateway.code,
        transport=gateway.transport,
        host=gateway.host,
        port=gateway.port,
        device=gateway.device,
        baudrate=gateway.baudrate,
        parity=gateway.parity,
        bytesize=gateway.bytesize,
        stopbits=gateway.stopbits,
        framer=gateway.framer,
        timeout=gateway.timeout_ms / 1000,
    )


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a whole number, not {value!r}", field=name) from None
    if not lo <= number <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, not {number}", field=name)
    return number


def _yuan(value: Any, name: str) -> int:
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput(f"{name} must be an amount in yuan, not {value!r}", field=name) from None
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(Decimal("0.01")):
        raise InvalidInput(f"{name} must be yuan >= 0 with at most 2 decimals", field=name)
    return int(amount * 100)


def _bool(value: Any, name: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "yes", "true", "y", "是"):
        return True
    if text in ("", "0", "no", "false", "n", "否"):
        return False
    raise InvalidInput(f"{name} must be yes or no, not {value!r}", field=name)


def check_gateway(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate gateway settings; return them normalised (model column names)."""
    code = str(fields.get("code") or "").strip()
    if not _CODE.match(code):
        raise InvalidInput("code must be 1 to 32 letters, digits, '.', '_' or '-'", field="code")
    transport = str(fields.get("transport") or "tcp").strip().lower()
    if transport not in TRANSPORTS:
        raise InvalidInput(f"transport must be tcp or serial, not {transport!r}", field="transport")
    out: dict[str, Any] = {"code": code, "transport": transport}
    if transport == "tcp":
        host = str(fields.get("host") or "").strip()
        if not host or len(host) > 253 or any(c.isspace() for c in host):
            raise InvalidInput("host must be a host name or IP address", field="host")
        out["host"] = host
        out["port"] = _int(fields.get("port"), "port", 1, 65535)
        out["device"] = None
    else:
        device = str(fields.get("device") or "").strip()
        if not device:
            raise InvalidInput(
                "device must name the serial port (like /dev/ttyUSB0)", field="device"
            )
        out["device"] = device
        out["host"] = out["port"] = None
    baud = fields.get("baudrate")
    out["baudrate"] = 9600 if baud in (None, "") else _int(baud, "baudrate", 300, 921600)
    parity = str(fields.get("parity") or "N").strip().upper()
    if parity not in PARITIES:
        raise InvalidInput(f"parity must be N, E or O, not {parity!r}", field="parity")
    out["parity"] = parity
    framer = str(fields.get("framer") or ("socket" if transport == "tcp" else "rtu")).lower()
    if framer not in FRAMERS:
        raise InvalidInput(f"framer must be socket or rtu, not {framer!r}", field="framer")
    if transport == "serial" and framer != "rtu":
        raise InvalidInput("a serial gateway carries Modbus as rtu", field="framer")
    out["framer"] = framer
    for name, lo, hi, default in (
        ("timeout_ms", 50, 60000, 1000),
        ("retries", 0, 10, 2),
        ("bytesize", 7, 8, 8),
        ("stopbits", 1, 2, 1),
    ):
        value = fields.get(name)
        out[name] = default if value in (None, "") else _int(value, name, lo, hi)
    out["name"] = str(fields.get("name") or "")[:200]
    return out


def get_gateway(session: Session, code: str) -> Gateway:
    gateway = session.execute(select(Gateway).where(Gateway.code == code)).scalar_one_or_none()
    if gateway is None:
        raise NotFound(f"no gateway {code!r}", field="gateway")
    return gateway


def ensure_group(session: Session, code: str, interval_minutes: int | None = None) -> ReadingGroup:
    """The reading group ``code``, made (every 30 minutes unless told) if it is new."""
    if not _CODE.match(code):
        raise InvalidInput("group must be 1 to 32 letters, digits, '.', '_' or '-'", field="group")
    group = session.execute(
        select(ReadingGroup).where(ReadingGroup.code == code)
    ).scalar_one_or_none()
    if group is None:
        group = ReadingGroup(code=code, interval_minutes=interval_minutes or 30)
        session.add(group)
        session.flush()
    elif interval_minutes is not None:
        group.interval_minutes = interval_minutes
    return group


def set_group_interval(session: Session, code: str, minutes: int) -> ReadingGroup:
    return ensure_group(session, code, _int(minutes, "interval_minutes", 1, 10080))


def add_gateway(session: Session, actor: Actor, **fields: Any) -> Gateway:
    """Register a gateway. Does not commit."""
    data = check_gateway(fields)
    if session.execute(select(Gateway.id).where(Gateway.code == data["code"])).first():
        raise Conflict(f"gateway {data['code']!r} already exists", field="code")
    group = fields.get("group")
    office = fields.get("office")
    gateway = Gateway(**data)
    if group:
        gateway.group_id = ensure_group(session, str(group)).id
    if office:
        gateway.office_id = _office_id(session, str(office))
    session.add(gateway)
    session.flush()
    record(session, actor, "gateway.add", [f"gateway:{gateway.code}"], detail=data)
    return gateway


def _office_id(session: Session, code: str) -> int:
    office_id = session.execute(select(Office.id).where(Office.code == code)).scalar_one_or_none()
    if office_id is None:
        raise NotFound(f"no office {code!r}", field="office")
    return office_id


def attach(
    session: Session,
    utilities: UtilityRegistry,
    meter: Meter,
    gateway: Gateway,
    *,
    protocol: str,
    address: str,
    model: str = "",
    billing: str = "server",
    group: str | None = None,
    alarm1: int | None = None,
    alarm2: int | None = None,
    keep_power: bool = False,
    grace_minutes: int = 0,
    no_trip_hours: str | None = None,
) -> RemoteMeter:
    """Put a meter on a gateway's bus, read with one of its kind's protocols. Does not commit."""
    kind = utilities.get(meter.kind)
    if protocol not in kind.protocols:
        known = ", ".join(kind.protocols.names()) or "none"
        raise InvalidInput(
            f"protocol: {meter.kind} has no meter protocol {protocol!r} (known: {known})",
            field="protocol",
        )
    proto = kind.protocols.get(protocol)
    normal = proto.check_address(address)
    models = list(proto.models())
    if models:
        if not model:
            model = models[0]  # the protocol lists its default model first
        if model not in models:
            raise InvalidInput(
                f"model: {protocol} knows no meter model {model!r} (known: {', '.join(models)})",
                field="model",
            )
    if billing not in BILLING:
        raise InvalidInput(f"billing must be server or meter, not {billing!r}", field="billing")
    if no_trip_hours is not None and not _HHMM.match(no_trip_hours):
        raise InvalidInput("no_trip_hours must look like 22:00-07:00", field="no_trip_hours")
    if alarm1 is not None and alarm2 is not None and alarm2 > alarm1:
        raise InvalidInput("alarm2 must not be above alarm1", field="alarm2")
    taken = session.execute(
        select(RemoteMeter.meter_id).where(
            RemoteMeter.gateway_id == gateway.id,
            RemoteMeter.address == normal,
            RemoteMeter.meter_id != meter.id,
        )
    ).first()
    if taken:
        raise Conflict(
            f"address: gateway {gateway.code} already has a meter at address {normal}",
            field="address",
        )
    remote = session.get(RemoteMeter, meter.id)
    if remote is None:
        remote = RemoteMeter(meter_id=meter.id, gateway_id=gateway.id, address=normal)
        session.add(remote)
    remote.gateway_id = gateway.id
    remote.address = normal
    remote.billing = billing
    remote.alarm1 = alarm1
    remote.alarm2 = alarm2
    remote.keep_power = keep_power
    remote.grace_minutes = grace_minutes
    remote.no_trip_hours = no_trip_hours
    remote.group_id = ensure_group(session, group).id if group else None
    meter.protocol = protocol
    meter.model = model
    session.flush()
    return remote


# CSV import -------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    gateways: list[str] = field(default_factory=list)
    meters: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"gateways": self.gateways, "meters": self.meters, "errors": self.errors}


class ImportRefused(InvalidInput):
    """Some rows of an import are wrong; nothing was stored. ``errors`` lists them all."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0]
        super().__init__(
            f"{len(errors)} error(s); nothing was imported. First: row {first['row']}, "
            f"{first['column']}: {first['message']}",
            field=f"rows[{first['row']}].{first['column']}",
        )
        self.errors = errors


def import_csv(
    session: Session, actor: Actor, utilities: UtilityRegistry, text: str
) -> ImportResult:
    """Import gateways and meters from CSV text: all rows or none. Does not commit.

    Raises :class:`ImportRefused` listing every bad row (row numbers count the header as 1);
    the caller rolls back. The work happens in a savepoint, so a refusal leaves the session as
    it was.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    errors: list[dict[str, Any]] = []

    def fail(row: int, column: str, message: str) -> None:
        errors.append({"row": row, "column": column, "message": message})

    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in REQUIRED if c not in header]
    if unknown:
        fail(1, unknown[0], f"unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    if missing:
        fail(1, missing[0], f"missing column(s) {', '.join(missing)}")
    if errors:
        raise ImportRefused(errors)
    result = ImportResult()
    savepoint = session.begin_nested()
    try:
        gateways: dict[str, tuple[Gateway, dict[str, Any], int]] = {}
        seen_addresses: dict[tuple[str, str], int] = {}
        seen_meters: dict[tuple[str, str], int] = {}
        rows = 0
        for number, raw in enumerate(reader, start=2):
            rows += 1
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k}
            if not any(row.values()):
                continue
            _import_row(
                session,
                actor,
                utilities,
                number,
                row,
                gateways,
                seen_addresses,
                seen_meters,
                result,
                fail,
            )
        if rows == 0:
            fail(2, "gateway", "the file has no rows")
        if errors:
            raise ImportRefused(errors)
    except Exception:
        savepoint.rollback()
        raise
    savepoint.commit()
    record(
        session,
        actor,
        "meters.import",
        [f"gateway:{g}" for g in result.gateways],
        detail={"gateways": len(result.gateways), "meters": len(result.meters)},
    )
    return result


def _import_row(
    session: Session,
    actor: Actor,
    utilities: UtilityRegistry,
    number: int,
    row: dict[str, str],
    gateways: dict[str, tuple[Gateway, dict[str, Any], int]],
    seen_addresses: dict[tuple[str, str], int],
    seen_meters: dict[tuple[str, str], int],
    result: ImportResult,
    fail: Any,
) -> None:
    for column in REQUIRED:
        if not row.get(column):
            fail(number, column, f"{column} is required")
            return
    code = row["gateway"]
    given = {c: row[c] for c in GATEWAY_COLUMNS if row.get(c)}
    if code in gateways:
        gateway, first, first_row = gateways[code]
        for column, value in given.items():
            if str(first.get(column, "")) != value:
                fail(
                    number,
                    column,
                    f"gateway {code} has {column} {first.get(column) or '(empty)'!r} "
                    f"on row {first_row}, not {value!r}",
                )
                return
    else:
        existing = session.execute(select(Gateway).where(Gateway.code == code)).scalar_one_or_none()
        if existing is not None:
            gateway = existing
            stored = {
                "transport": existing.transport,
                "host": existing.host or "",
                "port": "" if existing.port is None else str(existing.port),
                "device": existing.device or "",
            }
            for column in ("transport", "host", "port", "device"):
                if column in given and given[column] != stored[column]:
                    fail(
                        number,
                        column,
                        f"gateway {code} exists with {column} {stored[column]!r}, "
                        f"not {given[column]!r}",
                    )
                    return
        else:
            try:
                with session.begin_nested():
                    gateway = add_gateway(session, actor, code=code, **given)
            except (InvalidInput, NotFound, Conflict) as exc:
                column = exc.field if exc.field in COLUMNS else "gateway"
                fail(number, column, str(exc))
                return
            result.gateways.append(code)
        gateways[code] = (gateway, given, number)
    kind_code = row["kind"]
    if kind_code not in utilities:
        fail(
            number,
            "kind",
            f"unknown utility kind {kind_code!r} (known: {', '.join(utilities.codes())})",
        )
        return
    serial = row["meter"]
    if not _SERIAL.match(serial):
        fail(number, "meter", f"meter serial {serial!r} must be letters, digits, - or _")
        return
    if (kind_code, serial) in seen_meters:
        fail(
            number,
            "meter",
            f"meter {kind_code}:{serial} is also on row {seen_meters[(kind_code, serial)]}",
        )
        return
    seen_meters[(kind_code, serial)] = number
    try:
        with session.begin_nested():
            meter = _meter_for_row(session, utilities, row, kind_code, serial)
            options: dict[str, Any] = {
                "protocol": row["protocol"],
                "address": row["address"],
                "model": row.get("model", ""),
                "billing": row.get("billing") or "server",
                "group": row.get("meter_group") or None,
                "keep_power": _bool(row.get("keep_power", ""), "keep_power"),
            }
            for name in ("alarm1", "alarm2"):
                if row.get(name):
                    options[name] = _yuan(row[name], name)
            remote = attach(session, utilities, meter, gateway, **options)
    except (InvalidInput, NotFound, Conflict) as exc:
        column = exc.field if exc.field in COLUMNS else _column_of(exc)
        fail(number, column, str(exc))
        return
    key = (code, remote.address)
    if key in seen_addresses:
        fail(
            number,
            "address",
            f"address {remote.address} on {code} is also on row {seen_addresses[key]}",
        )
        return
    seen_addresses[key] = number
    result.meters.append(f"{kind_code}:{serial}")


def _column_of(exc: Exception) -> str:
    field_name = getattr(exc, "field", None) or ""
    if field_name in ("serial",):
        return "meter"
    return field_name if field_name in COLUMNS else "meter"


def _meter_for_row(
    session: Session, utilities: UtilityRegistry, row: Mapping[str, str], kind: str, serial: str
) -> Meter:
    meter = session.execute(
        select(Meter).where(Meter.kind == kind, Meter.serial == serial)
    ).scalar_one_or_none()
    number = row.get("customer") or ""
    if meter is not None:
        if meter.state == "removed":
            raise Conflict(f"meter {kind}:{serial} was removed", field="meter")
        if row.get("tariff"):
            meter.tariff = row["tariff"]
        return meter
    if utilities.get(kind).money_only:
        raise InvalidInput(f"{kind} is billed in money only and has no meters", field="kind")
    premises = None
    customer = None
    if number:
        customer = session.execute(
            select(Customer).where(Customer.number == number)
        ).scalar_one_or_none()
        if customer is None:
            raise NotFound(f"no customer {number!r}", field="customer")
        premises = (
            session.execute(
                select(Premises).where(Premises.customer_id == customer.id).order_by(Premises.id)
            )
            .scalars()
            .first()
        )
    meter = Meter(
        kind=kind,
        serial=serial,
        tariff=row.get("tariff") or None,
        premises_id=premises.id if premises else None,
    )
    session.add(meter)
    session.flush()
    if customer is not None:
        acc.ensure_account(
            session,
            acc.meter_wallet_code(meter.id),
            type="liability",
            purpose="wallet",
            name=f"{kind} {serial}",
            utility_kind=kind,
            office_id=customer.office_id,
            customer_id=customer.id,
            meter_id=meter.id,
        )
    return meter


def running_office() -> ColumnElement[int | None]:
    """SQL for the office that runs a remote meter: that of its premises, where its customer
    buys; for a meter at no premises (a public-area meter, say), that of its gateway. NULL: no
    office, for operators of every office only. The query joins :class:`RemoteMeter` to
    :class:`Gateway` and outer-joins :class:`Meter` to :class:`Premises`."""
    return func.coalesce(Premises.office_id, Gateway.office_id)


def office_of(session: Session, meter_id: int) -> int | None:
    """The office that runs the meter (:func:`running_office`): who sees and controls it. A
    meter on no gateway has its premises' office."""
    return session.scalar(
        select(running_office())
        .select_from(Meter)
        .outerjoin(Premises, Premises.id == Meter.premises_id)
        .outerjoin(RemoteMeter, RemoteMeter.meter_id == Meter.id)
        .outerjoin(Gateway, Gateway.id == RemoteMeter.gateway_id)
        .where(Meter.id == meter_id)
    )


def gateways_seen_by(session: Session, offices: Collection[int]) -> set[str]:
    """The codes of the gateways an operator of ``offices`` sees: those of the offices, and
    those carrying a meter the offices run (:func:`running_office`)."""
    scope = list(offices)
    carrying = (
        select(Gateway.code)
        .join(RemoteMeter, RemoteMeter.gateway_id == Gateway.id)
        .join(Meter, Meter.id == RemoteMeter.meter_id)
        .outerjoin(Premises, Premises.id == Meter.premises_id)
        .where(running_office().in_(scope))
    )
    own = select(Gateway.code).where(Gateway.office_id.in_(scope))
    return set(session.scalars(carrying)) | set(session.scalars(own))


def describe_gateways(
    session: Session, offices: Collection[int] | None = None
) -> list[dict[str, Any]]:
    """The gateways with their link and counts of their meters (``meters``, ``stale``, ``alarm``:
    in alarm at any level). With ``offices``, only the gateways an operator of those offices
    sees (:func:`gateways_seen_by`), counting only the meters those offices run."""
    q = select(
        RemoteMeter.gateway_id,
        func.count(),
        func.sum(case((RemoteMeter.stale.is_(True), 1), else_=0)),
        func.sum(case((RemoteMeter.alarm_level > 0, 1), else_=0)),
    ).group_by(RemoteMeter.gateway_id)
    seen = None
    if offices is not None:
        q = (
            q.join(Gateway, Gateway.id == RemoteMeter.gateway_id)
            .join(Meter, Meter.id == RemoteMeter.meter_id)
            .outerjoin(Premises, Premises.id == Meter.premises_id)
            .where(running_office().in_(list(offices)))
        )
        seen = gateways_seen_by(session, offices)
    counts = {
        gateway_id: (meters, int(stale or 0), int(alarm or 0))
        for gateway_id, meters, stale, alarm in session.execute(q)
    }
    out = []
    for gateway in session.execute(select(Gateway).order_by(Gateway.code)).scalars():
        if seen is not None and gateway.code not in seen:
            continue
        meters, stale, alarm = counts.get(gateway.id, (0, 0, 0))
        out.append(
            {
                "code": gateway.code,
                "link": link_of(gateway).describe(),
                "framer": gateway.framer,
                "group": gateway.group.code if gateway.group else None,
                "enabled": gateway.enabled,
                "meters": meters,
                "stale": stale,
                "alarm": alarm,
                "last_cycle_at": (
                    gateway.last_cycle_at.isoformat() if gateway.last_cycle_at else None
                ),
                "last_error": gateway.last_error,
            }
        )
    return out
