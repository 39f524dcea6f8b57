"""Remote meters (远程表计): the meters read over gateways with their state, one meter's readings,
events, relay commands and recharges, and the manual relay commands (trip, close, keep power,
release).

Reading needs ``customer.view``: a remote meter belongs to the office of its premises, else to its
gateway's (a meter at no premises), as for the API, and only the meters of the operator's offices
are listed or shown (a meter of neither only to operators of every office). A command needs
``meter.control`` in the meter's office and a reason; it is sent as the API sends it
(``make_service(runtime()).manual``), through the gateway's lease, and read back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import abort, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from onecard.console import kit, labels
from onecard.console.i18n import _, yuan
from onecard.console.views.customers import quantity
from onecard.errors import Conflict, OnecardError, PermissionDenied
from onecard.ledger import accounts as acc
from onecard.models import (
    Customer,
    Gateway,
    LedgerAccount,
    Meter,
    MeterEvent,
    MeterReading,
    Operator,
    Premises,
    RelayCommand,
    RemoteMeter,
    RemoteRecharge,
)
from onecard.remote import inventory
from onecard.remote.cli import make_service
from onecard.remote.types import RELAY_COMMANDS
from onecard.tariffs.meters import find_meter
from onecard.web import db, runtime

bp = kit.console_blueprint("remote", __name__, "/console/remote")

#: The most meters one list page shows; the filters narrow the list.
MAX_ROWS = 500
#: How many readings, events, commands and recharges the meter page shows (newest first).
RECENT = 20
#: The longest reason a command takes (``relay_commands.reason``).
MAX_REASON = 300


@dataclass
class Row:
    """A remote meter as the pages show it."""

    remote: RemoteMeter
    meter: Meter
    gateway: str
    office_id: int | None
    customer_number: str | None
    customer_name: str | None
    #: the credit (fen): the wallet's (server billing) or what the meter last reported
    credit: int | None

    @property
    def ref(self) -> str:
        return f"{self.meter.kind}:{self.meter.serial}"


def _office() -> Any:
    """A meter's office: its premises' (where its customer buys), else its gateway's, as for the
    API (:func:`onecard.remote.inventory.running_office`); None for neither."""
    return inventory.running_office()


Q = TypeVar("Q", bound=Select[*tuple[Any, ...]])


def may(permission: str, office_id: int | None) -> bool:
    """Whether the operator holds ``permission`` in the office ``office_id``; a meter of no
    office is for operators of every office only."""
    return kit.grants().allows(permission, office_id)


def _joined(q: Q, scope: frozenset[int] | None) -> Q:
    """``q`` over the remote meters with their meter, gateway and premises, in ``scope``."""
    q = (
        q.select_from(RemoteMeter)
        .join(Meter, Meter.id == RemoteMeter.meter_id)
        .join(Gateway, Gateway.id == RemoteMeter.gateway_id)
        .outerjoin(Premises, Premises.id == Meter.premises_id)
    )
    if scope is not None:
        q = q.where(_office().in_(scope))
    return q


def _rows_query(scope: frozenset[int] | None) -> Select[*tuple[Any, ...]]:
    q = select(RemoteMeter, Meter, Gateway.code, _office(), Customer.number, Customer.name)
    return _joined(q, scope).outerjoin(Customer, Customer.id == Premises.customer_id)


def _credits(session: Session, meters: Sequence[tuple[RemoteMeter, Meter]]) -> dict[int, int]:
    """Each meter's credit (fen): its wallet's balance when the server prices it, else the
    credit its newest remote reading reported."""
    out: dict[int, int] = {}
    wallets = {
        acc.meter_wallet_code(r.meter_id): r.meter_id for r, _ in meters if r.billing == "server"
    }
    if wallets:
        for account in session.scalars(
            select(LedgerAccount).where(LedgerAccount.code.in_(list(wallets)))
        ):
            out[wallets[account.code]] = acc.natural_balance(account)
    own = [r.meter_id for r, _ in meters if r.billing == "meter"]
    if own:
        newest = (
            select(MeterReading.meter_id, func.max(MeterReading.taken_at).label("at"))
            .where(MeterReading.meter_id.in_(own), MeterReading.source == "remote")
            .group_by(MeterReading.meter_id)
            .subquery()
        )
        reported = select(MeterReading.meter_id, MeterReading.remaining).join(
            newest,
            (newest.c.meter_id == MeterReading.meter_id) & (newest.c.at == MeterReading.taken_at),
        )
        out.update(
            {m: remaining for m, remaining in session.execute(reported) if remaining is not None}
        )
    return out


def meter_rows(
    session: Session,
    scope: frozenset[int] | None,
    *,
    gateway: str | None = None,
    stale: bool = False,
    alarm: bool = False,
    limit: int = MAX_ROWS,
) -> tuple[list[Row], int]:
    """The remote meters of the offices ``scope`` (None: all) that pass the filters, by gateway
    and bus address (at most ``limit``), and how many pass in all."""
    q = _rows_query(scope)
    if gateway:
        q = q.where(Gateway.code == gateway)
    if stale:
        q = q.where(RemoteMeter.stale.is_(True))
    if alarm:
        q = q.where(RemoteMeter.alarm_level > 0)
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    found = list(session.execute(q.order_by(Gateway.code, RemoteMeter.address).limit(limit)))
    credits = _credits(session, [(r, m) for r, m, *_ in found])
    rows = [
        Row(remote, meter, code, office, number, name, credits.get(meter.id))
        for remote, meter, code, office, number, name in found
    ]
    return rows, total


def gateway_summary(session: Session, scope: frozenset[int] | None) -> list[dict[str, Any]]:
    """The gateways the operator may see (all of them for an operator of every office; else
    those of their offices or carrying their meters), with the counts of the meters they may
    see: ``meters``, ``stale``, ``alarm`` (:func:`inventory.describe_gateways`)."""
    return inventory.describe_gateways(session, scope)


def visible(ref: str) -> Row:
    """The remote meter ``ref`` (``SERIAL`` or ``KIND:SERIAL``): 404 when it is no remote meter,
    403 unless the operator may see customers of its office."""
    session = db()
    meter = find_meter(session, ref)
    found = session.execute(_rows_query(None).where(RemoteMeter.meter_id == meter.id)).first()
    if found is None:
        abort(404, description=_("Meter %(m)s is not read remotely.", m=ref))
    remote, meter, code, office, number, name = found
    if not may("customer.view", office):
        raise PermissionDenied(f"meter {ref} belongs to an office outside your scope")
    credit = _credits(session, [(remote, meter)]).get(meter.id)
    return Row(remote, meter, code, office, number, name, credit)


# Words for the pages ---------------------------------------------------------------------------


def credit_text(row: Row) -> str:
    return "—" if row.credit is None else f"¥{yuan(row.credit)}"


def event_detail(event: MeterEvent, kind: str) -> str:
    """What an event's detail says, in words (``kind``: the meter's utility kind)."""
    d = event.detail or {}
    parts: list[str] = []
    if event.balance is not None:
        parts.append(str(_("credit ¥%(c)s", c=yuan(event.balance))))
    if "threshold" in d and d["threshold"] is not None:
        parts.append(str(_("threshold ¥%(t)s", t=yuan(int(d["threshold"])))))
    if d.get("missed"):
        parts.append(str(_("%(n)s readings missed", n=d["missed"])))
    if d.get("error"):
        parts.append(str(d["error"]))
    if d.get("source") == "manual":
        parts.append(str(_("by an operator")))
    elif d.get("source") == "auto":
        parts.append(str(_("by the reading service")))
    if d.get("relay_after"):
        parts.append(str(_("relay: %(r)s", r=labels.label(d["relay_after"], "relay"))))
    if "meter_count" in d:
        parts.append(
            str(_("meter shows %(m)s, issued %(i)s", m=d["meter_count"], i=d.get("issued")))
        )
    if "read" in d and "priced" in d:
        read, priced = quantity(kind, d["read"]), quantity(kind, d["priced"])
        parts.append(str(_("read %(r)s after %(p)s", r=read, p=priced)))
    return "; ".join(parts)


def customer_events(
    session: Session, meters: Sequence[Meter], limit: int = RECENT
) -> list[tuple[MeterEvent, Meter, str]]:
    """The newest events of a customer's remote ``meters`` (alarms, trips and closes by the
    reading service, a bypass, a stale meter), each with its meter and its detail in words."""
    by_id = {m.id: m for m in meters}
    if not by_id:
        return []
    found = session.scalars(
        select(MeterEvent)
        .where(MeterEvent.meter_id.in_(list(by_id)))
        .order_by(MeterEvent.at.desc(), MeterEvent.id.desc())
        .limit(limit)
    )
    return [(e, by_id[e.meter_id], event_detail(e, by_id[e.meter_id].kind)) for e in found]


def context() -> dict[str, Any]:
    """Helpers the remote-meter templates use."""
    return {
        "quantity": quantity,
        "credit_text": credit_text,
        "event_detail": event_detail,
        "commands": RELAY_COMMANDS,
    }


# The list -------------------------------------------------------------------------------------


@bp.get("/")
@kit.page("customer.view")
def index() -> ResponseReturnValue:
    """Every remote meter of the operator's offices (``?gateway=``, ``?stale=1``, ``?alarm=1``)
    and the gateways' summary."""
    session = db()
    scope = kit.scope("customer.view")
    gateway = request.args.get("gateway", "").strip()[:32]
    stale = request.args.get("stale") == "1"
    alarm = request.args.get("alarm") == "1"
    gateways = gateway_summary(session, scope)
    rows, total = meter_rows(session, scope, gateway=gateway or None, stale=stale, alarm=alarm)
    return kit.render(
        "console/remote_index.html",
        rows=rows,
        total=total,
        limit=MAX_ROWS,
        gateways=gateways,
        gateway=gateway,
        stale=stale,
        alarm=alarm,
        filtered=bool(gateway or stale or alarm),
        **context(),
    )


