"""seed the audit chain's head row

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Every append locks this one row (SELECT ... FOR UPDATE). Created with the schema, so two
first appends on a fresh database never race to insert it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64


def upgrade() -> None:
    head = sa.table(
        "audit_head", sa.column("id", sa.Integer), sa.column("seq", sa.Integer), sa.column("mac", sa.String)
    )
    connection = op.get_bind()
    if connection.execute(sa.text("SELECT COUNT(*) FROM audit_head")).scalar() == 0:
        op.bulk_insert(head, [{"id": 1, "seq": 0, "mac": GENESIS}])


def downgrade() -> None:
    op.execute("DELETE FROM audit_head WHERE id = 1 AND seq = 0")
