"""The domain model: SQLAlchemy 2 typed models. The schema itself is made by Alembic migrations.

Money is an integer number of fen everywhere (``BigInteger``); areas are ``Numeric``.
Times are stored timezone-aware in UTC.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Primary keys: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")
Money = BigInteger
Area = Numeric(12, 2)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value

    # SQLite keeps a timestamp as the text ``YYYY-MM-DD HH:MM:SS.ffffff``. SQLAlchemy writes and
    # parses it in Python (a format string, a regular expression), which is most of what a bulk
    # statement costs per row. On SQLite both directions are done here in one step each, with
    # the same text (``isoformat``) and the same values (``fromisoformat``); anything else goes
    # the general way.

    def bind_processor(self, dialect: Any) -> Any:
        general = super().bind_processor(dialect)
        if dialect.name != "sqlite":
            return general
        utc, datetime = dt.UTC, dt.datetime

        def process(value: Any) -> Any:
            if type(value) is not datetime:
                return general(value) if general is not None else value
            if value.tzinfo is not None:
                value = value.astimezone(utc).replace(tzinfo=None)
            return value.isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        general = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite":
            return general
        utc, parse = dt.UTC, dt.datetime.fromisoformat

        def process(value: Any) -> Any:
            if type(value) is str and len(value) == 26:  # the written form
                try:
                    return parse(value).replace(tzinfo=utc)
                except ValueError:
                    pass
            return general(value) if general is not None else value

        return process


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


# Offices, operators, roles ----------------------------------------------------------------------


class Office(Base):
    """A service office or property; offices form a tree (a group over its branches)."""

    __tablename__ = "offices"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"), index=True)
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    parent: Mapped[Office | None] = relationship(remote_side=[id])


class Operator(Base):
    """A person who logs in: administrator, cashier, auditor ..."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]
    last_login_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    assignments: Mapped[list[OperatorRole]] = relationship(
        back_populates="operator", cascade="all, delete-orphan"
    )


