"""Stack files: Pulumi stack config validated into one strict ``StackSpec``.

A stack is ``<project>/<stackConfigDir>/Pulumi.<stack>.yaml``. The platform's
settings live under the ``mlplat:`` namespace (bare keys belong to the project,
which is called ``mlplat``, so Pulumi reads them the same way); other namespaces
(``aws:region``...) pass through to the provider's Pulumi program untouched.

Validation errors name the file, the line, the key path, the bad value and the
expected form; unknown keys get a did-you-mean suggestion.
"""
from __future__ import annotations

import difflib
import math
import os
import re
import types
import typing
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from mlplat import providers
from mlplat.contracts.settings import SETTINGS_CONFIG, ProviderSettings
from mlplat.errors import StackError

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

NAMESPACE = "mlplat"
# Pydantic checks ``pattern=`` with Rust's regex engine, where ``$`` is the end of the text; Python's
# ``re`` lets ``$`` match before a final newline, so Python code checks these with ``re.fullmatch``.
SLUG = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DURATION = r"^\d+(s|m|h|d)$"
MODEL_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
MODEL_NAME_RULE = "letters, digits, '-', '_' or '.', starting with a letter or digit (max 100)"
PROJECT_ENV = "MLPLAT_PROJECT_DIR"


class Spec(BaseModel):
    """Base of every stack model: strict, camelCase keys in YAML, snake_case in Python."""

    model_config = SETTINGS_CONFIG


class RiskTier(str, Enum):
    low = "low"
    critical = "critical"


# --- provider -----------------------------------------------------------------
# Each provider declares its own settings model (``ProviderBundle.settings_model``); the
# ``mlplat:provider`` mapping is validated with the model of the provider its ``kind`` names.

DEFAULT_PROVIDER = "local"


def provider_settings(value: Any) -> ProviderSettings:
    """``value`` validated with the settings model of the provider its ``kind`` names.

    A missing or unknown ``kind`` is refused with the error types of a tagged union, which the
    loader words with the installed providers."""
    if isinstance(value, ProviderSettings):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("model_attributes_type",
                                  "Input should be a valid dictionary or object to extract fields from")
    if "kind" not in value:
        raise PydanticCustomError("union_tag_not_found", "missing 'kind'", {"discriminator": "'kind'"})
    kind = value["kind"]
    models = providers.settings_models()
    if not isinstance(kind, str) or kind not in models:
        raise PydanticCustomError("union_tag_invalid", "unknown provider kind {tag}",
                                  {"discriminator": "'kind'", "tag": str(kind),
                                   "expected_tags": ", ".join(providers.names())})
    return models[kind].model_validate(value)


def default_provider_settings() -> ProviderSettings:
    """The settings of a stack that names no provider: the default provider's, with its defaults."""
    return provider_settings({"kind": DEFAULT_PROVIDER})


# --- cost tags ----------------------------------------------------------------

REQUIRED_TAGS = ("team", "cost-center", "environment", "owner")