# One meter ------------------------------------------------------------------------------------


def meter_page(
    ref: str,
    *,
    forms: dict[str, kit.Form] | None = None,
    outcome: str = "",
    status: int = 200,
) -> ResponseReturnValue:
    """The meter page, with the command forms as submitted and the outcome of a command."""
    row = visible(ref)
    session = db()
    meter_id = row.meter.id
    readings = list(
        session.scalars(
            select(MeterReading)
            .where(MeterReading.meter_id == meter_id)
            .order_by(MeterReading.taken_at.desc(), MeterReading.id.desc())
            .limit(RECENT)
        )
    )
    events = list(
        session.scalars(
            select(MeterEvent)
            .where(MeterEvent.meter_id == meter_id)
            .order_by(MeterEvent.at.desc(), MeterEvent.id.desc())
            .limit(RECENT)
        )
    )
    relay_commands = list(
        session.execute(
            select(RelayCommand, Operator)
            .outerjoin(Operator, Operator.id == RelayCommand.operator_id)
            .where(RelayCommand.meter_id == meter_id)
            .order_by(RelayCommand.requested_at.desc(), RelayCommand.id.desc())
            .limit(RECENT)
        )
    )
    recharges = list(
        session.execute(
            select(RemoteRecharge, Operator)
            .outerjoin(Operator, Operator.id == RemoteRecharge.operator_id)
            .where(RemoteRecharge.meter_id == meter_id)
            .order_by(RemoteRecharge.count.desc())
            .limit(RECENT)
        )
    )
    settings = runtime().settings
    remote = row.remote
    thresholds = {
        "alarm1": remote.alarm1 if remote.alarm1 is not None else settings.alarm1_fen,
        "alarm2": remote.alarm2 if remote.alarm2 is not None else settings.alarm2_fen,
        "own": remote.alarm1 is not None or remote.alarm2 is not None,
    }
    can_control = may("meter.control", row.office_id)
    given = forms or {}
    return kit.render(
        "console/remote_meter.html",
        status=status,
        r=row,
        gateway_link=inventory.link_of(row.remote.gateway).describe(),
        readings=readings,
        events=events,
        relay_commands=relay_commands,
        recharges=recharges,
        thresholds=thresholds,
        can_control=can_control,
        forms={c: given.get(c) or kit.Form({}) for c in RELAY_COMMANDS},
        outcome=outcome,
        **context(),
    )


