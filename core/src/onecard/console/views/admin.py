"""Administration: operators and roles, offices, tariffs, card profiles, the audit log
(placeholder)."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from onecard.console import kit

bp = kit.console_blueprint("admin", __name__, "/console/admin")


@bp.get("/")
@kit.page()
def index() -> ResponseReturnValue:
    """Administration."""
    return kit.render("console/placeholder.html")
