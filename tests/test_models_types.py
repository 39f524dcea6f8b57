"""The column types of the model: timestamps on SQLite take a fast path that must write and read
exactly what SQLAlchemy's own SQLite ``DATETIME`` does."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from onecard.models import UTCDateTime

SQLITE = sqlite.dialect()
GENERAL_BIND = DateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
GENERAL_RESULT = DateTime().dialect_impl(SQLITE).result_processor(SQLITE, None)
BIND = UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
RESULT = UTCDateTime().dialect_impl(SQLITE).result_processor(SQLITE, None)

zones = st.one_of(
    st.none(),
    st.just(dt.UTC),
    st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m))),
)
moments = st.datetimes(
    min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31), timezones=zones
)


@given(moments)
def test_sqlite_text_is_sqlalchemys(value: dt.datetime) -> None:
    utc = value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
    assert BIND(value) == GENERAL_BIND(utc)
    back = RESULT(BIND(value))
    assert back == GENERAL_RESULT(GENERAL_BIND(utc)).replace(tzinfo=dt.UTC)
    assert back.tzinfo is dt.UTC
    if value.tzinfo is not None:
        assert back == value  # the same instant


def test_other_forms_go_the_general_way() -> None:
    assert BIND(None) is None and RESULT(None) is None
    # text written by hand or by another tool, without microseconds
    assert RESULT("2026-11-02 08:30:00") == dt.datetime(2026, 11, 2, 8, 30, tzinfo=dt.UTC)
    assert RESULT("2026-11-02 08:30:00.5") == dt.datetime(2026, 11, 2, 8, 30, 0, 500000, dt.UTC)


def test_postgresql_keeps_the_general_processors() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    impl = UTCDateTime().dialect_impl(dialect)
    value = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    bind = impl.bind_processor(dialect)
    assert (bind(value) if bind else value) == dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)


def test_round_trip_and_comparison_in_sqlite() -> None:
    engine = create_engine("sqlite://")
    meta = MetaData()
    table = Table("t", meta, Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))
    meta.create_all(engine)
    shanghai = dt.timezone(dt.timedelta(hours=8))
    values = [
        dt.datetime(2026, 11, 2, 8, 0, tzinfo=shanghai),
        dt.datetime(2026, 11, 2, 0, 0, 0, 5, tzinfo=dt.UTC),
        None,
    ]
    with engine.begin() as conn:
        conn.execute(insert(table), [{"at": v} for v in values])
        stored = conn.execute(text("SELECT at FROM t ORDER BY id")).scalars().all()
        assert stored == ["2026-11-02 00:00:00.000000", "2026-11-02 00:00:00.000005", None]
        read = conn.execute(select(table.c.at).order_by(table.c.id)).scalars().all()
        assert read == values
        later = select(table.c.id).where(table.c.at > dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
        assert conn.execute(later).scalars().all() == [2]