@bp.get("/meters/<ref>")
@kit.page("customer.view")
def meter(ref: str) -> ResponseReturnValue:
    """One remote meter: its state, recent readings, events, relay commands and recharges."""
    return meter_page(ref)


# Commands -------------------------------------------------------------------------------------


def result_text(command: str, result: dict[str, Any]) -> tuple[bool, str]:
    """Whether a command's result is a success, and what to tell the operator."""
    what = labels.label(command, "command")
    relay = result.get("relay")
    relay_text = labels.label(relay, "relay") if relay else ""
    error = str(result.get("error") or "")
    status = result.get("status")
    if status == "done":
        if relay:
            return True, str(
                _("%(what)s: done. The relay reads %(relay)s.", what=what, relay=relay_text)
            )
        return True, str(_("%(what)s: done.", what=what))
    if status == "mismatch":
        return False, str(
            _(
                "%(what)s: the meter did not obey. Its relay still reads %(relay)s.",
                what=what,
                relay=relay_text,
            )
        )
    if error.startswith("offline"):
        message = _(
            "%(what)s: not done. The gateway cannot be reached (%(error)s).", what=what, error=error
        )
    elif error.startswith("timeout"):
        message = _(
            "%(what)s: not done. The meter did not answer (%(error)s).", what=what, error=error
        )
    else:
        message = _("%(what)s: not done (%(error)s).", what=what, error=error or status)
    return False, str(message)


