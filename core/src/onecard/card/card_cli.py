"""``onecard card ...``: the office's card operations on a PC/SC reader, from the command line.

The reader is chosen with ``--reader`` (exact name or a unique part of it) or ``ONECARD_READER``;
without either, the only reader present is used.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from onecard.card import profiles as prof
from onecard.card.keys import KeyStore, load_kek
from onecard.card.reader import MifareReader, list_readers
from onecard.card.service import CardDesk, Manager, SaleItem, open_pcsc_reader
from onecard.errors import InvalidInput
from onecard.money import format_fen, parse_yuan

reader_option = click.option(
    "--reader", envvar="ONECARD_READER", help="PC/SC reader name, or a unique part of it."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _cli() -> Any:
    from onecard import cli as main

    return main


def desk() -> CardDesk:
    main = _cli()
    rt = main.state().runtime()
    with main.state().session():  # refuses an uninitialised database with a clear message
        pass
    return CardDesk(rt.sessions, rt.utilities, KeyStore(load_kek(rt.settings)))


@contextmanager
def open_reader(name: str | None) -> Iterator[MifareReader]:
    """The reader named on the command line, else ``reader`` of onecard.toml, else the only one."""
    if not name:
        name = _cli().state().runtime().settings.reader
    with open_pcsc_reader(name) as reader:
        yield reader


@click.group("card")
def card() -> None:
    """Issue, read and sell to one-cards; tool cards; card profiles."""


@card.command("readers")
@json_option
def readers(as_json: bool) -> None:
    """List the PC/SC readers this machine sees."""
    names = list_readers()
    _cli().emit(names, as_json, lambda n: "\n".join(n) if n else "no readers")


@card.command("profiles")
@json_option
def profiles(as_json: bool) -> None:
    """List card profiles and whether the loaded plugins can place them on a card."""
    main = _cli()
    rt = main.state().runtime()
    with main.state().session() as session:
        check = prof.check_profiles(session, rt.utilities)
        items = [
            p.describe() | {"unavailable": check.unavailable.get(p.code)}
            for p in prof.list_profiles(session)
        ]

    def text(rows: list[dict[str, Any]]) -> str:
        lines = []
        for r in rows:
            kinds = ", ".join(s["label"] for s in r["slots"])
            note = f"  (unavailable: {r['unavailable']})" if r["unavailable"] else ""
            lines.append(f"{r['number']:>4} {r['code']:<12} {r['card_size']}  {kinds}{note}")
        return "\n".join(lines)

    _cli().emit(items, as_json, text)


@card.command("profile-add")
@click.argument("code")
@click.option("--slot", "slots", multiple=True, required=True, help="KIND or KIND:LABEL, in order.")
@click.option("--size", "card_size", default="1k", type=click.Choice(["1k", "4k"]))
@click.option("--name-zh", default="")
@click.option("--name-en", default="")
@click.option("--office", help="Office code; default: every office.")
def profile_add(
    code: str,
    slots: tuple[str, ...],
    card_size: str,
    name_zh: str,
    name_en: str,
    office: str | None,
) -> None:
    """Define a card profile of this installation."""
    from onecard import offices as off

    main = _cli()
    rt = main.state().runtime()
    with main.state().session() as session:
        office_id = off.get_office(session, office).id if office else None
        parsed = []
        for s in slots:
            kind, _, label = s.partition(":")
            parsed.append({"kind": kind, "label": label or kind})
        p = prof.create_profile(
            session,
            rt.utilities,
            main.actor(),
            code=code,
            names={k: v for k, v in (("zh-CN", name_zh), ("en", name_en)) if v},
            slots=parsed,
            card_size=card_size,
            office_id=office_id,
        )
    click.echo(f"profile {p.code} (number {p.number}): {', '.join(lbl for _, lbl in p.slots)}")


@card.command("issue")
@click.option("--customer", required=True, help="Customer number.")
@click.option("--profile", required=True, help="Card profile: four, six, eight or your own.")
@click.option("--meter", "meters", multiple=True, help="LABEL=SERIAL to choose a slot's meter.")
@reader_option
@json_option
def issue(
    customer: str, profile: str, meters: tuple[str, ...], reader: str | None, as_json: bool
) -> None:
    """Issue the blank card on the reader to a customer."""
    chosen = {}
    for m in meters:
        label, sep, serial = m.partition("=")
        if not sep or not serial:
            raise InvalidInput(f"--meter {m!r}: write LABEL=SERIAL", field="meter")
        chosen[label] = serial
    d = desk()
    with open_reader(reader) as r:
        out = d.issue(r, _cli().actor(), customer=customer, profile=profile, meters=chosen)
    _cli().emit(
        out,
        as_json,
        lambda o: (
            f"card {o['uid']} issued to {o['customer']} ({o['profile']}): "
            + ", ".join(f"{s['label']}={s['meter'] or '-'}" for s in o["slots"])
        ),
    )


@card.command("read")
@reader_option
@json_option
def read(reader: str | None, as_json: bool) -> None:
    """Read the card on the reader; meters' return records become readings."""
    d = desk()
    with open_reader(reader) as r:
        out = d.read(r, _cli().actor())
    _cli().emit(out, as_json, _read_text)


