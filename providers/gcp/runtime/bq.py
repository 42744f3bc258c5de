"""BigQuery calls of the gcp runtime: retries and errors as BigQuery reports them.

BigQuery answers quota and rate errors with HTTP 403 and the reasons ``quotaExceeded`` /
``rateLimitExceeded`` (https://cloud.google.com/bigquery/docs/error-messages), not with 429 as most Google
APIs do, and a missing IAM permission with 403 ``accessDenied`` whose message names the permission
("User does not have bigquery.jobs.create permission in project p."). :func:`query` retries the former
with the session's backoff, turns the latter into ``GcpPermissionDenied`` naming the permission, and
leaves everything else to the session's ``call``.
"""
from __future__ import annotations

import re
from typing import Any

_PERMISSION = re.compile(r"does not have (?:the )?'?([a-z]+(?:\.[a-zA-Z]+){2,})'? permission")
QUOTA_REASONS = frozenset({"quotaExceeded", "rateLimitExceeded"})
QUERY_PERMISSION = "bigquery.jobs.create"  # running a query job (https://cloud.google.com/bigquery/docs/access-control)


def _reasons(exc: Any) -> set[str]:
    return {str(e.get("reason")) for e in getattr(exc, "errors", None) or [] if isinstance(e, dict)}


class _Refused(Exception):
    """A BigQuery 403 the session's generic mapping would misread (carried past it unchanged)."""

    def __init__(self, exc: Any):
        super().__init__(str(exc))
        self.exc = exc


def query(gcp: Any, sql: str, params: list[Any], *, what: str, not_found: bool = False) -> list[dict[str, Any]]:
    """Rows of ``sql`` (standard SQL, named parameters) as dicts, through ``jobs.query``."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    from mlplat_providers.gcp.runtime.session import GcpPermissionDenied, GcpUnavailable

    client = gcp.bigquery()
    config = bigquery.QueryJobConfig(query_parameters=params)

    def run() -> list[dict[str, Any]]:
        try:
            # the client's own retries sleep on the wall clock: the session's policy (injectable) retries instead
            rows = client.query_and_wait(sql, job_config=config, retry=None, job_retry=None)
            return [dict(row.items()) for row in rows]
        except gexc.Forbidden as exc:  # PermissionDenied included: BigQuery's 403s say PERMISSION_DENIED
            raise _Refused(exc) from None

    retry = gcp.retry
    for attempt in range(retry.attempts):
        try:
            return list(gcp.call(run, method="bigquery.jobs.query", not_found=not_found, what=what))
        except _Refused as refused:
            exc = refused.exc
            if _reasons(exc) & QUOTA_REASONS:
                if attempt + 1 < retry.attempts:
                    retry.sleep(retry.delay(attempt))
                    continue
                raise GcpUnavailable(f"{what}: BigQuery answered {'/'.join(sorted(_reasons(exc)))} "
                                     f"{retry.attempts} times: {exc.message}",
                                     hint="wait for the quota to refill or ask for a higher BigQuery quota "
                                          "(IAM & Admin > Quotas)", method="bigquery.jobs.query") from None
            found = _PERMISSION.search(str(exc.message))
            permission = found.group(1) if found else QUERY_PERMISSION
            raise GcpPermissionDenied(f"Google denied {permission}: {exc.message}", where=what,
                                      hint=f"grant {permission} (roles/bigquery.jobUser on the project, and "
                                           "roles/bigquery.dataViewer on the dataset) to the identity running mlplat",
                                      permission=permission, method="bigquery.jobs.query") from None
    raise AssertionError("unreachable")  # pragma: no cover
