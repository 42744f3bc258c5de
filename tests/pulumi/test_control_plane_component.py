"""The AWS control plane under Pulumi's mocks: RDS for PostgreSQL and the platform API on ECS Fargate.

The recorded resource graph is read as the engine would send it (input properties, camelCase);
the mocks answer the outputs the cloud computes (the database's address and managed secret, the load
balancer's DNS name). The rules AWS enforces and the mocks do not (names, versions, Fargate sizes)
are tested as the pure functions the program and the stack model call.
"""
from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mlplat.errors import StackError
from mlplat.pulumi_support import run_offline
from mlplat.stack import REQUIRED_TAGS, load_stack, parse_stack
from mlplat_policies import rules
from mlplat_providers.aws import service_rules
from tests.conftest import REPO

pytestmark = pytest.mark.pulumi

T_COMPONENT = "mlplat:aws:ControlPlane"
T_DB = "aws:rds/instance:Instance"
T_TASK = "aws:ecs/taskDefinition:TaskDefinition"
T_SG = "aws:ec2/securityGroup:SecurityGroup"
T_LISTENER = "aws:lb/listener:Listener"
FRAUD = (REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text()
HTTPS = """    controlPlane:
      certificateArn: arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-aaaa-bbbb-cccc-123456789012
      hostname: mlplat.fraud.internal.example.com
      clientCidrs: [10.0.0.0/8]
"""


def stack(text: str = FRAUD, name: str = "fraud-prod"):
    return parse_stack(text, path=Path(f"stacks/Pulumi.{name}.yaml"), name=name, project_dir=REPO)


def staging_with_https():
    """fraud's stack as a staging environment whose control plane has a certificate."""
    text = FRAUD.replace("environment: production", "environment: staging").replace(
        "    region: eu-west-1\n  mlplat:tags:", "    region: eu-west-1\n" + HTTPS + "  mlplat:tags:")
    return stack(text, "fraud-staging")


class Run:
    """One program run: the recorded resources and the stack outputs it exported."""

    def __init__(self, records, exported):
        self.records, self.exported = records, exported
        self.component = next(r for r in records if r.type == T_COMPONENT)
        self.children = [r for r in records if r.parent == self.component.urn]

    def of(self, type_: str) -> list:
        return [r for r in self.children if r.type == type_]

    def one(self, type_: str, suffix: str = ""):
        found = [r for r in self.of(type_) if r.name.endswith(suffix)]
        assert len(found) == 1, (type_, suffix, [r.name for r in found])
        return found[0]

    @property
    def secret_arn(self) -> str:
        return self.one(T_DB).outputs["masterUserSecrets"][0]["secretArn"]


def run_program(spec) -> Run:
    """The stack's whole program, with the values it exports as stack outputs."""
    import pulumi
    from pulumi.runtime.settings import get_root_resource

    from mlplat_providers.aws.components import program

    exported: dict = {}

    def run() -> None:
        program(spec)
        for key, value in get_root_resource().outputs.items():
            pulumi.Output.from_input(value).apply(lambda v, k=key: exported.__setitem__(k, v))

    records = run_offline(run, project="mlplat", stack=spec.name, region=spec.provider.region)
    return Run(records, exported)


def run_component(spec) -> Run:
    """The control plane alone, as a contract test builds each component."""
    from mlplat_providers.aws.control_plane import ControlPlane, ControlPlaneArgs
    from mlplat_providers.aws.plan import stack_plan

    plan = stack_plan(spec)
    records = run_offline(lambda: ControlPlane("cp", ControlPlaneArgs(plan, "123456789012", "the-bucket")),
                          project="mlplat", stack=f"contract-{spec.name}", region=spec.provider.region)
    return Run(records, {})


@pytest.fixture(scope="module")
def fraud() -> Run:
    return run_program(load_stack("fraud-prod", REPO))


@pytest.fixture(scope="module")
def staging() -> Run:
    return run_component(staging_with_https())


def accepts_tags(type_: str) -> bool:
    service, cls = type_.split(":")[1].split("/")[0], type_.split(":")[2]
    module = importlib.import_module(f"pulumi_aws.{service}")
    return "tags" in inspect.signature(getattr(module, cls)._internal_init).parameters


def walk(value, path=""):
    """Every (path, key, leaf) of a nested input document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from ((p, k, v) for p, k, v in walk(item, f"{path}.{key}")) if isinstance(item, (dict, list)) \
                else [(path, key, item)]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, f"{path}[{i}]")


# --- the component ---------------------------------------------------------------------------------


def test_the_component_and_its_children(fraud):
    platform = next(r for r in fraud.records if r.type == "mlplat:aws:TeamPlatform")
    assert fraud.component.parent == platform.urn
    assert fraud.component.name == "mlplat-fraud-production-control-plane"
    counts = {}
    for child in fraud.children:
        counts[child.type] = counts.get(child.type, 0) + 1
        assert child.custom and child.name.startswith(fraud.component.name), child.name
    assert counts == {
        "aws:ec2/vpc:Vpc": 1, "aws:ec2/internetGateway:InternetGateway": 1, "aws:ec2/subnet:Subnet": 3,
        "aws:ec2/routeTable:RouteTable": 2, "aws:ec2/routeTableAssociation:RouteTableAssociation": 3,
        "aws:ec2/eip:Eip": 1, "aws:ec2/natGateway:NatGateway": 1, T_SG: 3,
        "aws:kms/key:Key": 1, "aws:kms/alias:Alias": 1, "aws:rds/subnetGroup:SubnetGroup": 1, T_DB: 1,
        "aws:lb/loadBalancer:LoadBalancer": 1, "aws:lb/targetGroup:TargetGroup": 2, T_LISTENER: 2,
        "aws:cloudwatch/logGroup:LogGroup": 1, "aws:iam/role:Role": 2, "aws:iam/rolePolicy:RolePolicy": 2,
        "aws:ecs/cluster:Cluster": 1, T_TASK: 1, "aws:ecs/service:Service": 1,
    }
    # nothing of the control plane hangs elsewhere in the tree
    assert not [r for r in fraud.records if "control-plane" in r.name and r.urn != fraud.component.urn
                and r.parent != fraud.component.urn]


def test_every_taggable_child_carries_the_cost_tags(fraud, staging):
    for run in (fraud, staging):
        checked = 0
        for child in run.children:
            if accepts_tags(child.type):
                tags = rules.tags_of(rules.Resource(child.type, child.name, child.inputs))
                missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
                assert not missing, f"{child.type} {child.name} lacks {missing}"
                checked += 1
        assert checked >= 20


def test_the_database_is_encrypted_private_and_its_password_managed(fraud):
    db = fraud.one(T_DB).inputs
    key = fraud.one("aws:kms/key:Key")
    assert db["engine"] == "postgres" and db["engineVersion"] == "16"
    assert db["storageEncrypted"] is True and db["kmsKeyId"] == key.outputs["arn"]
    assert key.inputs["enableKeyRotation"] is True
    assert db["publiclyAccessible"] is False
    assert db["manageMasterUserPassword"] is True
    assert not {"password", "passwordWo"} & set(db)
    assert service_rules.rds_identifier_problem(db["identifier"]) is None


def test_the_database_lives_in_the_private_subnets(fraud):
    db = fraud.one(T_DB).inputs
    group = fraud.one("aws:rds/subnetGroup:SubnetGroup")
    assert db["dbSubnetGroupName"] == group.outputs["name"]
    subnets = {r.outputs["id"]: r for r in fraud.of("aws:ec2/subnet:Subnet")}
    assert len(group.inputs["subnetIds"]) == 2
    private = [subnets[i] for i in group.inputs["subnetIds"]]
    assert all(s.name.rsplit("-", 2)[-2] == "private" and s.inputs["mapPublicIpOnLaunch"] is False for s in private)
    assert len({s.inputs["availabilityZone"] for s in private}) == 2  # RDS and the load balancer need two zones
    # the private subnets route to the internet only through the NAT gateway, never an internet gateway
    associations = [a.inputs for a in fraud.of("aws:ec2/routeTableAssociation:RouteTableAssociation")]
    tables = {t.outputs["id"]: t.inputs for t in fraud.of("aws:ec2/routeTable:RouteTable")}
    for subnet_id in group.inputs["subnetIds"]:
        table = tables[next(a["routeTableId"] for a in associations if a["subnetId"] == subnet_id)]
        assert [set(route) - {"cidrBlock"} for route in table["routes"]] == [{"natGatewayId"}]


def test_production_keeps_the_database_safe_from_deletion(fraud):
    db = fraud.one(T_DB).inputs
    assert db["deletionProtection"] is True and db["skipFinalSnapshot"] is False and db["multiAz"] is True
    assert service_rules.rds_identifier_problem(db["finalSnapshotIdentifier"], limit=255) is None
    assert db["backupRetentionPeriod"] == 7 and db["copyTagsToSnapshot"] is True
    assert fraud.one("aws:lb/loadBalancer:LoadBalancer").inputs["enableDeletionProtection"] is True


def test_other_environments_may_be_torn_down(staging):
    db = staging.one(T_DB).inputs
    assert db["deletionProtection"] is False and db["skipFinalSnapshot"] is True
    assert "finalSnapshotIdentifier" not in db and db["multiAz"] is False
    assert db["storageEncrypted"] is True and db["publiclyAccessible"] is False  # never relaxed


def test_the_database_admits_only_the_servers_security_group(fraud):
    groups = {r.name.rsplit("-", 2)[-2]: r for r in fraud.of(T_SG)}
    db = fraud.one(T_DB).inputs
    assert db["vpcSecurityGroupIds"] == [groups["db"].outputs["id"]]
    ingress = groups["db"].inputs["ingress"]
    assert len(ingress) == 1
    assert (ingress[0]["fromPort"], ingress[0]["toPort"], ingress[0]["protocol"]) == (5432, 5432, "tcp")
    assert ingress[0]["securityGroups"] == [groups["server"].outputs["id"]]
    assert not ingress[0].get("cidrBlocks") and not groups["db"].inputs.get("egress")
    server_in = groups["server"].inputs["ingress"]
    assert [rule["securityGroups"] for rule in server_in] == [[groups["lb"].outputs["id"]]]


def test_no_literal_password_anywhere_in_the_inputs(fraud):
    for record in fraud.records:
        for path, key, value in walk(record.inputs):
            assert "password" not in key.lower() or key == "manageMasterUserPassword", (record.name, path, key)
            if isinstance(value, str) and "://" in value:
                assert urlsplit(value).password is None, (record.name, path)
    for container in json.loads(fraud.one(T_TASK).inputs["containerDefinitions"]):
        for env in container["environment"]:
            assert "PASSWORD" not in env["name"]
            if "://" in env["value"]:
                assert urlsplit(env["value"]).password is None


def test_the_task_definition_injects_the_database_secret(fraud):
    task = fraud.one(T_TASK).inputs
    assert task["requiresCompatibilities"] == ["FARGATE"] and task["networkMode"] == "awsvpc"
    assert service_rules.fargate_size_problem(int(task["cpu"]), int(task["memory"])) is None
    assert task["executionRoleArn"] == fraud.one("aws:iam/role:Role", "execution-role").outputs["arn"]
    containers = {c["name"]: c for c in json.loads(task["containerDefinitions"])}
    assert set(containers) == {"server", "tracking"}
    address = fraud.one(T_DB).outputs["address"]
    log_group = fraud.one("aws:cloudwatch/logGroup:LogGroup").inputs["name"]
    for container in containers.values():
        assert container["secrets"] == [{"name": "PGPASSWORD", "valueFrom": f"{fraud.secret_arn}:password::"}]
        env = {e["name"]: e["value"] for e in container["environment"]}
        url = urlsplit(env["MLPLAT_DATABASE_URL"])
        assert (url.scheme, url.username, url.hostname, url.port, url.path) == (
            "postgresql", "mlplat", address, 5432, "/mlplat")
        assert container["logConfiguration"]["logDriver"] == "awslogs"
        assert container["logConfiguration"]["options"]["awslogs-group"] == log_group
        assert container["image"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlplat/server:latest"
    assert containers["server"]["command"][:4] == ["mlplat", "server", "--stack", "fraud-prod"]
    assert containers["server"]["portMappings"] == [{"containerPort": 8770, "protocol": "tcp"}]
    tracking = containers["tracking"]["command"][0]
    assert "exec mlflow server" in tracking and "--port 8771" in tracking and "/mlflow?sslmode=require" in tracking


def test_the_execution_role_reads_only_the_database_secret(fraud):
    def statements(suffix):
        return json.loads(fraud.one("aws:iam/rolePolicy:RolePolicy", suffix).inputs["policy"])["Statement"]

    execution = statements("execution-role-policy")
    secret = [s for s in execution if any(a.startswith("secretsmanager:") or a == "*" for a in s["Action"])]
    assert secret == [{"Sid": "DatabaseSecret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                       "Resource": [fraud.secret_arn]}]
    pull = next(s for s in execution if s["Sid"] == "EcrPull")
    assert pull["Resource"] == ["arn:aws:ecr:eu-west-1:123456789012:repository/mlplat/server"]
    task = statements("task-role-policy")
    assert not [s for s in task if any("secretsmanager" in a for a in ([s["Action"]] if isinstance(
        s["Action"], str) else s["Action"]))]


def test_the_service_runs_privately_behind_the_internal_load_balancer(fraud):
    lb = fraud.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert lb["internal"] is True and lb["loadBalancerType"] == "application"
    assert service_rules.elb_name_problem(lb["name"]) is None
    service = fraud.one("aws:ecs/service:Service").inputs
    private = fraud.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"]
    assert service["launchType"] == "FARGATE" and service["networkConfiguration"]["assignPublicIp"] is False
    assert service["networkConfiguration"]["subnets"] == private == lb["subnets"]
    assert {(b["containerName"], b["containerPort"]) for b in service["loadBalancers"]} == {
        ("server", 8770), ("tracking", 8771)}
    assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


def test_without_a_certificate_the_url_is_internal_http(fraud):
    listeners = sorted((r.inputs["port"], r.inputs["protocol"], r.inputs.get("certificateArn"))
                       for r in fraud.of(T_LISTENER))
    assert listeners == [(80, "HTTP", None), (8771, "HTTP", None)]
    dns = fraud.one("aws:lb/loadBalancer:LoadBalancer").outputs["dnsName"]
    assert dns.startswith("internal-")
    assert fraud.exported["controlPlaneUrl"] == f"http://{dns}"
    assert fraud.exported["trackingUrl"] == f"http://{dns}:8771"
    lb_ingress = fraud.one(T_SG, "lb-sg").inputs["ingress"]
    assert {tuple(rule["cidrBlocks"]) for rule in lb_ingress} == {("10.42.0.0/16",)}  # the VPC only


def test_with_a_certificate_every_listener_is_https(staging):
    listeners = sorted((r.inputs["port"], r.inputs["protocol"], r.inputs.get("certificateArn"), r.inputs.get("sslPolicy"))
                       for r in staging.of(T_LISTENER))
    cert = "arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-aaaa-bbbb-cccc-123456789012"
    assert listeners == [(443, "HTTPS", cert, "ELBSecurityPolicy-TLS13-1-2-2021-06"),
                         (8771, "HTTPS", cert, "ELBSecurityPolicy-TLS13-1-2-2021-06")]
    lb_ingress = staging.one(T_SG, "lb-sg").inputs["ingress"]
    assert sorted((rule["fromPort"], tuple(rule["cidrBlocks"])) for rule in lb_ingress) == [
        (443, ("10.0.0.0/8",)), (8771, ("10.0.0.0/8",))]
    tracking = json.loads(staging.one(T_TASK).inputs["containerDefinitions"])[1]["command"][0]
    assert "--allowed-hosts mlplat.fraud.internal.example.com,mlplat.fraud.internal.example.com:8771" in tracking


def test_the_urls_are_stack_outputs(fraud):
    assert set(fraud.exported) >= {"controlPlaneUrl", "trackingUrl", "bucket", "endpoints"}
    assert all(isinstance(fraud.exported[k], str) and fraud.exported[k] for k in ("controlPlaneUrl", "trackingUrl"))


def test_https_urls_name_the_hostname():
    from mlplat_providers.aws.control_plane import control_plane_plan
    from mlplat_providers.aws.plan import stack_plan

    cp = control_plane_plan(stack_plan(staging_with_https()))
    assert cp.url("internal-x.elb.amazonaws.com") == "https://mlplat.fraud.internal.example.com"
    assert cp.tracking_url("internal-x.elb.amazonaws.com") == "https://mlplat.fraud.internal.example.com:8771"


def test_up_tells_where_the_url_goes():
    from mlplat_providers.aws.control_plane import up_lines

    spec = load_stack("fraud-prod", REPO)
    outputs = {"controlPlaneUrl": "http://internal-cp.elb.amazonaws.com", "trackingUrl": "http://internal-cp:8771"}
    lines = up_lines(spec, outputs)
    assert lines[0] == "Control plane: http://internal-cp.elb.amazonaws.com (MLflow tracking: http://internal-cp:8771)"
    assert "internal HTTP" in lines[1] and "unencrypted" in lines[1]
    assert "mlplat:controlPlane: {url: http://internal-cp.elb.amazonaws.com" in lines[2]
    named = stack(FRAUD + "  mlplat:controlPlane: {url: 'https://cp.example.com'}\n")
    assert up_lines(named, {"controlPlaneUrl": "https://cp.example.com", "trackingUrl": "https://cp.example.com:8771"}) \
        == ["Control plane: https://cp.example.com (MLflow tracking: https://cp.example.com:8771)"]
    assert up_lines(spec, {}) == []


# --- the policy pack on the control plane --------------------------------------------------------------


def _graph(run: Run, **db_props) -> list[rules.Resource]:
    out = []
    for r in run.records:
        props = dict(r.inputs)
        if r.type == T_DB:
            props.update(db_props)
            props = {k: v for k, v in props.items() if v is not None}
        out.append(rules.Resource(r.type, r.name, props, r.urn, r.parent))
    return out


def test_the_policy_pack_passes_the_program_and_flags_a_weakened_database(fraud):
    settings = load_stack("fraud-prod", REPO).policy.as_settings()
    assert rules.evaluate(_graph(fraud), settings) == []
    for change, expected in (({"storageEncrypted": False}, "not encrypted"),
                             ({"storageEncrypted": None, "kmsKeyId": None}, "not encrypted"),
                             ({"publiclyAccessible": True}, "publicly accessible"),
                             ({"manageMasterUserPassword": None, "password": "s3cr3t-pass"}, "master password in password")):
        findings = rules.evaluate(_graph(fraud, **change), settings)
        assert [(f.policy, f.level, f.resource_type) for f in findings] == [("database", rules.MANDATORY, T_DB)], change
        assert expected in findings[0].message


# --- rules AWS enforces that the mocks do not ------------------------------------------------------------


@pytest.mark.parametrize(("name", "problem"), [
    ("mlplat-fraud-production-ledger", None),
    ("a", None),
    ("a" * 63, None),
    ("a" * 64, "64 characters"),
    ("", "0 characters"),
    ("9lives-ledger", "start with a letter"),
    ("-ledger", "start with a letter"),
    ("fraud--ledger", "two consecutive hyphens"),
    ("fraud-ledger-", "ends with a hyphen"),
    ("fraud_ledger", "only letters, digits and hyphens"),
])
def test_rds_identifier_rules(name, problem):
    found = service_rules.rds_identifier_problem(name)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize(("version", "ok"), [("16", True), ("16.4", True), ("13.20", True), ("17.2", True),
                                             ("9.6.22", False), ("9.6", False), ("10", False), ("16.4.1", False),
                                             ("16.x", False), ("v16", False), ("", False)])
def test_postgres_engine_version_format(version, ok):
    assert (service_rules.postgres_version_problem(version) is None) == ok


@pytest.mark.parametrize(("cpu", "memory", "ok"), [
    (256, 512, True), (256, 2048, True), (256, 3072, False), (512, 4096, True), (512, 512, False),
    (1024, 2048, True), (1024, 8192, True), (1024, 9216, False), (2048, 16384, True), (2048, 4608, False),
    (4096, 30720, True), (4096, 31744, False), (8192, 20480, True), (8192, 17408, False),
    (16384, 122880, True), (16384, 36864, False), (768, 2048, False), (32768, 65536, False),
])
def test_fargate_cpu_memory_combinations(cpu, memory, ok):
    assert (service_rules.fargate_size_problem(cpu, memory) is None) == ok


@pytest.mark.parametrize(("name", "problem"), [
    ("mlplat-fraud-production-cp", None), ("x" * 32, None), ("x" * 33, "33 characters"),
    ("internal-cp", "internal-"), ("-cp", "hyphen"), ("cp-", "hyphen"), ("cp.api", "only letters"),
])
def test_load_balancer_name_rules(name, problem):
    found = service_rules.elb_name_problem(name)
    assert (found is None) if problem is None else (problem in found)
    assert service_rules.elb_name_problem("internal-cp", what="target group name") is None  # reserved for LBs only


def test_derived_names_obey_the_rules_for_any_valid_stack():
    from mlplat_providers.aws.control_plane import control_plane_plan
    from mlplat_providers.aws.plan import stack_plan

    def plan_for(team: str, environment: str):
        text = FRAUD.replace("team: fraud", f"team: {team}").replace("environment: production",
                                                                       f"environment: {environment}")
        return control_plane_plan(stack_plan(stack(text, "t")))

    # the longest names a stack allows, a double hyphen, and two teams that differ only after the cut
    long_a = plan_for("a" * 30 + "-x", "production")
    long_b = plan_for("a" * 30 + "-y", "production")
    hyphens = plan_for("risk--scoring", "pre--prod")
    for cp in (long_a, long_b, hyphens):
        assert service_rules.rds_identifier_problem(cp.db_identifier) is None, cp.db_identifier
        assert service_rules.elb_name_problem(cp.load_balancer) is None, cp.load_balancer
        for group in (cp.server_target_group, cp.tracking_target_group):
            assert service_rules.elb_name_problem(group, what="target group name") is None, group
        assert len(cp.execution_role) <= 64 and len(cp.task_role) <= 64
    assert long_a.load_balancer != long_b.load_balancer
    assert long_a.server_target_group != long_b.server_target_group
    assert long_a.final_snapshot and hyphens.final_snapshot is None


@pytest.mark.parametrize(("setting", "message"), [
    ("{cpu: 256, memory: 4096}", "Fargate does not run 256 CPU units with 4096 MiB"),
    ("{postgresVersion: '9.6'}", "is not MAJOR or MAJOR.MINOR"),
    ("{vpcCidr: 10.0.0.0/8}", "needs /16 to /26"),
    ("{clientCidrs: [10.0.0.1/8]}", "has host bits set"),
    ("{certificateArn: 'arn:aws:acm:eu-west-1:123456789012:certificate/abc'}", "certificateArn needs hostname"),
    ("{hostname: cp.example.com}", "hostname needs certificateArn"),
    ("{dbInstanceClass: m5.large}", "should match pattern"),
    ("{backupRetentionDays: 0}", "greater than or equal to 1"),
])
def test_a_stack_asking_for_what_aws_refuses_is_invalid(setting, message):
    text = FRAUD.replace("    region: eu-west-1\n  mlplat:tags:",
                         f"    region: eu-west-1\n    controlPlane: {setting}\n  mlplat:tags:")
    with pytest.raises(StackError) as caught:
        stack(text)
    assert "mlplat:provider.controlPlane" in str(caught.value) and message in str(caught.value)
