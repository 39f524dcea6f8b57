"""What every console page uses: login and permission checks with office scope, CSRF tokens, form
parsing with errors next to their fields, and rendering.

The console reuses the API's session (:mod:`onecard.web.auth`): the same cookie, idle expiry and
grants. Every POST carries the session's CSRF token (a hidden ``csrf_token`` field, or the
``X-CSRF-Token`` header for ``fetch``); a page that fails the check changes nothing.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from onecard.audit import Actor
from onecard.card.reader import MifareReader
from onecard.console.i18n import _, error_text
from onecard.errors import AuthenticationFailed, NotFound, OnecardError, PermissionDenied
from onecard.ledger.core import MAX_AMOUNT
from onecard.models import Office, Operator
from onecard.operators import Grants
from onecard.web import auth, db, runtime

F = TypeVar("F", bound=Callable[..., Any])

#: The largest amount one form field takes (100,000.00 yuan); the ledger's own limit is higher.
MAX_FORM_FEN = min(10_000_000, MAX_AMOUNT)

# Login and permissions -------------------------------------------------------------------------


def operator() -> Operator:
    return auth.current_operator()


def grants() -> Grants:
    return auth.grants()


def actor() -> Actor:
    return auth.actor()


def allowed(permission: str, office_id: int | None = None) -> bool:
    """Whether the operator holds ``permission`` (in ``office_id``, or in some office)."""
    try:
        gr = grants()
    except AuthenticationFailed:
        return False
    if office_id is None:
        return gr.offices(permission) != frozenset()
    return gr.allows(permission, office_id)


def scope(permission: str) -> frozenset[int] | None:
    """The offices where the operator holds ``permission`` (None: every office)."""
    return grants().offices(permission)


def require_office(permission: str, office_id: int) -> None:
    """Refuse (403) unless the operator holds ``permission`` in ``office_id``."""
    grants().require(permission, office_id)


def page(permission: str | None = None) -> Callable[[F], F]:
    """View decorator: logged in (else to the login page), holding ``permission`` somewhere."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            had_login = "operator_id" in session
            lang = session.get("lang")
            try:
                op = auth.current_operator()
            except AuthenticationFailed:
                if lang:  # an expired session is cleared; the language choice stays
                    session["lang"] = lang
                if had_login:
                    flash(_("Your session has expired; please log in again."), "warning")
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            g.tz = home_timezone(op)
            if permission is not None and not allowed(permission):
                raise PermissionDenied(f"you lack the permission {permission}")
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def home_timezone(op: Operator) -> str:
    """The time zone pages are shown in: that of the operator's first office with one."""
    for assignment in op.assignments:
        if assignment.office is not None:
            return assignment.office.timezone
    first = db().scalar(select(Office).where(Office.parent_id.is_(None)).order_by(Office.id))
    return first.timezone if first is not None else "Asia/Shanghai"


def office_timezone(office_id: int | None) -> str:
    office = db().get(Office, office_id) if office_id is not None else None
    return office.timezone if office is not None else str(g.get("tz") or "Asia/Shanghai")


# CSRF -----------------------------------------------------------------------------------------


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def check_csrf() -> None:
    """``before_request`` of every console blueprint: POSTs must carry the session's token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    token = session.get("csrf") or ""
    if not token or not hmac.compare_digest(str(sent), str(token)):
        abort(400, description="csrf")


def new_key(prefix: str) -> str:
    """A fresh idempotency key for a form: a double submit of the same form reuses it."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


# Forms ----------------------------------------------------------------------------------------


