"""The audit trail: every state-changing action writes one event. Append-only in the database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from onecard.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """Who acts: an operator (web, API) or a command-line user (``cli:<login>``)."""

    name: str
    operator_id: int | None = None
    office_id: int | None = None
    remote_addr: str | None = None


def record(
    session: Session,
    actor: Actor,
    action: str,
    objects: Iterable[str] = (),
    *,
    detail: Mapping[str, Any] | None = None,
    office_id: int | None = None,
    customer_id: int | None = None,
) -> AuditEvent:
    """Add an audit event to the session (the caller commits it with the action it records).

    ``objects`` are references like ``customer:12`` or ``ledger:#345``.
    """
    event = AuditEvent(
        actor=actor.name,
        operator_id=actor.operator_id,
        action=action,
        objects=list(objects),
        detail=dict(detail or {}),
        office_id=office_id if office_id is not None else actor.office_id,
        remote_addr=actor.remote_addr,
        customer_id=customer_id,
    )
    session.add(event)
    session.flush()
    return event
