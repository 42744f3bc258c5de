"""Provider-neutral checks of a deploy request, run by every serving provider before it applies one
(defined with the rollout rules in ``mlplat.services.rollout``, whose cloud serving applies them too).

The serving contract itself is ``mlplat.contracts.EndpointDeployer``.
"""
from __future__ import annotations

from mlplat.services.rollout import CheckedDeploy, check_deploy

__all__ = ["CheckedDeploy", "check_deploy"]
