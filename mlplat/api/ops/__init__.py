"""The platform's operations, one module per area; :func:`mlplat.api.operations.load` imports them all.

Each module registers functions ``fn(spec, ctx, *, params...) -> JSON`` with
:func:`mlplat.api.operations.operation`. They hold the work a command does with the ledger;
the CLI modules only parse arguments, call ``plane_for(spec, ctx).call(name, ...)`` and render.
"""