def _read_text(o: dict[str, Any]) -> str:
    lines = [f"card {o['uid']} ({o['card_type']}, {o['status']}, key v{o['key_version']})"]
    if o.get("warning"):
        lines.append(f"WARNING: {o['warning']}")
    if "customer" in o:
        lines.append(f"customer {o['customer']['number']} {o['customer']['name']}")
    for s in o.get("slots", []):
        p = s.get("purchase") or {}
        ret = s.get("return")
        used = (
            f"use {ret['cumulative']} left {ret['remaining']} {','.join(ret['flags'])}"
            if ret
            else "no meter data yet"
        )
        lines.append(
            f"  [{s['slot']}] {s['label']:<16} meter {s['meter'] or '-':<12} "
            f"purchase #{p.get('seq', 0)} amount {p.get('amount', 0)}; {used}"
        )
    lines.extend(
        f"  PENDING sale {p['sale_key']} meter {p['meter']} #{p['seq']}"
        for p in o.get("pending", [])
    )
    if "tool" in o:
        lines.append(json.dumps(o["tool"], ensure_ascii=False, default=str))
    return "\n".join(lines)


@card.command("sell")
@click.option(
    "--meter",
    "items",
    multiple=True,
    required=True,
    help="SERIAL=YUAN (or SLOT=YUAN), repeat for more meters.",
)
@click.option("--method", default="cash", type=click.Choice(["cash", "bank"]))
@click.option("--key", help="Sale key (idempotency); default: a new one. Reuse it to retry.")
@reader_option
@json_option
def sell(
    items: tuple[str, ...], method: str, key: str | None, reader: str | None, as_json: bool
) -> None:
    """Sell to meters on the card on the reader: pending, written, verified, confirmed."""
    parsed = []
    for n, item in enumerate(items):
        meter, sep, amount = item.partition("=")
        if not sep:
            raise InvalidInput(f"--meter {item!r}: write SERIAL=YUAN", field=f"items.{n}")
        parsed.append(SaleItem(meter=meter, amount=parse_yuan(amount, f"items.{n}.amount")))
    sale_key = key or f"cli-{uuid.uuid4()}"
    d = desk()
    with open_reader(reader) as r:
        out = d.sell(r, _cli().actor(), sale_key=sale_key, items=parsed, method=method)
    _cli().emit(
        out,
        as_json,
        lambda o: "\n".join(
            [
                f"sale {o['sale_key']}: {o['status']}{' (already done)' if o['replayed'] else ''}, "
                f"total {format_fen(o['total'])} yuan"
            ]
            + [
                f"  meter {p['meter']} purchase #{p['seq']} {p['amount_yuan']} yuan"
                for p in o["purchases"]
            ]
        ),
    )


@card.command("pending")
@json_option
def pending(as_json: bool) -> None:
    """List sales waiting to be finished or voided."""
    out = desk().pending()
    _cli().emit(
        out,
        as_json,
        lambda rows: (
            "\n".join(
                f"{p['sale_key']} meter {p['meter']} #{p['seq']} {p['amount_yuan']} yuan "
                f"written {p['written_at']}"
                for p in rows
            )
            or "no pending sales"
        ),
    )


@card.command("finish")
@click.option("--sale", "sale_key", required=True)
@reader_option
def finish(sale_key: str, reader: str | None) -> None:
    """Finish a pending sale with its card on the reader."""
    d = desk()
    with open_reader(reader) as r:
        out = d.finish(r, _cli().actor(), sale_key=sale_key)
    click.echo(f"sale {sale_key}: {out['status']} ({out['rewritten']} slot(s) written again)")


@card.command("void")
@click.option("--sale", "sale_key", required=True)
@click.option("--reason", required=True)
@click.option(
    "--without-card",
    is_flag=True,
    help="The sale's card is reported lost: void without it (a manager authorises).",
)
@click.option("--manager", help="With --without-card: the authorising manager's username.")
@click.option("--manager-reader", help="With --without-card: a reader holding a manager card.")
@reader_option
def void(
    sale_key: str,
    reason: str,
    without_card: bool,
    manager: str | None,
    manager_reader: str | None,
    reader: str | None,
) -> None:
    """Void a pending sale with its card on the reader (taking it off the card)."""
    d = desk()
    if without_card:
        auth = _authorizer(d, manager, manager_reader, reader)
        out = d.void_without_card(_cli().actor(), sale_key=sale_key, reason=reason, authorize=auth)
    else:
        with open_reader(reader) as r:
            out = d.void(r, _cli().actor(), sale_key=sale_key, reason=reason)
    click.echo(f"sale {sale_key}: voided {out['voided']} purchase(s)")


