"""Administration: operators and roles, offices, tariffs, card profiles, the audit log.

Every page is read under a permission and the operator's office scope; every form needs the
permission that changes it (``operator.manage``, ``office.manage``, ``tariff.manage``), so an
auditor reads but any POST of theirs is refused (403) and changes nothing. A refused form shows its
errors next to the fields and stores nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml
from flask import flash, g, redirect, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import or_, select

from onecard import admin_ops, tariffs
from onecard import offices as off
from onecard import operators as ops
from onecard.card import profiles as card_profiles
from onecard.console import kit, labels
from onecard.console.i18n import _, _l, error_text, zone
from onecard.errors import NotFound, OnecardError, PermissionDenied
from onecard.models import AuditEvent, Customer, Office, Operator, Tariff, utcnow
from onecard.tariffs.documents import describe_versions
from onecard.web import db, runtime

bp = kit.console_blueprint("admin", __name__, "/console/admin")

#: What each permission allows, in the operator's language.
PERMISSION_TEXT = {
    "office.manage": _l("create and change offices"),
    "operator.manage": _l("create operators, assign roles, unlock accounts"),
    "customer.view": _l("see customers, premises, meters, cards and balances"),
    "customer.manage": _l("open, change, transfer, suspend and close accounts"),
    "card.issue": _l("issue, reissue and blacklist cards"),
    "sale.create": _l("sell credit and take fees"),
    "sale.correct": _l(
        "reverse transactions, re-purchase, cancel purchases (manager authorisation)"
    ),
    "tariff.manage": _l("create and schedule tariffs"),
    "meter.control": _l("trip, close and keep power on remote meters"),
    "report.view": _l("see reports"),
    "audit.view": _l("see the audit trail and verify the ledger"),
    "backup.run": _l("make and restore backups"),
}
ROLE_TEXT = {
    "administrator": _l("Configures offices, operators, tariffs; all permissions"),
    "cashier": _l("Sells credit, opens accounts and issues cards at the counter"),
    "manager": _l(
        "A cashier who may also authorise corrections (re-purchase, cancellation, reversal)"
    ),
    "auditor": _l("Reads everything, changes nothing"),
}
TARIFF_STATES = {
    "in force": _l("in force"),
    "scheduled": _l("scheduled"),
    "past": _l("past"),
}
AUDIT_PAGE = 50
MAX_TARIFF_BYTES = 200_000


def permission_text(code: str) -> str:
    text = PERMISSION_TEXT.get(code)
    return str(text) if text is not None else ops.PERMISSIONS.get(code, code)


def role_text(name: str, stored: str) -> str:
    text = ROLE_TEXT.get(name)
    if text is not None and stored == ops.DEFAULT_ROLES.get(name, ("",))[0]:
        return str(text)
    return stored


def _any(*permissions: str) -> None:
    """Refuse (403) unless the operator holds one of ``permissions`` somewhere."""
    if not any(kit.allowed(p) for p in permissions):
        raise PermissionDenied(f"you need one of the permissions {', '.join(permissions)}")


def _union(*permissions: str) -> frozenset[int] | None:
    """The offices where the operator holds any of ``permissions`` (None: every office)."""
    out: set[int] = set()
    for p in permissions:
        scope = kit.scope(p)
        if scope is None:
            return None
        out |= scope
    return frozenset(out)


def _offices(scope: frozenset[int] | None = None) -> list[Office]:
    rows = off.list_offices(db())
    return [o for o in rows if scope is None or o.id in scope]


def _office_id(form: kit.Form, name: str, *, required: bool = False) -> tuple[bool, int | None]:
    """An office code from a select: (ok, id or None for none chosen)."""
    code = form[name].strip()
    if not code:
        if required:
            form.error(name, _("Required."))
            return False, None
        return True, None
    try:
        return True, off.get_office(db(), code, field=name).id
    except NotFound:
        form.error(name, _("No such office."))
        return False, None


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {
        "permission_text": permission_text,
        "role_text": role_text,
        "kind_name": labels.kind_name,
    }


# The index ------------------------------------------------------------------------------------


@bp.get("/")
@kit.page()
def index() -> ResponseReturnValue:
    """Administration: the sections this operator may see."""
    sections = [
        (
            "admin.operators",
            _("Operators and roles"),
            _("Accounts, roles per office, unlocking"),
            kit.allowed("operator.manage") or kit.allowed("audit.view"),
        ),
        ("admin.offices", _("Offices"), _("Service offices and their time zones"), True),
        (
            "admin.tariffs",
            _("Tariffs"),
            _("Prices by utility kind; schedule a price change"),
            kit.allowed("customer.view")
            or kit.allowed("report.view")
            or kit.allowed("tariff.manage"),
        ),
        ("admin.profiles", _("Card profiles"), _("Which utility kinds a card carries"), True),
        (
            "admin.audit",
            _("Audit log"),
            _("Who did what, when and from where"),
            kit.allowed("audit.view"),
        ),
    ]
    return kit.render("console/admin_index.html", sections=[s for s in sections if s[3]])


# Operators and roles --------------------------------------------------------------------------


def _operator_scope() -> frozenset[int] | None:
    return _union("operator.manage", "audit.view")


def _role_choices() -> list[tuple[str, str]]:
    return [(r.name, r.name) for r in admin_ops.list_roles(db())]


def _office_choices(manage_scope: frozenset[int] | None) -> list[tuple[str, str]]:
    options = [("", _("Every office"))] if manage_scope is None else [("", "—")]
    options += [(o.code, f"{o.code} · {o.name}") for o in _offices(manage_scope)]
    return options


@bp.route("/operators", methods=["GET", "POST"])
@kit.page()
def operators() -> ResponseReturnValue:
    """Every operator this one may see, and the form to create one."""
    _any("operator.manage", "audit.view")
    form = kit.Form()
    manage = kit.scope("operator.manage") if kit.allowed("operator.manage") else frozenset()
    if request.method == "POST":
        if not kit.allowed("operator.manage"):
            raise PermissionDenied("you need the permission 'operator.manage'")
        created = _create_operator(form, manage)
        if created is not None:
            flash(_("Operator %(name)s created.", name=created), "success")
            return redirect(url_for("admin.operator", username=created))
    scope = _operator_scope()
    rows = [op for op in ops.list_operators(db()) if admin_ops.visible(op, scope)]
    return kit.render(
        "console/admin_operators.html",
        form=form,
        operators=rows,
        can_manage=kit.allowed("operator.manage"),
        roles=_role_choices(),
        office_choices=_office_choices(manage),
        now=utcnow(),
    )


def _create_operator(form: kit.Form, manage: frozenset[int] | None) -> str | None:
    username = form.text("username", max_length=64)
    full_name = form.text("full_name", required=False, max_length=200)
    password = form.text("password", max_length=200)
    role = form.text("role", required=manage is not None, max_length=64)
    ok, office_id = _office_id(form, "office", required=manage is not None)
    if not role and form["office"] and "role" not in form.errors:
        form.error("role", _("Choose the role to give in this office."))
    if password is not None and form["password"] != form["password2"]:
        form.error("password2", _("The two passwords differ."))
    if ok and manage is not None and office_id is not None and office_id not in manage:
        form.error("office", _("You may not manage operators of this office."))
    if not form.ok:
        return None
    assert username is not None and password is not None
    session = db()
    try:
        op = ops.create_operator(
            session,
            kit.actor(),
            username=username,
            password=password,
            full_name=full_name or "",
            roles=[(role, form["office"] or None)] if role else [],
        )
    except OnecardError as exc:
        session.rollback()
        form.fail(
            exc,
            {"username": "username", "password": "password", "role": "role", "office": "office"},
        )
        return None
    session.commit()
    return op.username


def _managed(username: str) -> Operator:
    """An operator this one may see (else 404)."""
    try:
        op = ops.get_operator(db(), username)
    except NotFound:
        raise NotFound(f"no operator {username!r}") from None
    if not admin_ops.visible(op, _operator_scope()):
        raise NotFound(f"no operator {username!r}")
    return op


def _require_manage(op: Operator) -> frozenset[int] | None:
    """The operator.manage scope, refusing (403) unless ``op`` lies wholly within it."""
    scope = kit.scope("operator.manage")
    if scope == frozenset() or not admin_ops.within(op, scope):
        raise PermissionDenied("you may change only operators whose roles all lie in your offices")
    return scope


@bp.get("/operators/<username>")
@kit.page()
def operator(username: str, form: kit.Form | None = None, status: int = 200) -> ResponseReturnValue:
    """One operator: roles per office, state; forms to change them."""
    _any("operator.manage", "audit.view")
    op = _managed(username)
    manage = kit.scope("operator.manage") if kit.allowed("operator.manage") else frozenset()
    can_manage = kit.allowed("operator.manage") and admin_ops.within(op, manage)
    return kit.render(
        "console/admin_operator.html",
        status=status,
        person=op,
        form=form or kit.Form({}),
        can_manage=can_manage,
        roles=_role_choices(),
        office_choices=_office_choices(manage),
        now=utcnow(),
    )


@bp.post("/operators/<username>/roles")
@kit.page("operator.manage")
def grant(username: str) -> ResponseReturnValue:
    """Give the operator a role in an office."""
    op = _managed(username)
    scope = _require_manage(op)
    form = kit.Form()
    role = form.text("role", max_length=64)
    ok, office_id = _office_id(form, "office", required=scope is not None)
    if ok and scope is not None and office_id not in scope:
        form.error("office", _("You may not manage operators of this office."))
    if form.ok:
        assert role is not None
        try:
            admin_ops.grant_role(db(), kit.actor(), op.username, role, form["office"] or None)
        except OnecardError as exc:
            db().rollback()
            form.fail(exc, {"role": "role", "office": "office"})
        else:
            db().commit()
            flash(_("Role given."), "success")
            return redirect(url_for("admin.operator", username=username))
    return operator(username, form=form, status=422)


@bp.post("/operators/<username>/roles/<int:assignment>/remove")
@kit.page("operator.manage")
def revoke(username: str, assignment: int) -> ResponseReturnValue:
    """Take one role (in one office) away."""
    op = _managed(username)
    _require_manage(op)
    try:
        admin_ops.revoke_role(db(), kit.actor(), op.username, assignment)
    except OnecardError as exc:
        db().rollback()
        form = kit.Form({})
        form.fail(exc, {"assignment": ""})
        return operator(username, form=form, status=exc.status)
    db().commit()
    flash(_("Role taken away."), "success")
    return redirect(url_for("admin.operator", username=username))


@bp.post("/operators/<username>/unlock")
@kit.page("operator.manage")
def unlock(username: str) -> ResponseReturnValue:
    """Clear the failed logins and the lockout."""
    op = _managed(username)
    _require_manage(op)
    ops.unlock(db(), kit.actor(), op.username)
    db().commit()
    flash(_("Operator %(name)s unlocked.", name=username), "success")
    return redirect(url_for("admin.operator", username=username))


@bp.post("/operators/<username>/active")
@kit.page("operator.manage")
def set_active(username: str) -> ResponseReturnValue:
    """Deactivate (``active=0``) or reactivate (``active=1``)."""
    op = _managed(username)
    _require_manage(op)
    active = request.form.get("active") == "1"
    try:
        admin_ops.set_active(db(), kit.actor(), op.username, active)
    except OnecardError as exc:
        db().rollback()
        form = kit.Form({})
        form.fail(exc, {"username": ""})
        return operator(username, form=form, status=exc.status)
    db().commit()
    flash(
        _("Operator %(name)s reactivated.", name=username)
        if active
        else _("Operator %(name)s deactivated.", name=username),
        "success",
    )
    return redirect(url_for("admin.operator", username=username))


@bp.route("/roles", methods=["GET", "POST"])
@kit.page()
def roles() -> ResponseReturnValue:
    """Each role with its permissions; a global operator.manage may create a custom role."""
    _any("operator.manage", "audit.view")
    form = kit.Form()
    can_create = kit.allowed("operator.manage") and kit.scope("operator.manage") is None
    if request.method == "POST":
        if not can_create:
            raise PermissionDenied("creating a role needs 'operator.manage' in every office")
        name = form.text("name", max_length=64)
        description = form.text("description", required=False, max_length=500)
        chosen = request.form.getlist("permissions")
        if not chosen:
            form.error("permissions", _("Choose at least one permission."))
        if form.ok:
            assert name is not None
            try:
                admin_ops.create_role(
                    db(), kit.actor(), name=name, description=description or "", permissions=chosen
                )
            except OnecardError as exc:
                db().rollback()
                form.fail(
                    exc,
                    {"name": "name", "description": "description", "permissions": "permissions"},
                )
            else:
                db().commit()
                flash(_("Role %(name)s created.", name=name), "success")
                return redirect(url_for("admin.roles"))
        form.values["permissions"] = ",".join(chosen)
    return kit.render(
        "console/admin_roles.html",
        form=form,
        roles=admin_ops.list_roles(db()),
        permissions=list(ops.PERMISSIONS),
        chosen=set(form["permissions"].split(",")),
        can_create=can_create,
    )


# Offices --------------------------------------------------------------------------------------


def _tree(rows: list[Office]) -> list[tuple[int, Office]]:
    """Offices in tree order with their depth."""
    children: dict[int | None, list[Office]] = {}
    ids = {o.id for o in rows}
    for o in rows:
        parent = o.parent_id if o.parent_id in ids else None
        children.setdefault(parent, []).append(o)
    out: list[tuple[int, Office]] = []

    def walk(parent: int | None, depth: int) -> None:
        for o in sorted(children.get(parent, []), key=lambda x: x.code):
            out.append((depth, o))
            walk(o.id, depth + 1)

    walk(None, 0)
    return out


@bp.route("/offices", methods=["GET", "POST"])
@kit.page()
def offices() -> ResponseReturnValue:
    """The office tree; office.manage creates offices (a scoped one only under its own)."""
    form = kit.Form()
    manage = kit.scope("office.manage") if kit.allowed("office.manage") else frozenset()
    if request.method == "POST":
        if not kit.allowed("office.manage"):
            raise PermissionDenied("you need the permission 'office.manage'")
        code = form.text("code", max_length=32)
        name = form.text("name", max_length=200)
        timezone = form.text("timezone", max_length=64)
        ok, parent_id = _office_id(form, "parent", required=manage is not None)
        if ok and manage is not None and parent_id not in manage:
            form.error("parent", _("You may not add offices under this office."))
        if form.ok:
            assert code is not None and name is not None and timezone is not None
            try:
                off.create_office(
                    db(),
                    kit.actor(),
                    code=code,
                    name=name,
                    parent=form["parent"] or None,
                    timezone=timezone,
                )
            except OnecardError as exc:
                db().rollback()
                form.fail(
                    exc,
                    {"code": "code", "name": "name", "parent": "parent", "timezone": "timezone"},
                )
            else:
                db().commit()
                flash(_("Office %(code)s created.", code=code), "success")
                return redirect(url_for("admin.offices"))
    elif not form["timezone"]:
        form.values["timezone"] = str(g.get("tz") or "Asia/Shanghai")
    parents = [("", _("None (a top office)"))] if manage is None else []
    parents += [(o.code, f"{o.code} · {o.name}") for o in _offices(manage)]
    return kit.render(
        "console/admin_offices.html",
        form=form,
        tree=_tree(off.list_offices(db())),
        can_manage=kit.allowed("office.manage"),
        parents=parents,
    )


# Tariffs --------------------------------------------------------------------------------------


def _tariff_reader() -> None:
    _any("customer.view", "report.view", "tariff.manage")


@bp.get("/tariffs", endpoint="tariffs")
@kit.page()
def tariffs_list() -> ResponseReturnValue:
    """Every tariff by utility kind, with the version in force and what is scheduled."""
    _tariff_reader()
    kind = request.args.get("kind") or None
    rows = tariffs.list_tariffs(db(), kind)
    described = describe_versions(db(), runtime().utilities, rows)
    by_kind: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for item in described:
        by_kind.setdefault(item["kind"], {}).setdefault(item["name"], []).append(item)
    return kit.render(
        "console/admin_tariffs.html",
        by_kind=by_kind,
        kinds=runtime().utilities.codes(),
        kind=kind,
        states=TARIFF_STATES,
        can_manage=kit.allowed("tariff.manage"),
    )


def _versions_of(kind: str, name: str) -> list[Tariff]:
    rows = [r for r in tariffs.list_tariffs(db(), kind) if r.name == name]
    if not rows:
        raise NotFound(f"no tariff {kind}/{name}")
    return rows


@bp.get("/tariffs/<kind>/<name>")
@kit.page()
def tariff(kind: str, name: str) -> ResponseReturnValue:
    """A tariff's versions: in force, scheduled, past."""
    _tariff_reader()
    rows = _versions_of(kind, name)
    versions = describe_versions(db(), runtime().utilities, rows)
    return kit.render(
        "console/admin_tariff.html",
        kind=kind,
        name=name,
        versions=list(reversed(versions)),
        states=TARIFF_STATES,
        can_manage=kit.allowed("tariff.manage"),
    )


