"""an outbound message is claimed by one dispatcher before it is sent

Two dispatcher processes could both find a reply `queued` and both send it. A dispatcher now
moves the row to `sending` with its name and a lease in one conditional UPDATE, and only the
one whose UPDATE changed the row sends (hub/pipeline/dispatcher.py).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns without a default: SQLite and PostgreSQL add them without rewriting
    # the table, however many messages it holds.
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True)
        )
        batch_op.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # A row caught mid-send goes back to `queued`: the code before this revision sends those.
    op.execute("UPDATE messages SET status = 'queued' WHERE status = 'sending'")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("claimed_by")
