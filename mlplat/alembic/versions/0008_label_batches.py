"""Label uploads arrive in batches under an id the sender picks: a batch received again under the same id
is answered from ``monitor_label_batches`` and writes nothing (``migrations/0008_label_batches.sql`` on SQLite)."""
from alembic import op

revision = "0008_label_batches"
down_revision = "0007_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS monitor_label_batches (batch_id TEXT PRIMARY KEY, digest TEXT NOT NULL, "
            "source TEXT NOT NULL, received_at REAL NOT NULL, result TEXT NOT NULL)")
    else:
        bind.exec_driver_sql(
            'CREATE TABLE monitor_label_batches (batch_id TEXT COLLATE "C" PRIMARY KEY, digest TEXT COLLATE "C" '
            'NOT NULL, source TEXT COLLATE "C" NOT NULL, received_at DOUBLE PRECISION NOT NULL, '
            'result TEXT COLLATE "C" NOT NULL)')


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema only moves forward")
