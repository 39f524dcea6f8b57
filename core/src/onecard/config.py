"""Settings: defaults, then the instance file ``onecard.toml``, then ``ONECARD_*`` variables.

============================  ======================================================================
setting (env variable)        meaning
============================  ======================================================================
ONECARD_INSTANCE_PATH         the instance folder: SQLite database, secret key, settings file
                              (default ``./instance``)
ONECARD_DATABASE_URL          database URL; default ``sqlite:///<instance>/onecard.db``. PostgreSQL:
                              ``postgresql+psycopg://user@host:5432/dbname``
ONECARD_SECRET_KEY            signs session cookies; default: a random key kept in
                              ``<instance>/secret_key`` (made on first start, mode 0600)
ONECARD_PLUGINS               load only these plugins (comma-separated entry-point names)
ONECARD_DISABLED_PLUGINS      never load these plugins
ONECARD_SESSION_MINUTES       idle minutes before an operator's session expires (default 30)
ONECARD_READER                the PC/SC card reader to use (exact name or a unique part of it);
                              default: the only reader present
ONECARD_KEK                   the key-encryption key of the site keys (hex); default: the file
                              ``<instance>/kek`` (see docs/cards-keys.md)
ONECARD_SMTP_HOST             the SMTP server of the ``email`` notification channel (no default:
                              e-mail is not sent until it is set)
ONECARD_SMTP_PORT             its port (default 25)
ONECARD_SMTP_USER             log in with this user name (default: no login)
ONECARD_SMTP_PASSWORD         ... and this password (environment only)
ONECARD_SMTP_FROM             the From address of notices (default ``onecard@localhost``)
ONECARD_SMTP_STARTTLS         ``true``: STARTTLS before logging in (default false)
ONECARD_SMS_CONNECTOR         the SMS connector the ``sms`` channel sends through (default ``http``)
ONECARD_SMS_URL               the generic HTTP SMS gateway's URL (no default)
ONECARD_SMS_TOKEN             its bearer token (environment only; default: none sent)
ONECARD_SMS_FORMAT            ``json`` (default) or ``form``: how the request body is encoded
ONECARD_SMS_TEMPLATE          the request body as a JSON object; ``{phone}`` and ``{text}`` in its
                              strings are filled in (default ``{"phone": "{phone}", "text":
                              "{text}"}``)
ONECARD_SMS_OK_FIELD          a field of the gateway's JSON answer that must equal SMS_OK_VALUE for
                              success (dotted path, like ``result.code``; default: HTTP 2xx
                              suffices)
ONECARD_SMS_OK_VALUE          the value it must have (default ``0``)
ONECARD_NOTIFY_TIMEOUT        seconds to wait for the SMTP server or SMS gateway (default 10)
ONECARD_NOTIFY_RATE_PER_HOUR  at most this many messages to one recipient per hour (default 6)
ONECARD_STAFF_EMAIL           where alarms for staff are e-mailed (default: none)
ONECARD_ALARM1                a remote meter's alarm 1 threshold, yuan of credit left (default 20);
                              a meter's own threshold wins (docs/remote-meters.md)
ONECARD_ALARM2                its alarm 2 threshold (default 5; at most ALARM1)
ONECARD_STALE_AFTER           consecutive missed readings that mark a remote meter stale (default 3)
============================  ======================================================================

In ``onecard.toml`` the database URL, secret key, session minutes, reader, the notification
settings and the remote-meter alarm settings can be written in lower case without the prefix
(``database_url = "..."``); the plugin selection, the KEK, the SMTP password and the SMS token are
read from the environment only, and the instance path is where the file itself lies. See
docs/notifications.md for the notification keys.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from onecard.errors import InvalidInput

PREFIX = "ONECARD_"
NOTIFY_FILE_KEYS = (
    "smtp_host",
    "smtp_port",
    "smtp_user",
    "smtp_from",
    "smtp_starttls",
    "sms_connector",
    "sms_url",
    "sms_format",
    "sms_template",
    "sms_ok_field",
    "sms_ok_value",
    "notify_timeout",
    "notify_rate_per_hour",
    "staff_email",
)
NOTIFY_ENV_KEYS = ("smtp_password", "sms_token")
REMOTE_KEYS = ("alarm1", "alarm2", "stale_after")
KEYS = (
    "instance_path",
    "database_url",
    "secret_key",
    "session_minutes",
    "reader",
    *NOTIFY_FILE_KEYS,
    *NOTIFY_ENV_KEYS,
    *REMOTE_KEYS,
)
FILE_KEYS = (
    "database_url",
    "secret_key",
    "session_minutes",
    "reader",
    *NOTIFY_FILE_KEYS,
    *REMOTE_KEYS,
)


@dataclass(frozen=True)
class Settings:
    instance_path: Path
    database_url: str
    secret_key: str | None = None
    session_minutes: int = 30
    reader: str | None = None
    # notifications (docs/notifications.md)
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "onecard@localhost"
    smtp_starttls: bool = False
    sms_connector: str = "http"
    sms_url: str | None = None
    sms_token: str | None = field(default=None, repr=False)
    sms_format: str = "json"
    sms_template: str = '{"phone": "{phone}", "text": "{text}"}'
    sms_ok_field: str | None = None
    sms_ok_value: str = "0"
    notify_timeout: float = 10.0
    notify_rate_per_hour: int = 6
    staff_email: str | None = None
    # remote meters (docs/remote-meters.md): installation defaults a meter's own values override
    alarm1_fen: int = 2000
    alarm2_fen: int = 500
    stale_after: int = 3

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_secret_key(self) -> str:
        """The configured key, or the one kept in the instance folder (made on first use)."""
        if self.secret_key:
            return self.secret_key
        path = self.instance_path / "secret_key"
        if not path.exists():
            self.instance_path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return path.read_text().strip()


def load_settings(
    overrides: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None
) -> Settings:
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}
    given = {k.lower(): v for k, v in (overrides or {}).items()}
    instance = Path(
        given.get("instance_path") or environ.get(PREFIX + "INSTANCE_PATH") or "instance"
    ).resolve()
    file = instance / "onecard.toml"
    if file.exists():
        try:
            values.update(tomllib.loads(file.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{file}: {exc}", field="onecard.toml") from exc
        unknown = set(values) - set(FILE_KEYS)
        if unknown:
            raise InvalidInput(
                f"{file}: unknown settings {', '.join(sorted(unknown))}", field="onecard.toml"
            )
    for key in KEYS:
        if PREFIX + key.upper() in environ:
            values[key] = environ[PREFIX + key.upper()]
    values.update({k: v for k, v in given.items() if k in KEYS and v is not None})
    values["instance_path"] = instance
    settings = Settings(
        instance_path=instance,
        database_url=values.get("database_url") or f"sqlite:///{instance / 'onecard.db'}",
        secret_key=values.get("secret_key"),
        reader=values.get("reader") or None,
    )
    if "session_minutes" in values:
        try:
            minutes = int(values["session_minutes"])
        except (TypeError, ValueError):
            raise InvalidInput(
                "session_minutes must be a whole number", field="session_minutes"
            ) from None
        if minutes < 1:
            raise InvalidInput("session_minutes must be at least 1", field="session_minutes")
        settings = replace(settings, session_minutes=minutes)
    return replace(settings, **_notify_settings(values), **_remote_settings(values))


def _remote_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The remote-meter alarm defaults given, parsed and checked (each error names its key)."""
    from onecard.money import parse_yuan

    out: dict[str, Any] = {}
    for key in ("alarm1", "alarm2"):
        if key in values:
            raw = values[key]
            try:  # zero is a threshold too (alarm when the credit is gone)
                zero = not isinstance(raw, bool | float) and Decimal(str(raw).strip()) == 0
            except InvalidOperation:
                zero = False
            out[f"{key}_fen"] = 0 if zero else parse_yuan(raw, key)
    alarm1 = out.get("alarm1_fen", Settings.alarm1_fen)
    alarm2 = out.get("alarm2_fen", Settings.alarm2_fen)
    if alarm2 > alarm1:
        raise InvalidInput(
            f"alarm2 ({alarm2 / 100:.2f} yuan) must not be above alarm1 ({alarm1 / 100:.2f} yuan)",
            field="alarm2",
        )
    if "stale_after" in values:
        out["stale_after"] = _whole(values["stale_after"], "stale_after", 1, 1000)
    return out


