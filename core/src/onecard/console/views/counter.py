"""The counter: read a card, sell, pending sales, card corrections (placeholder)."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from onecard.console import kit

bp = kit.console_blueprint("counter", __name__, "/console/counter")


@bp.get("/sell")
@kit.page("sale.create")
def sell() -> ResponseReturnValue:
    """Sell to the meters on the card on the reader."""
    return kit.render("console/placeholder.html")


@bp.get("/card")
@kit.page("customer.view")
def read() -> ResponseReturnValue:
    """Read the card on the reader."""
    return kit.render("console/placeholder.html")


@bp.get("/pending")
@kit.page("sale.create")
def pending() -> ResponseReturnValue:
    """Sales whose card write did not finish."""
    return kit.render("console/placeholder.html")
