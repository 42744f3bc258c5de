"""``Capability.SERVING``: deploy with a rollout strategy, roll back, inspect, serve.

The local provider applies rollouts to the platform database and serves them with the
gateway (``mlplat.serving.gateway``); a cloud provider maps the same spec onto its
endpoint variants. Both check a deploy request with ``mlplat.services.serving.check_deploy``
before applying it.
"""
from __future__ import annotations

import abc
import socket
from collections.abc import Sequence
from typing import Any, ClassVar

from mlplat.contracts.base import Contract
from mlplat.contracts.inventory import ServedEndpoint


class EndpointDeployer(Contract):
    """Endpoints per (model, environment) and the rollouts that change what they serve."""

    #: Whether :meth:`serve` answers HTTP on this machine (the platform's gateway), so that several
    #: worker processes may share its port (:meth:`serve_socket`). False where a cloud serves the
    #: traffic and ``serve`` only steps rollouts.
    serves_http: ClassVar[bool] = False

    @abc.abstractmethod
    def deploy(self, name: str, version: int, *, environment: str, strategy: str, weights: str | None = None,
               steps: Sequence[int] | None = None, bake_seconds: float | None = None,
               percent: int | None = None) -> dict[str, Any]:
        """Check the version may serve in ``environment`` (gate, approvals), then apply the rollout spec
        atomically. Returns the endpoint as a dict. Raises ``Denied``/``NotFound``/``RolloutError``
        and changes nothing on refusal. Not idempotent: each call is a new deployment."""

    @abc.abstractmethod
    def rollback(self, name: str, *, environment: str, to: int | None = None,
                 reason: str | None = None) -> dict[str, Any]:
        """Send 100 % of traffic to the stable (or previous, or ``to``) version, ending any rollout.
        Returns the endpoint. ``Conflict`` if there is nothing to roll back to."""

    @abc.abstractmethod
    def list(self, environment: str | None = None) -> list[dict[str, Any]]:
        """Every endpoint (all environments when ``environment`` is None)."""

    @abc.abstractmethod
    def show(self, name: str, *, environment: str) -> dict[str, Any]:
        """One endpoint with its served-version history. ``NotFound`` if absent."""

    @abc.abstractmethod
    def rollout_status(self, name: str, *, environment: str) -> dict[str, Any]:
        """Current rollout (step, percent, latest analysis per variant), A/B readout or shadow comparison,
        and the decision history."""

    @abc.abstractmethod
    def serve(self, *, environment: str, host: str, port: int, port_file: str | None = None,
              controller: bool = True) -> None:
        """Run the gateway in the foreground until interrupted (blocking)."""

    def serve_socket(self, listener: socket.socket, *, environment: str, port_file: str | None = None,
                     controller: bool = True) -> None:
        """Run the gateway on ``listener``, a socket already bound and listening (a worker of
        ``mlplat serve --workers N`` inherits its supervisor's), until interrupted (blocking). The
        port is written to ``port_file`` once it accepts connections; nothing is printed.

        Optional: only a provider whose :attr:`serves_http` is true implements it."""
        self._unsupported("serving on a shared socket", hint="run `mlplat serve` with --workers 1")

    # --- optional operations ------------------------------------------------------------------

    def step(self, name: str, *, environment: str) -> dict[str, Any]:
        """Judge the running canary rollout of ``name`` in ``environment`` once, on the metrics since
        its step began, and act on the verdict: advance to the next step (or promote after the last),
        keep waiting, or roll back. Returns ``{action, reasons, metrics, endpoint}``. ``Conflict`` if no
        canary is running. Not idempotent: each call may move the rollout.

        Optional: a provider whose gateway judges canaries inside :meth:`serve` raises
        ``CapabilityNotSupported``."""
        self._unsupported("canary step", hint="the stack's gateway judges canaries itself while `mlplat serve` runs")

    def inventory(self) -> Sequence[ServedEndpoint]:
        """Every model endpoint of the provider's account and region, whoever made it, with its tags and
        whether it carries the platform's (read-only; the adoption report compares them with the ledger).

        Optional: a provider that cannot list what runs beside it raises ``CapabilityNotSupported``."""
        self._unsupported("endpoint inventory", hint="this provider cannot list endpoints made outside the platform")
