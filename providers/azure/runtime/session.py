"""One Azure session per stack: settings checks, the Azure clients, retries and error mapping.

Every runtime module builds its clients here, for the stack's subscription, resource group and Azure
Machine Learning workspace, with azure-identity's ``DefaultAzureCredential`` (environment variables,
managed identity, ``az login``):

- ``ml()``: azure-ai-ml's ``MLClient`` (models, online endpoints and deployments, jobs, schedules);
- ``monitor()``: azure-mgmt-monitor's ``MonitorManagementClient`` (metrics of online deployments);
- ``cost()``: azure-mgmt-costmanagement's ``CostManagementClient`` (queries grouped by the team tag).

Endpoint overrides (used by the tests' fakes; with them set the clients use a fixed fake token):
``MLPLAT_AZURE_ARM_ENDPOINT`` = ``http://127.0.0.1:PORT`` replaces Azure Resource Manager
(``https://management.azure.com``) for every client: azure-ai-ml through a custom cloud whose
``resource_manager_endpoint`` is the override, the management clients through ``base_url``;
``MLPLAT_AZURE_STORAGE_ENDPOINT`` = ``http://127.0.0.1:PORT`` replaces Blob Storage
(``https://<account>.blob.core.windows.net``) with path-style account URLs, as Azurite serves them
(default: the ARM override's server); ``MLPLAT_AZURE_METRICS_ENDPOINT`` replaces Azure Monitor's
custom-metrics ingestion host (``https://<region>.monitoring.azure.com``; default: the ARM override's server).

``call`` is the only way runtime code talks to Azure: it retries 429 (honouring ``Retry-After``) and
503 through an injected sleeper, then raises :class:`AzureUnavailable`; a 403 ``AuthorizationFailed``
becomes :class:`AzurePermissionDenied` naming the action (``Microsoft.MachineLearningServices/
workspaces/onlineEndpoints/write``); 404 becomes :class:`NotFound` when asked; every other error an
:class:`ExternalError`.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlplat.errors import ExitCode, ExternalError, NotFound, StackError

ARM_ENV = "MLPLAT_AZURE_ARM_ENDPOINT"
STORAGE_ENV = "MLPLAT_AZURE_STORAGE_ENDPOINT"
METRICS_ENV = "MLPLAT_AZURE_METRICS_ENDPOINT"
OVERRIDES = (ARM_ENV, STORAGE_ENV, METRICS_ENV)
METRICS_SCOPE = "https://monitoring.azure.com/.default"
MANAGED_TAG = "mlplat-managed"
ARM_SCOPE = "https://management.azure.com/.default"

# "The client '...' with object id '...' does not have authorization to perform action
#  'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/write' over scope '...'"
_ACTION = re.compile(r"perform action '([A-Za-z0-9./_-]+)'")
_RETRY_AFTER = ("retry-after-ms", "x-ms-retry-after-ms", "retry-after")


class AzurePermissionDenied(ExternalError):
    """Azure refused a call for lack of an RBAC action (403 AuthorizationFailed) or of credentials."""

    exit_code = ExitCode.DENIED


class AzureUnavailable(ExternalError):
    """Azure could not be reached, or kept answering 429 / 503 after every retry."""


@dataclass
class RetryPolicy:
    """``attempts`` calls at most; between them ``Retry-After`` seconds when the answer names it (capped),
    else ``base * 2**n``. ``sleep`` is injected so tests never wait."""

    attempts: int = 6
    base_seconds: float = 1.0
    cap_seconds: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return float(min(self.cap_seconds, max(0.0, retry_after)))
        return float(min(self.cap_seconds, self.base_seconds * 2 ** attempt))


def retry_after(exc: BaseException) -> float | None:
    """Seconds the answer's ``Retry-After`` (or ``retry-after-ms``) header asks to wait, if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name in _RETRY_AFTER:
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        return seconds / 1000.0 if name.endswith("-ms") else seconds
    return None


def action_of(exc: BaseException, default: str | None = None) -> str:
    """The RBAC action a 403 names (``does not have authorization to perform action '<action>'``)."""
    found = _ACTION.search(str(getattr(exc, "message", "") or exc))
    if found:
        return found.group(1)
    return default or "the action this call needs"


