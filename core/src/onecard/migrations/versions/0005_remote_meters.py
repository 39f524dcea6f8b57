"""Remote meters: gateways, reading groups, remote meter state, events, relay commands,
remote recharges, holidays, notifications, the readings archive; customers get an e-mail.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 08:33:08.538617
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:

    op.create_table(
        "meter_readings_archive",
        sa.Column("id", Id, autoincrement=False, nullable=False),
        sa.Column("meter_id", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cumulative", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("card_id", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_readings_archive")),
    )
    with op.batch_alter_table("meter_readings_archive", schema=None) as batch_op:
        batch_op.create_index(
            "ix_meter_readings_archive_meter_id_taken_at", ["meter_id", "taken_at"], unique=False
        )

    op.create_table(
        "reading_groups",
        sa.Column("id", Id, nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("interval_minutes", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "interval_minutes BETWEEN 1 AND 10080", name=op.f("ck_reading_groups_interval")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reading_groups")),
        sa.UniqueConstraint("code", name=op.f("uq_reading_groups_code")),
    )
    op.create_table(
        "gateways",
        sa.Column("id", Id, nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("office_id", Id, nullable=True),
        sa.Column("transport", sa.String(length=8), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("device", sa.String(length=200), nullable=True),
        sa.Column("baudrate", sa.Integer(), nullable=False),
        sa.Column("parity", sa.String(length=1), nullable=False),
        sa.Column("bytesize", sa.Integer(), nullable=False),
        sa.Column("stopbits", sa.Integer(), nullable=False),
        sa.Column("framer", sa.String(length=8), nullable=False),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("group_id", Id, nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_token", sa.BigInteger(), nullable=False),
        sa.Column("last_cycle_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.CheckConstraint("framer IN ('socket', 'rtu')", name=op.f("ck_gateways_framer")),
        sa.CheckConstraint("parity IN ('N', 'E', 'O')", name=op.f("ck_gateways_parity")),
        sa.CheckConstraint("transport IN ('tcp', 'serial')", name=op.f("ck_gateways_transport")),
        sa.ForeignKeyConstraint(
            ["group_id"], ["reading_groups.id"], name=op.f("fk_gateways_group_id_reading_groups")
        ),
        sa.ForeignKeyConstraint(
            ["office_id"], ["offices.id"], name=op.f("fk_gateways_office_id_offices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateways")),
        sa.UniqueConstraint("code", name=op.f("uq_gateways_code")),
    )
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateways_office_id"), ["office_id"], unique=False)

    op.create_table(
        "holidays",
        sa.Column("id", Id, nullable=False),
        sa.Column("office_id", Id, nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["office_id"], ["offices.id"], name=op.f("fk_holidays_office_id_offices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holidays")),
        sa.UniqueConstraint("office_id", "day", name=op.f("uq_holidays_office_id_day")),
    )
    op.create_table(
        "meter_events",
        sa.Column("id", Id, nullable=False),
        sa.Column("meter_id", Id, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("level", sa.Integer(), nullable=True),
        sa.Column("balance", sa.BigInteger(), nullable=True),
        sa.Column("customer_id", Id, nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("noticed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_meter_events_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meters.id"], name=op.f("fk_meter_events_meter_id_meters")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_events")),
    )
    with op.batch_alter_table("meter_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_meter_events_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_meter_events_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_meter_events_event"), ["event"], unique=False)
        batch_op.create_index("ix_meter_events_meter_id_at", ["meter_id", "at"], unique=False)

    op.create_table(
        "relay_commands",
        sa.Column("id", Id, nullable=False),
        sa.Column("meter_id", Id, nullable=False),
        sa.Column("command", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("operator_id", Id, nullable=True),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("relay_after", sa.String(length=8), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "command IN ('trip', 'close', 'keep', 'release')",
            name=op.f("ck_relay_commands_command"),
        ),
        sa.CheckConstraint(
            "status IN ('sent', 'done', 'failed', 'mismatch')",
            name=op.f("ck_relay_commands_status"),
        ),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meters.id"], name=op.f("fk_relay_commands_meter_id_meters")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_relay_commands_operator_id_operators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_commands")),
    )
    with op.batch_alter_table("relay_commands", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_relay_commands_meter_id"), ["meter_id"], unique=False)

    op.create_table(
        "remote_meters",
        sa.Column("meter_id", Id, nullable=False),
        sa.Column("gateway_id", Id, nullable=False),
        sa.Column("address", sa.String(length=32), nullable=False),
        sa.Column("group_id", Id, nullable=True),
        sa.Column("billing", sa.String(length=8), nullable=False),
        sa.Column("alarm1", sa.BigInteger(), nullable=True),
        sa.Column("alarm2", sa.BigInteger(), nullable=True),
        sa.Column("grace_minutes", sa.Integer(), nullable=False),
        sa.Column("keep_power", sa.Boolean(), nullable=False),
        sa.Column("no_trip_hours", sa.String(length=11), nullable=True),
        sa.Column("no_trip_holidays", sa.Boolean(), nullable=False),
        sa.Column("last_reading_id", sa.BigInteger(), nullable=True),
        sa.Column("last_cumulative", sa.BigInteger(), nullable=True),
        sa.Column("last_read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("priced_cumulative", sa.BigInteger(), nullable=True),
        sa.Column("priced_bands", sa.JSON(), nullable=False),
        sa.Column("priced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ladder_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ladder_used", sa.BigInteger(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.Column("alarm_level", sa.Integer(), nullable=False),
        sa.Column("relay", sa.String(length=8), nullable=True),
        sa.Column("relay_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tripped", sa.String(length=8), nullable=True),
        sa.Column("exhausted_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bypass", sa.Boolean(), nullable=False),
        sa.Column("recharge_count", sa.Integer(), nullable=False),
        sa.Column("meter_recharge_count", sa.Integer(), nullable=True),
        sa.CheckConstraint("billing IN ('server', 'meter')", name=op.f("ck_remote_meters_billing")),
        sa.CheckConstraint(
            "alarm_level BETWEEN 0 AND 3", name=op.f("ck_remote_meters_alarm_level")
        ),
        sa.ForeignKeyConstraint(
            ["gateway_id"], ["gateways.id"], name=op.f("fk_remote_meters_gateway_id_gateways")
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["reading_groups.id"],
            name=op.f("fk_remote_meters_group_id_reading_groups"),
        ),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meters.id"], name=op.f("fk_remote_meters_meter_id_meters")
        ),
        sa.PrimaryKeyConstraint("meter_id", name=op.f("pk_remote_meters")),
        sa.UniqueConstraint(
            "gateway_id", "address", name=op.f("uq_remote_meters_gateway_id_address")
        ),
    )
    with op.batch_alter_table("remote_meters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_remote_meters_gateway_id"), ["gateway_id"], unique=False
        )

    op.create_table(
        "remote_recharges",
        sa.Column("id", Id, nullable=False),
        sa.Column("meter_id", Id, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("transaction_id", Id, nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("operator_id", Id, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("meter_count", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'failed', 'mismatch')",
            name=op.f("ck_remote_recharges_status"),
        ),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meters.id"], name=op.f("fk_remote_recharges_meter_id_meters")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_remote_recharges_operator_id_operators"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_remote_recharges_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_recharges")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_remote_recharges_idempotency_key")),
        sa.UniqueConstraint("meter_id", "count", name=op.f("uq_remote_recharges_meter_id_count")),
    )
    with op.batch_alter_table("remote_recharges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_remote_recharges_meter_id"), ["meter_id"], unique=False
        )

    op.create_table(
        "notifications",
        sa.Column("id", Id, nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.String(length=4000), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("event_id", Id, nullable=True),
        sa.Column("customer_id", Id, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('sent', 'failed', 'limited')", name=op.f("ck_notifications_status")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_notifications_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["meter_events.id"], name=op.f("fk_notifications_event_id_meter_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notifications_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_notifications_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_notifications_event_id"), ["event_id"], unique=False)
        batch_op.create_index(
            "ix_notifications_recipient_created_at", ["recipient", "created_at"], unique=False
        )

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email", sa.String(length=254), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("email")

    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_recipient_created_at")
        batch_op.drop_index(batch_op.f("ix_notifications_event_id"))
        batch_op.drop_index(batch_op.f("ix_notifications_customer_id"))
        batch_op.drop_index(batch_op.f("ix_notifications_created_at"))

    op.drop_table("notifications")
    with op.batch_alter_table("remote_recharges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_remote_recharges_meter_id"))

    op.drop_table("remote_recharges")
    with op.batch_alter_table("remote_meters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_remote_meters_gateway_id"))

    op.drop_table("remote_meters")
    with op.batch_alter_table("relay_commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_relay_commands_meter_id"))

    op.drop_table("relay_commands")
    with op.batch_alter_table("meter_events", schema=None) as batch_op:
        batch_op.drop_index("ix_meter_events_meter_id_at")
        batch_op.drop_index(batch_op.f("ix_meter_events_event"))
        batch_op.drop_index(batch_op.f("ix_meter_events_customer_id"))
        batch_op.drop_index(batch_op.f("ix_meter_events_at"))

    op.drop_table("meter_events")
    op.drop_table("holidays")
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateways_office_id"))

    op.drop_table("gateways")
    op.drop_table("reading_groups")
    with op.batch_alter_table("meter_readings_archive", schema=None) as batch_op:
        batch_op.drop_index("ix_meter_readings_archive_meter_id_taken_at")

    op.drop_table("meter_readings_archive")
