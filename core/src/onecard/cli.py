"""The ``onecard`` command. Errors print one clear line and exit non-zero."""

from __future__ import annotations

import getpass
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard import __version__, ledger
from onecard import customers as cust
from onecard import offices as off
from onecard import operators as ops
from onecard.audit import Actor, record
from onecard.card.card_cli import card as card_group
from onecard.card.keys_cli import keys as keys_group
from onecard.db import has_operator, is_initialised, sqlite_file_missing, upgrade
from onecard.errors import InvalidInput, OnecardError
from onecard.ledger import accounts as acc
from onecard.models import Operator
from onecard.money import format_fen, parse_yuan
from onecard.remote.cli import meters_group
from onecard.runtime import Runtime
from onecard.tariffs.cli import tariff_group

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """What the group options chose; the runtime is made on first use."""

    def __init__(self, instance: str | None, database_url: str | None) -> None:
        self.overrides = {"instance_path": instance, "database_url": database_url}
        self._runtime: Runtime | None = None

    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime.create(self.overrides)
        return self._runtime

    @contextmanager
    def session(self, *, initialised: bool = True) -> Iterator[Session]:
        rt = self.runtime()
        if sqlite_file_missing(rt.engine) and initialised:
            raise OnecardError(f"no database at {rt.engine.url.database}: run 'onecard init' first")
        if initialised and not is_initialised(rt.engine):
            raise OnecardError(
                f"the database at {rt.engine.url.render_as_string()} is not initialised: "
                "run 'onecard init' first"
            )
        with rt.sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


def actor() -> Actor:
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = str(os.getuid())
    return Actor(name=f"cli:{user}")


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


class OnecardGroup(click.Group):
    """Turns onecard errors into a clear message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OnecardError as exc:
            where = f" [{exc.field}]" if exc.field else ""
            raise click.ClickException(f"{exc.message}{where}") from exc


def emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    click.echo(
        json.dumps(data, ensure_ascii=False, indent=2, default=str) if as_json else text(data)
    )


@click.group(cls=OnecardGroup)
@click.version_option(__version__, prog_name="onecard")
@click.option(
    "--instance", envvar="ONECARD_INSTANCE_PATH", help="Instance folder (default ./instance)."
)
@click.option(
    "--database-url",
    envvar="ONECARD_DATABASE_URL",
    help="Database URL (default: SQLite in the instance folder).",
)
@click.pass_context
def cli(ctx: click.Context, instance: str | None, database_url: str | None) -> None:
    """onecard: multi-utility prepaid one-card management server."""
    state = State(instance, database_url)
    ctx.obj = state
    ctx.call_on_close(state.close)


def state() -> State:
    obj = click.get_current_context().find_object(State)
    assert obj is not None
    return obj


def read_password(password_stdin: bool, env_name: str) -> str:
    if password_stdin:
        line = sys.stdin.readline().rstrip("\n")
        return ops.check_password_strength(line)
    if os.environ.get(env_name):
        return ops.check_password_strength(os.environ[env_name])
    if not sys.stdin.isatty():
        fail(f"no password given: use --password-stdin or set {env_name}")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return ops.check_password_strength(value)


# init, db ---------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--admin", default="admin", show_default=True, help="Username of the first administrator."
)
@click.option("--office-code", default="HQ", show_default=True)
@click.option("--office-name", default="总部 Head office", show_default=True)
@click.option(
    "--password-stdin", is_flag=True, help="Read the administrator's password from standard input."
)
def init(admin: str, office_code: str, office_name: str, password_stdin: bool) -> None:
    """Create (or upgrade) the database and the first administrator."""
    st = state()
    rt = st.runtime()
    upgrade(rt.engine)
    with st.session(initialised=False) as session:
        ops.ensure_default_roles(session)
        if session.execute(select(func.count()).select_from(Operator)).scalar_one():
            click.echo("already initialised: schema is up to date")
            return
        password = read_password(password_stdin, "ONECARD_ADMIN_PASSWORD")
        office = off.create_office(session, actor(), code=office_code, name=office_name)
        ops.create_operator(
            session,
            actor(),
            username=admin,
            password=password,
            full_name="Administrator",
            roles=[("administrator", None)],
        )
        record(session, actor(), "system.init", [f"office:{office.id}"])
    url = rt.engine.url.render_as_string()
    click.echo(f"initialised {url}: office {office_code}, administrator {admin}")


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations."""
    rt = state().runtime()
    upgrade(rt.engine)
    click.echo("schema is up to date")