class CostTags(Spec):
    """Cost-allocation tags applied to every resource; the four named ones are required."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    team: str = Field(min_length=1, description="Team that owns the cost.", examples=["fraud"])
    cost_center: str = Field(
        alias="cost-center", min_length=1, description="Finance cost center.", examples=["CC-1042"]
    )
    environment: str = Field(min_length=1, description="Environment name.", examples=["production"])
    owner: str = Field(min_length=3, description="Owning contact (an email or group).", examples=["fraud-leads@example.com"])

    @model_validator(mode="after")
    def _extra_tags_are_strings(self) -> CostTags:
        for key, value in (self.model_extra or {}).items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:/=+@-]{0,127}", key):
                raise ValueError(f"tag key {key!r} is not a valid tag key (letters, digits and _.:/=+@-)")
            if not isinstance(value, str) or not value:
                raise ValueError(f"tag {key!r} must be a non-empty string, got {value!r}")
        return self

    def as_dict(self) -> dict[str, str]:
        return {"team": self.team, "cost-center": self.cost_center, "environment": self.environment,
                "owner": self.owner, **(self.model_extra or {})}


# --- governance -----------------------------------------------------------------


class ModelGovernance(Spec):
    risk_tier: RiskTier = Field(description="Risk tier of this model: low promotes automatically, critical needs approvals.")


class Governance(Spec):
    risk_tier: RiskTier = Field(RiskTier.low, description="Default risk tier of the team's models.")
    approvers: list[str] = Field(
        default_factory=list, description="Who may approve production promotions of critical models.",
        examples=[["risk-office@example.com"]],
    )
    required_approvals: int = Field(1, ge=1, le=10, description="Approvals needed for a critical model.")
    models: dict[str, ModelGovernance] = Field(default_factory=dict, description="Per-model overrides.")

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: dict[str, ModelGovernance]) -> dict[str, ModelGovernance]:
        for name in value:
            if not re.fullmatch(MODEL_NAME, name):
                raise ValueError(f"model name {name!r} is not valid; use {MODEL_NAME_RULE}")
        return value

    @model_validator(mode="after")
    def _enough_approvers(self) -> Governance:
        critical = self.risk_tier == RiskTier.critical or any(
            m.risk_tier == RiskTier.critical for m in self.models.values()
        )
        if critical and len(set(self.approvers)) < self.required_approvals:
            raise ValueError(
                f"critical models need {self.required_approvals} approval(s) but only "
                f"{len(set(self.approvers))} distinct approver(s) are listed; add approvers or lower requiredApprovals"
            )
        return self

    def risk_tier_for(self, model: str) -> RiskTier:
        override = self.models.get(model)
        return override.risk_tier if override else self.risk_tier


# --- evaluation gate ------------------------------------------------------------

HIGHER_IS_BETTER = ("accuracy", "precision", "recall", "f1", "roc_auc", "r2")
LOWER_IS_BETTER = ("brier", "ece", "rmse", "mae")
GATE_METRICS = HIGHER_IS_BETTER + LOWER_IS_BETTER
# The values each gate metric can take (None: unbounded on that side). A threshold outside its
# metric's range can never pass (or always passes), so it is a mistake in the stack file.
METRIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    "accuracy": (0.0, 1.0), "precision": (0.0, 1.0), "recall": (0.0, 1.0), "f1": (0.0, 1.0),
    "roc_auc": (0.0, 1.0), "r2": (None, 1.0), "brier": (0.0, 1.0), "ece": (0.0, 1.0),
    "rmse": (0.0, None), "mae": (0.0, None),
}


class Holdout(Spec):
    path: str = Field(min_length=1, description="Held-out dataset (Parquet or CSV), relative to the project root.",
                      examples=["data/holdout.parquet"])
    label: str = Field(min_length=1, description="Label column in the held-out dataset.", examples=["is_fraud"])


class Gate(Spec):
    holdout: Holdout | None = Field(None, description="Default held-out set; a version may name its own at registration.")
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Absolute thresholds: minimums for accuracy/precision/recall/f1/roc_auc/r2, maximums for brier/ece/rmse/mae.",
        examples=[{"roc_auc": 0.9, "recall": 0.7}],
    )
    max_regression_vs_champion: float = Field(
        0.0, ge=0, le=1, description="How much worse than the production version a candidate may be on each threshold metric."
    )

    @field_validator("thresholds")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        for metric in value:
            if metric not in GATE_METRICS:
                near = difflib.get_close_matches(metric, GATE_METRICS, n=1)
                tip = f"; did you mean '{near[0]}'?" if near else ""
                raise ValueError(f"unknown gate metric '{metric}'{tip} known: {', '.join(GATE_METRICS)}")
        for metric, limit in value.items():
            low, high = METRIC_RANGES[metric]
            if not math.isfinite(limit) or (low is not None and limit < low) or (high is not None and limit > high):
                shown = f"[{_num(low)}, {_num(high)}]" if low is not None and high is not None else (
                    f">= {_num(low)}" if low is not None else f"<= {_num(high)}")
                raise ValueError(f"threshold {metric}: {limit!r} is outside the range of {metric} ({shown}); "
                                 f"set a {'minimum' if metric in HIGHER_IS_BETTER else 'maximum'} within it")
        return value


def _num(value: float | None) -> str:
    return f"{value:g}"


# --- serving ----------------------------------------------------------------------


class Canary(Spec):
    steps: list[int] = Field([1, 10, 50, 100], description="Traffic percentages of the canary steps, ending at 100.")
    bake_seconds: int = Field(300, ge=0, le=86_400, description="Time each step is observed before the next.")
    max_error_rate: float = Field(0.02, ge=0, le=1, description="Candidate error rate that triggers rollback.")
    max_latency_ratio: float = Field(1.5, gt=1, description="Candidate p95 latency / stable p95 that triggers rollback.")
    max_prediction_shift: float = Field(0.2, gt=0,
                                        description="PSI between candidate and stable predictions that triggers rollback.")
    min_requests: int = Field(20, ge=1, description="Requests the candidate must serve in a step before it is judged.")

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int]) -> list[int]:
        if not steps or any(not 0 < s <= 100 for s in steps):
            raise ValueError("canary steps must be percentages between 1 and 100")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"canary steps must increase strictly, got {steps}")
        if steps[-1] != 100:
            raise ValueError(f"the last canary step must be 100, got {steps[-1]}")
        return steps


class Shadow(Spec):
    percent: int = Field(10, ge=1, le=50, description="Share of requests mirrored to the shadow version (at most 50).")


class ServingAuth(Spec):
    api_keys: Literal["off", "optional", "required"] = Field(
        "off", description="API keys on the gateway's scoring routes: off; optional (a key, when sent, must be "
                           "valid for the model); required (every scoring request sends `Authorization: Bearer "
                           "mlp_...` or `X-Api-Key`, from `mlplat keys create`). The gateway binds beyond "
                           "loopback only when required.")


class Batching(Spec):
    enabled: bool = Field(True, description="Predict concurrent requests for one model version in one model call "
                          "(models that take batches: scikit-learn, XGBoost, custom pyfunc models on columns). "
                          "A lone request never waits; only requests queued while the model is busy are joined.")
    max_batch_size: int = Field(64, ge=1, le=100_000, description="Most rows predicted in one model call, from 1 "
                                "to 100000.")
    max_latency_ms: float = Field(2.0, ge=0, le=1000, description="Milliseconds a queued request waits at most for "
                                  "others still arriving to join its batch, from 0 (join only what is already "
                                  "queued) to 1000.")


class BatchingOverride(Spec):
    enabled: bool | None = Field(None, description="Whether this model's requests are batched: "
                                 "true, or false for a model with side effects or rows that interact.")
    max_batch_size: int | None = Field(None, ge=1, le=100_000, description="Most rows in one call of this model, from 1 "
                                       "to 100000.")
    max_latency_ms: float | None = Field(None, ge=0, le=1000, description="Milliseconds this model's queued "
                                          "requests wait for others still arriving, from 0 to 1000.")


class ModelServing(Spec):
    batching: BatchingOverride = Field(default_factory=BatchingOverride,
                                       description="This model's micro-batching; unset keys follow serving.batching.")


class Serving(Spec):
    instance_type: str = Field("local.cpu", min_length=1, description="Instance type of endpoints.", examples=["ml.m5.large"])
    price_per_hour: float = Field(0.0, ge=0, description="Price per instance-hour in USD for instanceType.")
    price_table: dict[str, float] = Field(default_factory=dict,
                                         description="Instance type → USD per hour, overriding pricePerHour.")
    port: int = Field(8080, ge=1, le=65535, description="Port of the local serving gateway.")
    capture_sampling: float = Field(1.0, ge=0, le=1, description="Share of requests captured for monitoring.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted.")
    body_timeout_seconds: float = Field(10.0, gt=0, le=3600,
                                        description="Seconds a request body may take to arrive before the gateway "
                                                    "answers 408 and closes the connection.")
    latency_budget_ms: float = Field(250.0, gt=0, description="p95 latency budget checked by staging integration tests.")
    canary: Canary = Field(default_factory=Canary, description="Default canary rollout.")
    shadow: Shadow = Field(default_factory=Shadow, description="Default shadow mirroring.")
    auth: ServingAuth = Field(default_factory=ServingAuth, description="Who may call the gateway's scoring routes.")
    batching: Batching = Field(default_factory=Batching, description="Adaptive micro-batching of concurrent requests.")
    models: dict[str, ModelServing] = Field(default_factory=dict, description="Per-model overrides.")

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: dict[str, ModelServing]) -> dict[str, ModelServing]:
        for name in value:
            if not re.fullmatch(MODEL_NAME, name):
                raise ValueError(f"model name {name!r} is not valid; use {MODEL_NAME_RULE}")
        return value

    def batching_for(self, model: str) -> Batching:
        """``batching`` with ``models.<model>.batching``'s keys laid over it."""
        override = self.models.get(model)
        if override is None:
            return self.batching
        changes = override.batching.model_dump(exclude_none=True)
        return self.batching.model_copy(update=changes) if changes else self.batching

    def price_for(self, instance_type: str | None = None) -> float:
        instance_type = instance_type or self.instance_type
        if instance_type in self.price_table:
            return self.price_table[instance_type]
        return self.price_per_hour


