"""Test fixtures: a fresh database per test on SQLite and on PostgreSQL, and a small world.

PostgreSQL is required unless ``ONECARD_TEST_POSTGRES=0`` is set (then its tests are skipped with
that reason shown). ``ONECARD_TEST_POSTGRES_URL`` names the server; each test gets its own
database, cloned from a migrated template made once per run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

import onecard_electric
import onecard_gas
import onecard_heat
import onecard_rent
import onecard_water
from onecard import customers as cust
from onecard import offices as off
from onecard.audit import Actor
from onecard.db import create_db_engine, session_factory, upgrade
from onecard.ledger import accounts as acc
from onecard.plugins import Plugins, load_plugins

pytest_plugins = ["card_fixtures"]

PG_URL = os.environ.get(
    "ONECARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
PG_ENABLED = os.environ.get("ONECARD_TEST_POSTGRES", "1") != "0"
BUILTIN_PLUGINS = (onecard_electric, onecard_gas, onecard_heat, onecard_rent, onecard_water)
ACTOR = Actor(name="test")


def _pg_admin_engine() -> Engine:
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def pytest_configure(config: pytest.Config) -> None:
    if not PG_ENABLED or "not postgres" in (config.option.markexpr or ""):
        return
    try:
        engine = _pg_admin_engine()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        raise pytest.UsageError(
            f"PostgreSQL does not answer at {make_url(PG_URL).render_as_string()}: {exc}\n"
            "Start it ('make test' does so on Debian), point ONECARD_TEST_POSTGRES_URL at one, "
            "or run without it: ONECARD_TEST_POSTGRES=0 pytest"
        ) from exc


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PG_ENABLED:
        return
    skip = pytest.mark.skip(reason="ONECARD_TEST_POSTGRES=0: PostgreSQL tests not run")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """Argon2 at its cheapest profile: tests create and log in many operators.

    ``test_operators.py::test_production_hash_parameters`` checks the real parameters."""
    from argon2 import PasswordHasher
    from argon2.profiles import CHEAPEST

    from onecard import operators

    real = operators._hasher
    operators._hasher = PasswordHasher.from_parameters(CHEAPEST)
    yield
    operators._hasher = real


# Databases --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


class PostgresFactory:
    """Creates databases cloned from a migrated template; drops them all at the end."""

    def __init__(self) -> None:
        self.admin = _pg_admin_engine()
        self.prefix = f"onecard_test_{uuid.uuid4().hex[:8]}"
        self.template = f"{self.prefix}_tmpl"
        self.created: list[str] = []
        self._exec(f'CREATE DATABASE "{self.template}"')
        upgrade(self.url(self.template))

    def _exec(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(sql))

    def url(self, name: str) -> str:
        return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    def create(self, empty: bool = False) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        template = "template0" if empty else f'"{self.template}"'
        self._exec(f'CREATE DATABASE "{name}" TEMPLATE {template}')
        self.created.append(name)
        return self.url(name)

    def drop_all(self) -> None:
        for name in [*self.created, self.template]:
            self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresFactory]:
    if not PG_ENABLED:
        pytest.skip("ONECARD_TEST_POSTGRES=0: PostgreSQL tests not run")
    factory = PostgresFactory()
    yield factory
    factory.drop_all()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A fresh, migrated database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "onecard.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"
    factory: PostgresFactory = request.getfixturevalue("postgres")
    return factory.create()


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "onecard.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = create_db_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    """The five built-in plugins, passed explicitly (no entry-point discovery in tests)."""
    return load_plugins(BUILTIN_PLUGINS)


# A small world ----------------------------------------------------------------------------------


@dataclass
class World:
    office_id: int
    other_office_id: int
    customer_id: int
    customer_number: str
    wallets: dict[str, str]  # utility kind -> wallet account code
    shared_wallet: str
    other_wallet: str  # a wallet of a customer of the other office


def build_world(session: Session, plugins: Plugins) -> World:
    from onecard.operators import ensure_default_roles

    ensure_default_roles(session)
    grp = off.create_office(session, ACTOR, code="GRP", name="Group")
    east = off.create_office(session, ACTOR, code="E01", name="East", parent="GRP")
    west = off.create_office(session, ACTOR, code="W01", name="West", parent="GRP")
    assert grp.id
    customer = cust.open_account(
        session,
        ACTOR,
        plugins.utilities,
        office="E01",
        name="王芳",
        phone="13800000001",
        building="1号楼",
        unit="101",
        floor_area="88.50",
        heated_area="80",
        meters=[
            cust.MeterSpec("electric", "E0001"),
            cust.MeterSpec("water.cold", "W0001"),
            cust.MeterSpec("heat", "H0001"),
        ],
        shared_wallet=True,
    )
    other = cust.open_account(
        session,
        ACTOR,
        plugins.utilities,
        office="W01",
        name="李强",
        meters=[cust.MeterSpec("electric", "E9001")],
    )
    wallets = {}
    for p in customer.premises:
        for m in p.meters:
            wallets[m.kind] = acc.meter_wallet_code(m.id)
    other_meter = other.premises[0].meters[0]
    return World(
        office_id=east.id,
        other_office_id=west.id,
        customer_id=customer.id,
        customer_number=customer.number,
        wallets=wallets,
        shared_wallet=acc.shared_wallet_code(customer.id),
        other_wallet=acc.meter_wallet_code(other_meter.id),
    )


@pytest.fixture
def world(sessions: sessionmaker[Session], plugins: Plugins) -> World:
    with sessions() as session, session.begin():
        return build_world(session, plugins)