def _whole(raw: Any, key: str, low: int, high: int) -> int:
    """``raw`` as a whole number from ``low`` to ``high``, or an error that names ``key``."""
    try:
        number = int(raw) if not isinstance(raw, bool | float) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise InvalidInput(
            f"{key} must be a whole number from {low} to {high}, not {raw!r}", field=key
        )
    return number


def _notify_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The notification keys given, parsed and checked (each error names its key)."""
    out: dict[str, Any] = {}
    for key in ("smtp_host", "smtp_user", "smtp_password", "sms_url", "sms_token"):
        if key in values:
            out[key] = str(values[key]).strip() or None
    for key in ("sms_ok_field", "staff_email"):
        if key in values:
            out[key] = str(values[key]).strip() or None
    for key in ("smtp_from", "sms_connector", "sms_template", "sms_ok_value"):
        if key in values:
            out[key] = str(values[key]).strip()
            if not out[key]:
                raise InvalidInput(f"{key} must not be empty", field=key)
    for key, low, high in (("smtp_port", 1, 65535), ("notify_rate_per_hour", 1, 100_000)):
        if key in values:
            out[key] = _whole(values[key], key, low, high)
    if "notify_timeout" in values:
        raw = values["notify_timeout"]
        try:
            seconds = float(raw) if not isinstance(raw, bool) else 0.0
        except (TypeError, ValueError):
            seconds = 0.0
        if not 0 < seconds <= 300:
            raise InvalidInput(
                f"notify_timeout must be a number of seconds above 0 and at most 300, not {raw!r}",
                field="notify_timeout",
            )
        out["notify_timeout"] = seconds
    if "smtp_starttls" in values:
        raw = values["smtp_starttls"]
        flag = raw if isinstance(raw, bool) else str(raw).strip().lower()
        if flag in (True, "true", "1", "yes", "on"):
            out["smtp_starttls"] = True
        elif flag in (False, "false", "0", "no", "off", ""):
            out["smtp_starttls"] = False
        else:
            raise InvalidInput(
                f"smtp_starttls must be true or false, not {raw!r}", field="smtp_starttls"
            )
    if "sms_template" in out:
        try:
            template = json.loads(out["sms_template"])
        except ValueError as exc:
            raise InvalidInput(
                f"sms_template is not valid JSON: {exc}", field="sms_template"
            ) from None
        if not isinstance(template, dict):
            raise InvalidInput("sms_template must be a JSON object", field="sms_template")
    if "sms_format" in values:
        fmt = str(values["sms_format"]).strip().lower()
        if fmt not in ("json", "form"):
            raise InvalidInput(
                f"sms_format must be json or form, not {values['sms_format']!r}",
                field="sms_format",
            )
        out["sms_format"] = fmt
    return out