# --- monitoring -----------------------------------------------------------------


class Drift(Spec):
    psi: float = Field(0.2, gt=0, description="PSI above which a numerical feature drifts.")
    ks_p_value: float = Field(0.01, gt=0, lt=1, description="KS p-value below which a numerical feature drifts.")
    chi2_p_value: float = Field(0.01, gt=0, lt=1, description="Chi-squared p-value below which a categorical feature drifts.")
    js_distance: float = Field(0.1, gt=0, le=1, description="Jensen-Shannon distance above which a categorical feature drifts.")
    share: float = Field(0.5, gt=0, le=1, description="Share of drifted features at which a window counts as drifted "
                                                       "(prediction drift alone also counts).")
    min_reference_rows: int = Field(100, ge=2, description="A reference sample smaller than this gives "
                                    "'insufficient reference', never a drift verdict.")


class Window(Spec):
    size: int = Field(1000, ge=1, description="Requests per monitoring window.")
    min_rows: int = Field(100, ge=1, description="Fewer rows than this gives 'insufficient data', not a verdict.")


class AlertRule(Spec):
    name: str = Field(pattern=SLUG, description="Rule name.")
    metric: str = Field(min_length=1, description="Monitored metric, e.g. drift.share, quality.accuracy, cost.daily_usd.")
    threshold: float = Field(description="Breach threshold.")
    op: Literal["gt", "lt"] = Field("gt", description="gt: breach when above; lt: breach when below.")
    severity: Literal["info", "warning", "critical"] = Field("warning", description="Alert severity.")
    retrain: bool = Field(False, description="Whether breaches of this rule count towards retraining.")


class Channel(Spec):
    kind: Literal["console", "log", "webhook"] = Field(description="Where alerts go.")
    path: str | None = Field(None, description="Log file (kind: log).")
    url: str | None = Field(None, description="Webhook URL (kind: webhook).")
    timeout_seconds: float = Field(5.0, gt=0, le=120, description="Webhook request timeout.")
    max_attempts: int = Field(5, ge=1, le=50, description="Webhook deliveries tried before giving up.")
    backoff_seconds: float = Field(1.0, ge=0, le=3600, description="Wait before the first retry; doubles each retry.")

    @model_validator(mode="after")
    def _target(self) -> Channel:
        if self.kind == "log" and not self.path:
            raise ValueError("a log channel needs 'path'")
        if self.kind == "webhook" and not (self.url and re.match(r"^https?://", self.url)):
            raise ValueError("a webhook channel needs an http(s) 'url'")
        return self


class Retrain(Spec):
    command: str | None = Field(None, min_length=1, description="Training entrypoint run as a tracked run, when no "
                                "pipeline retrains the model.", examples=["python train.py"])
    pipeline: str | None = Field(None, min_length=1, description="Pipeline file (relative to the project root) that "
                                 "retrains the model; default: the pipeline run or scheduled on the stack whose model "
                                 "it is, else `command`.", examples=["pipelines/credit_risk.py"])
    violation_windows: int = Field(2, ge=1, description="Breaching windows (k) ...")
    evaluation_windows: int = Field(5, ge=1, description="... out of the last n windows that trigger retraining.")

    @model_validator(mode="after")
    def _k_le_n(self) -> Retrain:
        if not self.command and not self.pipeline:
            raise ValueError("retraining needs a 'command' or a 'pipeline' to run")
        if self.violation_windows > self.evaluation_windows:
            raise ValueError(
                f"violationWindows ({self.violation_windows}) cannot exceed evaluationWindows ({self.evaluation_windows})"
            )
        return self


