"""The Pulumi program entry (``main:`` in Pulumi.yaml): builds the selected stack's platform.

``pulumi up --stack fraud-prod`` (or ``pulumi preview --policy-pack policies``) runs
this file; it loads ``stacks/Pulumi.<stack>.yaml`` into a ``StackSpec`` and runs
the program of the stack's provider. ``mlplat up`` runs the same program inline
through the Automation API.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def build(stack_name: str, project_dir: Path) -> None:
    """Run the program of ``stack_name`` inside the current Pulumi deployment."""
    from mlplat import providers
    from mlplat.context import Context
    from mlplat.contracts import Capability
    from mlplat.errors import CapabilityNotSupported, MlplatError
    from mlplat.stack import load_stack

    spec = load_stack(stack_name, project_dir)
    provisioner = providers.capability(spec, Context(project_dir=project_dir), Capability.PROVISIONER)
    try:
        program = provisioner.program()
    except CapabilityNotSupported:
        raise MlplatError(f"stack '{spec.name}' uses the {spec.provider.kind} provider, which has no Pulumi program",
                          where=spec.path, hint=f"use `mlplat up --stack {spec.name}` for {spec.provider.kind} stacks",
                          ) from None
    program()


def main() -> None:
    import pulumi

    here = Path(os.environ.get("MLPLAT_PROJECT_DIR") or Path(__file__).resolve().parents[1])
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    build(pulumi.get_stack(), here)


# Pulumi's Python host runs the program file as __main__.
if __name__ == "__main__":
    main()
