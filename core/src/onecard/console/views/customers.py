"""Customers: search, the customer page, opening an account (placeholder)."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from onecard.console import kit

bp = kit.console_blueprint("customers", __name__, "/console/customers")


@bp.get("/")
@kit.page("customer.view")
def search() -> ResponseReturnValue:
    """Find customers by name, phone, card, meter serial, building or unit."""
    return kit.render("console/placeholder.html")


@bp.get("/new")
@kit.page("customer.manage")
def open() -> ResponseReturnValue:
    """Open an account."""
    return kit.render("console/placeholder.html")
