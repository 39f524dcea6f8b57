"""Settings: defaults, then the instance file ``onecard.toml``, then ``ONECARD_*`` variables.

==========================  =====================================================================
setting (env variable)      meaning
==========================  =====================================================================
ONECARD_INSTANCE_PATH       the instance folder: SQLite database, secret key, settings file
                            (default ``./instance``)
ONECARD_DATABASE_URL        database URL; default ``sqlite:///<instance>/onecard.db``. PostgreSQL:
                            ``postgresql+psycopg://user@host:5432/dbname``
ONECARD_SECRET_KEY          signs session cookies; default: a random key kept in
                            ``<instance>/secret_key`` (made on first start, mode 0600)
ONECARD_PLUGINS             load only these plugins (comma-separated entry-point names)
ONECARD_DISABLED_PLUGINS    never load these plugins
ONECARD_SESSION_MINUTES     idle minutes before an operator's session expires (default 30)
ONECARD_READER              the PC/SC card reader to use (exact name or a unique part of it);
                            default: the only reader present
ONECARD_KEK                 the key-encryption key of the site keys (hex); default: the file
                            ``<instance>/kek`` (see docs/cards-keys.md)
==========================  =====================================================================

In ``onecard.toml`` the database URL, secret key, session minutes and reader can be written in
lower case without the prefix (``database_url = "..."``); the plugin selection and the KEK are read
from the environment only, and the instance path is where the file itself lies.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from onecard.errors import InvalidInput

PREFIX = "ONECARD_"
KEYS = ("instance_path", "database_url", "secret_key", "session_minutes", "reader")
FILE_KEYS = ("database_url", "secret_key", "session_minutes", "reader")


@dataclass(frozen=True)
class Settings:
    instance_path: Path
    database_url: str
    secret_key: str | None = None
    session_minutes: int = 30
    reader: str | None = None

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
    return settings