@bp.get("/tariffs/<kind>/<name>/v<int:version>")
@kit.page()
def tariff_version(kind: str, name: str, version: int) -> ResponseReturnValue:
    """One version's document, as stored (YAML)."""
    _tariff_reader()
    rows = [r for r in _versions_of(kind, name) if r.version == version]
    if not rows:
        raise NotFound(f"{kind}/{name} has no version {version}")
    item = describe_versions(db(), runtime().utilities, rows, documents=True)[0]
    text = yaml.safe_dump(item["document"], allow_unicode=True, sort_keys=False)
    return kit.render(
        "console/admin_tariff_version.html", item=item, text=text, states=TARIFF_STATES
    )


@bp.route("/tariffs/schedule", methods=["GET", "POST"])
@kit.page("tariff.manage")
def tariff_schedule() -> ResponseReturnValue:
    """Schedule a price change: a tariff document (pasted or uploaded) becomes the next version."""
    form = kit.Form()
    if request.method == "GET" and request.args.get("kind") and request.args.get("name"):
        rows = [
            r
            for r in tariffs.list_tariffs(db(), request.args["kind"])
            if r.name == request.args["name"]
        ]
        if rows:  # start from the latest version's document
            doc = dict(rows[-1].document)
            doc.pop("effective_from", None)
            form.values["document"] = yaml.safe_dump(
                {"effective_from": "", **doc}, allow_unicode=True, sort_keys=False
            )
    if request.method == "POST":
        if kit.scope("tariff.manage") is not None:
            raise PermissionDenied(
                "tariffs are installation-wide: you need 'tariff.manage' everywhere"
            )
        raw = _document(form)
        if form.ok:
            session = db()
            try:
                row = tariffs.add_version(
                    session,
                    kit.actor(),
                    runtime().utilities,
                    raw,
                    allow_past=form["allow_past"] == "1",
                )
            except OnecardError as exc:
                session.rollback()
                form.errors["document"] = str(error_text(exc))
            else:
                session.commit()
                flash(
                    _(
                        "%(kind)s/%(name)s version %(version)s stored.",
                        kind=row.kind,
                        name=row.name,
                        version=row.version,
                    ),
                    "success",
                )
                return redirect(url_for("admin.tariff", kind=row.kind, name=row.name))
    return kit.render("console/admin_tariff_schedule.html", form=form)


