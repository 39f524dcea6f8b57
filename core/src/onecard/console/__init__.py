"""The operator's web console: server-rendered pages (Jinja) over the same services as the API.

``init_console(app)`` adds Flask-Babel, the template helpers and one blueprint per area (see
``AREAS``); the demo lab (emulated card reader and meters) is added when ``ONECARD_LAB`` is set.
"""

from __future__ import annotations

from importlib import import_module

from flask import Blueprint, Flask

from onecard.console import kit
from onecard.console.i18n import init_babel

#: The console's areas, each a module of :mod:`onecard.console.views` with a blueprint ``bp``.
AREAS = ("auth", "dashboard", "customers", "accounts", "counter", "receipts", "admin", "remote")

#: Templates and static files of the console (``/console/static/...``).
assets = Blueprint(
    "console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/console/static",
)


def init_console(app: Flask) -> None:
    init_babel(app)
    app.jinja_env.globals.update(
        csrf_token=kit.csrf_token,
        allowed=kit.allowed,
        current_operator=_current_operator,
    )
    app.register_blueprint(assets)
    for area in AREAS:
        app.register_blueprint(import_module(f"onecard.console.views.{area}").bp)
    if app.config.get("ONECARD_LAB"):
        app.register_blueprint(import_module("onecard.console.views.lab").bp)


def _current_operator() -> object | None:
    from onecard.errors import AuthenticationFailed

    try:
        return kit.operator()
    except AuthenticationFailed:
        return None
