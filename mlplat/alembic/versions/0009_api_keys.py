"""Serving API keys: per-endpoint credentials for the gateway, scoped to a model and environment.

Only a SHA-256 digest of each key's secret is stored (see :mod:`mlplat.services.api_keys`)."""
from alembic import op

revision = "0009_api_keys"
down_revision = "0008_leases"
branch_labels = None
depends_on = None

COLUMNS = (
    "id {text} PRIMARY KEY, model {text} NOT NULL, environment {text} NOT NULL, secret_hash {text} NOT NULL, "
    "description {text}, created_by {text} NOT NULL, created_at {real} NOT NULL, expires_at {real}, "
    "revoked_at {real}, revoked_by {text}, rotated_from {text}, "
    "CHECK (expires_at IS NULL OR expires_at >= created_at)"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql("CREATE TABLE IF NOT EXISTS api_keys ("
                             + COLUMNS.format(text="TEXT", real="REAL") + ")")
    else:
        bind.exec_driver_sql("CREATE TABLE api_keys (" + COLUMNS.format(text='TEXT COLLATE "C"',
                                                                        real="DOUBLE PRECISION") + ")")
    bind.exec_driver_sql("CREATE INDEX IF NOT EXISTS api_keys_scope ON api_keys (environment, model)")


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema only moves forward")
