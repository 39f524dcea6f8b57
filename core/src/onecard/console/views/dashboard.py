"""The dashboard: the day's sales by utility kind and by operator, card sales left pending, card
meters in alarm. Read-only; figures are those of the operator's offices (where they hold
``customer.view`` or ``report.view``), the day is the calendar day of their office's time zone."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask import g, request, url_for
from flask.typing import ResponseReturnValue

from onecard import dashboard as figures
from onecard.console import kit, labels
from onecard.console.i18n import _, yuan
from onecard.web import db, runtime

bp = kit.console_blueprint("dashboard", __name__, "/console")


def flag_text(name: str) -> str:
    return labels.label(name, "flag")


def kind_name(code: str) -> str:
    if code == figures.SHARED:
        return str(_("Shared wallet"))
    return labels.kind_name(code)


def customer_url(number: str) -> str:
    """The customer's page."""
    return url_for("customers.show", number=number)


def remaining_text(kind: str, remaining: int | None) -> str:
    """The credit a meter reported: yuan for a money slot, units (with the unit) otherwise."""
    if remaining is None:
        return "—"
    utilities = runtime().utilities
    if kind in utilities:
        k = utilities.get(kind)
        layout = k.card_layout
        if getattr(layout, "amount", "money") == "units" and k.unit:
            value = Decimal(remaining).scaleb(-k.unit_decimals)
            return f"{value:,.{k.unit_decimals}f} {k.unit}"
    return f"¥{yuan(remaining)}"


def age_text(age: dt.timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    if minutes < 60:
        return str(_("%(n)s min", n=minutes))
    hours = minutes // 60
    if hours < 48:
        return str(_("%(h)s h %(m)s min", h=hours, m=minutes % 60))
    return str(_("%(n)s days", n=hours // 24))


@bp.get("/")
@kit.page()
def index() -> ResponseReturnValue:
    """Today's work at a glance (``?day=YYYY-MM-DD`` for another day)."""
    tz = str(g.tz)
    readers = [p for p in ("customer.view", "report.view") if kit.allowed(p)]
    scope: frozenset[int] | None = frozenset()
    for p in readers:
        s = kit.scope(p)
        scope = None if s is None or scope is None else scope | s
    today = figures.local_today(tz)
    day, day_error = today, ""
    raw = request.args.get("day", "").strip()
    if raw:
        try:
            day = dt.date.fromisoformat(raw)
        except ValueError:
            day_error = _("Write a date like 2026-03-10.")
    session = db()
    sales = pending = alarms = None
    if readers:
        sales = figures.sales_of_day(session, day, tz, scope)
        pending = figures.pending_sales(session, scope)
        alarms = figures.meters_in_alarm(session, scope)
    return kit.render(
        "console/dashboard.html",
        readers=bool(readers),
        day=day,
        today=today,
        previous=day - dt.timedelta(days=1),
        following=day + dt.timedelta(days=1),
        day_error=day_error,
        tz=tz,
        sales=sales,
        pending=pending,
        alarms=alarms,
        kind_name=kind_name,
        flag_text=flag_text,
        customer_url=customer_url,
        remaining_text=remaining_text,
        age_text=age_text,
    )
