"""One GCP session per stack: settings checks, Google clients, retries and error mapping.

Every runtime module builds its clients here: Vertex AI's GAPIC clients over REST
(``api_transport="rest"``, regional endpoint ``<region>-aiplatform.googleapis.com``), Cloud
Monitoring's ``MetricServiceClient`` over gRPC and BigQuery's ``Client``, for the stack's project
and region, with credentials from google-auth's default chain (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, the metadata server).

Endpoint overrides (used by the tests' fakes; with any of them set the clients use anonymous
credentials):

- ``MLPLAT_GCP_VERTEX_ENDPOINT``: ``http://127.0.0.1:PORT``, Vertex AI's REST API;
- ``MLPLAT_GCP_MONITORING_ENDPOINT``: ``host:port``, Cloud Monitoring over an insecure gRPC channel;
- ``MLPLAT_GCP_BIGQUERY_ENDPOINT``: ``http://127.0.0.1:PORT``, BigQuery's REST API (and GCS's JSON API,
  ``MLPLAT_GCP_STORAGE_ENDPOINT``, defaulting to the Vertex override's server).

``call`` is the only way runtime code talks to Google: it retries quota and availability errors
(``RESOURCE_EXHAUSTED``/429, ``UNAVAILABLE``/503) with exponential backoff, then raises
:class:`GcpUnavailable`; a ``PERMISSION_DENIED`` becomes :class:`GcpPermissionDenied` naming the IAM
permission (``aiplatform.endpoints.deploy``); every other API error an :class:`ExternalError`.
"""
from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from mlplat.errors import Conflict, ExitCode, ExternalError, NotFound, StackError

VERTEX_ENV = "MLPLAT_GCP_VERTEX_ENDPOINT"
MONITORING_ENV = "MLPLAT_GCP_MONITORING_ENDPOINT"
BIGQUERY_ENV = "MLPLAT_GCP_BIGQUERY_ENDPOINT"
STORAGE_ENV = "MLPLAT_GCP_STORAGE_ENDPOINT"
OVERRIDES = (VERTEX_ENV, MONITORING_ENV, BIGQUERY_ENV, STORAGE_ENV)

# "Permission 'aiplatform.endpoints.deploy' denied on resource '//aiplatform.googleapis.com/...'"
_PERMISSION = re.compile(r"[Pp]ermission '?([a-z][a-zA-Z0-9]*(?:\.[a-zA-Z0-9]+){2,})'? denied")

# The IAM permission each Vertex AI method needs, for errors that do not name it
# (https://cloud.google.com/vertex-ai/docs/general/access-control#permissions).
METHOD_PERMISSION = {
    "upload_model": "aiplatform.models.upload",
    "get_model": "aiplatform.models.get",
    "list_models": "aiplatform.models.list",
    "list_model_versions": "aiplatform.models.list",
    "update_model": "aiplatform.models.update",
    "delete_model": "aiplatform.models.delete",
    "delete_model_version": "aiplatform.models.delete",
    "merge_version_aliases": "aiplatform.models.update",
    "create_endpoint": "aiplatform.endpoints.create",
    "get_endpoint": "aiplatform.endpoints.get",
    "list_endpoints": "aiplatform.endpoints.list",
    "update_endpoint": "aiplatform.endpoints.update",
    "delete_endpoint": "aiplatform.endpoints.delete",
    "deploy_model": "aiplatform.endpoints.deploy",
    "undeploy_model": "aiplatform.endpoints.undeploy",
    "mutate_deployed_model": "aiplatform.endpoints.deploy",
    "list_time_series": "monitoring.timeSeries.list",
    "create_time_series": "monitoring.timeSeries.create",
}


class GcpPermissionDenied(ExternalError):
    """Google refused a call for lack of an IAM permission (or with invalid credentials)."""

    exit_code = ExitCode.DENIED


class GcpUnavailable(ExternalError):
    """Google could not be reached, or kept answering RESOURCE_EXHAUSTED / UNAVAILABLE after every retry."""


@dataclass
class RetryPolicy:
    """``attempts`` calls at most, sleeping ``base * 2**n`` seconds (capped, jittered) between them."""

    attempts: int = 6
    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int) -> float:
        return float(min(self.cap_seconds, self.base_seconds * 2 ** attempt) * (0.5 + self.rng.random() / 2))


def permission_of(exc: BaseException, method: str) -> str:
    """The IAM permission a PERMISSION_DENIED names: ``ErrorInfo.metadata.permission``, the message's
    ``Permission 'x.y.z' denied``, or the method's documented permission."""
    for detail in getattr(exc, "details", None) or []:
        metadata = getattr(detail, "metadata", None)
        if metadata and metadata.get("permission"):
            return str(metadata["permission"])
        if isinstance(detail, dict) and (detail.get("metadata") or {}).get("permission"):
            return str(detail["metadata"]["permission"])
    found = _PERMISSION.search(str(getattr(exc, "message", "") or exc))
    if found:
        return found.group(1)
    return METHOD_PERMISSION.get(method, f"the permission for {method}")


