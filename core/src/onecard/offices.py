"""Offices: service offices and properties, in a tree (a group over its branches)."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.audit import Actor, record
from onecard.errors import Conflict, InvalidInput, NotFound
from onecard.ledger.accounts import ensure_office_accounts
from onecard.models import Office

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def get_office(session: Session, code: str, *, field: str = "office") -> Office:
    office = session.execute(select(Office).where(Office.code == code)).scalar_one_or_none()
    if office is None:
        raise NotFound(f"no office with code {code!r}", field=field)
    return office


def create_office(
    session: Session,
    actor: Actor,
    *,
    code: str,
    name: str,
    parent: str | None = None,
    timezone: str = "Asia/Shanghai",
) -> Office:
    """Create an office with its cash, bank, fees and refunds accounts."""
    if not isinstance(code, str) or not _CODE.match(code):
        raise InvalidInput(
            "code must be 1 to 32 letters, digits, - or _, starting with a letter or digit",
            field="code",
        )
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("name must not be empty", field="name")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {timezone!r}", field="timezone") from None
    if session.execute(select(Office.id).where(Office.code == code)).first():
        raise Conflict(f"an office with code {code!r} exists already", field="code")
    parent_office = get_office(session, parent, field="parent") if parent else None
    office = Office(
        code=code,
        name=name.strip(),
        parent_id=parent_office.id if parent_office else None,
        timezone=timezone,
    )
    session.add(office)
    session.flush()
    ensure_office_accounts(session, office.id)
    record(session, actor, "office.create", [f"office:{office.id}"], detail={"code": code})
    return office


def office_and_descendants(session: Session, office_id: int) -> set[int]:
    """The ids of an office and every office below it."""
    children: dict[int | None, list[int]] = {}
    for oid, parent_id in session.execute(select(Office.id, Office.parent_id)):
        children.setdefault(parent_id, []).append(oid)
    found = {office_id}
    stack = [office_id]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def list_offices(session: Session) -> list[Office]:
    return list(session.execute(select(Office).order_by(Office.code)).scalars())
