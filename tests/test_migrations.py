"""Migrations: the models and the Alembic history agree; the schema goes down and up again."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from onecard.db import alembic_config, current_revision, upgrade
from onecard.models import Base


def test_models_match_the_migrations(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def _head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def test_downgrade_to_base_and_up_again(engine: Engine) -> None:
    from alembic import command

    assert current_revision(engine) == _head()
    url = engine.url.render_as_string(hide_password=False)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert not inspect(engine).has_table("ledger_transactions")
    upgrade(engine)
    assert current_revision(engine) == _head()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_runs_in_wal_mode_with_full_sync(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_constraint_names_follow_the_convention(engine: Engine) -> None:
    insp = inspect(engine)
    assert insp.get_pk_constraint("ledger_postings")["name"] == "pk_ledger_postings"
    fks = {fk["name"] for fk in insp.get_foreign_keys("ledger_postings")}
    assert "fk_ledger_postings_transaction_id_ledger_transactions" in fks