@db.command("current")
def db_current() -> None:
    """Print the schema revision."""
    from onecard.db import current_revision

    engine = state().runtime().engine
    if sqlite_file_missing(engine):
        fail(f"no database at {engine.url.database}")
    click.echo(current_revision(engine) or "empty")


# plugins ----------------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List plugins and the utility kinds they register."""
    from onecard.plugins import load_plugins

    described = load_plugins().describe()

    def text(items: list[dict[str, Any]]) -> str:
        lines = []
        for p in items:
            lines.append(f"{p['name']}  ({p['distribution']} {p['version']}, module {p['module']})")
            for k in p["kinds"]:
                unit = k["unit"] or "money only"
                lines.append(
                    f"    {k['code']:<16} {k['names']['zh-CN']} / {k['names']['en']}  [{unit}]"
                )
        return "\n".join(lines) or "no plugins loaded"

    emit(described, as_json, text)


# offices and operators --------------------------------------------------------------------------


@cli.group()
def office() -> None:
    """Offices and properties."""


@office.command("add")
@click.argument("code")
@click.argument("name")
@click.option("--parent", help="Code of the office above this one.")
@click.option("--timezone", default="Asia/Shanghai", show_default=True)
def office_add(code: str, name: str, parent: str | None, timezone: str) -> None:
    """Add an office."""
    with state().session() as session:
        off.create_office(session, actor(), code=code, name=name, parent=parent, timezone=timezone)
    click.echo(f"office {code} added")


@office.command("list")
@click.option("--json", "as_json", is_flag=True)
def office_list(as_json: bool) -> None:
    """List offices."""
    with state().session() as session:
        rows = [
            {"code": o.code, "name": o.name, "parent": o.parent.code if o.parent else None}
            for o in off.list_offices(session)
        ]
    emit(
        rows,
        as_json,
        lambda rs: "\n".join(f"{r['code']:<12} {r['name']}  {r['parent'] or ''}" for r in rs),
    )


@cli.group()
def operator() -> None:
    """Operators and their roles."""


@operator.command("add")
@click.argument("username")
@click.option("--role", "roles", multiple=True, help="ROLE or ROLE@OFFICE (repeatable).")
@click.option("--full-name", default="")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def operator_add(
    username: str, roles: tuple[str, ...], full_name: str, password_stdin: bool
) -> None:
    """Add an operator."""
    parsed = []
    for r in roles:
        name, _, office_code = r.partition("@")
        parsed.append((name, office_code or None))
    password = read_password(password_stdin, "ONECARD_OPERATOR_PASSWORD")
    with state().session() as session:
        ops.create_operator(
            session,
            actor(),
            username=username,
            password=password,
            full_name=full_name,
            roles=parsed,
        )
    click.echo(f"operator {username} added")


@operator.command("unlock")
@click.argument("username")
def operator_unlock(username: str) -> None:
    """Clear an operator's failed logins and lockout."""
    with state().session() as session:
        ops.unlock(session, actor(), username)
    click.echo(f"operator {username} unlocked")


@operator.command("list")
@click.option("--json", "as_json", is_flag=True)
def operator_list(as_json: bool) -> None:
    """List operators with their roles."""
    with state().session() as session:
        rows = [
            {
                "username": o.username,
                "full_name": o.full_name,
                "active": o.is_active,
                "roles": [
                    f"{a.role.name}@{a.office.code}" if a.office else a.role.name
                    for a in o.assignments
                ],
            }
            for o in ops.list_operators(session)
        ]
    emit(
        rows,
        as_json,
        lambda rs: "\n".join(f"{r['username']:<16} {', '.join(r['roles'])}" for r in rs),
    )


# customers --------------------------------------------------------------------------------------


@cli.group()
def customer() -> None:
    """Customers (accounts)."""


