"""Leases: one named lease (e.g. a rollout's controller) held by one holder until it expires."""
from alembic import op

revision = "0008_leases"
down_revision = "0007_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, "
            "expires_at REAL NOT NULL, acquired_at REAL NOT NULL)")
    else:
        bind.exec_driver_sql(
            'CREATE TABLE leases (name TEXT COLLATE "C" PRIMARY KEY, holder TEXT COLLATE "C" NOT NULL, '
            "expires_at DOUBLE PRECISION NOT NULL, acquired_at DOUBLE PRECISION NOT NULL)")


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema only moves forward")
