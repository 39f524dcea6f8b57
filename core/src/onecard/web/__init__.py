"""The Flask application: ``create_app(config)`` builds it around one :class:`Runtime`."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from flask import Flask, current_app, g, jsonify, redirect, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.orm import Session

from onecard import __version__
from onecard.runtime import Runtime
from onecard.web.errors import register_error_handlers

EXTENSION = "onecard"
log = logging.getLogger(__name__)


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    plugins: Iterable[ModuleType | object] | None = None,
    runtime: Runtime | None = None,
) -> Flask:
    """Build the app. ``config`` overrides settings (keys as in ``onecard.toml``);
    ``plugins`` replaces entry-point discovery (tests pass their list)."""
    rt = runtime or Runtime.create(config, plugins=plugins)
    check = rt.check_card_profiles()  # a profile that no longer fits its card stops start-up
    if check is not None and check.unavailable:
        log.warning("card profiles unavailable with these plugins: %s", check.unavailable)
    app = Flask("onecard", instance_path=str(rt.settings.instance_path))
    app.config.update(
        SECRET_KEY=rt.settings.ensure_secret_key(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=rt.settings.session_minutes),
    )
    app.extensions[EXTENSION] = rt
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.teardown_appcontext
    def close_db(_exc: BaseException | None) -> None:
        db = g.pop("db", None)
        if db is not None:
            db.rollback()
            db.close()

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        """Report whether the database answers and which plugins are loaded."""
        from onecard.web.schemas import HealthOut

        try:
            with rt.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            database = "ok"
        except Exception as exc:  # the health check reports, it does not raise
            database = f"error: {type(exc).__name__}"
        body = {
            "status": "ok" if database == "ok" else "degraded",
            "database": database,
            "plugins": [p.name for p in rt.plugins.info],
            "utility_kinds": rt.utilities.codes(),
        }
        return jsonify(HealthOut().dump(body)), 200 if database == "ok" else 503

    @app.get("/")
    def index() -> ResponseReturnValue:
        """A browser goes to the console; a program learns what this server is and where its
        parts are."""
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
            return redirect(url_for("dashboard.index"))
        return jsonify(
            {
                "name": "onecard",
                "version": __version__,
                "health": "/healthz",
                "api": "/api/v1",
                "login": "POST /api/v1/session",
                "console": "/console/",
            }
        )

    from onecard.web.api import api
    from onecard.web.card_api import card_api
    from onecard.web.remote_api import remote_api
    from onecard.web.tariff_api import tariff_api

    app.register_blueprint(api)
    app.register_blueprint(card_api)
    app.register_blueprint(tariff_api)
    app.register_blueprint(remote_api)
    register_error_handlers(app)
    from onecard.console import init_console

    app.config["ONECARD_LAB"] = bool((config or {}).get("lab", False))
    init_console(app)
    return app


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions[EXTENSION]
    return rt


def db() -> Session:
    """The request's database session; views commit it, teardown rolls back what was not."""
    if "db" not in g:
        g.db = runtime().sessions()
    session: Session = g.db
    return session
