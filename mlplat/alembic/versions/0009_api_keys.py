"""Serving API keys: per-endpoint credentials for the gateway, scoped to a model and environment."""
from alembic import op

revision = "0009_api_keys"
down_revision = "0008_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.get_bind()  # filled in with the api_keys table


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema only moves forward")
