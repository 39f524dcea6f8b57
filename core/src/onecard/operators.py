"""Operators, roles, permissions and office scope; argon2 password hashing and login lockout."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from onecard.audit import Actor, record
from onecard.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound, PermissionDenied
from onecard.models import Operator, OperatorRole, Role, RolePermission, utcnow
from onecard.offices import get_office, office_and_descendants

#: Every permission onecard knows, with what it allows.
PERMISSIONS: dict[str, str] = {
    "office.manage": "create and change offices",
    "operator.manage": "create operators, assign roles, unlock accounts",
    "customer.view": "see customers, premises, meters, cards and balances",
    "customer.manage": "open, change, transfer, suspend and close accounts",
    "card.issue": "issue, reissue and blacklist cards",
    "sale.create": "sell credit and take fees",
    "sale.correct": "reverse transactions, re-purchase, cancel purchases (manager authorisation)",
    "tariff.manage": "create and schedule tariffs",
    "meter.control": "trip, close and keep power on remote meters",
    "report.view": "see reports",
    "audit.view": "see the audit trail and verify the ledger",
    "backup.run": "make and restore backups",
}

#: The built-in roles. An installation may add its own roles with any set of permissions.
DEFAULT_ROLES: dict[str, tuple[str, frozenset[str]]] = {
    "administrator": (
        "Configures offices, operators, tariffs; all permissions",
        frozenset(PERMISSIONS),
    ),
    "cashier": (
        "Sells credit, opens accounts and issues cards at the counter",
        frozenset({"customer.view", "customer.manage", "card.issue", "sale.create", "report.view"}),
    ),
    "manager": (
        "A cashier who may also authorise corrections (re-purchase, cancellation, reversal)",
        frozenset(
            {
                "customer.view",
                "customer.manage",
                "card.issue",
                "sale.create",
                "sale.correct",
                "meter.control",
                "report.view",
            }
        ),
    ),
    "auditor": (
        "Reads everything, changes nothing",
        frozenset({"customer.view", "report.view", "audit.view"}),
    ),
}

MAX_FAILED_LOGINS = 5
LOCKOUT = dt.timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 8
_USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    check_password_strength(password)
    return _hasher.hash(password)


def check_password_strength(password: object) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password must have at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    return password


def ensure_default_roles(session: Session) -> None:
    """Create the built-in roles, and give them any permission added since (never removes)."""
    existing = {
        role.name: role
        for role in session.execute(select(Role).options(selectinload(Role.permissions))).scalars()
    }
    for name, (description, permissions) in DEFAULT_ROLES.items():
        role = existing.get(name)
        if role is None:
            role = Role(name=name, description=description)
            session.add(role)
        have = {p.permission for p in role.permissions}
        for permission in sorted(permissions - have):
            role.permissions.append(RolePermission(permission=permission))
    session.flush()


def get_operator(session: Session, username: str) -> Operator:
    op = session.execute(select(Operator).where(Operator.username == username)).scalar_one_or_none()
    if op is None:
        raise NotFound(f"no operator {username!r}", field="username")
    return op


def create_operator(
    session: Session,
    actor: Actor,
    *,
    username: str,
    password: str,
    full_name: str = "",
    roles: Iterable[tuple[str, str | None]] = (),
) -> Operator:
    """Create an operator with roles given as (role name, office code or None for everywhere)."""
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise InvalidInput(
            "username must be 2 to 64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter",
            field="username",
        )
    if session.execute(select(Operator.id).where(Operator.username == username)).first():
        raise Conflict(f"operator {username!r} exists already", field="username")
    roles = list(roles)
    resolved = [_resolve_role(session, name, office) for name, office in roles]  # before writing
    op = Operator(username=username, full_name=full_name, password_hash=hash_password(password))
    session.add(op)
    session.flush()
    for role_id, office_id in resolved:
        session.add(OperatorRole(operator_id=op.id, role_id=role_id, office_id=office_id))
    session.flush()
    record(
        session,
        actor,
        "operator.create",
        [f"operator:{op.id}"],
        detail={"username": username, "roles": [list(r) for r in roles]},
    )
    return op


def _resolve_role(
    session: Session, role_name: str, office_code: str | None
) -> tuple[int, int | None]:
    role = session.execute(select(Role).where(Role.name == role_name)).scalar_one_or_none()
    if role is None:
        known = ", ".join(session.execute(select(Role.name).order_by(Role.name)).scalars())
        raise NotFound(f"no role {role_name!r} (known: {known})", field="role")
    office_id = get_office(session, office_code).id if office_code else None
    return role.id, office_id


def assign_role(session: Session, op: Operator, role_name: str, office_code: str | None) -> None:
    """Give ``op`` a role within an office (``None``: everywhere)."""
    role_id, office_id = _resolve_role(session, role_name, office_code)
    session.add(OperatorRole(operator_id=op.id, role_id=role_id, office_id=office_id))
    session.flush()


def authenticate(
    session: Session, username: str, password: str, *, now: dt.datetime | None = None
) -> Operator:
    """Check a login. Failures are counted; too many lock the account for a while.

    The failure count is written even though the login fails: the caller commits either way.
    """
    now = now or utcnow()
    op = session.execute(select(Operator).where(Operator.username == username)).scalar_one_or_none()
    if op is None or not op.is_active:
        _hasher_dummy_verify(password)
        raise AuthenticationFailed("wrong username or password")
    locked_until = _aware(op.locked_until)
    if locked_until is not None and locked_until > now:
        raise AuthenticationFailed(
            f"the account is locked after {MAX_FAILED_LOGINS} failed logins; "
            f"try again after {locked_until.strftime('%H:%M')} UTC or ask an administrator",
        )
    try:
        _hasher.verify(op.password_hash, password)
    except (VerificationError, InvalidHashError):
        op.failed_logins += 1
        if op.failed_logins >= MAX_FAILED_LOGINS:
            op.locked_until = now + LOCKOUT
            op.failed_logins = 0
        session.flush()
        raise AuthenticationFailed("wrong username or password") from None
    if _hasher.check_needs_rehash(op.password_hash):
        op.password_hash = _hasher.hash(password)
    op.failed_logins = 0
    op.locked_until = None
    op.last_login_at = now
    session.flush()
    return op


def unlock(session: Session, actor: Actor, username: str) -> Operator:
    """Clear an operator's failed logins and lockout (needs ``operator.manage``)."""
    op = get_operator(session, username)
    op.failed_logins = 0
    op.locked_until = None
    session.flush()
    record(session, actor, "operator.unlock", [f"operator:{op.id}"], detail={"username": username})
    return op


