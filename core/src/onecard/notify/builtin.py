"""The core's own notifier plugin: the ``email`` and ``sms`` channels and the ``http`` connector.

``onecard.plugins.load_plugins`` registers this module with every plugin manager, before the
plugins it loads; it is not listed among the plugins (``onecard plugins``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onecard import hookimpl
from onecard.notify.email import EmailChannel
from onecard.notify.registry import NotifierRegistry
from onecard.notify.sms import HttpSmsConnector, SmsChannel

if TYPE_CHECKING:
    from onecard.config import Settings


@hookimpl
def onecard_register_notifiers(registry: NotifierRegistry) -> None:
    def sms(settings: Settings) -> SmsChannel:
        return SmsChannel(settings, registry)  # connectors are looked up when first used

    registry.add_channel("email", EmailChannel)
    registry.add_channel("sms", sms)
    registry.add_sms_connector("http", HttpSmsConnector)
