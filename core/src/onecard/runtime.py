"""The running installation: settings, database engine, sessions and loaded plugins, in one object.

Both the web app and the command line build one :class:`Runtime`; tests build one with an explicit
plugin list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from onecard.config import Settings, load_settings
from onecard.db import create_db_engine, session_factory
from onecard.plugins import Plugins, load_plugins
from onecard.utility import UtilityRegistry

if TYPE_CHECKING:
    from onecard.card.profiles import ProfileCheck
    from onecard.card.service import CardDesk


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    plugins: Plugins
    _desk: CardDesk | None = field(default=None, init=False, repr=False)

    @property
    def utilities(self) -> UtilityRegistry:
        return self.plugins.utilities

    @classmethod
    def create(
        cls,
        config: Mapping[str, Any] | None = None,
        *,
        plugins: Iterable[ModuleType | object] | None = None,
    ) -> Runtime:
        settings = load_settings(config)
        if settings.is_sqlite:
            db_path = settings.database_url.split("///", 1)[-1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_db_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            plugins=load_plugins(plugins),
        )

    def close(self) -> None:
        self.engine.dispose()

    def card_desk(self) -> CardDesk:
        """The card operations of this installation (made on first use: it needs the KEK)."""
        if self._desk is None:
            from onecard.card.keys import KeyStore, load_kek
            from onecard.card.service import CardDesk

            self._desk = CardDesk(self.sessions, self.utilities, KeyStore(load_kek(self.settings)))
        return self._desk

    def settings_reader(self) -> str | None:
        return self.settings.reader

    def check_card_profiles(self) -> ProfileCheck | None:
        """The start-up check of the card profiles (None before the database is initialised)."""
        from onecard.card.profiles import check_profiles
        from onecard.db import is_initialised

        if not is_initialised(self.engine):
            return None
        with self.sessions() as session:
            return check_profiles(session, self.utilities)
