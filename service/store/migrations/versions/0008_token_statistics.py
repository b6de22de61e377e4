"""PostgreSQL extended statistics on search_token (res_type, param, system).

The planner takes the columns of a condition as independent, so it multiplies the share of
res_type = 'Patient', of param = 'identifier' and of one system and expects about one row for
``Patient?identifier=system|value``: with every index then equally cheap, it scanned
ix_search_token_system (every Patient record number of that system, filtered by code) instead
of looking the code up — 3,080 rows and 8.5 ms per lookup on a store of 3,000 patients, linear
in the number of patients, for the If-None-Exist of every `toh synth` bundle and the rule
Flags of every re-assessment. With the combinations' frequencies (MCV) and dependencies known,
it estimates thousands and looks up (res_type, param, code, system) instead: 0.2 ms.
See https://www.postgresql.org/docs/15/planner-stats.html#PLANNER-STATS-EXTENDED.
The statistics are filled by ANALYZE (autovacuum, or Database.keep_statistics). SQLite:
nothing.

Revision ID: 0008_token_statistics
Revises: 0007_i17_bulk_export
Create Date: 2026-11-30
"""
from __future__ import annotations

from alembic import op

revision = "0008_token_statistics"
down_revision = "0007_i17_bulk_export"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE STATISTICS IF NOT EXISTS st_search_token_system (dependencies, mcv) "
                   "ON res_type, param, system FROM search_token")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS st_search_token_system")