@customer.command("open")
@click.option("--office", required=True, help="Office code.")
@click.option("--name", required=True)
@click.option("--phone")
@click.option("--id-number")
@click.option("--category", default="residential", show_default=True)
@click.option("--building", default="")
@click.option("--unit", default="")
@click.option("--address", default="")
@click.option("--floor-area", help="m², e.g. 89.50")
@click.option("--heated-area", help="m², e.g. 80")
@click.option("--meter", "meters", multiple=True, help="KIND:SERIAL[:MODEL] (repeatable).")
@click.option("--shared-wallet", is_flag=True, help="Also open a wallet shared by all meters.")
@click.option("--number", help="Customer number (default: OFFICE-000123).")
@click.option("--json", "as_json", is_flag=True)
def customer_open(meters: tuple[str, ...], as_json: bool, **fields: Any) -> None:
    """Open an account: customer, premises, meters and their wallets."""
    specs = [cust.MeterSpec.parse(m, f"meter[{i}]") for i, m in enumerate(meters)]
    st = state()
    with st.session() as session:
        c = cust.open_account(session, actor(), st.runtime().utilities, meters=specs, **fields)
        summary = cust.customer_summary(session, c)
    emit(
        summary,
        as_json,
        lambda s: f"opened customer {s['number']} ({s['name']}) with {len(s['meters'])} meter(s)",
    )


def _customer_text(s: dict[str, Any]) -> str:
    lines = [
        f"{s['number']}  {s['name']}  {s['phone'] or ''}  [{s['status']}] office {s['office']}"
    ]
    lines.extend(
        f"  premises: {p['building']} {p['unit']} {p['address']}  "
        f"floor {p['floor_area'] or '-'} m²  heated {p['heated_area'] or '-'} m²"
        for p in s["premises"]
    )
    lines.extend(
        f"  meter {m['kind']:<15} {m['serial']:<16} balance {m['balance']} yuan"
        for m in s["meters"]
    )
    lines.extend(f"  {a['purpose']:<21} {format_fen(a['balance_fen'])} yuan" for a in s["accounts"])
    return "\n".join(lines)


@customer.command("show")
@click.argument("number")
@click.option("--json", "as_json", is_flag=True)
def customer_show(number: str, as_json: bool) -> None:
    """Show a customer with premises, meters and balances."""
    with state().session() as session:
        summary = cust.customer_summary(session, cust.get_customer(session, number))
    emit(summary, as_json, _customer_text)


# ledger -----------------------------------------------------------------------------------------


@cli.group("ledger")
def ledger_group() -> None:
    """The ledger: sell, reverse, verify."""


def _wallet_code(session: Session, meter: str | None, kind: str | None, wallet: str | None) -> str:
    if bool(meter) == bool(wallet):
        raise InvalidInput("give either --meter or --wallet", field="meter")
    if meter:
        return acc.meter_wallet_code(cust.find_meter(session, meter, kind).id)
    assert wallet is not None
    return wallet


@ledger_group.command("sale")
@click.option("--meter", help="Meter serial.")
@click.option("--kind", help="Utility kind, where serials repeat across kinds.")
@click.option("--wallet", help="Wallet account code instead of a meter.")
@click.option("--amount", required=True, help="Yuan, e.g. 100.00")
@click.option("--fee", default=None, help="Fee in yuan, e.g. 10.00")
@click.option("--method", default="cash", type=click.Choice(["cash", "bank"]), show_default=True)
@click.option("--key", help="Idempotency key (default: a new random one).")
@click.option("--json", "as_json", is_flag=True)
def ledger_sale(
    meter: str | None,
    kind: str | None,
    wallet: str | None,
    amount: str,
    fee: str | None,
    method: str,
    key: str | None,
    as_json: bool,
) -> None:
    """Sell credit into a meter's wallet, paid in cash or by bank."""
    fen = parse_yuan(amount, "amount")
    fee_fen = parse_yuan(fee, "fee") if fee else 0
    with state().session() as session:
        code = _wallet_code(session, meter, kind, wallet)
        account = acc.get_account(session, code, field="wallet")
        if account.office_id is None:
            raise InvalidInput(f"account {code} belongs to no office", field="wallet")
        cust.require_active(session, account.customer_id)
        posted = ledger.sale(
            session,
            wallet=code,
            amount=fen,
            fee=fee_fen,
            office_id=account.office_id,
            method=method,
            idempotency_key=key or f"cli-{uuid.uuid4()}",
        )
        if posted.created:
            record(
                session,
                actor(),
                "ledger.sale",
                [f"ledger:#{posted.seq}", f"account:{code}"],
                detail={"amount_fen": fen, "fee_fen": fee_fen, "method": method},
                office_id=account.office_id,
                customer_id=account.customer_id,
            )
    out = {
        "seq": posted.seq,
        "key": posted.idempotency_key,
        "created": posted.created,
        "postings": [{"account": a, "amount_fen": n} for a, n in posted.postings],
    }
    verb = "sold" if posted.created else "already posted (nothing new credited):"
    emit(
        out,
        as_json,
        lambda o: (
            f"{verb} {format_fen(fen)} yuan to {code}: transaction #{o['seq']} key {o['key']}"
        ),
    )