class Monitoring(Spec):
    schedule: str = Field("15m", pattern=DURATION, description="How often monitors run (s, m, h, d).", examples=["15m"])
    window: Window = Field(default_factory=Window, description="Monitoring window over captured traffic.")
    drift: Drift = Field(default_factory=Drift, description="Drift thresholds.")
    alerts: list[AlertRule] = Field(default_factory=list, description="Alert rules.")
    channels: list[Channel] = Field(default_factory=lambda: [Channel(kind="console")], description="Alert channels.")
    retrain: Retrain | None = Field(None, description="Debounced retraining.")


class FeatureStoreSettings(Spec):
    definitions: str = Field("features/definitions.py", min_length=1,
                             description="Python module with the Entity and FeatureView definitions, "
                                         "relative to the project root.",
                             examples=["features/definitions.py"])
    timestamp_column: str = Field("event_timestamp", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                  description="Default timestamp column of entity DataFrames (naive timestamps are UTC).")
    skew_sample: int = Field(200, ge=1, le=100_000, description="Entities sampled by `mlplat features skew`.")
    max_skew_rate: float = Field(0.0, ge=0, le=1,
                                 description="Share of mismatching values above which `features skew` exits 1.")


class Budget(Spec):
    monthly_usd: float = Field(gt=0, description="Monthly budget of the team in USD.")
    alert_at: list[float] = Field([0.8, 1.0], description="Shares of the budget that raise alerts.")


# --- policy ---------------------------------------------------------------------

EnforcementLevel = Literal["advisory", "mandatory", "disabled"]


class PolicySpec(Spec):
    """Enforcement of the policy pack (policies/) for this stack; the shape of a CrossGuard policy-pack config."""

    enforcement_level: EnforcementLevel | None = Field(
        None, description="Level of every policy without its own: advisory, mandatory or disabled. "
        "Default: each policy's own default.", examples=["mandatory"],
    )
    policies: dict[str, Any] = Field(
        default_factory=dict,
        description="Per policy: an enforcement level, or a mapping with enforcementLevel and the policy's "
        "settings (mlplat policy list shows them).",
        examples=[{"spend": {"enforcementLevel": "mandatory", "allowedInstanceTypes": ["ml.m5.*"], "maxGpuInstances": 0}}],
    )

    @field_validator("policies")
    @classmethod
    def _known_policies(cls, value: dict[str, Any]) -> dict[str, Any]:
        from mlplat_policies.rules import config_errors

        errors = config_errors(value)
        if errors:
            raise ValueError("; ".join(errors))
        return value

    def as_settings(self) -> dict[str, Any]:
        """The settings mapping the policy pack's ``evaluate`` reads."""
        return {"enforcementLevel": self.enforcement_level, "policies": self.policies}


# --- the control plane ------------------------------------------------------------


# --- access: identity and roles -------------------------------------------------------

ROLES = ("viewer", "developer", "approver", "operator", "admin")


class AccessMode(str, Enum):
    """How the platform establishes who is calling."""

    os_user = "os-user"  # embedded: the operating-system user running the command
    trusted_local = "trusted-local"  # embedded: MLPLAT_USER is believed (tests and demos only)
    oidc = "oidc"  # bearer tokens from the company's OpenID Connect identity provider
    aws_iam = "aws-iam"  # a presigned sts:GetCallerIdentity request, executed by the server
    google = "google"  # Google-signed ID tokens
    entra = "entra"  # Microsoft Entra ID access tokens


class OidcSettings(Spec):
    issuer: str = Field(description="The identity provider's issuer URL (its `iss` claim); discovery is read from "
                        "`<issuer>/.well-known/openid-configuration`.", examples=["https://login.example.com"])
    audience: str = Field(description="The `aud` every token must carry (the platform's client or API id).",
                          examples=["mlplat"])
    client_id: str | None = Field(None, description="Public client id `mlplat login` uses for the device-code flow "
                                  "(default: the audience).")
    principal_claim: str = Field("email", description="The claim naming the caller (falls back to `sub`).")
    groups_claim: str = Field("groups", description="The claim listing the caller's groups.")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256"],
                                  description="Signature algorithms accepted (asymmetric only).")

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) issuer URL")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"issuer {value!r} must use https (plain http only on loopback, for tests)")
        return value.rstrip("/")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
        bad = [a for a in value if a not in allowed]
        if bad or not value:
            raise ValueError(f"algorithms must be asymmetric JWS algorithms ({', '.join(sorted(allowed))}); "
                             f"refused: {', '.join(bad) or '(none given)'}")
        return value


class AwsIamSettings(Spec):
    region: str = Field("us-east-1", description="Region of the STS endpoint clients sign for.")
    sts_endpoint: str | None = Field(None, description="STS endpoint the server executes the signed request "
                                     "against (default: the regional endpoint `https://sts.<region>.amazonaws.com`).")
    server_id: str | None = Field(None, description="Value of the signed `X-Mlplat-Server-Id` header binding a "
                                  "request to this server, so it cannot be replayed to another (default: the stack "
                                  "name).")


class GoogleSettings(Spec):
    audience: str = Field(description="The `aud` of the Google-signed ID tokens (the server's URL or client id).")
    hosted_domain: str | None = Field(None, description="Only accept accounts of this Google Workspace domain (`hd`).")


