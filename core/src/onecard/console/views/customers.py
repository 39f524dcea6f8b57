"""Customers: search, the customer page, opening an account (开户) and issuing its card."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from onecard import customers as cust
from onecard import lifecycle
from onecard.card import profiles as prof
from onecard.console import kit, labels
from onecard.console.i18n import _, error_text
from onecard.errors import OnecardError, PermissionDenied
from onecard.models import Customer, Gateway, Office, RemoteMeter
from onecard.web import db, runtime

bp = kit.console_blueprint("customers", __name__, "/console/customers")


def categories() -> dict[str, str]:
    """The customer categories for a select, in the page's language."""
    return dict(labels.options("category"))


#: Extra meter rows on the account form beyond one per card kind.
EXTRA_METER_ROWS = 2


kind_name = labels.kind_name


def quantity(kind: str, value: int | None) -> str:
    """A register value kept in the kind's smallest unit, in its unit: ``1234.5 kWh``."""
    if value is None:
        return "—"
    utilities = runtime().utilities
    if kind not in utilities or utilities.get(kind).unit is None:
        return str(value)
    k = utilities.get(kind)
    shown = Decimal(value).scaleb(-k.unit_decimals)
    return f"{shown:f} {k.unit}"


def counts_money(kind: str) -> bool:
    """Whether a card meter of ``kind`` keeps its credit in fen (else in units)."""
    utilities = runtime().utilities
    if kind not in utilities:
        return True
    return getattr(utilities.get(kind).card_layout, "amount", "money") == "money"


def remaining(kind: str, value: int | None) -> str:
    """The credit a meter reported: yuan, or units for a kind that counts units."""
    if value is None:
        return "—"
    if counts_money(kind):
        from onecard.console.i18n import yuan

        return f"¥{yuan(value)}"
    return quantity(kind, value)


def viewable(number: str) -> Customer:
    """The customer, or 403 unless the operator may see customers of its office."""
    customer = cust.get_customer(db(), number)
    if not kit.allowed("customer.view", customer.office_id):
        raise PermissionDenied(f"customer {number} belongs to an office outside your scope")
    return customer


def context() -> dict[str, Any]:
    """Helpers every customer and account template uses."""
    return {
        "kind_name": kind_name,
        "status_label": lambda s: labels.label(s, "status"),
        "category_label": lambda c: labels.label(c, "category"),
        "quantity": quantity,
        "remaining": remaining,
    }


def remote_meters(session_: Any, meter_ids: list[int]) -> dict[int, tuple[RemoteMeter, str]]:
    """The meters of ``meter_ids`` that are read remotely: their state and gateway code."""
    if not meter_ids:
        return {}
    rows = session_.execute(
        select(RemoteMeter, Gateway.code)
        .join(Gateway, Gateway.id == RemoteMeter.gateway_id)
        .where(RemoteMeter.meter_id.in_(meter_ids))
    )
    return {remote.meter_id: (remote, code) for remote, code in rows}


# Search ---------------------------------------------------------------------------------------


@bp.get("/")
@kit.page("customer.view")
def search() -> ResponseReturnValue:
    """Find customers by name, phone, number, card number, meter serial, building or unit."""
    q = request.args.get("q", "").strip()[:100]
    results: list[Customer] = []
    if q:
        scope = kit.scope("customer.view")
        exact = cust.exact_customer(db(), q, scope)
        results = cust.search_customers(db(), q, scope)
        if exact is not None and len(results) == 1 and request.args.get("list") != "1":
            return redirect(url_for("customers.show", number=exact.number))
    return kit.render("console/customer_search.html", q=q, results=results, **context())


# The customer page ----------------------------------------------------------------------------


@bp.get("/<number>")
@kit.page("customer.view")
def show(number: str) -> ResponseReturnValue:
    """Everything about one customer, with the actions the operator may take."""
    customer = viewable(number)
    session_ = db()
    data = cust.customer_file(session_, customer)
    office = customer.office_id
    can = {
        "manage": kit.allowed("customer.manage", office) and customer.status != "closed",
        "sell": kit.allowed("sale.create", office) and customer.status == "active",
        "card": kit.allowed("card.issue", office) and customer.status == "active",
    }
    has_card = any(c.status == "active" and c.card_type == "user" for c in data["cards"])
    remote = remote_meters(session_, [row["meter"].id for row in data["meters"]])
    from onecard.console.views.remote import customer_events  # it imports this module

    events = customer_events(
        session_, [r["meter"] for r in data["meters"] if r["meter"].id in remote]
    )
    return kit.render(
        "console/customer_show.html",
        c=customer,
        d=data,
        can=can,
        has_card=has_card,
        owners=lifecycle.ownership_history(session_, customer.id),
        history=lifecycle.account_history(session_, customer.id),
        profiles=profile_options(session_, customer.office_id),
        readers=kit.reader_names(),
        remote=remote,
        remote_events=events,
        **context(),
    )