@ledger_group.command("reverse")
@click.argument("seq", type=int)
@click.option("--reason", required=True, help="Reason code, e.g. operator_error.")
@click.option("--memo", default="")
@click.option("--key", help="Idempotency key (default: reverse-<seq>).")
def ledger_reverse(seq: int, reason: str, memo: str, key: str | None) -> None:
    """Reverse transaction SEQ with a reason code."""
    with state().session() as session:
        posted = ledger.reverse(
            session, seq, reason_code=reason, memo=memo, idempotency_key=key or f"reverse-{seq}"
        )
        if posted.created:
            record(
                session,
                actor(),
                "ledger.reverse",
                [f"ledger:#{seq}", f"ledger:#{posted.seq}"],
                detail={"reason_code": reason},
            )
    click.echo(
        f"transaction #{seq} reversed by #{posted.seq}"
        if posted.created
        else f"already reversed by #{posted.seq}"
    )


@ledger_group.command("balance")
@click.argument("account")
def ledger_balance(account: str) -> None:
    """Print an account's balance on its normal side, in yuan."""
    with state().session() as session:
        a = acc.get_account(session, account)
        click.echo(f"{a.code}  {format_fen(acc.natural_balance(a))} yuan")


@ledger_group.command("verify")
@click.option("--json", "as_json", is_flag=True)
def ledger_verify(as_json: bool) -> None:
    """Check the hash chain, zero sums and cached balances; exit 1 if anything is off."""
    with state().session() as session:
        report = ledger.verify(session)
    if as_json:
        emit(report.to_dict(), True, str)
    elif report.ok:
        click.echo(
            f"ledger OK: {report.transactions} transactions, {report.postings} postings, "
            f"{report.accounts} accounts"
        )
    else:
        first = report.first_bad_transaction
        head = (
            f"first bad transaction: #{first}"
            if first is not None
            else "problems outside transactions"
        )
        click.echo(
            f"ledger FAILED verification ({len(report.problems)} problem(s)); {head}", err=True
        )
        for problem in report.problems:
            click.echo(f"  {problem}", err=True)
    if not report.ok:
        sys.exit(1)


# serve, demo ------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
def serve(host: str, port: int, threads: int) -> None:
    """Run the web server (waitress)."""
    from waitress import serve as waitress_serve

    from onecard.web import create_app

    st = state()
    rt = st.runtime()
    if not has_operator(rt.engine):
        fail("the database has no schema or no operator yet: run 'onecard init' first")
    app = create_app(runtime=rt)
    url = rt.engine.url.render_as_string()
    click.echo(f"onecard {__version__} on http://{host}:{port}/  database {url}")
    waitress_serve(app, host=host, port=port, threads=threads)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Only create the demo data.")
def demo(host: str, port: int, threads: int, no_serve: bool) -> None:
    """Create a demo installation and serve its console with the demo lab.

    Made once: offices, operators, customers, sales, tariffs, card keys and the lab's wallet of
    emulated cards. Then pcscd with two virtual (vpcd) readers, the counter's and the manager's
    (a running pcscd with those readers is reused), and the console on HOST:PORT.
    """
    from onecard.demo import DEMO_PASSWORD, build_demo, seed_lab

    st = state()
    rt = st.runtime()
    upgrade(rt.engine)
    with st.session(initialised=False) as session:
        summary = build_demo(session, rt.utilities)
    click.echo(summary)
    _demo_keys(rt)
    seeded = seed_lab(_demo_lab(rt), rt.card_desk())
    if seeded:
        click.echo(seeded)
    from onecard.remote.demo import ensure_demo_remote

    made = ensure_demo_remote(rt)
    if made:
        click.echo(made)
    logins = (
        f"log in as cashier1, cashier2, manager1, auditor or admin with password {DEMO_PASSWORD}"
    )
    if no_serve:
        click.echo(logins)
        return
    _demo_serve(rt, host, port, threads, logins)


