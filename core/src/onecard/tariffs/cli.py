"""``onecard tariff``: load, check, list, show, assign and quote tariffs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click

from onecard import tariffs
from onecard.money import format_fen
from onecard.pricing import round_fen, to_quantity
from onecard.tariffs import documents as docs
from onecard.tariffs import meters as tm
from onecard.tariffs import requests as rq
from onecard.tariffs.engine import Quote, line_dict


@click.group("tariff")
def tariff_group() -> None:
    """Tariffs: versioned price documents, and quotes with their breakdown."""


def _cli() -> Any:
    from onecard import cli

    return cli


@tariff_group.command("load")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--allow-past",
    is_flag=True,
    help="Let a new version take effect in the past (re-prices nothing already charged).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tariff_load(files: tuple[str, ...], allow_past: bool, as_json: bool) -> None:
    """Validate tariff documents (YAML or JSON) and store each as the next version.

    All files are loaded in one transaction: if one is refused, none is stored.
    """
    cli = _cli()
    st = cli.state()
    with st.session() as session:
        out = []
        for path in files:
            try:
                row = tariffs.add_version(
                    session,
                    cli.actor(),
                    st.runtime().utilities,
                    docs.read_file(path),
                    allow_past=allow_past,
                )
            except Exception as exc:
                if hasattr(exc, "message"):
                    exc.message = f"{path}: {exc.message}"
                raise
            out.extend(docs.describe_versions(session, st.runtime().utilities, [row]))
    cli.emit(
        out,
        as_json,
        lambda rows: "\n".join(
            f"loaded {r['kind']}/{r['name']} v{r['version']} ({r['model']}), "
            f"in force from {r['effective_from']}"
            for r in rows
        ),
    )


@tariff_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def tariff_check(file: str) -> None:
    """Validate a tariff document without storing it."""
    cli = _cli()
    doc = tariffs.validate_document(cli.state().runtime().utilities, docs.read_file(file))
    click.echo(f"ok: {doc['kind']}/{doc['name']} ({doc['model']}) from {doc['effective_from']}")


@tariff_group.command("list")
@click.option("--kind", help="Only this utility kind.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tariff_list(kind: str | None, as_json: bool) -> None:
    """Every version of every tariff, and which is in force now."""
    cli = _cli()
    st = cli.state()
    with st.session() as session:
        out = docs.describe_versions(
            session, st.runtime().utilities, tariffs.list_tariffs(session, kind)
        )

    def text(items: list[dict[str, Any]]) -> str:
        if not items:
            return "no tariffs: load one with 'onecard tariff load FILE'"
        return "\n".join(
            f"{i['kind']:<16} {i['name']:<20} v{i['version']:<3} {i['model']:<12} "
            f"{i['effective_from']:<26} {i['state']}"
            for i in items
        )

    cli.emit(out, as_json, text)


@tariff_group.command("show")
@click.argument("kind")
@click.argument("name")
@click.option("--version", type=int, help="This version (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tariff_show(kind: str, name: str, version: int | None, as_json: bool) -> None:
    """Show a tariff document as stored."""
    cli = _cli()
    st = cli.state()
    with st.session() as session:
        rows = [r for r in tariffs.list_tariffs(session, kind) if r.name == name]
        if not rows:
            tariffs.schedule(session, st.runtime().utilities, kind, name)  # NotFound: known names
        if version is not None:
            rows = [r for r in rows if r.version == version]
            if not rows:
                cli.fail(f"{kind}/{name} has no version {version}")
        out = docs.describe_versions(session, st.runtime().utilities, rows[-1:], documents=True)[0]
    import yaml

    cli.emit(out, as_json, lambda o: yaml.safe_dump(o, allow_unicode=True, sort_keys=False))


@tariff_group.command("assign")
@click.argument("meter")
@click.argument("name", required=False)
@click.option("--clear", is_flag=True, help="Clear the meter's tariff (use the kind's only one).")
def tariff_assign(meter: str, name: str | None, clear: bool) -> None:
    """Set the tariff of a meter (METER is SERIAL or KIND:SERIAL)."""
    cli = _cli()
    st = cli.state()
    if bool(name) == clear:
        cli.fail("give a tariff NAME, or --clear")
    with st.session() as session:
        m = tm.find_meter(session, meter)
        before = m.tariff
        tm.assign(session, st.runtime().utilities, m, None if clear else name)
        from onecard.audit import record

        record(
            session,
            cli.actor(),
            "meter.tariff",
            [f"meter:{m.kind}:{m.serial}"],
            detail={"from": before, "to": m.tariff},
        )
        click.echo(f"meter {m.kind}:{m.serial}: tariff {m.tariff or '(the kind default)'}")


@tariff_group.command("quote")
@click.option(
    "--meter", help="Quote for this meter (SERIAL or KIND:SERIAL): its tariff and position."
)
@click.option("--kind", help="Utility kind, for a hypothetical position.")
@click.option("--tariff", "name", help="Tariff name (with --kind).")
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Quote against tariff documents not stored (repeat for versions).",
)
@click.option("--amount", help="Money paid, in yuan: how many units does it buy?")
@click.option("--units", help="Quantity, in the kind's unit (or --unit): what does it cost?")
@click.option("--unit", help="The unit of --units and --used-this-period (e.g. kWh for heat).")
@click.option("--used-this-period", help="Quantity already used or bought in the ladder period.")
@click.option("--at", help="When (ISO time; default now).")
@click.option("--until", help="Spread the use evenly over [--at, --until).")
@click.option("--band", "bands", multiple=True, help="BAND=SHARE of the use (repeatable).")
@click.option("--category", help="Customer category (residential, commercial ...).")
@click.option("--fixed-due", is_flag=True, help="Include the billing period's fixed charges.")
@click.option("--heated-area", help="Heated area in m² (heat basic fee).")
@click.option("--floor-area", help="Floor area in m² (fees per m²).")
@click.option("--opened", help="Account opened on (date): prorates fixed charges.")
@click.option("--closed", help="Account closes on (date, not charged): prorates fixed charges.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tariff_quote(
    meter: str | None,
    kind: str | None,
    name: str | None,
    files: tuple[str, ...],
    as_json: bool,
    bands: tuple[str, ...],
    **options: Any,
) -> None:
    """Quote a purchase with its itemized breakdown, for a meter or a hypothetical position."""
    cli = _cli()
    st = cli.state()
    utilities = st.runtime().utilities
    data: dict[str, Any] = {k: v for k, v in options.items() if v not in (None, False)}
    if options.get("fixed_due"):
        data["fixed_due"] = True
    if bands:
        data["by_band"] = dict(_band(b) for b in bands)
    chosen = sum(1 for x in (meter, kind or name, files) if x)
    if chosen != 1:
        cli.fail("give --meter, or --kind with --tariff, or --file")
    if files:
        sched = tariffs.schedule_from_documents(utilities, [docs.read_file(f) for f in files])
        quote = rq.run(sched, rq.parse(sched, data))
    else:
        with st.session() as session:
            if meter:
                if data.keys() - {"amount", "units", "unit", "at", "until"}:
                    cli.fail(
                        "--meter takes its position from the meter: use only --amount/--units, "
                        "--unit, --at and --until"
                    )
                m = tm.find_meter(session, meter)
                sched = tm.meter_schedule(session, utilities, m)
                parsed = rq.parse(sched, data)
                quote = tm.quote_meter(
                    session,
                    utilities,
                    m,
                    at=parsed.at,
                    until=parsed.until,
                    amount=parsed.amount,
                    units=parsed.units,
                )
            else:
                if not (kind and name):
                    cli.fail("--kind and --tariff go together")
                assert kind is not None and name is not None
                sched = tariffs.schedule(session, utilities, kind, name)
                quote = rq.run(sched, rq.parse(sched, data))
    cli.emit(quote.to_dict(), as_json, lambda _: format_quote(quote))


def _band(text: str) -> tuple[str, str]:
    name, sep, share = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not BAND=SHARE", param_hint="--band")
    return name, share


def format_quote(q: Quote) -> str:
    """A quote as the counter screen shows it: one line per item, the total, the credit."""
    head = f"{q.kind}/{q.tariff} v{','.join(map(str, q.versions))}"
    if q.category:
        head += f" · {q.category}"
    out = [head, f"at {q.local(q.at)}" + (f" until {q.local(q.until)}" if q.until else "")]
    if q.unit and q.used_before:
        out.append(f"used this period before: {to_quantity(q.used_before, q.decimals)} {q.unit}")
    for ln in q.lines:
        d = line_dict(ln)
        qty = (
            f"{ln.quantity.normalize():f} {ln.unit or ''} × {ln.price}"
            if ln.quantity is not None and ln.price is not None
            else ""
        )
        version = f"v{d['version']}" if len(q.versions) > 1 else ""
        out.append(
            f"  {ln.label:<34} {qty:<30} {version:>3} {format_fen(round_fen(ln.amount)):>12}"
        )
    total = f"{q.quantity} {q.unit}" if q.unit else ""
    out.append(f"  {'total ' + total:<68} {format_fen(q.amount):>12}")
    if q.paid is not None:
        out.append(f"  paid {format_fen(q.paid)}, left as credit {format_fen(q.credit)}")
    if q.exact != Decimal(q.amount).scaleb(-2):
        out.append(f"  (exact {q.exact.normalize():f} yuan, rounded half-up to the fen once)")
    return "\n".join(out)
