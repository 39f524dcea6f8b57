"""Receipts: what was printed for a sale, a settlement or a refund, kept for reprints.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "receipts",
        sa.Column("id", Id, nullable=False),
        sa.Column("number", sa.String(length=48), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("office_id", Id, nullable=False),
        sa.Column("operator_id", Id, nullable=True),
        sa.Column("customer_id", Id, nullable=True),
        sa.Column("sale_key", sa.String(length=100), nullable=True),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reprints", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('sale', 'settlement', 'refund', 'fee', 'cancel')",
            name=op.f("ck_receipts_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_receipts_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["office_id"], ["offices.id"], name=op.f("fk_receipts_office_id_offices")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_receipts_operator_id_operators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipts")),
        sa.UniqueConstraint("number", name=op.f("uq_receipts_number")),
        sa.UniqueConstraint("sale_key", name=op.f("uq_receipts_sale_key")),
    )
    op.create_index(op.f("ix_receipts_customer_id"), "receipts", ["customer_id"], unique=False)
    op.create_index(op.f("ix_receipts_office_id"), "receipts", ["office_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_receipts_office_id"), table_name="receipts")
    op.drop_index(op.f("ix_receipts_customer_id"), table_name="receipts")
    op.drop_table("receipts")
