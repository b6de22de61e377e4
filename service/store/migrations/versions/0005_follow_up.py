"""Follow-up tables: managed CarePlans and Tasks, the sweep's due work, the reminder queue
(service/store/followup.py).

Revision ID: 0005_follow_up
Revises: 0004_composite
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_follow_up"
down_revision = "0004_composite"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "care_plans",
        sa.Column("careplan_id", sa.String(64), primary_key=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("condition_id", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("plan_url", sa.String(255), nullable=False),
        sa.Column("onset", sa.String(10), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.UniqueConstraint("condition_id", "generation", name="uq_care_plans_condition"),
    )
    op.create_index("ix_care_plans_patient", "care_plans", ["patient_id"])
    op.create_table(
        "care_plan_tasks",
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("careplan_id", sa.String(64), nullable=False),
        sa.Column("action_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("window_start", sa.String(10), nullable=False),
        sa.Column("window_end", sa.String(10), nullable=False),
        sa.UniqueConstraint("careplan_id", "action_id", name="uq_care_plan_tasks_action"),
    )
    op.create_table(
        "due_work",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("due_at", Instant, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.UniqueConstraint("kind", "subject", name="uq_due_work_subject"),
    )
    op.create_index("ix_due_work_due", "due_work", ["due_at", "id"])
    op.create_table(
        "reminders",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("dedupe_key", sa.String(255), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("about", sa.String(128), nullable=False),
        sa.Column("due_on", sa.String(10), nullable=False),
        sa.Column("created_at", Instant, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", Instant, nullable=False),
        sa.Column("sent_at", Instant, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_reminders_pending", "reminders", ["status", "next_attempt_at"])
    op.create_index("ix_reminders_about", "reminders", ["about"])


def downgrade() -> None:
    for name in ("reminders", "due_work", "care_plan_tasks", "care_plans"):
        op.drop_table(name)
