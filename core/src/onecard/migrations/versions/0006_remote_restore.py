"""Remote meters: an index on ``tripped`` (the reading service looks every few seconds for the
meters it tripped whose credit is back); ``last_reading_id``, never written, is dropped (the
newest reading is found by ``ix_meter_readings_meter_id_taken_at``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("remote_meters", schema=None) as batch_op:
        batch_op.drop_column("last_reading_id")
        batch_op.create_index(batch_op.f("ix_remote_meters_tripped"), ["tripped"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("remote_meters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_remote_meters_tripped"))
        batch_op.add_column(sa.Column("last_reading_id", sa.BigInteger(), nullable=True))