def _hasher_dummy_verify(password: str) -> None:
    """Spend the same time for an unknown user as for a wrong password."""
    with contextlib.suppress(VerificationError, InvalidHashError):
        _hasher.verify(_DUMMY_HASH, password)


_DUMMY_HASH = _hasher.hash("not a real password")


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


@dataclass(frozen=True)
class Grants:
    """What an operator may do: permission -> office ids (``None``: every office)."""

    by_permission: dict[str, frozenset[int] | None]

    def allows(self, permission: str, office_id: int | None = None) -> bool:
        if permission not in self.by_permission:
            return False
        offices = self.by_permission[permission]
        return offices is None or (office_id is not None and office_id in offices)

    def offices(self, permission: str) -> frozenset[int] | None:
        """The offices where ``permission`` holds (``None``: all); empty if nowhere."""
        return self.by_permission.get(permission, frozenset())

    def require(self, permission: str, office_id: int | None = None) -> None:
        if not self.allows(permission, office_id):
            where = " for this office" if office_id is not None else ""
            raise PermissionDenied(f"you need the permission {permission!r}{where}")


def grants_for(session: Session, op: Operator) -> Grants:
    """Collect an operator's permissions with their office scopes (an office includes branches)."""
    by_permission: dict[str, set[int] | None] = {}
    rows = session.execute(
        select(OperatorRole.office_id, RolePermission.permission)
        .join(RolePermission, RolePermission.role_id == OperatorRole.role_id)
        .where(OperatorRole.operator_id == op.id)
    ).all()
    subtree_cache: dict[int, set[int]] = {}
    for office_id, permission in rows:
        current = by_permission.get(permission, set())
        if current is None:
            continue
        if office_id is None:
            by_permission[permission] = None
            continue
        if office_id not in subtree_cache:
            subtree_cache[office_id] = office_and_descendants(session, office_id)
        current |= subtree_cache[office_id]
        by_permission[permission] = current
    return Grants(
        {
            p: (None if offices is None else frozenset(offices))
            for p, offices in by_permission.items()
        }
    )


def list_operators(session: Session) -> list[Operator]:
    return list(
        session.execute(
            select(Operator)
            .options(selectinload(Operator.assignments).selectinload(OperatorRole.role))
            .options(selectinload(Operator.assignments).selectinload(OperatorRole.office))
            .order_by(Operator.username)
        ).scalars()
    )
