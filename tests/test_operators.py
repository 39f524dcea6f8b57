"""Operators: argon2 passwords, lockout, roles with office scope, and the audit trail."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import ACTOR, World
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard import operators as ops
from onecard.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from onecard.models import AuditEvent, Operator, utcnow


@pytest.fixture
def staff(sessions: sessionmaker[Session], world: World) -> None:
    with sessions() as s, s.begin():
        ops.create_operator(
            s, ACTOR, username="boss", password="boss-pass-1", roles=[("administrator", None)]
        )
        ops.create_operator(
            s, ACTOR, username="east", password="east-pass-1", roles=[("cashier", "E01")]
        )
        ops.create_operator(
            s, ACTOR, username="group.audit", password="audit-pass-1", roles=[("auditor", "GRP")]
        )


def test_passwords_are_argon2_hashed(sessions: sessionmaker[Session], staff: None) -> None:
    with sessions() as s:
        op = ops.get_operator(s, "east")
        assert op.password_hash.startswith("$argon2id$")
        assert "east-pass-1" not in op.password_hash


def test_production_hash_parameters() -> None:
    from argon2 import PasswordHasher
    from argon2.profiles import RFC_9106_LOW_MEMORY

    real = PasswordHasher()
    assert real.time_cost >= RFC_9106_LOW_MEMORY.time_cost
    assert real.memory_cost >= RFC_9106_LOW_MEMORY.memory_cost
    assert real.hash("x" * 8).startswith("$argon2id$")
    assert ops._DUMMY_HASH.startswith("$argon2id$v=19$m=65536")


def test_login_succeeds_and_records_the_time(sessions: sessionmaker[Session], staff: None) -> None:
    with sessions() as s, s.begin():
        op = ops.authenticate(s, "east", "east-pass-1")
        assert op.last_login_at is not None and op.failed_logins == 0


def test_five_failures_lock_the_account_for_fifteen_minutes(
    sessions: sessionmaker[Session], staff: None
) -> None:
    now = utcnow()
    for _ in range(ops.MAX_FAILED_LOGINS):
        with sessions() as s:
            with pytest.raises(AuthenticationFailed, match="wrong username or password"):
                ops.authenticate(s, "east", "nope", now=now)
            s.commit()
    with sessions() as s, pytest.raises(AuthenticationFailed, match="locked"):
        ops.authenticate(s, "east", "east-pass-1", now=now + dt.timedelta(minutes=14))
    with sessions() as s, s.begin():
        assert (
            ops.authenticate(s, "east", "east-pass-1", now=now + dt.timedelta(minutes=16)).username
            == "east"
        )


def test_unknown_user_and_inactive_user_fail_alike(
    sessions: sessionmaker[Session], staff: None
) -> None:
    with sessions() as s, pytest.raises(AuthenticationFailed, match="wrong username or password"):
        ops.authenticate(s, "ghost", "whatever-1")
    with sessions() as s, s.begin():
        ops.get_operator(s, "east").is_active = False
    with sessions() as s, pytest.raises(AuthenticationFailed, match="wrong username or password"):
        ops.authenticate(s, "east", "east-pass-1")


def test_office_scope_includes_branches(
    sessions: sessionmaker[Session], staff: None, world: World
) -> None:
    with sessions() as s:
        east = ops.grants_for(s, ops.get_operator(s, "east"))
        audit = ops.grants_for(s, ops.get_operator(s, "group.audit"))
        boss = ops.grants_for(s, ops.get_operator(s, "boss"))
    assert east.allows("sale.create", world.office_id)
    assert not east.allows("sale.create", world.other_office_id)
    assert not east.allows("sale.correct", world.office_id)
    assert audit.allows("audit.view", world.office_id) and audit.allows(
        "audit.view", world.other_office_id
    )
    assert not audit.allows("sale.create", world.office_id)
    assert (
        boss.allows("tariff.manage", world.other_office_id) and boss.offices("sale.create") is None
    )
    with pytest.raises(Exception, match=r"permission 'sale\.create' for this office"):
        east.require("sale.create", world.other_office_id)


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"username": "East"}, InvalidInput, "username"),
        ({"username": "x"}, InvalidInput, "username"),
        ({"password": "short"}, InvalidInput, "password"),
        ({"username": "east"}, Conflict, "username"),
        ({"roles": [("janitor", None)]}, NotFound, "role"),
        ({"roles": [("cashier", "NOPE")]}, NotFound, "office"),
    ],
)
def test_bad_operators_are_refused(
    sessions: sessionmaker[Session], staff: None, kwargs: dict, error: type, field: str
) -> None:  # type: ignore[type-arg]
    args = {
        "username": "newbie",
        "password": "long-enough-1",
        "roles": [("cashier", "E01")],
    } | kwargs
    with sessions() as s, s.begin():
        before = len(list(s.execute(select(Operator)).scalars()))
        with pytest.raises(error) as info:
            ops.create_operator(s, ACTOR, **args)
        assert info.value.field == field
    with sessions() as s:
        assert len(list(s.execute(select(Operator)).scalars())) == before


def test_state_changes_write_audit_events(sessions: sessionmaker[Session], staff: None) -> None:
    with sessions() as s:
        events = list(s.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars())
    actions = [e.action for e in events]
    assert actions.count("office.create") == 3
    assert actions.count("customer.open") == 2
    assert actions.count("operator.create") == 3
    created = [e for e in events if e.action == "operator.create"][-1]
    assert created.actor == "test" and created.objects == [
        f"operator:{created.objects[0].split(':')[1]}"
    ]
    assert created.detail["username"] == "group.audit"


def test_default_roles_gain_new_permissions_without_losing_custom_ones(
    sessions: sessionmaker[Session], staff: None
) -> None:
    with sessions() as s, s.begin():
        ops.ensure_default_roles(s)
        ops.ensure_default_roles(s)
    with sessions() as s:
        cashier = s.execute(select(ops.Role).where(ops.Role.name == "cashier")).scalar_one()
        assert {p.permission for p in cashier.permissions} == ops.DEFAULT_ROLES["cashier"][1]