class EntraSettings(Spec):
    tenant_id: str = Field(description="The Entra ID (Azure AD) tenant id.")
    audience: str = Field(description="The `aud` of the access tokens (the platform app's id or App ID URI).")
    authority: str = Field("https://login.microsoftonline.com", description="The Entra authority host.")


class FeatureGrant(Spec):
    views: list[str] = Field(min_length=1, description="Feature views other teams may read.")
    principals: list[str] = Field(min_length=1, description="Who may read them (principal patterns: `group:NAME`, "
                                  "an e-mail, an IAM role ARN, `*`).")


class Access(Spec):
    """Who may call the platform and what each may do (``mlplat:access``)."""

    mode: AccessMode | None = Field(None, description="How callers are identified. Default: `os-user` for an "
                                    "embedded ledger; a server with a control-plane URL needs one of oidc, aws-iam, "
                                    "google or entra to bind beyond loopback.")
    oidc: OidcSettings | None = Field(None, description="OIDC identity provider (mode oidc).")
    aws: AwsIamSettings | None = Field(None, description="AWS IAM authentication (mode aws-iam).")
    google: GoogleSettings | None = Field(None, description="Google ID tokens (mode google).")
    entra: EntraSettings | None = Field(None, description="Entra ID tokens (mode entra).")
    roles: dict[str, list[str]] = Field(
        default_factory=dict, description="Role → principal patterns: `group:NAME` (an IdP group), an e-mail or "
        "principal name, an IAM role ARN (matches its assumed-role sessions), `*` (anyone authenticated). Roles: "
        + ", ".join(ROLES) + ". Deny by default: a caller matching no pattern may do nothing.",
        examples=[{"developer": ["group:fraud-ds"], "approver": ["risk-office@example.com"], "admin": ["group:platform"]}],
    )
    feature_grants: list[FeatureGrant] = Field(default_factory=list,
                                               description="Feature views shared for reading with other teams.")

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = [r for r in value if r not in ROLES]
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(map(repr, unknown))}; roles are {', '.join(ROLES)}")
        return value

    @model_validator(mode="after")
    def _settings_for_mode(self) -> Access:
        needs = {AccessMode.oidc: "oidc", AccessMode.aws_iam: "aws", AccessMode.google: "google",
                 AccessMode.entra: "entra"}
        if self.mode in needs and getattr(self, needs[self.mode]) is None:
            raise ValueError(f"mode {self.mode.value} needs its settings under access.{needs[self.mode]}")
        return self

    @property
    def authenticated(self) -> bool:
        """True when callers prove who they are (a token or a signed request), not merely name themselves."""
        return self.mode in (AccessMode.oidc, AccessMode.aws_iam, AccessMode.google, AccessMode.entra)