def _document(form: kit.Form) -> Any:
    """The pasted document, or the uploaded file's; YAML or JSON."""
    upload = request.files.get("file")
    text = form["document"]
    if upload is not None and upload.filename:
        data = upload.read(MAX_TARIFF_BYTES + 1)
        if len(data) > MAX_TARIFF_BYTES:
            form.error("document", _("The file is too large."))
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            form.error("document", _("The file is not UTF-8 text."))
            return None
        form.values["document"] = text
    if not text.strip():
        form.error("document", _("Paste a tariff document or choose a file."))
        return None
    if len(text) > MAX_TARIFF_BYTES:
        form.error("document", _("The document is too large."))
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        form.error("document", _("Not valid YAML%(where)s.", where=where))
        return None


# Card profiles --------------------------------------------------------------------------------


@bp.route("/profiles", methods=["GET", "POST"])
@kit.page()
def profiles() -> ResponseReturnValue:
    """Card profiles (built-in and custom): slots and kinds; office.manage defines new ones."""
    form = kit.Form()
    manage = kit.scope("office.manage") if kit.allowed("office.manage") else frozenset()
    utilities = runtime().utilities
    card_kinds = [k.code for k in utilities if k.card_layout is not None]
    if request.method == "POST":
        if not kit.allowed("office.manage"):
            raise PermissionDenied("you need the permission 'office.manage'")
        code = form.text("code", max_length=32)
        name_zh = form.text("name_zh", required=False, max_length=100)
        name_en = form.text("name_en", required=False, max_length=100)
        if not name_zh and not name_en and "name_zh" not in form.errors:
            form.error("name_zh", _("Give a name in Chinese or English."))
        size = form.choice("card_size", ["1k", "4k"])
        slots_text = form.text("slots", max_length=300)
        slots: list[str] = []
        if slots_text:
            slots = [s.strip() for s in slots_text.replace("，", ",").split(",") if s.strip()]
            unknown = [s for s in slots if s not in utilities]
            if unknown:
                form.error("slots", _("Unknown utility kind: %(kind)s.", kind=unknown[0]))
        ok, office_id = _office_id(form, "office", required=manage is not None)
        if ok and manage is not None and office_id not in manage:
            form.error("office", _("You may not manage this office."))
        if form.ok:
            assert code is not None and size is not None
            names = {k: v for k, v in (("zh-CN", name_zh), ("en", name_en)) if v}
            try:
                card_profiles.create_profile(
                    db(),
                    utilities,
                    kit.actor(),
                    code=code,
                    names=names,
                    slots=slots,
                    card_size=size,
                    office_id=office_id,
                )
            except OnecardError as exc:
                db().rollback()
                form.fail(
                    exc,
                    {
                        "code": "code",
                        "names": "name_zh",
                        "slots": "slots",
                        "profile": "slots",
                        "card_size": "card_size",
                    },
                )
            else:
                db().commit()
                flash(_("Card profile %(code)s created.", code=code), "success")
                return redirect(url_for("admin.profiles"))
    elif not form["card_size"]:
        form.values["card_size"] = "1k"
    office_codes = {o.id: o.code for o in off.list_offices(db())}
    return kit.render(
        "console/admin_profiles.html",
        form=form,
        profiles=card_profiles.list_profiles(db()),
        office_codes=office_codes,
        can_manage=kit.allowed("office.manage"),
        card_kinds=card_kinds,
        office_choices=_office_choices(manage),
    )


