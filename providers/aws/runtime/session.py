"""One AWS session per stack: settings checks, boto3 clients with retries, and error mapping.

``call`` is the only way runtime code talks to AWS: it retries throttling with
exponential backoff and jitter on top of botocore's own (``standard``) retries, turns
access denied into :class:`AwsAccessDenied` naming the IAM action, and every other
client error into :class:`ExternalError` naming the operation. ``AWS_ENDPOINT_URL``
(honoured by boto3 itself) points the clients at another endpoint, e.g. moto's server.
"""
from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from mlplat.errors import ExitCode, ExternalError, NotFound, StackError
from mlplat_providers.aws.settings import AwsProviderSpec

THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "RequestThrottled", "RequestThrottledException", "SlowDown", "ProvisionedThroughputExceededException",
})  # LimitExceededException is a quota, not a rate: it is never retried
ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess",
                           "NotAuthorized", "AuthorizationError", "ExpiredToken", "ExpiredTokenException",
                           "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch"})
SERVICE_PREFIX = {"sagemaker": "sagemaker", "s3": "s3", "cloudwatch": "cloudwatch", "ce": "ce", "sts": "sts",
                  "sagemaker-runtime": "sagemaker", "sagemaker-featurestore-runtime": "sagemaker"}
# Cost Explorer has one endpoint, in us-east-1, whatever the stack's region.
GLOBAL_REGION = {"ce": "us-east-1"}


class AwsAccessDenied(ExternalError):
    """AWS refused an action for lack of permission (or with invalid or expired credentials)."""

    exit_code = ExitCode.DENIED


class AwsUnavailable(ExternalError):
    """AWS could not be reached, or kept throttling after every retry."""


@dataclass
class RetryPolicy:
    """Our own retries around botocore's: ``attempts`` calls at most, sleeping ``base * 2**n`` (capped, jittered)."""

    attempts: int = 6
    base_seconds: float = 0.5
    cap_seconds: float = 20.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int) -> float:
        return min(self.cap_seconds, self.base_seconds * 2 ** attempt) * (0.5 + random.random() / 2)


def iam_action(client: Any, operation: str) -> str:
    """``sagemaker:CreateModelPackage`` for ``create_model_package`` on a SageMaker client."""
    service = getattr(getattr(client, "meta", None), "service_model", None)
    prefix = SERVICE_PREFIX.get(getattr(service, "service_name", ""), getattr(service, "service_name", "aws"))
    op = client.meta.method_to_api_mapping.get(operation) if hasattr(client, "meta") else None
    return f"{prefix}:{op or ''.join(p.capitalize() for p in operation.split('_'))}"


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def call(client: Any, operation: str, *, retry: RetryPolicy | None = None, not_found: Iterable[str] = (),
         what: str | None = None, **params: Any) -> dict[str, Any]:
    """``client.<operation>(**params)`` with throttling retries and mlplat errors.

    ``not_found``: error codes (or message fragments) that mean the thing does not exist; they raise
    :class:`NotFound` so callers can ``except NotFound`` for create-if-missing logic.
    """
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    retry = retry or RetryPolicy()
    action = iam_action(client, operation)
    label = what or action
    for attempt in range(retry.attempts):
        try:
            return getattr(client, operation)(**params)
        except ClientError as exc:
            code = error_code(exc)
            message = str((exc.response.get("Error") or {}).get("Message") or exc)
            if code in THROTTLING or "rate exceeded" in message.lower():
                if attempt + 1 < retry.attempts:
                    retry.sleep(retry.delay(attempt))
                    continue
                raise AwsUnavailable(f"{label}: AWS kept throttling {action} after {retry.attempts} attempts",
                                     hint="retry later, or ask for a higher API rate quota", action=action) from None
            if code in ACCESS_DENIED:
                raise AwsAccessDenied(f"AWS denied {action}: {message}", where=label,
                                      hint=f"grant {action} to the identity running mlplat (its role or user policy), "
                                           "or check that the credentials are valid and not expired",
                                      action=action, code=code) from None
            if any(marker == code or marker.lower() in message.lower() for marker in not_found):
                raise NotFound(f"{label}: {message}", action=action, code=code) from None
            raise ExternalError(f"{action} failed ({code or 'error'}): {message}", where=label, action=action,
                                code=code) from None
        except NoCredentialsError:
            raise AwsAccessDenied(f"no AWS credentials found for {action}", where=label,
                                  hint="set AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run on a role",
                                  action=action) from None
        except EndpointConnectionError as exc:
            if attempt + 1 < retry.attempts:
                retry.sleep(retry.delay(attempt))
                continue
            raise AwsUnavailable(f"cannot reach AWS for {action}: {exc}", where=label,
                                 hint="check the network, the region, and AWS_ENDPOINT_URL if set") from None
        except BotoCoreError as exc:
            raise ExternalError(f"{action} failed: {exc}", where=label, action=action) from None
    raise AssertionError("unreachable")  # pragma: no cover


class AwsSession:
    """The stack's AWS settings, checked, and cached boto3 clients."""

    def __init__(self, spec, *, retry: RetryPolicy | None = None):
        if not isinstance(spec.provider, AwsProviderSpec):
            raise StackError(f"stack '{spec.name}' uses the {spec.provider.kind} provider, not aws",
                             where=spec.path or None)
        self.spec = spec
        self.retry = retry or RetryPolicy()
        self._clients: dict[str, Any] = {}
        region = spec.provider.region  # required by the stack's settings model
        pulumi_region = (spec.pulumi_config or {}).get("aws:region")
        if pulumi_region and pulumi_region != region:
            raise StackError(f"aws:region ({pulumi_region}) and mlplat:provider.region ({region}) disagree",
                             where=spec.path or None, hint="set both to the region the team's platform runs in")
        self.region = region

    @cached_property
    def plan(self):
        from mlplat_providers.aws.plan import stack_plan

        return stack_plan(self.spec)

    def client(self, service: str):
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=60,
                            user_agent_extra="mlplat")
            session = boto3.session.Session(region_name=GLOBAL_REGION.get(service, self.region))
            self._clients[service] = session.client(service, config=config)
        return self._clients[service]

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        return call(self.client(service), operation, retry=self.retry, **params)

    @cached_property
    def account(self) -> str:
        """The stack's account id, checked against the credentials' account (never deploys to another account)."""
        configured = self.spec.provider.account_id
        if not configured:
            raise StackError(f"stack '{self.spec.name}' has no AWS account id", where=self.spec.path or None,
                             hint="set mlplat:provider.accountId (the 12-digit id of the team's account) in the "
                                  "stack file; mlplat checks it against the credentials before changing anything")
        actual = self.call("sts", "get_caller_identity", what="checking the AWS account")["Account"]
        if actual != configured:
            raise StackError(f"the AWS credentials belong to account {actual}, but stack '{self.spec.name}' is in "
                             f"account {configured}", where=self.spec.path or None,
                             hint="use the team's credentials (AWS_PROFILE) or fix mlplat:provider.accountId")
        return configured

    @property
    def bucket(self) -> str:
        return self.plan.bucket

    @property
    def role_arn(self) -> str:
        from mlplat_providers.aws.plan import slug

        return f"arn:aws:iam::{self.account}:role/{slug(f'{self.plan.prefix}-platform', 64)}"

    def serving_image(self) -> str:
        from mlplat_providers.aws.plan import training_image

        return os.environ.get("MLPLAT_AWS_SERVING_IMAGE") or \
            training_image(self.region, self.account).replace("/train:", "/serve:")
