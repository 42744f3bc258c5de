"""Alembic's environment for the ledger. mlplat runs it itself (``mlplat.db``, ``mlplat db upgrade``),
with no alembic.ini: the caller hands over an open connection inside the transaction it commits,
under the ledger's write lock, so two processes that migrate at once never both do it."""
from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the ledger's migrations run through mlplat: `mlplat db upgrade --stack STACK`")
context.configure(connection=connection)  # no target metadata: the revisions are written by hand
with context.begin_transaction():
    context.run_migrations()