class Role(Base):
    """A named set of permissions."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")

    permissions: Mapped[list[RolePermission]] = relationship(cascade="all, delete-orphan")


class RolePermission(Base):
    __tablename__ = "role_permissions"

    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"), primary_key=True)
    permission: Mapped[str] = mapped_column(String(64), primary_key=True)


class OperatorRole(Base):
    """A role given to an operator, within an office and its branches (no office: everywhere)."""

    __tablename__ = "operator_roles"
    __table_args__ = (UniqueConstraint("operator_id", "role_id", "office_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"), index=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"))
    office_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"))

    operator: Mapped[Operator] = relationship(back_populates="assignments")
    role: Mapped[Role] = relationship()
    office: Mapped[Office | None] = relationship()


# Customers, premises, meters, cards -------------------------------------------------------------


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'suspended', 'closed')", name="status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    #: where low-credit alarms and other notices are e-mailed (None: none by e-mail)
    email: Mapped[str | None] = mapped_column(String(254))
    id_number: Mapped[str | None] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(32), default="residential")
    office_id: Mapped[int] = mapped_column(ForeignKey("offices.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]

    office: Mapped[Office] = relationship()
    premises: Mapped[list[Premises]] = relationship(back_populates="customer")


class Premises(Base):
    """A dwelling, shop or unit: where meters are installed and what areas are billed."""

    __tablename__ = "premises"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    office_id: Mapped[int] = mapped_column(ForeignKey("offices.id"), index=True)
    building: Mapped[str] = mapped_column(String(64), default="")
    unit: Mapped[str] = mapped_column(String(64), default="")
    address: Mapped[str] = mapped_column(String(300), default="")
    floor_area: Mapped[Decimal | None] = mapped_column(Area)
    heated_area: Mapped[Decimal | None] = mapped_column(Area)

    customer: Mapped[Customer | None] = relationship(back_populates="premises")
    meters: Mapped[list[Meter]] = relationship(back_populates="premises")


class Meter(Base):
    __tablename__ = "meters"
    __table_args__ = (
        UniqueConstraint("kind", "serial"),
        CheckConstraint("state IN ('active', 'suspended', 'removed')", name="state"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    serial: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(64), default="")
    protocol: Mapped[str] = mapped_column(String(32), default="card")
    #: the name of the tariff of this meter's kind; None: the kind's only tariff
    tariff: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="active")
    premises_id: Mapped[int | None] = mapped_column(ForeignKey("premises.id"), index=True)
    installed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[dt.datetime | None]

    premises: Mapped[Premises | None] = relationship(back_populates="meters")


class Card(Base):
    """A physical IC card: a customer's one-card or a tool card (system, manager, settings ...)."""

    __tablename__ = "cards"
    __table_args__ = (
        CheckConstraint(
            "card_type IN ('user', 'system', 'manager', 'settings', 'reset', 'clear', 'check')",
            name="card_type",
        ),
        CheckConstraint("status IN ('active', 'lost', 'blacklisted', 'retired')", name="status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    uid: Mapped[str] = mapped_column(String(20), unique=True)
    card_type: Mapped[str] = mapped_column(String(16), default="user")
    profile: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active")
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    key_version: Mapped[int] = mapped_column(Integer, default=1)
    reissue_count: Mapped[int] = mapped_column(Integer, default=0)
    replaced_by_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    office_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"), index=True)
    #: the operator a manager card belongs to
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    #: what a tool card carries (settings, the installation it registers ...)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status_changed_at: Mapped[dt.datetime | None]
    status_reason: Mapped[str] = mapped_column(String(300), default="")

    slots: Mapped[list[CardSlot]] = relationship(
        back_populates="card", order_by="CardSlot.slot", cascade="all, delete-orphan"
    )


class CardProfile(Base):
    """Which utility kinds a one-card carries, slot by slot (four, six, eight, or an office's own).

    ``number`` is what the card header stores. ``slots`` is a list of ``{"kind": code,
    "label": text}``; the card map (``onecard.card.layout``) allocates their blocks.
    """

    __tablename__ = "card_profiles"
    __table_args__ = (CheckConstraint("card_size IN ('1k', '4k')", name="card_size"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    names: Mapped[dict[str, Any]] = mapped_column(default=dict)
    card_size: Mapped[str] = mapped_column(String(4), default="1k")
    slots: Mapped[list[Any]] = mapped_column(default=list)
    office_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"))
    builtin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CardSlot(Base):
    """A slot of a user card bound to a meter; ``start_block`` is where its records begin."""

    __tablename__ = "card_slots"
    __table_args__ = (UniqueConstraint("card_id", "slot"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    slot: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    start_block: Mapped[int] = mapped_column(Integer)
    meter_id: Mapped[int | None] = mapped_column(ForeignKey("meters.id"), index=True)

    card: Mapped[Card] = relationship(back_populates="slots")
    meter: Mapped[Meter | None] = relationship()


class CardPurchase(Base):
    """A purchase carried to a card meter: pending until written and verified, then confirmed.

    ``seq`` is the meter's purchase sequence number (the meter accepts only the next one); it
    continues across card reissues. A pending or voided purchase has no ledger transaction; a
    confirmed one has the sale's, and a cancelled one also its reversal.
    """

    __tablename__ = "card_purchases"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'confirmed', 'voided', 'cancelled')", name="status"),
        Index(
            "uq_card_purchases_meter_id_seq_live",
            "meter_id",
            "seq",
            unique=True,
            sqlite_where=text("status IN ('pending', 'confirmed')"),
            postgresql_where=text("status IN ('pending', 'confirmed')"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    sale_key: Mapped[str] = mapped_column(String(100), index=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), index=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    office_id: Mapped[int] = mapped_column(ForeignKey("offices.id"), index=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    slot: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Money)
    units: Mapped[int | None] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(16), default="cash")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    written_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]
    close_reason: Mapped[str] = mapped_column(String(300), default="")
    authorized_by_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    rewrites: Mapped[int] = mapped_column(Integer, default=0)
    transaction_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transactions.id"))
    reversal_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transactions.id"))

    meter: Mapped[Meter] = relationship()
    card: Mapped[Card] = relationship()


class MeterReading(Base):
    """What a meter reported: from a card's return record, a check card, or a remote read.

    ``cumulative`` is in the kind's smallest unit (10**-unit_decimals); ``remaining`` is the
    credit the meter holds, in fen or in smallest units as its slot layout says.
    """

    __tablename__ = "meter_readings"
    __table_args__ = (
        UniqueConstraint("meter_id", "source", "taken_at", "cumulative"),
        Index("ix_meter_readings_meter_id_taken_at", "meter_id", "taken_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"))
    source: Mapped[str] = mapped_column(String(16))
    taken_at: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    cumulative: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int | None] = mapped_column(BigInteger)
    last_seq: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[int] = mapped_column(Integer, default=0)
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


# Remote meters ----------------------------------------------------------------------------------


class ReadingGroup(Base):
    """A named reading schedule: meters of the group are read every ``interval_minutes``."""

    __tablename__ = "reading_groups"
    __table_args__ = (CheckConstraint("interval_minutes BETWEEN 1 AND 10080", name="interval"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    interval_minutes: Mapped[int] = mapped_column(Integer, default=30)


class Gateway(Base):
    """A communication gateway: a TCP host/port or a serial device, with meters on its bus.

    ``framer`` is how Modbus travels on it (``socket``: Modbus TCP; ``rtu``: RTU frames, on a
    serial line or through a transparent TCP gateway). ``lease_owner``/``lease_until`` are the
    database lock that lets one reading-service instance at a time read the bus;
    ``lease_token`` grows with every grant, so a late writer with an old token is refused.
    """

    __tablename__ = "gateways"
    __table_args__ = (
        CheckConstraint("transport IN ('tcp', 'serial')", name="transport"),
        CheckConstraint("framer IN ('socket', 'rtu')", name="framer"),
        CheckConstraint("parity IN ('N', 'E', 'O')", name="parity"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    office_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"), index=True)
    transport: Mapped[str] = mapped_column(String(8))
    host: Mapped[str | None] = mapped_column(String(253))
    port: Mapped[int | None] = mapped_column(Integer)
    device: Mapped[str | None] = mapped_column(String(200))
    baudrate: Mapped[int] = mapped_column(Integer, default=9600)
    parity: Mapped[str] = mapped_column(String(1), default="N")
    bytesize: Mapped[int] = mapped_column(Integer, default=8)
    stopbits: Mapped[int] = mapped_column(Integer, default=1)
    framer: Mapped[str] = mapped_column(String(8), default="socket")
    timeout_ms: Mapped[int] = mapped_column(Integer, default=1000)
    retries: Mapped[int] = mapped_column(Integer, default=2)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("reading_groups.id"))
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[dt.datetime | None]
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0)
    last_cycle_at: Mapped[dt.datetime | None]
    last_error: Mapped[str] = mapped_column(String(500), default="")

    group: Mapped[ReadingGroup | None] = relationship()


class RemoteMeter(Base):
    """A meter read over a gateway: where it sits on the bus, how it is billed and controlled,
    and its working state (last reading, what has been priced, alarm level, relay).

    ``billing`` is ``server`` (the server prices each reading and posts it against the wallet)
    or ``meter`` (the meter keeps its own credit; the server pushes recharges with a count).
    ``priced_cumulative`` is how far (smallest units) use has been posted to the ledger; it only
    moves together with the posting, in one database transaction.
    """

    __tablename__ = "remote_meters"
    __table_args__ = (
        UniqueConstraint("gateway_id", "address"),
        CheckConstraint("billing IN ('server', 'meter')", name="billing"),
        CheckConstraint("alarm_level BETWEEN 0 AND 3", name="alarm_level"),
    )

    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"), index=True)
    address: Mapped[str] = mapped_column(String(32))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("reading_groups.id"))
    billing: Mapped[str] = mapped_column(String(8), default="server")
    #: alarm thresholds of the remaining credit (fen); None: the installation's defaults
    alarm1: Mapped[int | None] = mapped_column(Money)
    alarm2: Mapped[int | None] = mapped_column(Money)
    grace_minutes: Mapped[int] = mapped_column(Integer, default=0)
    keep_power: Mapped[bool] = mapped_column(default=False)
    #: local hours when nothing is tripped, "HH:MM-HH:MM" (may wrap midnight); None: none
    no_trip_hours: Mapped[str | None] = mapped_column(String(11))
    no_trip_holidays: Mapped[bool] = mapped_column(default=True)
    # working state
    last_cumulative: Mapped[int | None] = mapped_column(BigInteger)
    last_read_at: Mapped[dt.datetime | None]
    priced_cumulative: Mapped[int | None] = mapped_column(BigInteger)
    priced_bands: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priced_at: Mapped[dt.datetime | None]
    ladder_start: Mapped[dt.datetime | None]
    ladder_used: Mapped[int] = mapped_column(BigInteger, default=0)
    last_attempt_at: Mapped[dt.datetime | None]
    missed: Mapped[int] = mapped_column(Integer, default=0)
    stale: Mapped[bool] = mapped_column(default=False)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    alarm_level: Mapped[int] = mapped_column(Integer, default=0)
    relay: Mapped[str | None] = mapped_column(String(8))
    relay_checked_at: Mapped[dt.datetime | None]
    #: 'auto' or 'manual' while tripped (indexed: the service looks up its trips every few seconds)
    tripped: Mapped[str | None] = mapped_column(String(8), index=True)
    exhausted_since: Mapped[dt.datetime | None]
    bypass: Mapped[bool] = mapped_column(default=False)
    recharge_count: Mapped[int] = mapped_column(Integer, default=0)
    meter_recharge_count: Mapped[int | None] = mapped_column(Integer)

    meter: Mapped[Meter] = relationship()
    gateway: Mapped[Gateway] = relationship()
    group: Mapped[ReadingGroup | None] = relationship()


class MeterReadingArchive(Base):
    """Readings moved out of ``meter_readings`` after the retention period (same columns)."""

    __tablename__ = "meter_readings_archive"
    __table_args__ = (Index("ix_meter_readings_archive_meter_id_taken_at", "meter_id", "taken_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=False)
    meter_id: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    taken_at: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime]
    cumulative: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int | None] = mapped_column(BigInteger)
    last_seq: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[int] = mapped_column(Integer, default=0)
    card_id: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    archived_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MeterEvent(Base):
    """Something that happened to a remote meter: an alarm crossing, a trip or close, a bypass,
    a missed reading, a recharge mismatch. What the alarm page and the notices are made from."""

    __tablename__ = "meter_events"
    __table_args__ = (Index("ix_meter_events_meter_id_at", "meter_id", "at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(32), index=True)
    level: Mapped[int | None] = mapped_column(Integer)
    balance: Mapped[int | None] = mapped_column(Money)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: when its notices were sent (None: not yet, or it needs none)
    noticed_at: Mapped[dt.datetime | None]


class RelayCommand(Base):
    """A relay command sent to a remote meter, and the relay state read back after it."""

    __tablename__ = "relay_commands"
    __table_args__ = (
        CheckConstraint("command IN ('trip', 'close', 'keep', 'release')", name="command"),
        CheckConstraint("status IN ('sent', 'done', 'failed', 'mismatch')", name="status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), index=True)
    command: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(8))  # 'auto' or 'manual'
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    reason: Mapped[str] = mapped_column(String(300), default="")
    status: Mapped[str] = mapped_column(String(8), default="sent")
    relay_after: Mapped[str | None] = mapped_column(String(8))
    error: Mapped[str] = mapped_column(String(500), default="")
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    done_at: Mapped[dt.datetime | None]


class RemoteRecharge(Base):
    """A purchase pushed to a meter that keeps its own credit, numbered by recharge count.

    The meter accepts only the next count; ``status`` is ``pending`` until the meter's count is
    read back as this one (``accepted``), or the meter shows another count (``mismatch``).
    """

    __tablename__ = "remote_recharges"
    __table_args__ = (
        UniqueConstraint("meter_id", "count"),
        CheckConstraint("status IN ('pending', 'accepted', 'failed', 'mismatch')", name="status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), index=True)
    count: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Money)
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    transaction_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transactions.id"))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    pushed_at: Mapped[dt.datetime | None]
    confirmed_at: Mapped[dt.datetime | None]
    meter_count: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(String(500), default="")


class Holiday(Base):
    """A day on which nothing is tripped (for meters that observe holidays); office None: all."""

    __tablename__ = "holidays"
    __table_args__ = (UniqueConstraint("office_id", "day"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    office_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"))
    day: Mapped[dt.date]
    name: Mapped[str] = mapped_column(String(100), default="")


class Notification(Base):
    """A message sent (or refused by the rate limit, or failed) through a notifier channel."""

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint("status IN ('sent', 'failed', 'limited')", name="status"),
        Index("ix_notifications_recipient_created_at", "recipient", "created_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300), default="")
    body: Mapped[str] = mapped_column(String(4000), default="")
    status: Mapped[str] = mapped_column(String(8))
    error: Mapped[str] = mapped_column(String(500), default="")
    event_id: Mapped[int | None] = mapped_column(ForeignKey("meter_events.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


# Site identity and keys -------------------------------------------------------------------------


class Installation(Base):
    """This installation (one row): the site id written on every card it issues."""

    __tablename__ = "installation"
    __table_args__ = (
        CheckConstraint("id = 1", name="singleton"),
        CheckConstraint("site_id BETWEEN 1 AND 4294967295", name="site_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=1)
    site_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SiteKey(Base):
    """A site master key (AES-128), wrapped under the key-encryption key; never stored plain.

    ``purpose`` is ``card`` (sector keys) or ``mac`` (record MACs). ``kcv`` is the key check
    value (not secret) that lets an operator compare keys without seeing them.
    """

    __tablename__ = "site_keys"
    __table_args__ = (UniqueConstraint("version", "purpose"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(16))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    kcv: Mapped[str] = mapped_column(String(6))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[dt.datetime | None]


class Tariff(Base):
    """A versioned tariff document of one utility kind, in force from ``effective_from``.

    Versions are never changed or deleted: a price change is a new version. At any instant the
    version in force is the one with the latest ``effective_from`` not after it (and, of two with
    the same time, the higher version).
    """

    __tablename__ = "tariffs"
    __table_args__ = (
        UniqueConstraint("kind", "name", "version"),
        Index("ix_tariffs_kind_name_effective_from", "kind", "name", "effective_from"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(32))
    effective_from: Mapped[dt.datetime]
    document: Mapped[dict[str, Any]]
    note: Mapped[str] = mapped_column(String(500), default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class BillingRun(Base):
    """What a plugin priced and posted for a period (an apportionment, a month's fees).

    ``key`` makes a run happen once; ``statement`` is what was computed (kept for reprint and
    audit); ``transactions`` are the ledger transaction ids it posted.
    """

    __tablename__ = "billing_runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    what: Mapped[str] = mapped_column(String(32))
    period_start: Mapped[dt.date]
    period_end: Mapped[dt.date]
    office_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"), index=True)
    total: Mapped[int] = mapped_column(Money)
    statement: Mapped[dict[str, Any]]
    transactions: Mapped[list[Any]] = mapped_column(default=list)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Receipt(Base):
    """A printed receipt: what the customer was given, kept as written for reprints.

    ``number`` is unique across the installation (``<office code>-<yyyymmdd>-<id>``). ``kind``
    says what it is for: ``sale`` (a card sale; ``sale_key`` names it), ``settlement`` (an
    account closed with a refund or a collection), ``refund``, ``fee``. ``data`` is the receipt's
    content as plain data (see :mod:`onecard.receipts`); a reprint renders the same data again.
    """

    __tablename__ = "receipts"
    __table_args__ = (
        CheckConstraint("kind IN ('sale', 'settlement', 'refund', 'fee', 'cancel')", name="kind"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    number: Mapped[str] = mapped_column(String(48), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    office_id: Mapped[int] = mapped_column(ForeignKey("offices.id"), index=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    sale_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    total: Mapped[int] = mapped_column(Money)
    data: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reprints: Mapped[int] = mapped_column(Integer, default=0)


# The ledger -------------------------------------------------------------------------------------


class LedgerAccount(Base):
    """An account of the double-entry ledger.

    ``balance`` is a cache of the sum of the account's postings (debits positive, credits
    negative); ``onecard ledger verify`` checks that it always is. Liability and revenue accounts
    are credit-normal: a customer's wallet holding 100 yuan has ``balance == -10000``.
    ``overdraft`` is how far a credit-normal account may be drawn past zero (fen, >= 0).
    """

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint("type IN ('asset', 'liability', 'revenue', 'expense')", name="type"),
        CheckConstraint("overdraft >= 0", name="overdraft"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(96), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    type: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(32), index=True)
    utility_kind: Mapped[str | None] = mapped_column(String(32))
    office_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    meter_id: Mapped[int | None] = mapped_column(ForeignKey("meters.id"), index=True)
    balance: Mapped[int] = mapped_column(Money, default=0)
    overdraft: Mapped[int] = mapped_column(Money, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LedgerHead(Base):
    """The single row that holds the newest transaction's sequence number and hash.

    Posting locks this row, which orders every transaction into one hash chain.
    """

    __tablename__ = "ledger_head"
    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class LedgerTransaction(Base):
    """A posted, immutable ledger transaction. The database refuses UPDATE and DELETE."""

    __tablename__ = "ledger_transactions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    memo: Mapped[str] = mapped_column(String(500), default="")
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reverses_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transactions.id"), unique=True
    )
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"), index=True)
    office_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(index=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    postings: Mapped[list[LedgerPosting]] = relationship(order_by="LedgerPosting.id", viewonly=True)


class LedgerPosting(Base):
    """One leg of a transaction: a signed amount (debit positive) on one account."""

    __tablename__ = "ledger_postings"
    __table_args__ = (CheckConstraint("amount <> 0", name="nonzero"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount: Mapped[int] = mapped_column(Money)


Index("ix_ledger_postings_account_id_id", LedgerPosting.account_id, LedgerPosting.id)


# The audit trail --------------------------------------------------------------------------------


class AuditEvent(Base):
    """Who did what to which objects, when and from where. Append-only, like the ledger."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"), index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64), index=True)
    objects: Mapped[list[Any]] = mapped_column(default=list)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    office_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)


#: Tables whose rows can be inserted but never updated or deleted (enforced by triggers).
APPEND_ONLY_TABLES = ("ledger_transactions", "ledger_postings", "audit_events")
