"""The database lock that lets one reading-service instance at a time use a gateway's bus.

A lease is a row update, so it works the same on SQLite and on PostgreSQL shared by several
instances: :func:`acquire` takes a free or expired lease (and bumps its token); :func:`check`,
called inside every transaction that stores what was read, renews it and fails when another
instance took it over (a stale token), so a late writer can never post twice.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from onecard.errors import Conflict
from onecard.models import Gateway


class LeaseLost(Conflict):
    """This instance no longer holds the gateway's lease; its work must be rolled back."""


def acquire(
    session: Session, gateway_id: int, owner: str, *, now: dt.datetime, ttl: dt.timedelta
) -> int | None:
    """Take the lease for ``owner``; return its token, or None when another holds it.

    The caller commits at once (the lease must be visible to other instances)."""
    done = session.execute(
        update(Gateway)
        .where(
            Gateway.id == gateway_id,
            or_(
                Gateway.lease_owner.is_(None),
                Gateway.lease_until.is_(None),
                Gateway.lease_until < now,
                Gateway.lease_owner == owner,
            ),
        )
        .values(lease_owner=owner, lease_until=now + ttl, lease_token=Gateway.lease_token + 1)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.execute(select(Gateway.lease_token).where(Gateway.id == gateway_id)).scalar()


def check(
    session: Session,
    gateway_id: int,
    owner: str,
    token: int,
    *,
    now: dt.datetime,
    ttl: dt.timedelta,
) -> None:
    """Renew the lease inside the caller's transaction; raise LeaseLost if it is not ours."""
    done = session.execute(
        update(Gateway)
        .where(Gateway.id == gateway_id, Gateway.lease_owner == owner, Gateway.lease_token == token)
        .values(lease_until=now + ttl)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        holder = session.execute(
            select(Gateway.lease_owner, Gateway.code).where(Gateway.id == gateway_id)
        ).first()
        raise LeaseLost(
            f"gateway {holder[1] if holder else gateway_id}: the lease is now held by "
            f"{holder[0] if holder else 'nobody'}",
            field="gateway",
        )


def release(session: Session, gateway_id: int, owner: str, token: int) -> None:
    """Give the lease up (only if it is still ours). The caller commits."""
    session.execute(
        update(Gateway)
        .where(Gateway.id == gateway_id, Gateway.lease_owner == owner, Gateway.lease_token == token)
        .values(lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )
