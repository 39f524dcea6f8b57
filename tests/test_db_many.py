"""``onecard.db.execute_many``: a bulk INSERT or UPDATE whose values go through their columns'
types as SQLAlchemy's own ``execute(statement, rows)`` does, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)

from onecard.db import execute_many
from onecard.models import UTCDateTime

meta = MetaData()
things = Table(
    "scratch_things",
    meta,
    Column("id", Integer, primary_key=True),
    Column("name", String(20)),
    Column("at", UTCDateTime()),
    Column("detail", JSON),
    Column("count", Integer, default=7),
)
INSERT = insert(things)
UPDATE = (
    update(things)
    .where(things.c.id == bindparam("b_id"))
    .values(at=bindparam("at"), detail=bindparam("detail"))
)
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def rows(offset: int) -> list[dict[str, Any]]:
    return [
        {
            "id": offset + i,
            "name": f"n{i}",
            "at": dt.datetime(2026, 11, 2, 8, i, 0, i, tzinfo=SHANGHAI),
            "detail": {"values": {"v": str(i)}, "list": [i, None]},
            "count": i,
        }
        for i in range(3)
    ] + [{"id": offset + 9, "name": None, "at": None, "detail": None, "count": None}]


@pytest.fixture
def table(engine: Engine) -> Any:
    meta.create_all(engine)
    yield things
    meta.drop_all(engine)


def test_insert_as_sqlalchemy_does(engine: Engine, table: Any) -> None:
    with engine.begin() as conn:
        conn.execute(INSERT, rows(0))  # SQLAlchemy's own way
        execute_many(conn, INSERT, rows(100))
        stored = conn.execute(select(table).order_by(table.c.id)).all()
    general, fast = stored[:4], stored[4:]
    assert len(fast) == 4
    for a, b in zip(general, fast, strict=True):
        assert (a.name, a.at, a.detail, a.count) == (b.name, b.at, b.detail, b.count)
        assert b.id == a.id + 100
    assert fast[1].at == dt.datetime(2026, 11, 2, 0, 1, 0, 1, tzinfo=dt.UTC)
    assert fast[1].detail == {"values": {"v": "1"}, "list": [1, None]}


def test_update_by_named_parameter(engine: Engine, table: Any) -> None:
    later = dt.datetime(2026, 11, 3, 0, 0, tzinfo=dt.UTC)
    with engine.begin() as conn:
        execute_many(conn, INSERT, rows(0))
        execute_many(
            conn,
            UPDATE,
            [{"b_id": 1, "at": later, "detail": {"x": 1}}, {"b_id": 9, "at": None, "detail": []}],
        )
        stored = {r.id: r for r in conn.execute(select(table))}
    assert (stored[1].at, stored[1].detail) == (later, {"x": 1})
    assert (stored[9].at, stored[9].detail) == (None, [])
    assert stored[0].detail == {"values": {"v": "0"}, "list": [0, None]}  # not touched


def test_nothing_to_do_and_missing_values(engine: Engine, table: Any) -> None:
    with engine.begin() as conn:
        execute_many(conn, INSERT, [])
        # every value of the statement must come from the rows: no defaults are filled in
        with pytest.raises(KeyError):
            execute_many(conn, UPDATE, [{"b_id": 1, "at": None}])
        assert conn.execute(select(table)).all() == []
