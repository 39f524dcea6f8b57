"""``notify``: send one message through a channel, rate-limited, and record it."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from onecard.errors import InvalidInput
from onecard.models import Notification, utcnow
from onecard.notify.registry import Message, NotifierRegistry

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from onecard.config import Settings

WINDOW = dt.timedelta(hours=1)
#: statuses that count towards the rate limit (a limited message was never tried)
COUNTED = ("sent", "failed")


def _registry(notifiers: Any) -> NotifierRegistry:
    registry = getattr(notifiers, "notifiers", notifiers)
    if not isinstance(registry, NotifierRegistry):
        raise TypeError(f"expected Plugins or a NotifierRegistry, not {type(notifiers).__name__}")
    return registry


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def recent_count(session: Session, recipient: str, now: dt.datetime) -> int:
    """Messages tried (sent or failed) to ``recipient`` in the hour up to ``now``."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(
                Notification.recipient == recipient,
                Notification.created_at > now - WINDOW,
                Notification.created_at <= now,
                Notification.status.in_(COUNTED),
            )
        )
        or 0
    )


def notify(
    session: Session,
    notifiers: Any,
    settings: Settings,
    *,
    channel: str,
    recipient: str,
    subject: str,
    body: str,
    event_id: int | None = None,
    customer_id: int | None = None,
    now: dt.datetime | None = None,
) -> Notification:
    """Send ``subject``/``body`` to ``recipient`` through ``channel`` and record it.

    ``notifiers`` is the loaded :class:`~onecard.plugins.Plugins` or its ``notifiers``. The
    returned row (added and flushed, **not committed**: the caller owns the transaction) has
    ``status`` ``sent``, ``failed`` (``error`` says why: an unknown channel, a missing setting,
    a refusing server) or ``limited`` (more than ``settings.notify_rate_per_hour`` messages
    tried to this recipient in the last hour, counted in the table, so across processes). A
    failure to send never raises.
    """
    registry = _registry(notifiers)
    recipient = recipient.strip() if isinstance(recipient, str) else ""
    if not recipient:
        raise InvalidInput("recipient must not be empty", field="recipient")
    if not channel:
        raise InvalidInput("channel must not be empty", field="channel")
    at = now or utcnow()
    if at.tzinfo is None:
        raise InvalidInput("now must be timezone-aware", field="now")
    row = Notification(
        channel=_clip(channel, 32),
        recipient=_clip(recipient, 254),
        subject=_clip(subject, 300),
        body=_clip(body, 4000),
        event_id=event_id,
        customer_id=customer_id,
        created_at=at,
        error="",
    )
    tried = recent_count(session, row.recipient, at)
    limit = settings.notify_rate_per_hour
    if tried >= limit:
        row.status = "limited"
        row.error = (
            f"rate limit: {tried} messages to this recipient in the last hour (at most {limit})"
        )
    else:
        try:
            registry.channel(channel, settings).send(Message(channel, recipient, subject, body))
        except Exception as exc:  # recorded, never raised: the caller reads the row
            row.status = "failed"
            row.error = _clip(str(getattr(exc, "message", None) or exc) or type(exc).__name__, 500)
        else:
            row.status = "sent"
    session.add(row)
    session.flush()
    return row
