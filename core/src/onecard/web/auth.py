"""Who is logged in: session cookies with idle expiry, and permission checks with office scope."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import g, request, session

from onecard.audit import Actor
from onecard.errors import AuthenticationFailed
from onecard.models import Operator, utcnow
from onecard.operators import Grants, grants_for
from onecard.web import db, runtime

F = TypeVar("F", bound=Callable[..., Any])


def login(op: Operator) -> None:
    session.clear()
    session.permanent = True
    session["operator_id"] = op.id
    session["seen"] = utcnow().timestamp()


def logout() -> None:
    session.clear()


def current_operator() -> Operator:
    if "operator" in g:
        op: Operator = g.operator
        return op
    op_id = session.get("operator_id")
    seen = session.get("seen")
    if op_id is None or seen is None:
        raise AuthenticationFailed("log in first")
    idle = dt.timedelta(minutes=runtime().settings.session_minutes)
    if utcnow().timestamp() - float(seen) > idle.total_seconds():
        session.clear()
        raise AuthenticationFailed("the session has expired; log in again")
    found = db().get(Operator, op_id)
    if found is None or not found.is_active:
        session.clear()
        raise AuthenticationFailed("log in first")
    session["seen"] = utcnow().timestamp()
    g.operator = found
    return found


def grants() -> Grants:
    if "grants" not in g:
        g.grants = grants_for(db(), current_operator())
    return cast(Grants, g.grants)


def actor() -> Actor:
    op = current_operator()
    return Actor(name=op.username, operator_id=op.id, remote_addr=request.remote_addr)


def require(permission: str) -> Callable[[F], F]:
    """View decorator: a logged-in operator with ``permission`` in at least one office."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g_ = grants()
            if g_.offices(permission) == frozenset():
                g_.require(permission)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
