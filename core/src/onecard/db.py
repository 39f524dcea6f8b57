"""Database engines, sessions and migrations.

The embedded default is a SQLite file (WAL mode, ``synchronous=FULL`` because it holds money,
foreign keys on, and every transaction opened with ``BEGIN IMMEDIATE`` so writers queue instead of
failing). PostgreSQL is selected by a ``postgresql+psycopg://`` URL.

Functions here that take a session never commit it: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import UpdateBase

SQLITE_BUSY_TIMEOUT_MS = 30_000


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """Make an engine for ``url`` with onecard's settings for its dialect."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {})
        kwargs["connect_args"].setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    in_memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock at the start: a deferred transaction that reads and then writes can
        # fail with SQLITE_BUSY when another writer committed in between. Straight to the driver:
        # this runs for every transaction.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in a transaction: committed if the block succeeds, rolled back if it raises."""
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str) -> Config:
    script_location = str(resources.files("onecard") / "migrations")
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` with Alembic."""
    if isinstance(engine_or_url, str):
        engine = create_db_engine(engine_or_url)
        try:
            _upgrade(engine, revision)
        finally:
            engine.dispose()
    else:
        _upgrade(engine_or_url, revision)


def _upgrade(engine: Engine, revision: str) -> None:
    url = engine.url.render_as_string(hide_password=False)
    cfg = alembic_config(url)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def sqlite_file_missing(engine: Engine) -> bool:
    """True for a SQLite URL whose file does not exist (connecting would create it empty)."""
    if engine.dialect.name != "sqlite":
        return False
    database = engine.url.database or ""
    return database not in ("", ":memory:") and not Path(database).exists()


def is_initialised(engine: Engine) -> bool:
    """The schema exists (without creating an empty SQLite file to find out)."""
    return not sqlite_file_missing(engine) and inspect(engine).has_table("ledger_head")


def has_operator(engine: Engine) -> bool:
    """``onecard init`` (or the demo) made at least one operator: someone can log in."""
    if not is_initialised(engine):
        return False
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT 1 FROM operators LIMIT 1").first() is not None


# Bulk statements ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Many:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool


_MANY: dict[tuple[int, str, tuple[str, ...]], tuple[UpdateBase, _Many]] = {}


def _prepare_many(statement: UpdateBase, dialect: Any, keys: tuple[str, ...]) -> _Many:
    cache_key = (id(statement), dialect.name, keys)
    hit = _MANY.get(cache_key)
    if hit is not None and hit[0] is statement:
        return hit[1]
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    many = _Many(compiled.string, names, processors, bool(compiled.positional))
    if len(_MANY) >= 256:  # statements made on the fly would grow it for ever
        _MANY.clear()
    _MANY[cache_key] = (statement, many)  # the statement is held: its id stays its own
    return many


def execute_many(
    connection: Connection, statement: UpdateBase, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Run a core INSERT or UPDATE once per row (``executemany``), each row's values put through
    their columns' types as SQLAlchemy does, but column by column instead of through its general
    per-row machinery (most of a bulk statement's cost in Python). Every row has the keys of the
    first. The statement is compiled once per dialect and set of keys: pass a module-level one.
    Does not commit."""
    if not rows:
        return
    many = _prepare_many(statement, connection.dialect, tuple(rows[0]))
    pairs = tuple(zip(many.names, many.processors, strict=True))
    if many.positional:
        params: list[Any] = [
            tuple(row[n] if p is None else p(row[n]) for n, p in pairs) for row in rows
        ]
    else:
        params = [{n: row[n] if p is None else p(row[n]) for n, p in pairs} for row in rows]
    connection.exec_driver_sql(many.sql, params)
