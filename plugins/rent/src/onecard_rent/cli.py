"""``onecard rent``: public-area apportionment from the command line."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click

from onecard.cli import actor, emit, state
from onecard.money import format_fen
from onecard.pricing import round_fen
from onecard.tariffs.documents import read_file
from onecard_rent.apportion import apportion, get_run


@click.group("rent")
def rent() -> None:
    """Rent, property fees and public-area apportionment (公摊)."""


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ")


def _fen(amount: str) -> str:
    return format_fen(round_fen(Decimal(amount)))


def statement_text(s: dict[str, Any]) -> str:
    """A statement as a page of text: meters, readings, cost lines, rule, tenants' shares."""
    period = s["period"]
    out = [
        f"公摊 apportionment {s['key']} · office {s['office']} · {s['kind']}",
        f"period {period['start']} to {period['last_day']} ({period['timezone']}) · "
        f"rule: {s['rule']}",
        "",
        "common meters",
    ]
    for m in s["meters"]:
        first, last, unit = m["start_reading"], m["end_reading"], m["unit"]
        out.append(f"  {m['ref']}  tariff {m['tariff']}")
        out.append(
            f"      read {first['cumulative']} {unit} at {_when(first['taken_at'])}, "
            f"{last['cumulative']} {unit} at {_when(last['taken_at'])}: "
            f"used {m['consumption']} {unit}"
        )
        for ln in m["lines"]:
            how = ""
            if "quantity" in ln and "price" in ln:
                how = f"{ln['quantity']} {ln.get('unit', '')} x {ln['price']}"
            out.append(f"      {ln['label']:<20} {how:>28} {_fen(ln['amount']):>12}")
        out.append(f"      {'cost':<20} {'':>28} {m['cost']:>12}")
    out += ["", "tenants"]
    for t in s["tenants"]:
        unit = f" {t['unit']}" if t.get("unit") else ""
        out.append(f"  {t['customer']}  {t['name']}  {t['basis']} {t['weight']}{unit}")
        out.extend(f"      {x['meter']:<30} {x['amount']:>12}" for x in t["shares"])
        posted = (
            f"{t['wallet']}, transaction #{t['transaction']}" if t["transaction"] else "nothing due"
        )
        out.append(f"      {'total':<30} {t['total']:>12}  ({posted})")
    out += [
        "",
        f"total {s['total']} yuan, the common meters' cost, shared in full.",
        f"rounding: {s['rounding']}.",
    ]
    return "\n".join(out)


@rent.command("apportion")
@click.argument("spec_file", metavar="SPEC.yaml", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def apportion_command(spec_file: str, as_json: bool) -> None:
    """Apportion common meters' cost among tenants (a YAML or JSON spec); print the statement."""
    raw = read_file(spec_file)
    st = state()
    with st.session() as session:
        done = apportion(session, st.runtime().utilities, raw, actor=actor())
        statement = done.statement
        created = done.created
    if as_json:
        emit({"created": created, "statement": statement}, True, str)
        return
    head = "" if created else "already run under this key (nothing posted again)\n"
    click.echo(head + statement_text(statement))


@rent.command("statement")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def statement_command(key: str, as_json: bool) -> None:
    """Print a stored apportionment statement by its key."""
    with state().session() as session:
        statement = get_run(session, key).statement
    emit(statement, as_json, statement_text)
