"""initial store: sources, danmaku, runs, imported files, rejects

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "source",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("aid", sa.BigInteger()),
        sa.Column("bvid", sa.String(16)),
        sa.Column("cid", sa.BigInteger()),
        sa.Column("page", sa.Integer()),
        sa.Column("room_id", sa.BigInteger()),
        sa.Column("uploader_mid", sa.BigInteger()),
        sa.Column("title", sa.Text()),
        sa.Column("duration_s", sa.Integer()),
        sa.Column("started_at_ms", sa.BigInteger()),
        sa.Column("ended_at_ms", sa.BigInteger()),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16)),
        sa.PrimaryKeyConstraint("id", name="pk_source"),
        sa.UniqueConstraint("key", name="uq_source_key"),
    )
    for column in ("kind", "aid", "cid", "room_id", "uploader_mid"):
        op.create_index(f"ix_source_{column}", "source", [column])

    op.create_table(
        "danmaku",
        sa.Column("id", BIGINT_PK, primary_key=True),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("position_ms", sa.Integer()),
        sa.Column("sent_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("sender", sa.String(32)),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("dmid", sa.BigInteger()),
        sa.Column("mode", sa.SmallInteger()),
        sa.Column("color", sa.Integer()),
        sa.Column("font_size", sa.SmallInteger()),
        sa.Column("pool", sa.SmallInteger()),
        sa.PrimaryKeyConstraint("id", name="pk_danmaku"),
        sa.ForeignKeyConstraint(
            ["source_id"], ["source.id"], name="fk_danmaku_source_id_source", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_danmaku_export_order", "danmaku", ["source_id", "sent_at_ms", "id"])
    # Partial: rows without a dmid (the CSV data set, live chat) cost no index entry.
    op.create_index(
        "uq_danmaku_source_dmid", "danmaku", ["source_id", "dmid"], unique=True,
        sqlite_where=sa.text("dmid IS NOT NULL"), postgresql_where=sa.text("dmid IS NOT NULL"),
    )

    op.create_table(
        "run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("started_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("finished_at_ms", sa.BigInteger()),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("sources", sa.Integer(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stats_json", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_run"),
    )
    op.create_table(
        "imported_file",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_imported_file"),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name="fk_imported_file_run_id_run"),
        sa.UniqueConstraint("kind", "name", name="uq_imported_file_kind_name"),
    )
    op.create_table(
        "reject",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("file", sa.Text(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(120), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reject"),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name="fk_reject_run_id_run"),
    )
    op.create_index("ix_reject_run_id", "reject", ["run_id"])


def downgrade() -> None:
    op.drop_table("reject")
    op.drop_table("imported_file")
    op.drop_table("run")
    op.drop_index("ix_danmaku_export_order", table_name="danmaku")
    op.drop_table("danmaku")
    op.drop_table("source")