@card.command("lost")
@click.option("--uid", required=True, help="The card's UID (hex), as `card read` shows it.")
@click.option("--reason", default="lost", type=click.Choice(["lost", "stolen", "broken"]))
def lost(uid: str, reason: str) -> None:
    """Report a card lost: it is refused from now on; `card reissue` gives a new one."""
    out = desk().report_lost(_cli().actor(), uid=uid, reason=reason)
    click.echo(f"card {out['uid']} is now {out['status']}")


def _authorizer(
    d: CardDesk, manager: str | None, manager_reader: str | None, reader: str | None
) -> Callable[[int], Manager]:
    if manager_reader:
        if manager_reader == reader:
            raise InvalidInput(
                "the manager card needs a reader of its own; or give --manager", field="manager"
            )

        def by_card(office_id: int) -> Manager:
            with open_reader(manager_reader) as r:
                return d.authorize(office_id, manager_reader=r)

        return by_card
    if not manager:
        raise InvalidInput("give --manager USERNAME or --manager-reader READER", field="manager")
    password = os.environ.get("ONECARD_MANAGER_PASSWORD") or click.prompt(
        f"Password of {manager}", hide_input=True
    )

    def by_password(office_id: int) -> Manager:
        return d.authorize(office_id, username=manager, password=password)

    return by_password


manager_options = [
    click.option(
        "--manager", help="A manager's username (password asked, or ONECARD_MANAGER_PASSWORD)."
    ),
    click.option("--manager-reader", help="A reader holding a manager card."),
]


def _with_manager(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(manager_options):
        f = option(f)
    return f


@card.command("repurchase")
@click.option("--purchase", "purchase_id", type=int, required=True)
@_with_manager
@reader_option
def repurchase(
    purchase_id: int, manager: str | None, manager_reader: str | None, reader: str | None
) -> None:
    """Write a lost purchase onto the card again (a manager authorises)."""
    d = desk()
    auth = _authorizer(d, manager, manager_reader, reader)
    with open_reader(reader) as r:
        out = d.repurchase(r, _cli().actor(), purchase_id=purchase_id, authorize=auth)
    click.echo(f"purchase #{out['seq']} for meter {out['meter']} written again")


@card.command("cancel")
@click.option("--purchase", "purchase_id", type=int, required=True)
@click.option("--reason", required=True)
@_with_manager
@reader_option
def cancel(
    purchase_id: int,
    reason: str,
    manager: str | None,
    manager_reader: str | None,
    reader: str | None,
) -> None:
    """Cancel a purchase no meter has loaded (a manager authorises); the sale is reversed."""
    d = desk()
    auth = _authorizer(d, manager, manager_reader, reader)
    with open_reader(reader) as r:
        out = d.cancel(r, _cli().actor(), purchase_id=purchase_id, reason=reason, authorize=auth)
    click.echo(f"purchase #{out['seq']} cancelled; reversal #{out['reversal_seq']}")


@card.command("reissue")
@click.option("--customer", required=True)
@click.option("--reason", default="lost", type=click.Choice(["lost", "broken", "stolen"]))
@reader_option
@json_option
def reissue(customer: str, reason: str, reader: str | None, as_json: bool) -> None:
    """Reissue a customer's card onto the blank card on the reader; the old one is blacklisted."""
    d = desk()
    with open_reader(reader) as r:
        out = d.reissue(r, _cli().actor(), customer=customer, reason=reason)
    _cli().emit(
        out,
        as_json,
        lambda o: (
            f"card {o['uid']} replaces {o['replaces']}; "
            f"{len(o['unloaded_purchases'])} purchase(s) to re-purchase"
        ),
    )


@card.command("tool")
@click.argument(
    "card_type", type=click.Choice(["system", "manager", "settings", "reset", "clear", "check"])
)
@click.option("--operator", help="The manager a manager card belongs to.")
@click.option("--office", help="Office code.")
@click.option("--set", "values", multiple=True, help="NAME=VALUE (settings: kind, price ...).")
@reader_option
def tool(
    card_type: str,
    operator: str | None,
    office: str | None,
    values: tuple[str, ...],
    reader: str | None,
) -> None:
    """Issue a tool card on the blank card on the reader."""
    from onecard import offices as off

    data = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep:
            raise InvalidInput(f"--set {v!r}: write NAME=VALUE", field="set")
        data[name] = value
    d = desk()
    main = _cli()
    office_id = None
    if office:
        with main.state().session() as session:
            office_id = off.get_office(session, office).id
    with open_reader(reader) as r:
        out = d.issue_tool(
            r, main.actor(), card_type=card_type, operator=operator, office_id=office_id, data=data
        )
    click.echo(f"{card_type} card {out['uid']} issued")
