"""``onecard meters``: gateways and remote meters: import, list, poll, serve, control, recharge."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from onecard.errors import InvalidInput, NotFound
from onecard.models import Gateway, Meter, MeterEvent, Office, Premises, RemoteMeter
from onecard.money import format_fen, parse_yuan
from onecard.remote import inventory
from onecard.remote import service as svc


def _cli() -> Any:
    from onecard import cli

    return cli


def make_service(runtime: Any, **options: Any) -> svc.ReadingService:
    """The reading service of a runtime, with its notices and policy."""
    from onecard.remote.notices import make_notice_sender, policy_of

    return svc.ReadingService(
        runtime.sessions,
        runtime.utilities,
        policy=policy_of(runtime.settings),
        notices=make_notice_sender(runtime),
        **options,
    )


def _meter_id(session: Any, ref: str) -> int:
    from onecard.tariffs.meters import find_meter

    return find_meter(session, ref).id


@click.group("meters")
def meters_group() -> None:
    """Remote meters: gateways, reading, fee control, relay control and remote recharge."""


@meters_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def meters_import(file: str, as_json: bool) -> None:
    """Import gateways and meters from a CSV file: every row, or none.

    Columns: gateway, transport, host, port, device, baudrate, parity, framer, group, office,
    meter, kind, protocol, address, model, customer, tariff, billing, meter_group, alarm1,
    alarm2, keep_power (see docs/remote-meters.md). Every bad row is listed.
    """
    cli = _cli()
    st = cli.state()
    text = Path(file).read_text(encoding="utf-8-sig")
    try:
        with st.session() as session:
            result = inventory.import_csv(session, cli.actor(), st.runtime().utilities, text)
    except inventory.ImportRefused as exc:
        if as_json:
            cli.emit({"imported": False, "errors": exc.errors}, True, str)
        else:
            for error in exc.errors:
                click.echo(
                    f"{file}: row {error['row']}, {error['column']}: {error['message']}", err=True
                )
        raise click.ClickException(f"{len(exc.errors)} error(s): nothing was imported") from exc
    cli.emit(
        result.to_dict(),
        as_json,
        lambda r: f"imported {len(r['gateways'])} gateway(s) and {len(r['meters'])} meter(s)",
    )


@meters_group.command("gateways")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def meters_gateways(as_json: bool) -> None:
    """List the gateways, their meters and how the last cycle went."""
    cli = _cli()
    with cli.state().session() as session:
        rows = inventory.describe_gateways(session)
    cli.emit(
        rows,
        as_json,
        lambda rs: (
            "\n".join(
                f"{r['code']:<12} {r['link']:<28} {r['meters']:>5} meters, {r['stale']} stale"
                + (f"  last error: {r['last_error']}" if r["last_error"] else "")
                for r in rs
            )
            or "no gateways"
        ),
    )


def describe_meters(
    session: Any,
    *,
    gateway: str | None = None,
    stale: bool = False,
    offices: Collection[int] | None = None,
) -> list[dict[str, Any]]:
    """The remote meters and their state, by gateway and bus address; only those ``offices``
    run (:func:`inventory.running_office`) unless None."""
    q = (
        select(RemoteMeter, Meter, Gateway.code)
        .join(Meter, Meter.id == RemoteMeter.meter_id)
        .join(Gateway, Gateway.id == RemoteMeter.gateway_id)
        .order_by(Gateway.code, RemoteMeter.address)
    )
    if offices is not None:
        q = q.outerjoin(Premises, Premises.id == Meter.premises_id).where(
            inventory.running_office().in_(list(offices))
        )
    if gateway:
        q = q.where(Gateway.code == gateway)
    if stale:
        q = q.where(RemoteMeter.stale.is_(True))
    out = []
    for remote, meter, code in session.execute(q):
        out.append(
            {
                "meter": f"{meter.kind}:{meter.serial}",
                "gateway": code,
                "address": remote.address,
                "protocol": meter.protocol,
                "model": meter.model,
                "billing": remote.billing,
                "last_read_at": remote.last_read_at.isoformat() if remote.last_read_at else None,
                "cumulative": remote.last_cumulative,
                "stale": remote.stale,
                "missed": remote.missed,
                "last_error": remote.last_error,
                "alarm_level": remote.alarm_level,
                "relay": remote.relay,
                "tripped": remote.tripped,
                "keep_power": remote.keep_power,
                "bypass": remote.bypass,
            }
        )
    return out


@meters_group.command("list")
@click.option("--gateway", help="Only the meters of this gateway.")
@click.option("--stale", is_flag=True, help="Only meters that missed their readings.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def meters_list(gateway: str | None, stale: bool, as_json: bool) -> None:
    """List remote meters with their state: last reading, stale, alarm level, relay."""
    cli = _cli()
    with cli.state().session() as session:
        rows = describe_meters(session, gateway=gateway, stale=stale)

    def text(rs: list[dict[str, Any]]) -> str:
        lines = []
        for r in rs:
            flags = [
                f
                for f, on in (
                    ("STALE", r["stale"]),
                    ("BYPASS", r["bypass"]),
                    ("KEEP", r["keep_power"]),
                    (f"tripped:{r['tripped']}", r["tripped"]),
                    (f"alarm{r['alarm_level']}", 0 < r["alarm_level"] < 3),
                    ("EXHAUSTED", r["alarm_level"] == 3),
                )
                if on
            ]
            lines.append(
                f"{r['meter']:<24} {r['gateway']}/{r['address']:<14} relay={r['relay'] or '?':<6}"
                f" read={r['last_read_at'] or 'never'} {' '.join(flags)}"
            )
        return "\n".join(lines) or "no remote meters"

    cli.emit(rows, as_json, text)


@meters_group.command("poll")
@click.option("--gateway", help="Read only this gateway (default: all, concurrently).")
@click.option("--batch", default=500, show_default=True, help="Meters stored per transaction.")
@click.option(
    "--lease-seconds",
    default=600,
    show_default=True,
    help="How long a gateway stays locked to this process if it dies mid-cycle.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def meters_poll(gateway: str | None, batch: int, lease_seconds: int, as_json: bool) -> None:
    """Read now: one cycle of every gateway (or one), priced, alarmed and controlled."""
    cli = _cli()
    rt = cli.state().runtime()
    service = make_service(
        rt, batch=max(1, batch), lease_ttl=dt.timedelta(seconds=max(1, lease_seconds))
    )

    async def run() -> list[svc.CycleReport]:
        if gateway is None:
            return await service.cycle_all()
        with rt.sessions() as session:
            gw = inventory.get_gateway(session, gateway)
            gateway_id = gw.id
        return [await service.cycle(gateway_id)]

    reports = asyncio.run(run())
    cli.emit(
        [r.to_dict() for r in reports],
        as_json,
        lambda rs: (
            "\n".join(
                f"{r['gateway']}: "
                + (
                    f"busy ({r['busy']})"
                    if r["busy"]
                    else f"{r['read']}/{r['meters']} read, {r['missed']} missed, "
                    f"{r['priced']} priced ({format_fen(r['posted_fen'])} yuan), "
                    f"{len(r['commands'])} command(s) in {r['seconds']} s"
                    + (f", errors {r['errors']}" if r["errors"] else "")
                )
                for r in rs
            )
            or "no gateways"
        ),
    )


@meters_group.command("serve")
@click.option("--archive-days", default=90, show_default=True, help="Keep readings this long.")
@click.option(
    "--restore-seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="How often to look for tripped meters a sale has brought credit back to, and close "
    "them at once (0: wait for their next cycle).",
)
def meters_serve(archive_days: int, restore_seconds: float) -> None:
    """Run the reading service: every gateway on its schedule, until interrupted."""
    cli = _cli()
    rt = cli.state().runtime()
    service = make_service(rt, restore_seconds=restore_seconds)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.to_thread(service.send_notices)  # what a crash left unsent
        scheduler = service.start(archive_days=archive_days)
        click.echo(f"reading service {service.owner} started", err=True)
        await stop.wait()
        scheduler.shutdown(wait=False)

    asyncio.run(run())


def _command(name: str, help_text: str) -> None:
    @meters_group.command(name, help=help_text)
    @click.argument("meter")
    @click.option("--reason", required=True, help="Why (kept in the audit trail).")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def command(meter: str, reason: str, as_json: bool) -> None:
        cli = _cli()
        rt = cli.state().runtime()
        with rt.sessions() as session:
            meter_id = _meter_id(session, meter)
        service = make_service(rt)
        result = asyncio.run(service.manual(meter_id, name, cli.actor(), reason))
        cli.emit(
            result,
            as_json,
            lambda r: (
                f"{r['meter']}: {name} {r.get('status')}, relay {r.get('relay') or '?'}"
                + (f" ({r['error']})" if r.get("error") else "")
            ),
        )
        if result.get("status") in ("failed", "mismatch"):
            raise SystemExit(1)


_command("trip", "Open a meter's relay now (an operator's trip; stays until closed).")
_command("close", "Close a meter's relay now.")
_command("keep", "Keep a meter's power on whatever its credit (保电); no trip until released.")
_command("release", "End keep-power: the meter is tripped again when its credit is gone.")


@meters_group.command("recharge")
@click.argument("meter")
@click.argument("amount")
@click.option(
    "--office",
    help="The office taking the money: the meter's own (the default); another is refused.",
)
@click.option("--method", default="cash", show_default=True, help="cash or bank.")
@click.option("--key", help="Idempotency key (default: a new one; give it to retry safely).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def meters_recharge(
    meter: str, amount: str, office: str | None, method: str, key: str | None, as_json: bool
) -> None:
    """Sell credit to a meter that keeps its own credit, at the meter's office, and push it
    with the next count."""
    from onecard.offices import get_office

    cli = _cli()
    fen = parse_yuan(amount, "amount")
    rt = cli.state().runtime()
    with cli.state().session() as session:
        meter_id = _meter_id(session, meter)
        if session.get(RemoteMeter, meter_id) is None:  # before its office is looked at
            raise NotFound("the meter is not a remote meter", field="meter")
        office_id = svc.meter_office(session, meter_id)
        if office_id is None:
            raise InvalidInput(
                f"meter {meter} is at no customer's premises: there is no one to sell to",
                field="meter",
            )
        if office is not None and get_office(session, office).id != office_id:
            own = session.get(Office, office_id)
            raise InvalidInput(
                f"meter {meter} belongs to office {own.code if own else office_id}, "
                f"not {office}: its credit is sold there",
                field="office",
            )
        push = svc.recharge(
            session,
            cli.actor(),
            meter_id,
            amount=fen,
            office_id=office_id,
            idempotency_key=key or f"cli-{uuid.uuid4().hex}",
            method=method,
        )
        push_id, count = push.id, push.count
    result = asyncio.run(svc.push_recharge(make_service(rt), push_id))
    result["count"] = count
    cli.emit(
        result,
        as_json,
        lambda r: (
            f"recharge #{r['count']} of {format_fen(fen)} yuan: "
            f"{r.get('status')}" + (f" ({r['error']})" if r.get("error") else "")
        ),
    )


@meters_group.command("group")
@click.argument("code")
@click.argument("minutes", type=int)
def meters_group_set(code: str, minutes: int) -> None:
    """Set (or make) reading group CODE to be read every MINUTES."""
    cli = _cli()
    with cli.state().session() as session:
        inventory.set_group_interval(session, code, minutes)
    click.echo(f"group {code}: every {minutes} minutes")


@meters_group.command("archive")
@click.option("--days", default=90, show_default=True, help="Archive readings older than this.")
def meters_archive(days: int) -> None:
    """Move old readings to the archive table (each meter's newest stays)."""
    cli = _cli()
    rt = cli.state().runtime()
    moved = make_service(rt).archive(dt.timedelta(days=days))
    click.echo(f"archived {moved} reading(s)")


@meters_group.command("events")
@click.option("--meter", help="Only this meter (SERIAL or KIND:SERIAL).")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def meters_events(meter: str | None, limit: int, as_json: bool) -> None:
    """Alarm crossings, trips and closes, bypasses, stale meters: newest first."""
    cli = _cli()
    with cli.state().session() as session:
        q = select(MeterEvent, Meter).join(Meter, Meter.id == MeterEvent.meter_id)
        if meter:
            q = q.where(MeterEvent.meter_id == _meter_id(session, meter))
        rows = [
            {
                "at": e.at.isoformat(),
                "meter": f"{m.kind}:{m.serial}",
                "event": e.event,
                "level": e.level,
                "balance": e.balance,
                "detail": e.detail,
            }
            for e, m in session.execute(q.order_by(MeterEvent.id.desc()).limit(limit))
        ]
    cli.emit(
        rows,
        as_json,
        lambda rs: (
            "\n".join(
                f"{r['at']} {r['meter']:<24} {r['event']}"
                + (f" credit {format_fen(r['balance'])}" if r["balance"] is not None else "")
                for r in rs
            )
            or "no events"
        ),
    )