class ControlPlane(Spec):
    """Where the stack's ledger lives: embedded (no ``url``, the default) or behind ``mlplat server``."""

    url: str | None = Field(
        None, description="Base URL of the stack's `mlplat server`. Set: every command and SDK call reads and "
        "writes the ledger through its API. Unset: the process opens the ledger itself (embedded).",
        examples=["http://127.0.0.1:8770", "https://mlplat.fraud.example.com"],
    )
    tracking: str | None = Field(
        None, description="MLflow tracking server every run of the stack goes to in server mode "
        "(`mlplat server --tracking-port` runs one beside the server for a single node).",
        examples=["http://127.0.0.1:8771"],
    )
    database: str | None = Field(
        None, description="The server's database URL, without a password (libpq's PGPASSWORD or ~/.pgpass, or "
        "the whole URL in MLPLAT_DATABASE_URL, supply it). Default: SQLite in the stack's state directory.",
        examples=["postgresql://mlplat@127.0.0.1:5432/mlplat"],
    )

    @field_validator("url", "tracking")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL (expected e.g. http://127.0.0.1:8770)")
        if parts.password or parts.username:
            raise ValueError("credentials do not belong in the URL of a stack file")
        return value.rstrip("/")

    @field_validator("database")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg", "sqlite"):
            raise ValueError(f"database {value!r} must be a postgresql:// or sqlite:// URL")
        if parts.password:
            raise ValueError("a database password must not be written in a stack file: drop it from the URL and "
                             "supply it with PGPASSWORD or ~/.pgpass, or pass the whole URL in MLPLAT_DATABASE_URL")
        return value


# --- the stack --------------------------------------------------------------------


class Sla(Spec):
    """The objectives the platform keeps (docs/SLA.md states them); ``mlplat sla`` measures each one."""

    gateway_availability: float = Field(0.995, gt=0, le=1, description="Least share of time the serving gateway "
                                        "answers ready, and of its requests answered without a 5xx.")
    control_plane_availability: float = Field(0.995, gt=0, le=1, description="Least share of time `mlplat server` "
                                              "answers ready, and of its API requests answered without a 5xx.")
    gateway_overhead_p99_ms: float = Field(25.0, gt=0, description="Most time (p99, ms) the gateway adds to a "
                                           "request beyond the model's own predict call.")
    promotion_to_serving_minutes: float = Field(60.0, gt=0, description="Most minutes (p95) from a version's "
                                                "promotion to production until it takes traffic.")
    rollback_seconds: float = Field(300.0, gt=0, description="Most seconds from asking for a rollback until 100 % "
                                    "of traffic is back on the previous version.")
    support_response_hours: float = Field(8.0, gt=0, description="Most business hours until the platform team "
                                          "answers a support request (stated, not measured by mlplat).")


class StackSpec(Spec):
    """One team × environment platform, as declared in ``stacks/Pulumi.<stack>.yaml``."""

    team: str = Field(pattern=SLUG, description="Team name (lowercase slug).", examples=["fraud"])
    environment: str = Field(pattern=SLUG, description="Environment name.", examples=["dev", "production"])
    provider: SerializeAsAny[ProviderSettings] = Field(
        default_factory=default_provider_settings,
        description="Where the platform runs.",
    )
    tags: CostTags = Field(description="Cost tags, required on every resource.")
    governance: Governance = Field(default_factory=Governance, description="Risk tiers and approvals.")
    gate: Gate = Field(default_factory=Gate, description="Evaluation gate.")
    serving: Serving = Field(default_factory=Serving, description="Serving defaults.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Monitoring thresholds and schedule.")
    budget: Budget | None = Field(None, description="Monthly budget.")
    features: FeatureStoreSettings = Field(default_factory=lambda: FeatureStoreSettings(),
                                           description="Feature store settings.")
    policy: PolicySpec = Field(default_factory=lambda: PolicySpec(),
                               description="Policy enforcement for this stack (see policies/).")
    control_plane: ControlPlane = Field(default_factory=lambda: ControlPlane(),
                                        description="Where the ledger lives: embedded, or a shared `mlplat server`.")
    access: Access = Field(default_factory=lambda: Access(),
                           description="Identity and roles: how callers are authenticated and what each may do.")
    sla: Sla = Field(default_factory=lambda: Sla(), description="Service-level objectives `mlplat sla` measures "
                     "(defaults: docs/SLA.md).")

    # Set by the loader, not read from the file.
    name: str = Field("", exclude=True, description="Stack name (from the file name).")
    path: str = Field("", exclude=True, description="Stack file path.")
    project_dir: str = Field("", exclude=True, description="Project root.")
    pulumi_config: dict[str, Any] = Field(default_factory=dict, exclude=True, description="Non-mlplat config keys.")

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_settings(cls, value: Any) -> ProviderSettings:
        return provider_settings(value)

    @model_validator(mode="after")
    def _tags_agree(self) -> StackSpec:
        if self.tags.team != self.team:
            raise ValueError(f"tags.team ({self.tags.team!r}) must equal team ({self.team!r}) so costs land on the right team")
        if self.tags.environment != self.environment:
            raise ValueError(
                f"tags.environment ({self.tags.environment!r}) must equal environment ({self.environment!r})"
            )
        return self

    @property
    def state_dir(self) -> Path:
        base = Path(self.project_dir or ".")
        configured = self.provider.configured_state_dir()
        return (base / (configured or f".mlplat/{self.name}")).resolve()

    def risk_tier_for(self, model: str) -> RiskTier:
        return self.governance.risk_tier_for(model)


def duration_seconds(text: str) -> int:
    """``"15m"`` → 900."""
    match = re.fullmatch(DURATION, text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 15m, 1h, 1d)")
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[text[-1]]


# --- loading ------------------------------------------------------------------------


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest directory holding ``Pulumi.yaml``, from ``$MLPLAT_PROJECT_DIR`` or upwards of cwd."""
    env = os.environ.get(PROJECT_ENV)
    if env:
        path = Path(env).resolve()
        if not (path / "Pulumi.yaml").is_file():
            raise StackError(f"{PROJECT_ENV}={env} has no Pulumi.yaml", hint="point it at the mlplat project root")
        return path
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").is_file():
            return candidate
    raise StackError(
        f"no Pulumi.yaml in {here} or any parent directory",
        hint="run mlplat inside an mlplat project, or set MLPLAT_PROJECT_DIR",
    )


def stacks_dir(project_dir: Path) -> Path:
    try:
        project = yaml.safe_load((project_dir / "Pulumi.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        raise StackError(f"Pulumi.yaml is not valid YAML: {exc}", where=str(project_dir / "Pulumi.yaml")) from exc
    return project_dir / (project.get("stackConfigDir") or ".")


def list_stacks(project_dir: Path | None = None) -> list[str]:
    directory = stacks_dir(project_dir or find_project_dir())
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in directory.glob("Pulumi.*.yaml"))


STACK_NAME_RULE = "lowercase letters, digits and '-', starting and ending with a letter or digit (max 63)"


def check_stack_name(name: Any, *, where: str | None = None) -> str:
    """``name`` if it is a slug; a :class:`StackError` otherwise.

    The name becomes a path component (``.mlplat/<stack>``, lock files), so ``..``, ``a/b``
    or a trailing newline must never get that far.
    """
    if not isinstance(name, str) or not re.fullmatch(SLUG, name):
        raise StackError(
            f"stack name {name!r} is not a valid stack name",
            where=where,
            hint=f"name the stack file stacks/Pulumi.<stack>.yaml with <stack> made of {STACK_NAME_RULE}",
        )
    return name


def stack_path(name: str, project_dir: Path | None = None) -> Path:
    project_dir = project_dir or find_project_dir()
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name).resolve()
    check_stack_name(name)
    path = stacks_dir(project_dir) / f"Pulumi.{name}.yaml"
    if not path.is_file():
        existing = list_stacks(project_dir)
        near = difflib.get_close_matches(name, existing, n=1)
        raise StackError(
            f"stack '{name}' not found "
            f"(looked for {path.relative_to(project_dir) if path.is_relative_to(project_dir) else path})",
            hint=(f"did you mean '{near[0]}'? " if near else "")
            + (f"existing stacks: {', '.join(existing)}" if existing else "create stacks/Pulumi.<stack>.yaml"),
            stacks=existing,
        )
    return path


def load_stack(name: str, project_dir: Path | None = None) -> StackSpec:
    """Load and validate a stack by name (or file path). Raises :class:`StackError`."""
    project_dir = project_dir or find_project_dir()
    path = stack_path(name, project_dir)
    stack_name = path.name[len("Pulumi."):-len(".yaml")] if path.name.startswith("Pulumi.") else path.stem
    return parse_stack(path.read_text(encoding="utf-8"), path=path, name=stack_name, project_dir=project_dir)


def parse_stack(text: str, *, path: Path, name: str, project_dir: Path) -> StackSpec:
    shown = _display(path, project_dir)
    check_stack_name(name, where=shown)
    try:
        node = yaml.compose(text)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
        problem = getattr(exc, "problem", None) or str(exc)
        raise StackError(f"malformed YAML: {problem}", where=where, hint="fix the YAML syntax at that position") from exc
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise StackError(
            "a stack file must be a mapping with a 'config:' mapping (Pulumi stack config)",
            where=shown, hint="start the file with 'config:' and put mlplat settings under 'mlplat:' keys",
        )
    settings: dict[str, Any] = {}
    keys: dict[str, str] = {}
    passthrough: dict[str, Any] = {}
    for key, value in document["config"].items():
        key = str(key)
        namespace, sep, rest = key.partition(":")
        if not sep:
            namespace, rest = NAMESPACE, key
        if namespace == NAMESPACE:
            settings[rest] = value
            keys[rest] = key
        else:
            passthrough[key] = value
    for internal in ("name", "path", "projectDir", "pulumiConfig", "project_dir", "pulumi_config"):
        if internal in settings:
            raise StackError(
                f"{shown}:{_line_of(node, ['config', keys[internal]])}: {keys[internal]}: unknown key '{internal}'; "
                f"allowed keys: {', '.join(_allowed_keys(StackSpec))}",
                hint="the stack name comes from the file name; remove this key",
            )
    try:
        spec = StackSpec.model_validate(settings)
    except ValidationError as exc:
        provider_model = _provider_model(settings.get("provider"))
        lines = [_describe(err, node, keys, provider_model) for err in exc.errors()]
        raise StackError(
            f"invalid stack '{name}' ({len(lines)} problem{'s' if len(lines) > 1 else ''}):\n  - " + "\n  - ".join(
                f"{shown}:{line}" for line in lines),
            hint="fix the keys above; `mlplat stack schema` prints every key with its expected form",
        ) from None
    configured = spec.provider.configured_state_dir()
    if configured is not None:
        problem = _state_dir_problem(configured, Path(project_dir))
        if problem:
            line = _line_of(node, ["config", keys.get("provider", f"{NAMESPACE}:provider"), "stateDir"])
            raise StackError(
                f"invalid stack '{name}' (1 problem):\n  - {shown}:{line}: "
                f"{keys.get('provider', f'{NAMESPACE}:provider')}.stateDir: "
                f"{problem} (got {configured!r})",
                hint="use a path inside the project such as .mlplat/<stack>, or an absolute path to a directory "
                     "that does not exist yet, which `mlplat up` creates",
            )
    problems = spec.provider.stack_problems(spec)
    if problems:
        found: list[str] = []
        for key, reason in problems:
            top, *inner = key.split(".")
            line = _line_of(node, ["config", keys.get(top, f"{NAMESPACE}:{top}"), *inner])
            found.append(f"{shown}:{line}: {keys.get(top, f'{NAMESPACE}:{top}')}{''.join('.' + r for r in inner)}: "
                         f"{reason}")
        raise StackError(
            f"invalid stack '{name}' ({len(found)} problem{'s' if len(found) > 1 else ''}):\n  - " + "\n  - ".join(found),
            hint=f"the {spec.provider.kind} provider cannot run these settings together; change one of them",
        )
    return spec.model_copy(update={
        "name": name, "path": str(path), "project_dir": str(project_dir), "pulumi_config": passthrough,
    })


def _state_dir_problem(configured: str, project_dir: Path) -> str | None:
    """Why ``configured`` cannot be a state directory of a stack in ``project_dir`` (None: it can).

    `destroy` deletes what is in the state directory, so it must never be the project, one of
    its parents, or (for a relative path) anywhere outside the project.
    """
    if not configured.strip() or "\0" in configured:
        return "the state directory must be a path"
    project = project_dir.resolve()
    given = Path(configured)
    resolved = (project / given).resolve()
    if project.is_relative_to(resolved):
        return "the state directory cannot be the project root or one of its parents"
    if not given.is_absolute() and not resolved.is_relative_to(project):
        return f"the state directory resolves to {resolved}, outside the project"
    return None


def _display(path: Path, project_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(project_dir.resolve()))
    except ValueError:
        return str(path)


def _provider_model(value: Any) -> type[ProviderSettings] | None:
    """The settings model of the provider ``value`` names (to word errors inside ``mlplat:provider``)."""
    if isinstance(value, dict) and isinstance(value.get("kind"), str):
        return providers.settings_models().get(value["kind"])
    return None


def _walk_model(loc: tuple[Any, ...], provider_model: type[ProviderSettings] | None = None,
                ) -> tuple[list[str], type[BaseModel] | None]:
    """Turn a pydantic error location into YAML key names, and the model at the end of it.

    ``provider_model`` stands for the ``provider`` field's declared base (the kind's own model)."""
    model: Any = StackSpec
    names: list[str] = []
    for part in loc:
        if isinstance(part, int):
            names.append(f"[{part}]")
            continue
        if model is None:
            names.append(str(part))
            continue
        field = _field_by_key(model, str(part))
        if field is None:  # a dict key: the user's own name
            names.append(str(part))
            model = None
            continue
        names.append(str(part))
        model = _inner_model(field.annotation, provider_model)
    return names, model


def _field_by_key(model: Any, key: str) -> FieldInfo | None:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    for fname, field in model.model_fields.items():
        if key in (fname, field.alias, to_camel(fname)):
            return field
    return None


def _inner_model(annotation: Any, provider_model: type[ProviderSettings] | None = None) -> Any:
    """The model (or ``_DictOf`` a model) an annotation holds; ``provider_model`` for the provider base."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is ProviderSettings:
        return provider_model
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is Annotated:
        return _inner_model(args[0], provider_model)
    if origin in (Union, types.UnionType):
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    if origin is dict and len(args) == 2:
        inner = _inner_model(args[1], provider_model)
        return _DictOf(inner) if inner else None
    if origin is list and args:
        return _inner_model(args[0], provider_model)
    return None