# The audit log --------------------------------------------------------------------------------


def _local_date(form: kit.Form, name: str) -> dt.date | None:
    raw = form[name].strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        form.error(name, _("Write a date like 2026-03-10."))
        return None


@bp.get("/audit")
@kit.page("audit.view")
def audit() -> ResponseReturnValue:
    """Audit events, newest first, filtered by operator, action, customer and local dates.

    An operator whose audit.view is scoped sees the events of their offices and the events that
    belong to no office (logins, tariff versions, roles)."""
    form = kit.Form(request.args)
    page = max(1, min(_int(request.args.get("page"), 1), 10_000))
    stmt = select(AuditEvent)
    scope = kit.scope("audit.view")
    if scope is not None:
        stmt = stmt.where(
            or_(AuditEvent.office_id.is_(None), AuditEvent.office_id.in_(sorted(scope)))
        )
    operator_name = form.text("operator", required=False, max_length=64)
    if operator_name:
        stmt = stmt.where(AuditEvent.actor == operator_name)
    action = form.text("action", required=False, max_length=64)
    if action:
        if action.endswith("*") or action.endswith("."):
            stmt = stmt.where(AuditEvent.action.startswith(action.rstrip("*"), autoescape=True))
        else:
            stmt = stmt.where(AuditEvent.action == action)
    number = form.text("customer", required=False, max_length=32)
    if number:
        customer = db().scalar(select(Customer).where(Customer.number == number))
        if customer is None or (scope is not None and customer.office_id not in scope):
            form.error("customer", _("No such customer."))
        else:
            stmt = stmt.where(AuditEvent.customer_id == customer.id)
    tz = zone()
    start, end = _local_date(form, "since"), _local_date(form, "until")
    if start and end and end < start:
        form.error("until", _("The end is before the start."))
    if start:
        stmt = stmt.where(
            AuditEvent.at >= dt.datetime.combine(start, dt.time(0), tzinfo=tz).astimezone(dt.UTC)
        )
    if end:
        stmt = stmt.where(
            AuditEvent.at
            < dt.datetime.combine(end + dt.timedelta(days=1), dt.time(0), tzinfo=tz).astimezone(
                dt.UTC
            )
        )
    events: list[AuditEvent] = []
    more = False
    if form.ok:
        found = list(
            db().scalars(
                stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
                .offset((page - 1) * AUDIT_PAGE)
                .limit(AUDIT_PAGE + 1)
            )
        )
        more = len(found) > AUDIT_PAGE
        events = found[:AUDIT_PAGE]
    actions = list(db().scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))
    office_codes = {o.id: o.code for o in off.list_offices(db())}
    query = {k: v for k, v in request.args.items() if k != "page" and v}
    return kit.render(
        "console/admin_audit.html",
        status=422 if not form.ok else 200,
        form=form,
        events=events,
        page=page,
        more=more,
        query=query,
        actions=actions,
        office_codes=office_codes,
    )


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw or default)
    except ValueError:
        return default
