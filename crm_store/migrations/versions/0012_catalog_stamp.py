"""a version number that moves on every write to the catalogue

The bot reads the salon, its services, masters and hours on every turn; with a version to
compare, it keeps them in memory until something changes. Triggers move the number, so every
writer counts: the API, the command line, an import, another hub process, a hand edit.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What a catalogue is made of (crm_store/catalog.py, crm_store/business.py, crm_store/slots.py).
TABLES = ("business", "services", "master_services", "staff", "working_hours", "time_off")
EVENTS = ("INSERT", "UPDATE", "DELETE")
# An upsert, so that a stamp row somebody deleted comes back instead of freezing the version.
BUMP = (
    "INSERT INTO catalog_stamp (id, version) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET version = catalog_stamp.version + 1"
)


def upgrade() -> None:
    op.create_table(
        "catalog_stamp",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO catalog_stamp (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's triggers fire per row: a bulk write moves the version by more than one,
        # which is all a reader needs (it only compares).
        for table in TABLES:
            for event in EVENTS:
                op.execute(
                    f"CREATE TRIGGER catalog_stamp_{table}_{event.lower()} "
                    f"AFTER {event} ON {table} BEGIN {BUMP}; END"
                )
        return
    op.execute(
        "CREATE FUNCTION bump_catalog_stamp() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN {BUMP}; RETURN NULL; END $$"
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER catalog_stamp_{table} AFTER INSERT OR UPDATE OR DELETE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_stamp()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in TABLES:
            for event in EVENTS:
                op.execute(f"DROP TRIGGER IF EXISTS catalog_stamp_{table}_{event.lower()}")
    else:
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS catalog_stamp_{table} ON {table}")
        op.execute("DROP FUNCTION IF EXISTS bump_catalog_stamp()")
    op.drop_table("catalog_stamp")