class _DictOf:
    def __init__(self, inner: Any):
        self.inner = inner


def _allowed_keys(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or to_camel(n) for n, f in model.model_fields.items()
                if not (f.exclude)]
    return []


def _describe(err: ErrorDetails, node: yaml.Node | None, keys: dict[str, str],
              provider_model: type[ProviderSettings] | None = None) -> str:
    loc = tuple(err["loc"])
    names, _ = _walk_model(loc, provider_model)
    # dict-of-models: the key between is a user key, keep it
    path = names[:]
    if path:
        path[0] = keys.get(path[0], f"{NAMESPACE}:{path[0]}")
    dotted = ".".join(path).replace(".[", "[") or "config"
    line = _line_of(node, ["config", keys.get(names[0], f"{NAMESPACE}:{names[0]}") if names else None, *names[1:]])
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        parent_names, parent_model = _walk_model(loc[:-1], provider_model)
        allowed = _allowed_keys(parent_model if parent_model is not None else StackSpec)
        key = str(loc[-1])
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
        tip = f"did you mean '{near[0]}'? " if near else ""
        return f"{line}: {dotted}: unknown key '{key}'; {tip}allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        field = _field_for(loc, provider_model)
        expected = _expected(field)
        what = "missing required cost tag" if len(loc) == 2 and loc[0] == "tags" else "missing required key"
        return f"{line}: {dotted}: {what}; expected {expected}"
    if kind == "union_tag_invalid":
        return (f"{line}: {dotted}: unknown provider kind {err.get('ctx', {}).get('tag')!r}; "
                f"expected one of: {', '.join(providers.names())}")
    if kind == "union_tag_not_found":
        return f"{line}: {dotted}: missing 'kind'; expected one of: {', '.join(providers.names())}"
    field = _field_for(loc, provider_model)
    msg = err["msg"].removeprefix("Value error, ")
    shown_value = "" if isinstance(value, dict) or kind == "value_error" else f" (got {value!r})"
    expected = _expected(field)
    return f"{line}: {dotted}: {msg}{shown_value}" + (f"; expected {expected}" if expected and kind != "value_error" else "")


