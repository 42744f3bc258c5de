"""Audit entries record how their actor's identity was established (oidc, aws-iam, os-user...).

``auth_method`` is NULL on entries written before it existed (their keyed hash does not cover it, so
they still verify); every new entry has one, and its keyed hash covers it (``mlplat.services.audit``).
The CHECK lists the methods of ``mlplat.identity``: a method added there needs a revision here.
"""
from alembic import op

revision = "0010_audit_auth"
down_revision = "0009_api_keys"
branch_labels = None
depends_on = None

METHODS = ("oidc", "aws-iam", "google", "entra", "os-user", "trusted-local", "api-key", "system")
_CHECK = "CHECK (auth_method IN (" + ", ".join(f"'{m}'" for m in METHODS) + "))"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite adds a column with its CHECK in place (the append-only triggers do not fire on ALTER)
        bind.exec_driver_sql(f"ALTER TABLE audit_log ADD COLUMN auth_method TEXT {_CHECK}")
    else:
        bind.exec_driver_sql(f'ALTER TABLE audit_log ADD COLUMN auth_method TEXT COLLATE "C" {_CHECK}')


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema only moves forward")