# Opening an account ---------------------------------------------------------------------------


def card_kinds() -> list[str]:
    """The metered utility kinds whose meters go on the one-card."""
    return [k.code for k in runtime().utilities if not k.money_only and k.card_layout is not None]


def office_options() -> list[Office]:
    scope = kit.scope("customer.manage")
    stmt = select(Office).order_by(Office.code)
    if scope is not None:
        stmt = stmt.where(Office.id.in_(scope))
    return list(db().scalars(stmt))


def profile_options(session_: Any, office_id: int | None) -> list[tuple[str, str]]:
    out = []
    lang = labels.language()
    for p in prof.list_profiles(session_, [office_id] if office_id is not None else None):
        label = p.names.get(lang) or p.names.get("en") or p.code
        kinds = ", ".join(kind_name(k) for k in p.kinds())
        out.append((p.code, f"{label} ({kinds})"))
    return out


def meter_rows(form: kit.Form) -> list[dict[str, Any]]:
    kinds = card_kinds()
    rows: list[dict[str, Any]] = [{"i": i, "kind": k} for i, k in enumerate(kinds)]
    rows += [{"i": len(kinds) + j, "kind": ""} for j in range(EXTRA_METER_ROWS)]
    for row in rows:
        row["kind"] = form.get(f"kind_{row['i']}", row["kind"]) if form.values else row["kind"]
    return rows


def parse_area(form: kit.Form, name: str) -> str | None:
    raw = form[name].strip()
    if not raw:
        return ""
    try:
        value = Decimal(raw)
    except InvalidOperation:
        form.error(name, _("Enter an area in m², like 88.5."))
        return None
    if not value.is_finite() or value <= 0 or value > 1_000_000:
        form.error(name, _("The area must be more than 0 and at most 1,000,000 m²."))
        return None
    if value != value.quantize(Decimal("0.01")):
        form.error(name, _("At most two decimals."))
        return None
    return raw


