"""The mlplat CrossGuard policy pack: ``pulumi preview --policy-pack policies``.

Pulumi's policy runtime runs this file as a script; ``mlplat policy check`` imports
the same validators as ``mlplat_policies.rules``. Each policy is a thin adapter
from CrossGuard's arguments to the pure validator in ``rules``.
"""
from __future__ import annotations

import os
import sys

if __package__:
    from . import rules
else:  # run as a script: the pack's own folder holds rules.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import rules  # type: ignore[no-redef]


def _resource(arg) -> rules.Resource:
    parent = getattr(arg, "parent", None)
    return rules.Resource(type=arg.resource_type, name=arg.name, props=dict(arg.props or {}), urn=arg.urn,
                          parent=getattr(parent, "urn", None))


def _config(policy: rules.Policy, args) -> dict:
    config = policy.defaults()
    config.update({k: v for k, v in dict(args.get_config() or {}).items() if k != "enforcementLevel"})
    return config


def build_policies():
    """CrossGuard policies wrapping the validators of ``rules.POLICIES``."""
    from pulumi_policy import (
        EnforcementLevel,
        PolicyConfigSchema,
        ResourceValidationPolicy,
        StackValidationPolicy,
    )

    built = []
    for policy in rules.POLICIES:
        schema = PolicyConfigSchema(properties={k: dict(v) for k, v in policy.config_schema.items()}) \
            if policy.config_schema else None
        common = dict(
            name=policy.name,
            description=policy.description,
            enforcement_level=EnforcementLevel(policy.default_level),
            config_schema=schema,
            remediation_steps=policy.remediation,
        )
        if policy.kind == "resource":
            def validate(args, report_violation, _p=policy):
                _p.validate(_resource(args), _config(_p, args), report_violation)

            built.append(ResourceValidationPolicy(validate=validate, **common))
        else:
            def validate_stack(args, report_violation, _p=policy):
                _p.validate([_resource(r) for r in args.resources], _config(_p, args), report_violation)

            built.append(StackValidationPolicy(validate=validate_stack, **common))
    return built


def main() -> None:
    from pulumi_policy import PolicyPack

    PolicyPack(name=rules.PACK_NAME, policies=build_policies(),
               description="mlplat: cost tags, tracking, approvals, monitoring, safe rollout, storage, spend, databases.")


if __name__ == "__main__":
    main()
