"""One-line summaries of the Azure program's resources for `mlplat preview --offline` (what a reviewer checks)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

Summary = Callable[[dict[str, Any]], str]


def _storage(p: dict[str, Any]) -> str:
    enc = ((p.get("encryption") or {}).get("services") or {}).get("blob") or {}
    return (f"{p.get('accountName')}: public blob access {p.get('allowBlobPublicAccess')}, "
            f"{p.get('minimumTlsVersion')}, https only {p.get('enableHttpsTrafficOnly')}, "
            f"blob encryption {'on' if enc.get('enabled') else 'OFF'}")


def _vault(p: dict[str, Any]) -> str:
    props = p.get("properties") or {}
    return (f"{p.get('vaultName')}: RBAC {props.get('enableRbacAuthorization')}, "
            f"purge protection {props.get('enablePurgeProtection')}")


def _endpoint(p: dict[str, Any]) -> str:
    props = p.get("properties") or {}
    return f"{p.get('endpointName')}: auth {props.get('authMode')}; traffic and mirror traffic owned by the runtime"


def _alert(p: dict[str, Any]) -> str:
    metrics = [f"{c.get('metricNamespace')}:{c.get('metricName')} {c.get('operator')} {c.get('threshold')}"
               for c in (p.get("criteria") or {}).get("allOf") or []]
    return f"{p.get('ruleName')}: {', '.join(metrics)} -> {len(p.get('actions') or [])} action group(s)"


def _postgres(p: dict[str, Any]) -> str:
    auth = p.get("authConfig") or {}
    return (f"{p.get('serverName')}: PostgreSQL {p.get('version')} {(p.get('sku') or {}).get('name')}, Entra auth "
            f"{auth.get('activeDirectoryAuth')}, password auth {auth.get('passwordAuth')}")


def _budget(p: dict[str, Any]) -> str:
    tags = (p.get("filter") or {}).get("tags") or {}
    return f"{p.get('budgetName')}: {p.get('amount')} USD/{p.get('timeGrain')} on tag {tags.get('name')}={tags.get('values')}"


def _compute(p: dict[str, Any]) -> str:
    inner = (p.get("properties") or {}).get("properties") or {}
    scale = inner.get("scaleSettings") or {}
    return (f"{p.get('computeName')}: {inner.get('vmSize')}, {scale.get('minNodeCount')}-{scale.get('maxNodeCount')} "
            "nodes")


SUMMARIES: dict[str, Summary] = {
    "azure-native:resources:ResourceGroup": lambda p: f"{p.get('resourceGroupName')} ({p.get('location')})",
    "azure-native:storage:StorageAccount": _storage,
    "azure-native:storage:BlobContainer": lambda p: f"{p.get('containerName')}: public access {p.get('publicAccess')}",
    "azure-native:keyvault:Vault": _vault,
    "azure-native:containerregistry:Registry": lambda p: (
        f"{p.get('registryName')} ({(p.get('sku') or {}).get('name')}): admin user {p.get('adminUserEnabled')}"),
    "azure-native:machinelearningservices:Workspace": lambda p: f"{p.get('workspaceName')} (kind {p.get('kind')})",
    "azure-native:machinelearningservices:Compute": _compute,
    "azure-native:machinelearningservices:OnlineEndpoint": _endpoint,
    "azure-native:authorization:RoleAssignment": lambda p: f"{p.get('description')}",
    "azure-native:dbforpostgresql:Server": _postgres,
    "azure-native:monitor:MetricAlert": _alert,
    "azure-native:consumption:Budget": _budget,
}


def summarize(resource_type: str, props: dict[str, Any]) -> str:
    fn = SUMMARIES.get(resource_type)
    if fn is None:
        return ""
    try:
        return fn(props)
    except (AttributeError, TypeError, ValueError, IndexError):  # an unknown value in preview: show nothing
        return ""
