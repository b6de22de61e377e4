"""search_token.code_ci: the case-folded value of a token taken from a string-typed element
(Identifier.value, ContactPoint.value, string), which R4 searches without regard to case
(https://hl7.org/fhir/R4/search.html#token). Rows indexed before this revision have none:
`toh reindex` fills it.

Revision ID: 0003_token_case
Revises: 0002_search_index
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_token_case"
down_revision = "0002_search_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("search_token") as batch:
        batch.add_column(sa.Column("code_ci", sa.String(255)))
    op.create_index("ix_search_token_code_ci", "search_token", ["res_type", "param", "code_ci", "rid"])


def downgrade() -> None:
    op.drop_index("ix_search_token_code_ci", "search_token")
    with op.batch_alter_table("search_token") as batch:
        batch.drop_column("code_ci")
