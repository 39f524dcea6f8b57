"""The dashboard (placeholder until the dashboard lands)."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from onecard.console import kit

bp = kit.console_blueprint("dashboard", __name__, "/console")


@bp.get("/")
@kit.page()
def index() -> ResponseReturnValue:
    """Today's work at a glance."""
    return kit.render("console/dashboard.html")