def error_code(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code:
        return str(code)
    found = re.search(r"\(([A-Za-z]+)\)|Code: ([A-Za-z]+)", str(exc))
    if found:
        return found.group(1) or found.group(2)
    return str(getattr(exc, "status_code", "") or "error")


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", "") or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def call(function: Callable[..., Any], *args: Any, action: str | None = None, retry: RetryPolicy | None = None,
         not_found: bool = False, what: str | None = None, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` with throttling retries and mlplat errors.

    ``action`` names the RBAC action for 403s that do not name one; ``what`` labels messages;
    ``not_found=True`` raises :class:`NotFound` on 404 so callers can create what is missing.
    """
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError, ServiceRequestError

    retry = retry or RetryPolicy()
    label = what or action or str(getattr(function, "__name__", "call"))
    for attempt in range(retry.attempts):
        try:
            # azure-ai-ml prints progress dots to stdout while it waits: keep stdout for mlplat's own output
            with contextlib.redirect_stdout(sys.stderr):
                return function(*args, **kwargs)
        except ResourceNotFoundError as exc:
            if not_found:
                raise NotFound(f"{label}: {_message(exc)}") from None
            raise ExternalError(f"{label} failed (NotFound): {_message(exc)}", where=label) from None
        except ClientAuthenticationError as exc:
            status = getattr(exc, "status_code", None)
            if status == 403 or "AuthorizationFailed" in str(exc):
                _denied(exc, label, action)
            raise AzurePermissionDenied(f"Azure refused the credentials for {label}: {_message(exc)}", where=label,
                                        hint="run `az login`, or set AZURE_CLIENT_ID/AZURE_TENANT_ID/"
                                             "AZURE_CLIENT_SECRET for a service principal") from None
        except HttpResponseError as exc:
            status = getattr(exc, "status_code", None)
            if status in (429, 503):
                if attempt + 1 < retry.attempts:
                    retry.sleep(retry.delay(attempt, retry_after(exc)))
                    continue
                raise AzureUnavailable(
                    f"{label}: Azure answered {status} {retry.attempts} times: {_message(exc)}",
                    hint="Azure Resource Manager throttles per subscription and principal; retry later" if status == 429
                    else "retry later", status=status) from None
            if status == 403:
                _denied(exc, label, action)
            if status == 404 and not_found:
                raise NotFound(f"{label}: {_message(exc)}") from None
            raise ExternalError(f"{label} failed ({status} {error_code(exc)}): {_message(exc)}", where=label,
                                status=status, code=error_code(exc)) from None
        except ServiceRequestError as exc:
            if attempt + 1 < retry.attempts:
                retry.sleep(retry.delay(attempt, None))
                continue
            raise AzureUnavailable(f"{label}: Azure could not be reached: {exc}", hint="check the network, retry later"
                                   ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _denied(exc: BaseException, label: str, action: str | None) -> None:
    named = action_of(exc, action)
    raise AzurePermissionDenied(
        f"Azure denied {named} (AuthorizationFailed): {_message(exc)}", where=label,
        hint=f"grant a role with {named} (e.g. AzureML Data Scientist on the workspace) to the identity running "
             "mlplat", action=named) from None


def overridden() -> bool:
    """Whether the ARM endpoint override is set (the clients then use the fake credential)."""
    return any(os.environ.get(name) for name in OVERRIDES)


class StaticTokenCredential:
    """A ``TokenCredential`` answering one fixed bearer token (only for the endpoint override)."""

    def __init__(self, token: str = "mlplat-fake-token", expires_in: int = 3600):
        self.token = token
        self.expires_in = expires_in

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + self.expires_in)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo(self.token, int(time.time()) + self.expires_in)

    def close(self) -> None:
        return None


def override_auth_policy(credential: Any) -> Any:
    """A policy sending ``credential``'s bearer token over plain HTTP, for the ``http://127.0.0.1`` override
    only (azure-core's bearer policies refuse non-TLS URLs)."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class _OverrideBearer(SansIOHTTPPolicy):  # type: ignore[type-arg]
        def on_request(self, request: Any) -> None:
            request.context.options.pop("enforce_https", None)  # the SDKs' https switch, meant for this policy
            token = credential.get_token(ARM_SCOPE).token
            request.http_request.headers["Authorization"] = f"Bearer {token}"

    return _OverrideBearer()


class AzureSession:
    """The stack's Azure settings, checked, and cached clients."""

    def __init__(self, spec: Any, *, retry: RetryPolicy | None = None, credential: Any | None = None):
        from mlplat_providers.azure.settings import AzureProviderSpec

        if not isinstance(spec.provider, AzureProviderSpec):
            raise StackError(f"stack '{spec.name}' uses the {spec.provider.kind} provider, not azure",
                             where=spec.path or None)
        self.spec = spec
        self.retry = retry or RetryPolicy()
        provider = spec.provider
        self.subscription_id: str = provider.subscription_id
        self.resource_group: str = provider.resource_group
        self.location: str = provider.location
        self._credential = credential
        self._clients: dict[str, Any] = {}

    # --- names ------------------------------------------------------------------------------

    @property
    def workspace(self) -> str:
        """The workspace's name: ``mlplat:provider.workspace`` when the stack names one, else the default."""
        from mlplat_providers.azure.naming import workspace_name

        named = getattr(self.spec.provider, "workspace", None) or getattr(self.spec.provider, "workspace_name", None)
        return str(named) if named else workspace_name(self.spec.team, self.spec.environment)

    @property
    def workspace_id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/"
                "Microsoft.MachineLearningServices/workspaces/" + self.workspace)

    @property
    def arm_endpoint(self) -> str:
        return (os.environ.get(ARM_ENV) or "https://management.azure.com").rstrip("/")

    @property
    def tags(self) -> dict[str, str]:
        """Tags of everything the runtime creates: the cost tags and ``mlplat-managed: "true"``."""
        tags = {str(k): str(v) for k, v in self.spec.tags.model_dump(by_alias=True).items() if v is not None}
        tags.update({"team": self.spec.team, "environment": self.spec.environment, MANAGED_TAG: "true"})
        return tags

    def endpoint_name(self, model: str) -> str:
        from mlplat_providers.azure.naming import endpoint_name

        return str(endpoint_name(self.subscription_id, self.resource_group, self.workspace, model))

    def deployment_name(self, model: str, version: str | int) -> str:
        from mlplat_providers.azure.naming import deployment_name

        return str(deployment_name(model, version))

    # --- clients ------------------------------------------------------------------------------

    def credential(self) -> Any:
        if self._credential is None:
            if overridden():
                self._credential = StaticTokenCredential()
            else:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
        return self._credential

    def ml(self) -> Any:
        """azure-ai-ml's ``MLClient`` for the stack's workspace (ARM at the override when set)."""
        if "ml" not in self._clients:
            from azure.ai.ml import MLClient

            kwargs: dict[str, Any] = {}
            override = os.environ.get(ARM_ENV)
            if override:
                kwargs.update(cloud=f"mlplat-{override.rstrip('/')}", cloud_metadata={
                    "azure_portal": override, "resource_manager": override, "active_directory": override,
                    "aml_resource_id": override, "storage_endpoint": "core.windows.net",
                    "registry_discovery_endpoint": override}, enable_telemetry=False, show_progress=False,
                    authentication_policy=override_auth_policy(self.credential()))
            before = os.environ.get("AZUREML_CURRENT_CLOUD")
            try:
                self._clients["ml"] = MLClient(self.credential(), self.subscription_id, self.resource_group,
                                               self.workspace, **kwargs)
            finally:  # MLClient records its cloud in the environment, which child processes would inherit
                if override:
                    if before is None:
                        os.environ.pop("AZUREML_CURRENT_CLOUD", None)
                    else:
                        os.environ["AZUREML_CURRENT_CLOUD"] = before
        return self._clients["ml"]

    def storage_account(self) -> str:
        """The name of the workspace's storage account (``properties.storageAccount``)."""
        if "storage_account" not in self._clients:
            workspace = self.call(self.ml().workspaces.get, self.workspace, not_found=True,
                                  action="Microsoft.MachineLearningServices/workspaces/read",
                                  what=f"workspace {self.workspace}")
            account = str(getattr(workspace, "storage_account", "") or "").rstrip("/").rsplit("/", 1)[-1]
            if not account:
                raise StackError(f"workspace {self.workspace} has no storage account",
                                 hint="run `mlplat up` for this stack")
            self._clients["storage_account"] = account
        return str(self._clients["storage_account"])

    def blob_service(self, account: str | None = None) -> Any:
        """azure-storage-blob's ``BlobServiceClient`` on the workspace's storage account (or on ``account``)."""
        key = f"blob:{account}" if account else "blob"
        if key not in self._clients:
            from azure.storage.blob import BlobServiceClient

            account = account or self.storage_account()
            override = os.environ.get(STORAGE_ENV) or os.environ.get(ARM_ENV)
            if override:  # path-style account URL, no credential: the fake serves plain HTTP on 127.0.0.1
                self._clients[key] = BlobServiceClient(f"{override.rstrip('/')}/{account}")
            else:
                self._clients[key] = BlobServiceClient(f"https://{account}.blob.core.windows.net",
                                                       credential=self.credential())
        return self._clients[key]

    def ml_services(self) -> Any:
        """azure-ai-ml's ARM REST client (``arm_ml_service``), for assets ``MLClient`` has no plain verb for
        (feature-store entities and feature-set versions)."""
        if "ml_services" not in self._clients:
            from azure.ai.ml._restclient.arm_ml_service import MachineLearningServicesMgmtClient

            self._clients["ml_services"] = MachineLearningServicesMgmtClient(self.credential(), self.subscription_id,
                                                                            **self._mgmt_kwargs())
        return self._clients["ml_services"]

    @property
    def metrics_endpoint(self) -> str:
        """Azure Monitor's custom-metrics ingestion host for the stack's region
        (``https://<region>.monitoring.azure.com``; ``MLPLAT_AZURE_METRICS_ENDPOINT``, else the ARM override)."""
        override = os.environ.get(METRICS_ENV) or os.environ.get(ARM_ENV)
        return (override or f"https://{self.location}.monitoring.azure.com").rstrip("/")

    def metrics_client(self) -> Any:
        """An azure-core ``PipelineClient`` on :attr:`metrics_endpoint`, sending the credential's bearer token
        for ``https://monitoring.azure.com/``."""
        if "metrics" not in self._clients:
            from azure.core import PipelineClient
            from azure.core.pipeline.policies import BearerTokenCredentialPolicy
            from azure.core.pipeline.policies import RetryPolicy as CoreRetry

            if overridden():
                auth = override_auth_policy(self.credential())
            else:
                auth = BearerTokenCredentialPolicy(self.credential(), METRICS_SCOPE)
            self._clients["metrics"] = PipelineClient(self.metrics_endpoint, policies=[
                CoreRetry(retry_total=0), auth])
        return self._clients["metrics"]

    def _mgmt_kwargs(self) -> dict[str, Any]:
        override = os.environ.get(ARM_ENV)
        if not override:
            return {}
        return {"base_url": override.rstrip("/"), "credential_scopes": [ARM_SCOPE],
                "authentication_policy": override_auth_policy(self.credential())}

    def monitor(self) -> Any:
        """azure-mgmt-monitor's ``MonitorManagementClient`` for the subscription."""
        if "monitor" not in self._clients:
            from azure.mgmt.monitor import MonitorManagementClient

            self._clients["monitor"] = MonitorManagementClient(self.credential(), self.subscription_id,
                                                               **self._mgmt_kwargs())
        return self._clients["monitor"]

    def cost(self) -> Any:
        """azure-mgmt-costmanagement's ``CostManagementClient`` (scopes are passed per query)."""
        if "cost" not in self._clients:
            from azure.mgmt.costmanagement import CostManagementClient

            self._clients["cost"] = CostManagementClient(self.credential(), **self._mgmt_kwargs())
        return self._clients["cost"]

    def call(self, function: Callable[..., Any], *args: Any, action: str | None = None, not_found: bool = False,
             what: str | None = None, **kwargs: Any) -> Any:
        return call(function, *args, action=action, retry=self.retry, not_found=not_found, what=what, **kwargs)

    def wait(self, poller: Any, *, what: str, action: str | None = None, timeout: float = 1800.0) -> Any:
        """The result of a long-running operation (an azure-core ``LROPoller``), with mlplat errors."""
        return self.call(poller.result, timeout, action=action, what=what)

    def run(self, begin: Callable[..., Any], *args: Any, what: str, action: str | None = None,
            timeout: float = 1800.0, **kwargs: Any) -> Any:
        """Start a long-running operation with ``begin(*args, **kwargs)`` and wait for its result, both
        through :meth:`call` (the start is refused, or the operation ends ``Failed``: one mlplat error)."""
        poller = self.call(begin, *args, action=action, what=what, **kwargs)
        return self.wait(poller, what=what, action=action, timeout=timeout)
