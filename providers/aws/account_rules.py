"""Rules AWS applies to notifications, IAM documents and metric queries that mocks do not enforce.

Pulumi's mocks and moto accept a topic no service can publish to, a policy that denies what it
means to allow, and a metric query that returns nothing. Each rule here returns the reasons AWS
would refuse (or silently drop) something, so the program's documents and the runtime's requests
are checked in tests instead of in an account. Stdlib only: no cloud SDK is needed to run them.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

# --- IAM policy grammar ------------------------------------------------------------------------

# The grammar of a policy document: Version 2012-10-17 (policy variables need it), a non-empty list
# of statements, each with Effect Allow|Deny, exactly one of Action/NotAction, exactly one of
# Resource/NotResource in an identity policy, a Principal in a resource policy, unique alphanumeric
# Sids, and condition operators IAM knows (optionally ForAllValues:/ForAnyValue: and ...IfExists).
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_grammar.html
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
POLICY_VERSION = "2012-10-17"
_DOCUMENT_KEYS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_KEYS = frozenset({"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource",
                             "NotResource", "Condition"})
_ACTION = re.compile(r"^([A-Za-z0-9-]+:[A-Za-z0-9*?]+|\*)$")  # IAM matches actions case-insensitively
_SID = re.compile(r"^[A-Za-z0-9]*$")
CONDITION_OPERATORS = frozenset({
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "StringLike",
    "StringNotLike", "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals",
    "NumericGreaterThan", "NumericGreaterThanEquals", "DateEquals", "DateNotEquals", "DateLessThan",
    "DateLessThanEquals", "DateGreaterThan", "DateGreaterThanEquals", "Bool", "BinaryEquals", "IpAddress",
    "NotIpAddress", "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike", "Null",
})
# An inline role policy may hold at most 10,240 characters, whitespace not counted (all inline
# policies of the role together).
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html#reference_iam-quotas-entity-length
INLINE_ROLE_POLICY_CHARS = 10_240


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def statements(document: Mapping[str, Any] | str) -> list[dict[str, Any]]:
    """The statements of a policy document (a JSON string or a parsed one)."""
    doc = json.loads(document) if isinstance(document, str) else document
    return [s for s in _as_list(doc.get("Statement")) if isinstance(s, dict)]


def _operator_known(operator: str) -> bool:
    base = operator.split(":", 1)[1] if operator.startswith(("ForAllValues:", "ForAnyValue:")) else operator
    if base.endswith("IfExists") and base != "Null":
        base = base[: -len("IfExists")]
    return base in CONDITION_OPERATORS


def policy_problems(document: Mapping[str, Any] | str, *, kind: str = "identity") -> list[str]:
    """Why IAM would refuse ``document`` as a policy of ``kind`` (``identity`` or ``resource``); [] when it accepts it."""
    try:
        doc = json.loads(document) if isinstance(document, str) else dict(document)
    except json.JSONDecodeError as exc:
        return [f"the policy is not JSON ({exc})"]
    problems: list[str] = []
    unknown = sorted(set(doc) - _DOCUMENT_KEYS)
    if unknown:
        problems.append(f"the policy has unknown top-level elements {unknown}")
    if doc.get("Version") != POLICY_VERSION:
        problems.append(f"the policy's Version is {doc.get('Version')!r}; use {POLICY_VERSION!r}")
    raw = _as_list(doc.get("Statement"))
    if not raw:
        problems.append("the policy has no Statement")
    sids: set[str] = set()
    for i, statement in enumerate(raw):
        where = f"statement {statement.get('Sid') or i}" if isinstance(statement, dict) else f"statement {i}"
        if not isinstance(statement, dict):
            problems.append(f"{where} is not an object")
            continue
        unknown = sorted(set(statement) - _STATEMENT_KEYS)
        if unknown:
            problems.append(f"{where} has unknown elements {unknown}")
        sid = statement.get("Sid")
        if sid is not None:
            if not isinstance(sid, str) or not _SID.match(sid):
                problems.append(f"{where}: Sid {sid!r} may hold only letters and digits")
            elif sid in sids:
                problems.append(f"{where}: Sid {sid!r} is used twice")
            sids.add(str(sid))
        if statement.get("Effect") not in ("Allow", "Deny"):
            problems.append(f"{where}: Effect is {statement.get('Effect')!r}, not Allow or Deny")
        if ("Action" in statement) == ("NotAction" in statement):
            problems.append(f"{where} needs exactly one of Action and NotAction")
        for action in _as_list(statement.get("Action")) + _as_list(statement.get("NotAction")):
            if not isinstance(action, str) or not _ACTION.match(action):
                problems.append(f"{where}: {action!r} is not an action (service:Action, wildcards allowed)")
        has_resource = ("Resource" in statement) or ("NotResource" in statement)
        if ("Resource" in statement) and ("NotResource" in statement):
            problems.append(f"{where} has both Resource and NotResource")
        has_principal = ("Principal" in statement) or ("NotPrincipal" in statement)
        if kind == "identity":
            if not has_resource:
                problems.append(f"{where} needs a Resource")
            if has_principal:
                problems.append(f"{where}: an identity policy names no Principal")
        elif not has_principal:
            problems.append(f"{where}: a resource policy needs a Principal")
        for resource in _as_list(statement.get("Resource")) + _as_list(statement.get("NotResource")):
            if not isinstance(resource, str) or not (resource == "*" or resource.startswith("arn:")):
                problems.append(f"{where}: resource {resource!r} is neither '*' nor an ARN")
        condition = statement.get("Condition", {})
        if not isinstance(condition, dict):
            problems.append(f"{where}: Condition is not an object")
            continue
        for operator, block in condition.items():
            if not _operator_known(operator):
                problems.append(f"{where}: {operator!r} is not an IAM condition operator")
            if not isinstance(block, dict) or not block:
                problems.append(f"{where}: condition {operator} names no key")
                continue
            for key, value in block.items():
                if not all(isinstance(v, str | bool | int | float) for v in _as_list(value)) or value in ([], ""):
                    problems.append(f"{where}: condition {operator} {key} has no usable value")
    if kind == "identity":
        size = len(re.sub(r"\s", "", json.dumps(doc)))
        if size > INLINE_ROLE_POLICY_CHARS:
            problems.append(f"the policy has {size} characters without whitespace; an inline role policy may "
                            f"hold {INLINE_ROLE_POLICY_CHARS}")
    return problems


def allows(statement: Mapping[str, Any], action: str) -> bool:
    """Whether an Allow ``statement`` names ``action`` (IAM matches actions case-insensitively, with wildcards)."""
    if statement.get("Effect") != "Allow":
        return False
    return any(fnmatchcase(action.lower(), str(pattern).lower()) for pattern in _as_list(statement.get("Action")))


def _condition_keys(statement: Mapping[str, Any]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for block in (statement.get("Condition") or {}).values():
        if isinstance(block, dict):
            for key, value in block.items():
                keys[key.lower()] = value
    return keys


# --- IAM: what a document allows ----------------------------------------------------------------

# Enough of IAM's evaluation to ask what an identity policy allows: an explicit Deny wins, else any
# Allow whose Action, Resource and every condition match, else an implicit deny. A condition on a
# key the request does not carry fails, except ForAllValues (true over an empty set) and ...IfExists.
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda have, want: have == want,
    "StringLike": lambda have, want: fnmatchcase(have, want),
    "ArnEquals": lambda have, want: have == want,
    "ArnLike": lambda have, want: fnmatchcase(have, want),
}


def _condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, Any]) -> bool:
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base[: -len("IfExists")] if if_exists else base
    negate = base.endswith(("NotEquals", "NotLike"))
    positive = base.replace("NotEquals", "Equals").replace("NotLike", "Like")
    match = _MATCHERS.get(positive)
    if match is None:
        raise ValueError(f"the evaluator does not know condition operator {operator}")
    wants = [str(w) for w in _as_list(wanted)]
    present = {k.lower(): v for k, v in context.items()}
    if key.lower() not in present:
        return qualifier == "ForAllValues" or if_exists or (negate and not qualifier)
    have = [str(h) for h in _as_list(present[key.lower()])]

    def one(value: str) -> bool:
        hit = any(match(value, w) for w in wants)
        return not hit if negate else hit

    if qualifier == "ForAllValues":
        return all(one(h) for h in have)
    return any(one(h) for h in have)


def _statement_matches(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, Any]) -> bool:
    actions = [str(a).lower() for a in _as_list(statement.get("Action"))]
    if not any(fnmatchcase(action.lower(), a) for a in actions):
        return False
    if not any(fnmatchcase(resource, str(r)) for r in _as_list(statement.get("Resource"))):
        return False
    return all(_condition_holds(op, key, wanted, context)
               for op, block in (statement.get("Condition") or {}).items() for key, wanted in block.items())


def allowed(document: Mapping[str, Any] | str, action: str, resource: str,
            context: Mapping[str, Any] | None = None) -> bool:
    """Whether the identity policy ``document`` allows ``action`` on ``resource`` for a request carrying the
    condition keys ``context`` (e.g. ``{"aws:RequestTag/team": "fraud", "aws:TagKeys": [...]}``)."""
    context = context or {}
    stmts = statements(document)
    if any(s.get("Effect") == "Deny" and _statement_matches(s, action, resource, context) for s in stmts):
        return False
    return any(s.get("Effect") == "Allow" and _statement_matches(s, action, resource, context) for s in stmts)


# --- IAM: tags on create calls ------------------------------------------------------------------

# A resource being created has no tags yet: aws:ResourceTag/* cannot match on a create call, so an
# Allow conditioned only on it denies every create. Creates are conditioned on the tags sent with
# the request (aws:RequestTag/<key>) and on which tag keys it may send (aws:TagKeys).
# https://docs.aws.amazon.com/IAM/latest/UserGuide/access_tags.html#access_tags_control-requests
# "Create" actions that create nothing (presigned URLs) act on an existing resource instead.
_NOT_CREATING = ("createpresigned",)

# SageMaker actions that take a role for SageMaker to assume: the caller must be allowed to pass it.
# https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_passrole.html
# https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html ("passing roles")
ROLE_PASSING_ACTIONS = (
    "sagemaker:CreateModel", "sagemaker:CreateTrainingJob", "sagemaker:CreateProcessingJob",
    "sagemaker:CreatePipeline", "sagemaker:UpdatePipeline", "sagemaker:CreateFeatureGroup",
    "sagemaker:CreateDataQualityJobDefinition", "sagemaker:CreateModelQualityJobDefinition",
    "sagemaker:CreateMlflowTrackingServer",
)


def _is_create(action: str) -> bool:
    name = action.split(":", 1)[-1].lower()
    return (name.startswith("create") or name in ("*", "create*")) and not name.startswith(_NOT_CREATING)


def create_action_problems(document: Mapping[str, Any] | str) -> list[str]:
    """Allow statements that name create actions but condition them on ``aws:ResourceTag`` (never present on a
    create), or on ``aws:RequestTag`` without ``aws:TagKeys`` (any other tag key could be sent)."""
    problems = []
    for i, statement in enumerate(statements(document)):
        if statement.get("Effect") != "Allow":
            continue
        creates = [a for a in _as_list(statement.get("Action")) if isinstance(a, str) and _is_create(a)]
        if not creates:
            continue
        keys = _condition_keys(statement)
        where = f"statement {statement.get('Sid') or i}"
        resource_tags = sorted(k for k in keys if k.startswith("aws:resourcetag/"))
        request_tags = sorted(k for k in keys if k.startswith("aws:requesttag/"))
        if resource_tags:
            problems.append(f"{where} allows {', '.join(creates)} only when {resource_tags[0]} matches, but a resource "
                            "being created has no tags yet, so IAM denies the call: condition creates on "
                            "aws:RequestTag/<key> and aws:TagKeys, and the other actions on aws:ResourceTag/<key>")
        elif request_tags and "aws:tagkeys" not in keys:
            problems.append(f"{where} allows {', '.join(creates)} on {request_tags[0]} without aws:TagKeys: limit the "
                            "tag keys a create may send")
    return problems


def pass_role_problems(document: Mapping[str, Any] | str, *, service: str = "sagemaker.amazonaws.com") -> list[str]:
    """When ``document`` allows an action that passes a role to ``service``, an ``iam:PassRole`` grant scoped to
    named roles and conditioned on ``iam:PassedToService`` must be there too."""
    stmts = statements(document)
    passing = sorted({a for a in ROLE_PASSING_ACTIONS if any(allows(s, a) for s in stmts)})
    if not passing:
        return []
    grants = [s for s in stmts if allows(s, "iam:PassRole")]
    if not grants:
        return [f"the policy allows {', '.join(passing)}, which pass a role to {service}, but not iam:PassRole: "
                "grant iam:PassRole on the execution role"]
    problems = []
    for grant in grants:
        where = f"statement {grant.get('Sid') or 'iam:PassRole'}"
        if "*" in _as_list(grant.get("Resource")):
            problems.append(f"{where} lets the role pass any role: name the execution role's ARN")
        passed = [str(v) for v in _as_list(_condition_keys(grant).get("iam:passedtoservice"))]
        if service not in passed:
            problems.append(f"{where} has no iam:PassedToService condition naming {service}")
    return problems


# --- SNS topics, their KMS keys and the services that publish to them -----------------------------

# CloudWatch alarms and AWS Budgets publish to an encrypted topic only when the topic's KMS key lets
# their service principal use it (kms:Decrypt, kms:GenerateDataKey*). The AWS managed key
# alias/aws/sns has a key policy nobody can change, so those services can never publish to a topic
# encrypted with it: use a customer managed key.
# https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services
# https://repost.aws/knowledge-center/cloudwatch-receive-sns-for-alarm-trigger
# https://docs.aws.amazon.com/cost-management/latest/userguide/budgets-sns-policy.html
# The topic policy lets each service publish, on behalf of this account only (aws:SourceAccount /
# aws:SourceArn, against the confused deputy).
# https://docs.aws.amazon.com/IAM/latest/UserGuide/confused-deputy.html
# A key policy that does not let the account administer the key is refused by KMS (lockout safety
# check) unless the check is bypassed, and leaves the key unmanageable.
# https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html#key-policy-default-allow-root-enable-iam
ALERT_PUBLISHERS = ("cloudwatch.amazonaws.com", "budgets.amazonaws.com")
KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
AWS_MANAGED_SNS_KEY = "alias/aws/sns"


def _principal_services(statement: Mapping[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    if not isinstance(principal, dict):
        return []
    return [str(s) for s in _as_list(principal.get("Service"))]


def _principal_aws(statement: Mapping[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    return [str(s) for s in _as_list(principal.get("AWS"))] if isinstance(principal, dict) else []


def _aws_managed_key(key_id: str) -> bool:
    return key_id == AWS_MANAGED_SNS_KEY or key_id.endswith(":" + AWS_MANAGED_SNS_KEY) or "alias/aws/" in key_id


def topic_publisher_problems(*, kms_master_key_id: str | None, topic_policy: Mapping[str, Any] | str | None,
                             key_policy: Mapping[str, Any] | str | None = None,
                             publishers: Iterable[str] = ALERT_PUBLISHERS, account: str | None = None,
                             key_rotation: bool | None = None) -> list[str]:
    """Why a service in ``publishers`` could not publish to a topic encrypted with ``kms_master_key_id`` under
    ``topic_policy`` (and the key's ``key_policy``); [] when every one can."""
    problems: list[str] = []
    topic_stmts = statements(topic_policy) if topic_policy else []
    key_stmts = statements(key_policy) if key_policy else []
    for service in publishers:
        grant = [s for s in topic_stmts if service in _principal_services(s) and allows(s, "sns:Publish")]
        if not grant:
            problems.append(f"the topic policy does not let {service} publish (SNS:Publish)")
        elif not any({"aws:sourceaccount", "aws:sourcearn"} & set(_condition_keys(s)) for s in grant):
            problems.append(f"the topic policy lets {service} publish for any account: condition it on "
                            "aws:SourceAccount or aws:SourceArn")
        if not kms_master_key_id:
            continue
        if _aws_managed_key(kms_master_key_id):
            problems.append(f"the topic is encrypted with the AWS managed key {kms_master_key_id}, whose key policy "
                            f"cannot be changed to let {service} use it: {service} can never publish; encrypt the "
                            "topic with a customer managed key that allows it")
            continue
        for action in KEY_ACTIONS:
            if not any(service in _principal_services(s) and allows(s, action) for s in key_stmts):
                problems.append(f"the topic's key policy does not allow {service} {action}: its notifications "
                                "are dropped")
    if kms_master_key_id and not _aws_managed_key(kms_master_key_id):
        if account is not None and not any(
                f"arn:aws:iam::{account}:root" in _principal_aws(s) and allows(s, "kms:PutKeyPolicy") for s in key_stmts):
            problems.append(f"the key policy does not let account {account} administer the key (kms:*): KMS refuses "
                            "such a policy, and the key could not be managed")
        if key_rotation is False:
            problems.append("the topic's key does not rotate: turn on automatic key rotation")
    return problems


# --- CloudWatch metric periods -------------------------------------------------------------------

# GetMetricData / GetMetricStatistics return no data points when the period does not fit the data's
# age: a multiple of 60 s for a start time up to 15 days ago, of 300 s between 15 and 63 days, of
# 3,600 s beyond (CloudWatch keeps 1-minute data 15 days, 5-minute data 63 days, hourly data 455 days).
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricStat.html (Period)
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricStatistics.html (Period)
DAY = 86_400
PERIOD_TIERS = ((15 * DAY, 60), (63 * DAY, 300))
HOURLY = 3_600
# The request reaches CloudWatch a little after it is built: a start this close to a tier's edge is
# treated as beyond it (a multiple of the coarser period is also a multiple of the finer one).
EDGE_MARGIN = 300


def metric_granularity(start: float, now: float) -> int:
    """The period (seconds) that data starting at ``start`` is kept at, asked at ``now``."""
    age = now - start
    for limit, period in PERIOD_TIERS:
        if age < limit - EDGE_MARGIN:
            return period
    return HOURLY


def usage_period(start: float, now: float, end: float | None = None) -> int:
    """The Period of a usage query over ``start`` … ``end`` (default ``now``) sent at ``now``: one data point
    covering the whole window, a multiple of what CloudWatch requires for data of that age."""
    granularity = metric_granularity(start, now)
    span = max(0, int((now if end is None else end) - start))
    return (span // granularity + 1) * granularity


def metric_period_problem(start: float, now: float, period: int) -> str | None:
    """Why CloudWatch would answer no data points for a query from ``start`` with ``period``, or ``None``."""
    granularity = metric_granularity(start, now)
    if period <= 0 or period % granularity:
        days = (now - start) / DAY
        return (f"a period of {period} s over data from {days:.1f} days ago returns nothing: CloudWatch needs a "
                f"multiple of {granularity} s for data that old")
    return None


def metric_request_problems(request: Mapping[str, Any], now: float) -> list[str]:
    """:func:`metric_period_problem` for every ``MetricStat`` of a ``GetMetricData`` request."""
    start = request["StartTime"]
    start_ts = start.timestamp() if hasattr(start, "timestamp") else float(start)
    problems = []
    for query in _as_list(request.get("MetricDataQueries")):
        stat = query.get("MetricStat")
        if stat:
            problem = metric_period_problem(start_ts, now, int(stat["Period"]))
            if problem:
                problems.append(f"query {query.get('Id')}: {problem}")
    return problems


# --- Cost allocation tags ---------------------------------------------------------------------

# Activating cost allocation tags is account-wide (in an organization, only the management account
# can do it), and a tag key can be activated only once Billing has seen it on a resource, up to 24
# hours after it was first applied. The program therefore activates them only when asked.
# https://docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/activating-tags.html
# https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_UpdateCostAllocationTagsStatus.html
COST_ALLOCATION_BATCH = 20


def cost_allocation_problems(tag_keys: Sequence[str]) -> list[str]:
    """Why ``UpdateCostAllocationTagsStatus`` would refuse to activate ``tag_keys`` in one request."""
    problems = []
    if not 1 <= len(tag_keys) <= COST_ALLOCATION_BATCH:
        problems.append(f"{len(tag_keys)} tag keys: one request activates 1 to {COST_ALLOCATION_BATCH}")
    problems += [f"tag key {k!r} begins with 'aws:', which AWS reserves" for k in tag_keys if k.startswith("aws:")]
    return problems