def call(function: Callable[..., Any], *args: Any, method: str | None = None, retry: RetryPolicy | None = None,
         not_found: bool = False, exists: bool = False, what: str | None = None, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` with quota retries and mlplat errors.

    ``method`` names the API method for messages and permissions (defaults to the function's name);
    ``not_found=True`` raises :class:`NotFound` on NOT_FOUND/404 so callers can create what is missing;
    ``exists=True`` raises :class:`Conflict` on ALREADY_EXISTS/409 (made meanwhile by a concurrent caller).
    """
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    retry = retry or RetryPolicy()
    method = method or str(getattr(function, "__name__", "call"))
    label = what or method
    for attempt in range(retry.attempts):
        try:
            return function(*args, **kwargs)
        except (gexc.ResourceExhausted, gexc.TooManyRequests, gexc.ServiceUnavailable) as exc:
            if attempt + 1 < retry.attempts:
                retry.sleep(retry.delay(attempt))
                continue
            quota = isinstance(exc, gexc.ResourceExhausted | gexc.TooManyRequests)
            raise GcpUnavailable(
                f"{label}: Google answered {'RESOURCE_EXHAUSTED' if quota else 'UNAVAILABLE'} to {method} "
                f"{retry.attempts} times: {exc.message}",
                hint="ask for a higher quota (IAM & Admin > Quotas) or retry later" if quota else "retry later",
                method=method) from None
        except (gexc.PermissionDenied, gexc.Forbidden) as exc:
            permission = permission_of(exc, method)
            raise GcpPermissionDenied(f"Google denied {permission}: {exc.message}", where=label,
                                      hint=f"grant {permission} (e.g. through roles/aiplatform.user) to the identity "
                                           "running mlplat, or check its credentials",
                                      permission=permission, method=method) from None
        except gexc.NotFound as exc:  # 404 over REST and NOT_FOUND over gRPC alike
            if not_found:
                raise NotFound(f"{label}: {exc.message}", method=method) from None
            raise ExternalError(f"{method} failed (NOT_FOUND): {exc.message}", where=label, method=method) from None
        except (gexc.AlreadyExists, gexc.Conflict) as exc:
            if exists:
                raise Conflict(f"{label}: {exc.message}", method=method) from None
            raise ExternalError(f"{method} failed (ALREADY_EXISTS): {exc.message}", where=label,
                                method=method) from None
        except gexc.GoogleAPICallError as exc:
            status = getattr(exc, "grpc_status_code", None)
            code = getattr(status, "name", None) or str(getattr(exc, "code", "") or "error")
            raise ExternalError(f"{method} failed ({code}): {exc.message}", where=label, method=method,
                                code=code) from None
        except auth_exc.DefaultCredentialsError as exc:
            raise GcpPermissionDenied(f"no Google credentials found for {method}: {exc}", where=label,
                                      hint="run `gcloud auth application-default login`, or set "
                                           "GOOGLE_APPLICATION_CREDENTIALS to a service account key") from None
    raise AssertionError("unreachable")  # pragma: no cover


def overridden() -> bool:
    """Whether any endpoint override is set (the clients then use anonymous credentials)."""
    return any(os.environ.get(name) for name in OVERRIDES)


class GcpSession:
    """The stack's GCP settings, checked, and cached clients."""

    def __init__(self, spec: Any, *, retry: RetryPolicy | None = None):
        from mlplat_providers.gcp.settings import GcpProviderSpec

        if not isinstance(spec.provider, GcpProviderSpec):
            raise StackError(f"stack '{spec.name}' uses the {spec.provider.kind} provider, not gcp",
                             where=spec.path or None)
        self.spec = spec
        self.retry = retry or RetryPolicy()
        self.project: str = spec.provider.project
        self.region: str = spec.provider.region
        if not self.project or not self.region:
            raise StackError(f"stack '{spec.name}' has no GCP project or region", where=spec.path or None,
                             hint="set mlplat:provider.project and mlplat:provider.region in the stack file")
        pulumi = spec.pulumi_config or {}
        for key, value in (("gcp:project", self.project), ("gcp:region", self.region)):
            if pulumi.get(key) and pulumi[key] != value:
                raise StackError(f"{key} ({pulumi[key]}) and mlplat:provider.{key[4:]} ({value}) disagree",
                                 where=spec.path or None, hint="set both to the team's project and region")
        self._clients: dict[str, Any] = {}

    # --- names ------------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """``projects/<project>/locations/<region>``: the parent of every Vertex AI resource."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def vertex_endpoint(self) -> str:
        return os.environ.get(VERTEX_ENV) or f"{self.region}-aiplatform.googleapis.com"

    # --- clients ------------------------------------------------------------------------------

    def credentials(self) -> Any:
        if overridden():
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()  # type: ignore[no-untyped-call]
        import google.auth

        try:
            credentials, _project = google.auth.default(
                scopes=["https://www.googleapis.com/auth/cloud-platform"])
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise GcpPermissionDenied(f"no Google credentials found: {exc}",
                                      hint="run `gcloud auth application-default login`, or set "
                                           "GOOGLE_APPLICATION_CREDENTIALS to a service account key") from None
        return credentials

    def vertex(self, service: str) -> Any:
        """A Vertex AI GAPIC client over REST: ``vertex("model")`` → ``aiplatform_v1.ModelServiceClient``."""
        key = f"vertex:{service}"
        if key not in self._clients:
            from google.api_core.client_options import ClientOptions
            from google.cloud import aiplatform_v1

            cls = getattr(aiplatform_v1, "".join(p.capitalize() for p in service.split("_")) + "ServiceClient")
            self._clients[key] = cls(credentials=self.credentials(), transport="rest",
                                     client_options=ClientOptions(api_endpoint=self.vertex_endpoint))
        return self._clients[key]

    def init_aiplatform(self) -> None:
        """``aiplatform.init`` for the high-level SDK (``aiplatform.Model`` ...), over REST, same endpoint."""
        from google.cloud import aiplatform

        aiplatform.init(project=self.project, location=self.region, credentials=self.credentials(),
                        api_endpoint=self.vertex_endpoint, api_transport="rest")

    def monitoring(self) -> Any:
        """Cloud Monitoring's ``MetricServiceClient`` (gRPC; insecure channel to an override)."""
        if "monitoring" not in self._clients:
            from google.cloud import monitoring_v3

            target = os.environ.get(MONITORING_ENV)
            if target:
                import grpc
                from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

                channel = grpc.insecure_channel(target)
                self._clients["monitoring"] = monitoring_v3.MetricServiceClient(
                    transport=MetricServiceGrpcTransport(channel=channel))
            else:
                self._clients["monitoring"] = monitoring_v3.MetricServiceClient(credentials=self.credentials())
        return self._clients["monitoring"]

    def bigquery(self) -> Any:
        """BigQuery's ``Client`` for the stack's project (REST; an override's endpoint when set)."""
        if "bigquery" not in self._clients:
            from google.api_core.client_options import ClientOptions
            from google.cloud import bigquery

            endpoint = os.environ.get(BIGQUERY_ENV)
            options = ClientOptions(api_endpoint=endpoint) if endpoint else None
            self._clients["bigquery"] = bigquery.Client(project=self.project, credentials=self.credentials(),
                                                        location=self.region, client_options=options)
        return self._clients["bigquery"]

    @property
    def storage_endpoint(self) -> str:
        """GCS's JSON API root: ``https://storage.googleapis.com`` or the test override."""
        return (os.environ.get(STORAGE_ENV) or os.environ.get(VERTEX_ENV) or
                "https://storage.googleapis.com").rstrip("/")

    def storage(self) -> Any:
        """GCS's ``Client`` for the stack's project (JSON API; the override's server when set)."""
        if "storage" not in self._clients:
            from google.cloud import storage

            override = os.environ.get(STORAGE_ENV) or os.environ.get(VERTEX_ENV)
            options = {"api_endpoint": override} if override else None
            self._clients["storage"] = storage.Client(project=self.project, credentials=self.credentials(),
                                                      client_options=options)
        return self._clients["storage"]

    @cached_property
    def plan(self) -> Any:
        """The stack's names (bucket, endpoint ids, repositories, labels), as the Pulumi program makes them."""
        from mlplat_providers.gcp.plan import stack_plan

        return stack_plan(self.spec)

    @property
    def labels(self) -> dict[str, str]:
        """Labels of everything the runtime creates: the cost tags as labels and ``mlplat-managed: "true"``."""
        return dict(self.plan.labels)

    def serving_image(self) -> str:
        """The serving container image the stack's Artifact Registry holds (``MLPLAT_GCP_SERVING_IMAGE`` overrides)."""
        return os.environ.get("MLPLAT_GCP_SERVING_IMAGE") or \
            f"{self.region}-docker.pkg.dev/{self.project}/{self.plan.docker_repository}/serve:latest"

    def call(self, function: Callable[..., Any], *args: Any, method: str | None = None, not_found: bool = False,
             exists: bool = False, what: str | None = None, **kwargs: Any) -> Any:
        return call(function, *args, method=method, retry=self.retry, not_found=not_found, exists=exists, what=what,
                    **kwargs)

    def wait(self, operation: Any, *, what: str, timeout: float = 1800.0) -> Any:
        """The result of a long-running operation (polled through ``operations.get``), with mlplat errors."""
        return self.call(operation.result, timeout=timeout, method=what, what=what)