class Form:
    """A submitted (or empty) form: its values, and the errors to show next to each field.

    ``errors[name]`` is the message under the field ``name``; ``errors[""]`` is for the form as
    a whole. Parse methods return None when they record an error.
    """

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        source = request.form if data is None and request.method == "POST" else data or {}
        self.values: dict[str, str] = {k: str(v) for k, v in source.items()}
        self.errors: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        return self.values.get(name, "")

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def text(
        self, name: str, *, required: bool = True, max_length: int = 200, label: str = ""
    ) -> str | None:
        value = self.values.get(name, "").strip()
        if not value:
            if required:
                self.error(name, _("Required."))
                return None
            return ""
        if len(value) > max_length:
            self.error(name, _("At most %(n)s characters.", n=max_length))
            return None
        return value

    def yuan(
        self,
        name: str,
        *,
        required: bool = True,
        allow_zero: bool = False,
        max_fen: int = MAX_FORM_FEN,
    ) -> int | None:
        """An amount in yuan (``12``, ``12.5``, ``12.50``) as fen."""
        raw = self.values.get(name, "").strip().replace(",", "").lstrip("¥").strip()
        if not raw:
            if required:
                self.error(name, _("Enter an amount in yuan."))
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            self.error(name, _("Not an amount: write yuan like 100 or 100.50."))
            return None
        if not value.is_finite():
            self.error(name, _("Not an amount: write yuan like 100 or 100.50."))
            return None
        if value < 0:
            self.error(name, _("The amount must not be negative."))
            return None
        if value == 0 and not allow_zero:
            self.error(name, _("The amount must be more than zero."))
            return None
        fen = value * 100
        if fen != fen.to_integral_value():
            self.error(name, _("At most two decimals (fen)."))
            return None
        if fen > max_fen:
            self.error(name, _("Too large: at most %(max)s yuan.", max=f"{max_fen / 100:,.2f}"))
            return None
        return int(fen)

    def integer(
        self, name: str, *, required: bool = True, minimum: int = 0, maximum: int = 10**9
    ) -> int | None:
        raw = self.values.get(name, "").strip()
        if not raw:
            if required:
                self.error(name, _("Required."))
            return None
        if not raw.lstrip("-").isdigit():
            self.error(name, _("Enter a whole number."))
            return None
        value = int(raw)
        if value < minimum:
            self.error(name, _("At least %(n)s.", n=minimum))
            return None
        if value > maximum:
            self.error(name, _("At most %(n)s.", n=maximum))
            return None
        return value

    def choice(self, name: str, choices: Mapping[str, Any] | list[str]) -> str | None:
        value = self.values.get(name, "")
        if value not in choices:
            self.error(name, _("Choose one of the options."))
            return None
        return value

    def fail(self, exc: OnecardError, fields: Mapping[str, str] | None = None) -> None:
        """Put a service error next to its field: ``fields`` maps service field names (or their
        prefixes, like ``meters[0]``) to form field names; unmapped errors go on the form."""
        target = ""
        if exc.field:
            mapping = dict(fields or {})
            if exc.field in mapping:
                target = mapping[exc.field]
            elif exc.field in self.values:
                target = exc.field
            else:
                for prefix, name in mapping.items():
                    if exc.field.startswith(prefix):
                        target = name
                        break
        self.errors[target] = str(error_text(exc))


def render(template: str, status: int = 200, **context: Any) -> ResponseReturnValue:
    """Render a console page; a page with form errors answers 422."""
    form = context.get("form")
    if status == 200 and isinstance(form, Form) and form.errors and request.method == "POST":
        status = 422
    return render_template(template, **context), status


# Blueprints -----------------------------------------------------------------------------------


def console_blueprint(name: str, import_name: str, url_prefix: str) -> Blueprint:
    """A console blueprint: CSRF on every POST, error pages in HTML."""
    bp = Blueprint(name, import_name, url_prefix=url_prefix)
    bp.before_request(check_csrf)
    register_error_pages(bp)
    return bp


def register_error_pages(bp: Blueprint) -> None:
    def rollback() -> None:
        session_ = g.pop("db", None)
        if session_ is not None:
            session_.rollback()
            session_.close()
        # the error page shows who is logged in: load them again in a fresh session
        g.pop("operator", None)
        g.pop("grants", None)

    @bp.errorhandler(AuthenticationFailed)
    def login_again(exc: AuthenticationFailed) -> ResponseReturnValue:
        rollback()
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))

    @bp.errorhandler(OnecardError)
    def onecard_error(exc: OnecardError) -> ResponseReturnValue:
        rollback()
        title = {
            PermissionDenied: _("Not allowed"),
            NotFound: _("Not found"),
        }.get(type(exc), _("Cannot do this"))
        return render_template(
            "console/error.html", title=title, message=error_text(exc), status=exc.status
        ), exc.status

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        rollback()
        if exc.code == 400 and exc.description == "csrf":
            message = _("This form has expired or did not come from this console. Reload the page.")
        else:
            message = exc.description or ""
        return render_template(
            "console/error.html", title=exc.name, message=message, status=exc.code
        ), exc.code or 500


# Card readers ---------------------------------------------------------------------------------


def who() -> tuple[Actor, Grants]:
    """The operator and their grants, then the request's own transaction ends: the card desk
    runs its own transactions, and on SQLite a held transaction would block them.

    Afterwards, do not touch database objects loaded earlier in the request: loading one again
    would open a new transaction (on SQLite, a write lock the card desk then waits for). The
    operator object is forgotten, so a page drawn after the card work loads it afresh.
    """
    pair = actor(), grants()
    db().rollback()
    g.pop("operator", None)
    return pair


def open_reader(name: str | None = None) -> AbstractContextManager[MifareReader]:
    """The counter's card reader: ``name``, else the configured one, else the only one.

    ``app.config["ONECARD_READER_FACTORY"]`` (a callable taking the name) replaces the PC/SC
    path; fast tests use it with the in-process card emulator.
    """
    factory = current_app.config.get("ONECARD_READER_FACTORY")
    if factory is not None:
        return cast(AbstractContextManager[MifareReader], factory(name))
    from onecard.card.service import open_pcsc_reader

    return open_pcsc_reader(name or runtime().settings_reader())


def reader_names() -> list[str]:
    """The readers an operator may pick (empty when PC/SC is not there)."""
    names = current_app.config.get("ONECARD_READER_NAMES")
    if names is not None:
        return list(names)
    from onecard.card.reader import list_readers
    from onecard.errors import CardError

    try:
        return list_readers()
    except CardError:
        return []
