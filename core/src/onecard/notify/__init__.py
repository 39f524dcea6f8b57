"""Notifications: channels (e-mail, SMS, plugins' own), rate-limited and recorded.

See docs/notifications.md. The reading service calls :func:`notify`; plugins add channels and
SMS connectors with the hook ``onecard_register_notifiers``.
"""

from __future__ import annotations

from onecard.notify.registry import (
    Channel,
    ChannelFactory,
    Message,
    NotifierRegistry,
    NotifyError,
    SmsConnector,
    SmsConnectorFactory,
)
from onecard.notify.send import notify, recent_count
from onecard.notify.texts import render_alarm

__all__ = [
    "Channel",
    "ChannelFactory",
    "Message",
    "NotifierRegistry",
    "NotifyError",
    "SmsConnector",
    "SmsConnectorFactory",
    "notify",
    "recent_count",
    "render_alarm",
]