def _field_for(loc: tuple[Any, ...], provider_model: type[ProviderSettings] | None = None) -> Any:
    """The field a pydantic error location ends at (or the last one found on the way)."""
    model: Any = StackSpec
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        candidate = _field_by_key(model, str(part)) if model is not None else None
        if candidate is None:
            if isinstance(model, _DictOf):
                model = model.inner
                continue
            return field
        field = candidate
        model = _inner_model(field.annotation, provider_model)
    return field


def _expected(field: Any) -> str:
    if field is None:
        return ""
    parts = []
    if field.description:
        parts.append(field.description.rstrip("."))
    if field.examples:
        parts.append(f"for example {field.examples[0]!r}")
    return "; ".join(parts) if parts else "a value of the documented type"


def _line_of(node: yaml.Node | None, path: list[Any]) -> str:
    current = node
    last_line = 1
    for key in path:
        if key is None or current is None:
            break
        if isinstance(current, yaml.MappingNode):
            for k_node, v_node in current.value:
                if str(k_node.value) == str(key) or str(k_node.value) == f"{NAMESPACE}:{key}":
                    last_line = k_node.start_mark.line + 1
                    current = v_node
                    break
            else:
                break
        elif isinstance(current, yaml.SequenceNode) and isinstance(key, str) and key.startswith("["):
            index = int(key[1:-1])
            if index < len(current.value):
                current = current.value[index]
                last_line = current.start_mark.line + 1
            else:
                break
        else:
            break
    return str(last_line)


def json_schema() -> dict[str, Any]:
    """JSON schema of the ``mlplat:`` namespace of a stack file, ``provider`` as a union of the
    installed providers' settings models tagged by ``kind``."""
    models = tuple(providers.settings_models().values())
    provider_field = StackSpec.model_fields["provider"]
    annotation: Any = (Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007 (a runtime tuple of models)
                       if len(models) > 1 else models[0])
    documented = create_model(
        "StackSpec", __base__=StackSpec, __doc__=StackSpec.__doc__,
        provider=(annotation, Field(default_factory=default_provider_settings,
                                    description=provider_field.description)),
    )
    schema = documented.model_json_schema(by_alias=True, mode="validation")
    for hidden in ("name", "path", "projectDir", "pulumiConfig"):
        schema.get("properties", {}).pop(hidden, None)
    schema["title"] = "mlplat stack settings (keys under the 'mlplat:' namespace of Pulumi.<stack>.yaml)"
    return schema
