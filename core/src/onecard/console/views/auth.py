"""Log in, log out, and switch the console's language."""

from __future__ import annotations

from flask import flash, redirect, request, session, url_for
from flask.typing import ResponseReturnValue

from onecard import operators as ops
from onecard.audit import Actor, record
from onecard.console import kit
from onecard.console.i18n import LOCALES, _
from onecard.errors import AuthenticationFailed
from onecard.web import auth, db

bp = kit.console_blueprint("auth", __name__, "/console")


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never redirect off-site after login."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return url_for("dashboard.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """The login page: username and password; five failures lock the account for 15 minutes."""
    form = kit.Form()
    if request.method == "POST":
        username = form.text("username", max_length=64)
        password = form.text("password", max_length=200)
        if form.ok:
            assert username is not None and password is not None
            session_ = db()
            who = Actor(name=username, remote_addr=request.remote_addr)
            try:
                op = ops.authenticate(session_, username, password)
            except AuthenticationFailed as exc:
                record(session_, who, "operator.login_failed", [f"username:{username}"])
                session_.commit()
                locked = "locked" in exc.message
                form.error(
                    "password",
                    _("This account is locked after repeated failures; try again later.")
                    if locked
                    else _("Wrong username or password."),
                )
            else:
                record(
                    session_,
                    Actor(op.username, op.id, remote_addr=request.remote_addr),
                    "operator.login",
                    [f"operator:{op.id}"],
                    detail={"via": "console"},
                )
                session_.commit()
                lang = session.get("lang")
                auth.login(op)
                if lang:
                    session["lang"] = lang
                return redirect(_safe_next(request.args.get("next")))
    return kit.render("console/login.html", form=form)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Log out and forget the session (the language choice stays)."""
    lang = session.get("lang")
    auth.logout()
    if lang:
        session["lang"] = lang
    flash(_("You have logged out."), "info")
    return redirect(url_for("auth.login"))


@bp.get("/language/<code>")
def language(code: str) -> ResponseReturnValue:
    """Switch between 中文 (zh_CN) and English; go back where the operator was."""
    if code in LOCALES:
        session["lang"] = code
    return redirect(_safe_next(request.args.get("next")))
