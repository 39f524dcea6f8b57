"""The notifier registry: notification channels and SMS connectors, registered at start-up.

Plugins (and the core's own built-in module ``onecard.notify.builtin``) fill it through the hook
``onecard_register_notifiers``; afterwards it is frozen. Both kinds of entry are **factories**
called with the :class:`~onecard.config.Settings` when first used, so that a channel is built with
the configuration it needs (SMTP host, gateway URL); the built object is kept per settings.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from onecard.errors import NotFound, OnecardError, PluginError

if TYPE_CHECKING:
    from onecard.config import Settings

NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


class NotifyError(OnecardError):
    """A message could not be sent: the channel or gateway is not configured, or refused it."""

    status = 502
    code = "notify_error"


@dataclass(frozen=True)
class Message:
    """One message to one recipient (an e-mail address, a phone number, ...)."""

    channel: str
    recipient: str
    subject: str
    body: str


@runtime_checkable
class Channel(Protocol):
    """A notification channel: ``send`` delivers the message or raises (the error is recorded)."""

    name: str

    def send(self, message: Message) -> None: ...


@runtime_checkable
class SmsConnector(Protocol):
    """An SMS gateway: ``send`` hands the text to the gateway for ``phone`` or raises."""

    def send(self, phone: str, text: str) -> None: ...


ChannelFactory = Callable[["Settings"], Channel]
SmsConnectorFactory = Callable[["Settings"], SmsConnector]


@dataclass(frozen=True)
class _Entry:
    factory: Callable[[Settings], Any]
    plugin: str | None


class NotifierRegistry:
    """Channels (``email``, ``sms``, ...) and SMS connectors (``http``, ...) by name."""

    def __init__(self) -> None:
        self.current_plugin: str | None = None
        self._channels: dict[str, _Entry] = {}
        self._connectors: dict[str, _Entry] = {}
        self._frozen = False
        self._built: dict[tuple[str, str, Settings] | None, Any] = {}
        self._lock = threading.Lock()

    # registration ---------------------------------------------------------------------------

    def add_channel(self, name: str, factory: ChannelFactory) -> None:
        """Register a channel: ``factory(settings)`` returns an object with ``name`` and
        ``send(message)``."""
        self._add("notification channel", self._channels, name, factory)

    def add_sms_connector(self, name: str, factory: SmsConnectorFactory) -> None:
        """Register an SMS connector: ``factory(settings)`` returns an object with
        ``send(phone, text)``."""
        self._add("SMS connector", self._connectors, name, factory)

    def _add(self, what: str, table: dict[str, _Entry], name: str, factory: Any) -> None:
        who = self.current_plugin or "onecard"
        if self._frozen:
            raise PluginError(f"{who}: a {what} can only be registered at start-up")
        if not isinstance(name, str) or not NAME.match(name):
            raise PluginError(
                f"{who}: {what} name {name!r} must be lower-case letters, digits, '_', '.' or "
                "'-', starting with a letter, at most 32 characters"
            )
        if not callable(factory):
            raise PluginError(f"{who}: {what} {name!r} needs a factory: a callable(settings)")
        if name in table:
            raise PluginError(
                f"{who}: {what} {name!r} is already registered by {table[name].plugin or 'onecard'}"
            )
        table[name] = _Entry(factory, self.current_plugin)

    def freeze(self) -> None:
        self._frozen = True

    @property
    def frozen(self) -> bool:
        return self._frozen

    # reading back ---------------------------------------------------------------------------

    def channel_names(self) -> list[str]:
        return sorted(self._channels)

    def connector_names(self) -> list[str]:
        return sorted(self._connectors)

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def plugin_of(self, channel: str) -> str | None:
        """The plugin that registered ``channel`` (None: the core)."""
        return self._entry("channel", channel).plugin

    def describe(self) -> dict[str, Any]:
        return {
            "channels": {n: e.plugin or "onecard" for n, e in sorted(self._channels.items())},
            "sms_connectors": {
                n: e.plugin or "onecard" for n, e in sorted(self._connectors.items())
            },
        }

    def channel(self, name: str, settings: Settings) -> Channel:
        """The channel ``name`` built for ``settings`` (built once, then reused).

        Raises :class:`NotFound` for an unknown name and :class:`NotifyError` when the factory
        refuses the settings (for example ``smtp_host is not set``)."""
        built = self._build("channel", name, settings)
        if not isinstance(built, Channel):
            raise NotifyError(f"notification channel {name!r} has no send(message) method")
        if built.name != name:
            raise NotifyError(
                f"notification channel registered as {name!r} calls itself {built.name!r}"
            )
        return built

    def sms_connector(self, name: str, settings: Settings) -> SmsConnector:
        """The SMS connector ``name`` built for ``settings`` (built once, then reused)."""
        built = self._build("connector", name, settings)
        if not isinstance(built, SmsConnector):
            raise NotifyError(f"SMS connector {name!r} has no send(phone, text) method")
        return built

    def _entry(self, table: str, name: str) -> _Entry:
        entries = self._channels if table == "channel" else self._connectors
        what = "notification channel" if table == "channel" else "SMS connector"
        try:
            return entries[name]
        except KeyError:
            known = ", ".join(sorted(entries)) or "none"
            raise NotFound(f"no {what} {name!r} (known: {known})", field=table) from None

    def _build(self, table: str, name: str, settings: Settings) -> Any:
        key: tuple[str, str, Settings] | None = (table, name, settings)
        try:
            hash(key)
        except TypeError:  # settings that cannot be hashed: build each time
            key = None
        with self._lock:
            if key is not None and key in self._built:
                return self._built[key]
        entry = self._entry(table, name)
        try:
            built = entry.factory(settings)
        except OnecardError:
            raise
        except Exception as exc:
            raise NotifyError(f"{table} {name!r} could not be set up: {exc}") from exc
        if key is None:
            return built
        with self._lock:
            return self._built.setdefault(key, built)