@bp.route("/new", methods=["GET", "POST"])
@kit.page("customer.manage")
def open() -> ResponseReturnValue:
    """Open an account: customer, premises, meters, then issue the card on the reader."""
    offices = office_options()
    form = kit.Form()
    if request.method == "GET":
        form.values = {
            "key": kit.new_key("open"),
            "office": offices[0].code if len(offices) == 1 else "",
            "category": "residential",
            "issue": "1",
        }
    office_id = next((o.id for o in offices if o.code == form["office"]), None)
    profiles = profile_options(db(), office_id)
    if request.method == "GET":
        form.values["profile"] = "four" if any(p == "four" for p, _ in profiles) else ""
    rows = meter_rows(form)
    page: dict[str, Any] = {
        "form": form,
        "offices": offices,
        "profiles": profiles,
        "rows": rows,
        "kinds": card_kinds(),
        "categories": categories(),
        "readers": kit.reader_names(),
    }
    if request.method == "GET":
        return kit.render("console/customer_open.html", **page, **context())
    session_ = db()
    key = form["key"]
    done = cust.opened_with(session_, key) if key else None
    if done is not None:
        flash(_("This form was already submitted: account %(n)s is open.", n=done.number), "info")
        return redirect(url_for("customers.show", number=done.number))
    office = form.choice("office", [o.code for o in offices])
    name = form.text("name", max_length=200)
    phone = form.text("phone", required=False, max_length=32)
    if phone and not cust._PHONE.match(phone):
        form.error("phone", _("Not a phone number: digits, spaces, - and a leading +."))
    id_number = form.text("id_number", required=False, max_length=32)
    category = form.choice("category", list(labels.LABELS["category"]))
    building = form.text("building", required=False, max_length=64)
    unit = form.text("unit", required=False, max_length=64)
    address = form.text("address", required=False, max_length=300)
    floor = parse_area(form, "floor_area")
    heated = parse_area(form, "heated_area")
    issue = form["issue"] == "1"
    profile = form["profile"]
    if issue:
        profile = form.choice("profile", [p for p, _ in profiles]) or ""
    specs: list[cust.MeterSpec] = []
    where: dict[str, str] = {}
    seen: dict[tuple[str, str], int] = {}
    utilities = runtime().utilities
    for row in rows:
        i = row["i"]
        serial = form[f"serial_{i}"].strip()
        kind = form[f"kind_{i}"].strip()
        if not serial:
            continue
        if kind not in utilities or utilities.get(kind).money_only:
            form.error(f"kind_{i}", _("Choose the meter's kind."))
            continue
        if not cust._SERIAL.match(serial):
            form.error(f"serial_{i}", _("Letters, digits, - or _ (at most 64)."))
            continue
        if (kind, serial) in seen:
            form.error(f"serial_{i}", _("This meter is listed twice."))
            continue
        seen[(kind, serial)] = i
        if issue and kind in card_kinds():
            limit = lifecycle.card_serial_limit(utilities, kind)
            if limit is not None and (not serial.isdigit() or len(serial) > limit):
                form.error(
                    f"serial_{i}",
                    _("A card meter's serial is up to %(n)s digits.", n=limit),
                )
                continue
        where[f"meters[{len(specs)}]"] = f"serial_{i}"
        specs.append(
            cust.MeterSpec(kind, serial, model=form.text(f"model_{i}", required=False) or "")
        )
    if issue and profile and form.ok:
        slots = prof.get_profile(session_, profile).kinds()
        for kind in {s.kind for s in specs}:
            if kind in card_kinds() and sum(s.kind == kind for s in specs) > slots.count(kind):
                form.error("profile", _("This card has too few slots for the meters listed."))
    if not form.ok:
        return kit.render("console/customer_open.html", **page, **context())
    assert office is not None and name is not None and category is not None
    try:
        customer = cust.open_account(
            session_,
            kit.actor(),
            utilities,
            office=office,
            name=name,
            phone=phone or None,
            id_number=id_number or None,
            category=category,
            building=building or "",
            unit=unit or "",
            address=address or "",
            floor_area=floor or None,
            heated_area=heated or None,
            meters=specs,
            shared_wallet=form["shared_wallet"] == "1",
            key=key or None,
        )
        session_.commit()
    except OnecardError as exc:
        session_.rollback()
        form.fail(exc, where)
        return kit.render("console/customer_open.html", **page, **context())
    number = customer.number
    flash(_("Account %(n)s opened.", n=number), "success")
    if not issue:
        return redirect(url_for("customers.show", number=number))
    return issue_card(number, profile, form["reader"] or None)


def issue_card(number: str, profile: str, reader: str | None) -> ResponseReturnValue:
    """Issue the card on the reader; on failure show why, with a retry button."""
    actor, grants = kit.who()
    try:
        with kit.open_reader(reader) as r:
            done = (
                runtime()
                .card_desk()
                .issue(r, actor, customer=number, profile=profile, grants=grants)
            )
    except OnecardError as exc:
        customer = cust.get_customer(db(), number)
        return kit.render(
            "console/customer_opened.html",
            status=200 if exc.status < 500 else exc.status,
            c=customer,
            message=error_text(exc),
            profile=profile,
            reader=reader or "",
            profiles=profile_options(db(), customer.office_id),
            readers=kit.reader_names(),
            **context(),
        )
    flash(_("Card %(uid)s issued.", uid=done["uid"]), "success")
    return redirect(url_for("customers.show", number=number))


@bp.post("/<number>/card")
@kit.page("card.issue")
def issue(number: str) -> ResponseReturnValue:
    """Issue (or retry issuing) the customer's first card onto the card on the reader."""
    customer = viewable(number)
    kit.require_office("card.issue", customer.office_id)
    form = kit.Form()
    profiles = [p for p, _ in profile_options(db(), customer.office_id)]
    profile = form.choice("profile", profiles)
    if profile is None:
        flash(_("Choose a card profile."), "error")
        return redirect(url_for("customers.show", number=number))
    return issue_card(number, profile, form["reader"] or None)