def _demo_lab(rt: Runtime, **kwargs: Any) -> Any:
    from onecard.console.lab import Lab

    return Lab(
        rt.settings.instance_path / "lab",
        rt.sessions,
        rt.utilities,
        rt.card_desk().keystore,
        **kwargs,
    )


def _demo_serve(rt: Runtime, host: str, port: int, threads: int, logins: str) -> None:
    """Start pcscd with the virtual readers, connect the lab's card slots, serve the console;
    on Ctrl-C (or SIGTERM) take the cards off and stop the pcscd this started."""
    import dataclasses
    import signal

    from waitress import serve as waitress_serve

    from onecard.card.pcscd import PcscdError, PcscdService
    from onecard.card.vpcd import VirtualCardSlot
    from onecard.console.lab import EXTENSION
    from onecard.web import create_app

    service = PcscdService(rt.settings.instance_path / "pcscd")
    slots: dict[str, Any] = {}
    names: dict[str, str] = {}
    unavailable = ""
    try:
        service.start()
    except PcscdError as exc:
        unavailable = str(exc)
        click.echo(
            f"warning: no virtual card readers: {exc}\n"
            "  The console is served anyway; the demo lab shows the readers as unavailable.\n"
            "  Install them with (Debian, as root): "
            "apt-get install --no-install-recommends pcscd vsmartcard-vpcd",
            err=True,
        )
    else:
        counter, manager = service.reader_names()[:2]
        names = {"counter": counter, "manager": manager}
        slots = {place: VirtualCardSlot(service.port_of(name)) for place, name in names.items()}
        rt.settings = dataclasses.replace(rt.settings, reader=counter)
        how = "reusing the running pcscd" if service.reused else f"pcscd pid {service.pid}"
        click.echo(f"virtual card readers ({how}): counter {counter!r}, manager {manager!r}")
    lab = _demo_lab(rt, slots=slots, reader_names=names, unavailable=unavailable)
    app = create_app({"lab": True}, runtime=rt)
    app.extensions[EXTENSION] = lab
    app.config["ONECARD_LAB_READERS"] = names

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    from onecard.remote.demo import DemoRemote

    remote = DemoRemote(rt)
    click.echo(remote.start())
    previous = signal.signal(signal.SIGTERM, stop)
    click.echo(f"onecard {__version__} demo: open http://{host}:{port}/console/")
    click.echo(logins)
    click.echo(f"the demo lab (emulated cards and meters): http://{host}:{port}/lab/")
    try:
        waitress_serve(app, host=host, port=port, threads=threads)
    finally:
        signal.signal(signal.SIGTERM, previous)
        remote.stop()
        lab.close()
        service.stop()
        click.echo("demo stopped")


def _demo_keys(rt: Runtime) -> None:
    """Give the demo site its card keys (and a KEK file in the instance, unless ONECARD_KEK)."""
    from onecard.card.keys import KeyStore, create_kek_file, kek_path, kek_source, load_kek

    with rt.sessions() as session, session.begin():
        if KeyStore.installation(session) is not None:
            return
        if kek_source(rt.settings) is None:
            create_kek_file(kek_path(rt.settings))
        KeyStore(load_kek(rt.settings)).init_site(session, 1001, "onecard demo")
    click.echo(f"card keys made for demo site 1001 (KEK: {kek_source(rt.settings)})")


cli.add_command(keys_group)
cli.add_command(card_group)
cli.add_command(tariff_group)
cli.add_command(meters_group)


def main() -> None:
    """Entry point: add plugin commands (``onecard_register_commands``), then run."""
    from onecard.plugins import load_plugins, register_commands

    try:
        register_commands(load_plugins(), cli)
    except OnecardError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(2)
    cli(prog_name="onecard")
