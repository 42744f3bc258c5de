"""How GCP answers the program under Pulumi's mocks (``mlplat preview --offline``, ``mlplat policy check``,
tests/pulumi): resource names and ids in Google's formats (``projects/P/locations/R/endpoints/N``,
service-account e-mails, Cloud SQL connection names, ``*.a.run.app`` URLs) and the invoke functions the
program calls (``organizations.getProject``, ``getClientConfig``). Deterministic: numbers are derived
from names, so two runs record the same graph."""
from __future__ import annotations

import hashlib
from typing import Any

from mlplat.pulumi_support import OfflineCloud

PROJECT_NUMBER_DIGITS = 12


def _digits(text: str, n: int) -> str:
    value = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    return str(10 ** (n - 1) + value % (9 * 10 ** (n - 1)))


def project_number(project: str) -> str:
    return _digits(f"project/{project}", PROJECT_NUMBER_DIGITS)


class GcpOfflineCloud(OfflineCloud):
    def __init__(self, project: str, region: str):
        self.project, self.region = project, region

    def resource(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        project = str(inputs.get("project") or self.project)
        region = str(inputs.get("region") or inputs.get("location") or self.region).lower()
        loc = f"projects/{project}/locations/{region}"
        kind = typ.split(":")[-1]
        given = inputs.get("name")
        out: dict[str, Any] = {}
        if typ == "gcp:vertex/aiEndpoint:AiEndpoint":
            ident = f"{loc}/endpoints/{given}"
        elif typ == "gcp:vertex/aiTensorboard:AiTensorboard":
            ident = f"{loc}/tensorboards/{_digits(name, 19)}"
            out["name"] = ident
        elif typ == "gcp:vertex/aiMetadataStore:AiMetadataStore":
            ident = f"{loc}/metadataStores/{given or 'default'}"
        elif typ == "gcp:vertex/aiFeatureOnlineStore:AiFeatureOnlineStore":
            ident = f"{loc}/featureOnlineStores/{given}"
        elif typ == "gcp:vertex/aiFeatureGroup:AiFeatureGroup":
            ident = f"{loc}/featureGroups/{given}"
        elif typ == "gcp:vertex/aiFeatureGroupFeature:AiFeatureGroupFeature":
            ident = f"{loc}/featureGroups/{inputs.get('featureGroup')}/features/{given}"
        elif typ == "gcp:vertex/aiFeatureOnlineStoreFeatureview:AiFeatureOnlineStoreFeatureview":
            ident = f"{loc}/featureOnlineStores/{inputs.get('featureOnlineStore')}/featureViews/{given}"
        elif typ == "gcp:serviceaccount/account:Account":
            email = f"{inputs.get('accountId')}@{project}.iam.gserviceaccount.com"
            ident = f"projects/{project}/serviceAccounts/{email}"
            out.update(email=email, name=ident, member=f"serviceAccount:{email}", uniqueId=_digits(email, 21))
        elif typ == "gcp:storage/bucket:Bucket":
            ident = str(given)
            out.update(url=f"gs://{given}", selfLink=f"https://www.googleapis.com/storage/v1/b/{given}")
        elif typ == "gcp:artifactregistry/repository:Repository":
            ident = f"{loc}/repositories/{inputs.get('repositoryId')}"
            out["name"] = inputs.get("repositoryId")
        elif typ == "gcp:sql/databaseInstance:DatabaseInstance":
            ident = str(given)
            out.update(connectionName=f"{project}:{region}:{given}", publicIpAddress="203.0.113.10",
                       selfLink=f"https://sqladmin.googleapis.com/sql/v1beta4/projects/{project}/instances/{given}")
        elif typ == "gcp:cloudrunv2/service:Service":
            ident = f"{loc}/services/{given}"
            out["uri"] = f"https://{given}-{_digits(str(given), 10)}.{region}.run.app"
        elif typ == "gcp:bigquery/dataset:Dataset":
            ident = f"projects/{project}/datasets/{inputs.get('datasetId')}"
        elif typ == "gcp:bigquery/table:Table":
            ident = f"projects/{project}/datasets/{inputs.get('datasetId')}/tables/{inputs.get('tableId')}"
        elif typ == "gcp:monitoring/notificationChannel:NotificationChannel":
            ident = f"projects/{project}/notificationChannels/{_digits(name, 19)}"
            out["name"] = ident
        elif typ == "gcp:monitoring/alertPolicy:AlertPolicy":
            ident = f"projects/{project}/alertPolicies/{_digits(name, 19)}"
            out["name"] = ident
        elif typ == "gcp:monitoring/dashboard:Dashboard":
            ident = f"projects/{project_number(project)}/dashboards/{hashlib.sha256(name.encode()).hexdigest()[:32]}"
        elif typ == "gcp:billing/budget:Budget":
            ident = f"billingAccounts/{inputs.get('billingAccount')}/budgets/{hashlib.sha256(name.encode()).hexdigest()[:32]}"
            out["name"] = ident
        elif typ == "gcp:projects/service:Service":
            ident = f"{project}/{inputs.get('service')}"
        elif "iAMMember" in typ or "IamMember" in typ:
            ident = f"{project}/{inputs.get('role')}/{inputs.get('member')}"
            out["etag"] = "BwYmlplat="
        else:
            ident = str(given or name)
        outputs = {**inputs, "id": ident, **out}
        outputs.setdefault("name", given or ident.rsplit("/", 1)[-1])
        if "labels" in inputs:
            outputs["effectiveLabels"] = outputs["pulumiLabels"] = dict(inputs["labels"] or {})
        del kind
        return ident, outputs

    def call(self, token: str, args: dict[str, Any]) -> dict[str, Any] | None:
        if token == "gcp:organizations/getProject:getProject":
            project = str(args.get("projectId") or self.project)
            return {"projectId": project, "number": project_number(project), "name": project,
                    "id": f"projects/{project}", "labels": {}, "effectiveLabels": {}, "billingAccount": "",
                    "folderId": "", "orgId": "", "autoCreateNetwork": True, "deletionPolicy": "PREVENT"}
        if token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"project": self.project, "region": self.region, "zone": f"{self.region}-a",
                    "accessToken": "offline", "id": f"projects/{self.project}/regions/{self.region}/zones/{self.region}-a",
                    "defaultLabels": {}}
        return {}
