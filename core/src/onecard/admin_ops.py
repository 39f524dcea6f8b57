"""Administration the console needs beyond :mod:`onecard.operators`: give and take roles,
deactivate and reactivate operators, custom roles, and who may manage whom.

Each change writes an audit event; nothing commits (the caller owns the transaction).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from onecard.audit import Actor, record
from onecard.errors import Conflict, InvalidInput, NotFound
from onecard.models import Operator, OperatorRole, Role, RolePermission
from onecard.offices import get_office
from onecard.operators import PERMISSIONS, assign_role, get_operator

_ROLE = re.compile(r"^[a-z][a-z0-9_-]{1,63}$")

Scope = Collection[int] | None


def within(op: Operator, scope: Scope) -> bool:
    """Whether every role of ``op`` lies in ``scope`` (``None``: every office), so that an
    operator scoped to some offices never changes someone who also works elsewhere."""
    if scope is None:
        return True
    return all(a.office_id is not None and a.office_id in scope for a in op.assignments)


def visible(op: Operator, scope: Scope) -> bool:
    """Whether ``op`` concerns ``scope``: a role there, a role everywhere, or no role yet."""
    if scope is None or not op.assignments:
        return True
    return any(a.office_id is None or a.office_id in scope for a in op.assignments)


def grant_role(
    session: Session, actor: Actor, username: str, role: str, office_code: str | None
) -> OperatorRole:
    """Give an operator a role in an office (``None``: everywhere)."""
    op = get_operator(session, username)
    role_row = session.scalar(select(Role).where(Role.name == role))
    if role_row is None:
        raise NotFound(f"no role {role!r}", field="role")
    office_id = get_office(session, office_code).id if office_code else None
    for a in op.assignments:
        if a.role_id == role_row.id and a.office_id == office_id:
            where = office_code or "every office"
            raise Conflict(f"{username} already has the role {role} in {where}", field="role")
    assign_role(session, op, role, office_code)
    session.refresh(op)
    record(
        session,
        actor,
        "operator.role_grant",
        [f"operator:{op.id}"],
        detail={"username": username, "role": role, "office": office_code},
        office_id=office_id,
    )
    return next(a for a in op.assignments if a.role_id == role_row.id and a.office_id == office_id)


def revoke_role(session: Session, actor: Actor, username: str, assignment_id: int) -> None:
    """Take a role away (one assignment of role and office). Not from oneself."""
    op = get_operator(session, username)
    found = next((a for a in op.assignments if a.id == assignment_id), None)
    if found is None:
        raise NotFound(f"{username} has no such role assignment", field="assignment")
    if actor.operator_id == op.id:
        raise InvalidInput("you cannot take a role away from yourself", field="assignment")
    role, office = found.role.name, found.office.code if found.office else None
    office_id = found.office_id
    op.assignments.remove(found)
    session.flush()
    record(
        session,
        actor,
        "operator.role_revoke",
        [f"operator:{op.id}"],
        detail={"username": username, "role": role, "office": office},
        office_id=office_id,
    )


def set_active(session: Session, actor: Actor, username: str, active: bool) -> Operator:
    """Deactivate (cannot log in; the session ends at its next request) or reactivate."""
    op = get_operator(session, username)
    if not active and actor.operator_id == op.id:
        raise InvalidInput("you cannot deactivate yourself", field="username")
    if op.is_active == active:
        state = "active" if active else "inactive"
        raise Conflict(f"{username} is {state} already", field="username")
    op.is_active = active
    if active:
        op.failed_logins = 0
        op.locked_until = None
    session.flush()
    record(
        session,
        actor,
        "operator.reactivate" if active else "operator.deactivate",
        [f"operator:{op.id}"],
        detail={"username": username},
    )
    return op


def list_roles(session: Session) -> list[Role]:
    return list(
        session.scalars(select(Role).options(selectinload(Role.permissions)).order_by(Role.name))
    )


def create_role(
    session: Session,
    actor: Actor,
    *,
    name: str,
    description: str = "",
    permissions: Iterable[str],
) -> Role:
    """A custom role: a new name with a chosen set of the known permissions."""
    if not isinstance(name, str) or not _ROLE.match(name):
        raise InvalidInput(
            "name must be 2 to 64 lower-case letters, digits, '_' or '-', starting with a letter",
            field="name",
        )
    if len(description) > 500:
        raise InvalidInput("description must be at most 500 characters", field="description")
    chosen = sorted(set(permissions))
    unknown = [p for p in chosen if p not in PERMISSIONS]
    if unknown:
        raise InvalidInput(f"unknown permission {unknown[0]!r}", field="permissions")
    if not chosen:
        raise InvalidInput("choose at least one permission", field="permissions")
    if session.scalar(select(Role.id).where(Role.name == name)) is not None:
        raise Conflict(f"a role {name!r} exists already", field="name")
    role = Role(name=name, description=description.strip())
    role.permissions = [RolePermission(permission=p) for p in chosen]
    session.add(role)
    session.flush()
    record(
        session,
        actor,
        "role.create",
        [f"role:{role.id}"],
        detail={"name": name, "permissions": chosen},
    )
    return role