@bp.post("/meters/<ref>/<command>")
@kit.page("meter.control")
def command(ref: str, command: str) -> ResponseReturnValue:
    """Send a relay command (trip, close, keep, release) to the meter now, with a reason."""
    if command not in RELAY_COMMANDS:
        abort(404)
    row = visible(ref)
    kit.grants().require("meter.control", row.office_id)
    form = kit.Form()
    reason = form.text("reason", max_length=MAX_REASON)
    if reason is None:
        if form["reason"].strip() == "":
            form.errors["reason"] = str(
                _("A reason is required: say why the command is sent (it goes in the audit trail).")
            )
        return meter_page(ref, forms={command: form}, status=422)
    meter_id = row.meter.id
    actor, _grants = kit.who()  # the command runs in its own transactions
    try:
        result = asyncio.run(make_service(runtime()).manual(meter_id, command, actor, reason))
    except Conflict as exc:
        form.errors[""] = str(
            _(
                "The gateway is busy (being read, or carrying out another command); nothing was "
                "sent. Try again in a moment. (%(why)s)",
                why=exc.message,
            )
        )
        return meter_page(ref, forms={command: form}, status=exc.status)
    except OnecardError as exc:
        form.fail(exc, {"reason": "reason"})
        return meter_page(ref, forms={command: form}, status=exc.status)
    ok, message = result_text(command, result)
    if ok:
        flash(message, "success")
        return redirect(url_for("remote.meter", ref=ref))
    return meter_page(ref, forms={command: form}, outcome=message, status=502)


__all__ = ["MAX_ROWS", "RECENT", "Row", "bp", "gateway_summary", "meter_rows", "visible"]
