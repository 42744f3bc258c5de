"""The stack's control plane on AWS: the ledger in RDS for PostgreSQL, the platform API on ECS Fargate.

Why ECS on Fargate behind an internal Application Load Balancer rather than App Runner: the task runs
two containers side by side (``mlplat server`` and MLflow's tracking server) that App Runner, one
container per service, cannot; ECS injects the database secret from Secrets Manager into the
container's environment with an execution role scoped to that one secret; and an internal load
balancer keeps the API inside the VPC, next to the private database, instead of on a public URL.

What it creates (``ControlPlane``, token ``mlplat:aws:ControlPlane``):

* a small VPC: two private subnets in two availability zones (the database, the tasks and the load
  balancer), one public subnet holding the NAT gateway the tasks reach ECR, CloudWatch Logs, Secrets
  Manager and the AWS APIs through;
* RDS for PostgreSQL: storage encrypted with the stack's own KMS key, not publicly accessible, in a DB
  subnet group of the private subnets, reachable on 5432 only from the server's security group; the
  master password is managed by RDS in Secrets Manager (``manage_master_user_password``), never written
  in the program or the stack; backups kept ``backupRetentionDays``; production environments get
  deletion protection, Multi-AZ and a final snapshot;
* ECS: a cluster, a task definition with the two containers (logs to CloudWatch, the password injected
  as ``PGPASSWORD`` through ``secrets``, the database URL without a password in the environment), and a
  service on the private subnets registered in two target groups of the internal load balancer;
* listeners: HTTPS (TLS 1.2+) when ``controlPlane.certificateArn`` is set, the URL then being
  ``https://<hostname>``; otherwise plain HTTP and the URL is the load balancer's internal DNS name:
  reachable only inside the VPC (and ``clientCidrs``), **unencrypted**.

The URL is a stack output (``controlPlaneUrl``, ``trackingUrl``) and ``mlplat up`` prints it. Commands
use the control plane once the stack file names it under ``mlplat:controlPlane: {url: ...}``: the
CLI does not read Pulumi's state on every command.

The server binds the task's address (``--host 0.0.0.0``), which ``mlplat server`` allows only when it
authenticates every caller (``mlplat/netguard.py``): the policy pack's ``access`` policy, which ``mlplat
up`` enforces before anything is created, refuses an AWS stack whose ``mlplat:access.mode`` is not oidc,
aws-iam, google or entra, rather than letting it deploy a service that would fail its health checks.
With ``aws-iam`` the server executes each caller's presigned ``sts:GetCallerIdentity`` request itself,
through the NAT gateway; it needs no IAM permission for that.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from mlplat.errors import StackError
from mlplat_providers.aws import plan as p
from mlplat_providers.aws import service_rules as rules
from mlplat_providers.aws.settings import AwsControlPlaneSettings

SERVER_PORT = 8770  # `mlplat server`'s default port
TRACKING_PORT = 8771  # MLflow beside it, on the port `mlplat server --tracking-port` examples use
POSTGRES_PORT = 5432
DB_NAME, DB_USER = "mlplat", "mlplat"
TRACKING_DB = "mlflow"  # MLflow keeps its own database: its tables (model_versions, ...) clash with the ledger's
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


# --- planning (pure) -----------------------------------------------------------------------------


def fit(text: str, limit: int) -> str:
    """``text`` as a name of at most ``limit`` letters, digits and single hyphens. A name that must be cut
    keeps a short hash of the whole, so two long stack names that share a beginning stay apart."""
    clean = re.sub(r"-{2,}", "-", p.slug(text, 1000))
    if len(clean) <= limit:
        return clean
    digest = hashlib.sha256(clean.encode()).hexdigest()[:6]
    return f"{clean[:limit - 7].rstrip('-')}-{digest}"


@dataclass(frozen=True)
class ControlPlanePlan:
    """Every name, network block and switch of a stack's control plane, decided before any resource exists."""

    settings: AwsControlPlaneSettings
    stack: str
    region: str
    production: bool
    db_identifier: str
    final_snapshot: str | None
    db_subnet_group: str
    key_alias: str
    load_balancer: str
    server_target_group: str
    tracking_target_group: str
    cluster: str
    family: str
    log_group: str
    execution_role: str
    task_role: str
    vpc_cidr: str
    private_cidrs: tuple[str, str]
    public_cidr: str

    @property
    def https(self) -> bool:
        return self.settings.certificate_arn is not None

    @property
    def protocol(self) -> str:
        return "HTTPS" if self.https else "HTTP"

    @property
    def listener_port(self) -> int:
        return 443 if self.https else 80

    @property
    def client_cidrs(self) -> tuple[str, ...]:
        return self.settings.client_cidrs or (self.vpc_cidr,)

    def url(self, dns_name: str) -> str:
        """The control plane's URL: https://<hostname> with a certificate, else the load balancer's internal
        DNS name over plain HTTP."""
        return f"https://{self.settings.hostname}" if self.https else f"http://{dns_name}"

    def tracking_url(self, dns_name: str) -> str:
        host = self.settings.hostname if self.https else dns_name
        return f"{'https' if self.https else 'http'}://{host}:{TRACKING_PORT}"


def _check(problem: str | None, spec: Any) -> None:
    if problem:
        raise StackError(f"stack '{spec.name}': the control plane cannot be provisioned: {problem}",
                         where=spec.path or None, hint="shorten or rename the team or environment, or adjust "
                         "mlplat:provider.controlPlane")


def control_plane_plan(plan: p.StackPlan) -> ControlPlanePlan:
    """The control plane of an AWS stack. Raises ``StackError`` when a derived name breaks an AWS rule."""
    spec = plan.spec
    settings: AwsControlPlaneSettings = spec.provider.control_plane
    prefix = plan.prefix
    db_identifier = fit(f"{prefix}-ledger", 63)
    final_snapshot = fit(f"{db_identifier}-final", 255) if plan.is_production else None
    cp = ControlPlanePlan(
        settings=settings, stack=spec.name, region=plan.region, production=plan.is_production,
        db_identifier=db_identifier, final_snapshot=final_snapshot,
        db_subnet_group=fit(f"{prefix}-ledger", 255), key_alias=f"alias/{fit(f'{prefix}-ledger', 200)}",
        load_balancer=fit(f"{prefix}-cp", 32),
        server_target_group=fit(f"{prefix}-cp-api", 32), tracking_target_group=fit(f"{prefix}-cp-mlflow", 32),
        cluster=fit(f"{prefix}-control-plane", 255), family=fit(f"{prefix}-control-plane", 255),
        log_group=f"/mlplat/{prefix}/control-plane",
        execution_role=fit(f"{prefix}-cp-exec", 64), task_role=fit(f"{prefix}-cp-task", 64),
        vpc_cidr=settings.vpc_cidr, **subnet_blocks(settings.vpc_cidr),
    )
    _check(rules.rds_identifier_problem(cp.db_identifier), spec)
    if cp.final_snapshot:
        _check(rules.rds_identifier_problem(cp.final_snapshot, limit=255, what="final DB snapshot identifier"), spec)
    _check(rules.elb_name_problem(cp.load_balancer), spec)
    for target_group in (cp.server_target_group, cp.tracking_target_group):
        _check(rules.elb_name_problem(target_group, what="target group name"), spec)
    _check(rules.fargate_size_problem(settings.cpu, settings.memory), spec)
    _check(rules.postgres_version_problem(settings.postgres_version), spec)
    return cp


def subnet_blocks(vpc_cidr: str) -> dict[str, Any]:
    """The VPC in quarters: two private subnets, one public subnet (the NAT gateway), one spare."""
    quarters = [str(net) for net in ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=2)]
    return {"private_cidrs": (quarters[0], quarters[1]), "public_cidr": quarters[2]}


def default_image(region: str, account: str) -> str:
    """The stack account's ``mlplat/server`` ECR repository, named like the pipelines' ``mlplat/train``."""
    return f"{account}.dkr.ecr.{region}.amazonaws.com/mlplat/server:latest"


_ECR_IMAGE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)")


def ecr_repository_arn(image: str) -> str | None:
    """The ECR repository an image URI names, or ``None`` for an image from another registry."""
    match = _ECR_IMAGE.match(image)
    if match is None:
        return None
    account, region, repository = match.groups()
    return f"arn:aws:ecr:{region}:{account}:repository/{repository}"


def database_url(address: str, database: str = DB_NAME, driver: str = "postgresql") -> str:
    """A libpq URL without a password (libpq reads it from ``PGPASSWORD``), TLS required."""
    return f"{driver}://{DB_USER}@{address}:{POSTGRES_PORT}/{database}?sslmode=require"


# MLflow's database is created on first start (RDS creates only the ledger's). Runs in the tracking
# container, whose image holds psycopg (an mlplat dependency); libpq takes the password from PGPASSWORD.
_CREATE_TRACKING_DB = (
    "import os, psycopg\n"
    "with psycopg.connect(os.environ['MLPLAT_DATABASE_URL'], autocommit=True) as c:\n"
    f"    if not c.execute(\"SELECT 1 FROM pg_database WHERE datname = '{TRACKING_DB}'\").fetchone():\n"
    f"        c.execute('CREATE DATABASE {TRACKING_DB}')\n"
)


def container_definitions(cp: ControlPlanePlan, *, image: str, db_address: str, secret_arn: str, log_group: str,
                          bucket: str, public_host: str) -> str:
    """The task's two containers as ECS's ``containerDefinitions`` JSON.

    The password reaches each container as ``PGPASSWORD`` from the RDS-managed secret's ``password`` key
    (``<secret arn>:<json key>:<version stage>:<version id>``; needs Fargate platform 1.4.0+):
    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/secrets-envvar-secrets-manager.html
    """
    password = [{"name": "PGPASSWORD", "valueFrom": f"{secret_arn}:password::"}]

    def logs(prefix: str) -> dict[str, Any]:
        return {"logDriver": "awslogs", "options": {"awslogs-group": log_group, "awslogs-region": cp.region,
                                                    "awslogs-stream-prefix": prefix}}

    ledger = database_url(db_address)
    tracking_command = " ".join([
        "python", "-c", shlex.quote(_CREATE_TRACKING_DB), "&&", "exec", "mlflow", "server",
        "--host", "0.0.0.0", "--port", str(TRACKING_PORT),
        "--backend-store-uri", shlex.quote(database_url(db_address, TRACKING_DB, "postgresql+psycopg")),
        "--artifacts-destination", shlex.quote(f"s3://{bucket}/control-plane/mlflow"), "--serve-artifacts",
        "--allowed-hosts", shlex.quote(f"{public_host},{public_host}:{TRACKING_PORT}"), "--workers", "2"])
    containers = [
        {
            "name": "server", "image": image, "essential": True,
            "command": ["mlplat", "server", "--stack", cp.stack, "--host", "0.0.0.0", "--port", str(SERVER_PORT)],
            "portMappings": [{"containerPort": SERVER_PORT, "protocol": "tcp"}],
            "environment": [{"name": "MLPLAT_DATABASE_URL", "value": ledger},
                            {"name": "MLPLAT_STACK", "value": cp.stack}],
            "secrets": password,
            "logConfiguration": logs("server"),
        },
        {
            "name": "tracking", "image": image, "essential": True,
            "entryPoint": ["sh", "-c"], "command": [tracking_command],
            "portMappings": [{"containerPort": TRACKING_PORT, "protocol": "tcp"}],
            "environment": [{"name": "MLPLAT_DATABASE_URL", "value": ledger}],
            "secrets": password,
            "logConfiguration": logs("tracking"),
        },
    ]
    return json.dumps(containers, sort_keys=True)


def execution_role_policy(*, secret_arn: str, log_group_arn: str, image: str) -> str:
    """What ECS may do to start the task: pull the image, write its logs, read the database secret (that
    secret only). The RDS-managed secret is encrypted with the aws/secretsmanager key, whose key policy
    already lets Secrets Manager decrypt for callers in the account, so no KMS grant is needed."""
    statements: list[dict[str, Any]] = [
        {"Sid": "DatabaseSecret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
         "Resource": [secret_arn]},
        {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": [f"{log_group_arn}:*"]},
    ]
    repository = ecr_repository_arn(image)
    if repository is not None:
        statements += [
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
            {"Sid": "EcrPull", "Effect": "Allow", "Resource": [repository],
             "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]},
        ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def up_lines(spec: Any, outputs: dict[str, Any]) -> list[str]:
    """What ``mlplat up`` says about the control plane once the stack is up: its URL, whether that URL is
    internal HTTP, and, while the stack file does not name it yet, the lines to add there."""
    url, tracking = outputs.get("controlPlaneUrl"), outputs.get("trackingUrl")
    if not url:
        return []
    lines = [f"Control plane: {url} (MLflow tracking: {tracking})"]
    if url.startswith("http://"):
        lines.append("  internal HTTP: reachable only inside the control plane's VPC (and controlPlane.clientCidrs), "
                     "unencrypted; set controlPlane.certificateArn and controlPlane.hostname under mlplat:provider "
                     "for HTTPS")
    if spec.control_plane.url != url:
        where = spec.path or f"stacks/Pulumi.{spec.name}.yaml"
        lines.append(f"  commands use it once {where} says so: mlplat:controlPlane: {{url: {url}, tracking: {tracking}}}")
    return lines


# --- the component -------------------------------------------------------------------------------


@dataclass
class ControlPlaneArgs:
    plan: p.StackPlan
    account: pulumi.Input[str]
    bucket: pulumi.Input[str]  # the stack's artifact bucket: MLflow's artifacts go under control-plane/


def _child(parent: pulumi.Resource, **extra: Any) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **extra)


class ControlPlane(pulumi.ComponentResource):
    """The ledger database and the platform API server (with MLflow beside it) of one stack."""

    url: pulumi.Output[str]
    tracking_url: pulumi.Output[str]

    def __init__(self, name: str, args: ControlPlaneArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:aws:ControlPlane", name, None, opts)
        plan, tags = args.plan, args.plan.tags
        cp = control_plane_plan(plan)
        settings = cp.settings

        # --- network --------------------------------------------------------------------------
        zones = aws.get_availability_zones_output(state="available", opts=pulumi.InvokeOutputOptions(parent=self))
        self.vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=cp.vpc_cidr, enable_dns_support=True,
                               enable_dns_hostnames=True, tags={**tags, "Name": f"{plan.prefix}-control-plane"},
                               opts=_child(self))
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=tags, opts=_child(self))
        public = aws.ec2.Subnet(f"{name}-public", vpc_id=self.vpc.id, cidr_block=cp.public_cidr,
                                availability_zone=zones.names[0], map_public_ip_on_launch=False,
                                tags={**tags, "Name": f"{plan.prefix}-public"}, opts=_child(self))
        public_routes = aws.ec2.RouteTable(f"{name}-public-routes", vpc_id=self.vpc.id,
                                           routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
                                           tags=tags, opts=_child(self))
        aws.ec2.RouteTableAssociation(f"{name}-public-routes-assoc", subnet_id=public.id,
                                      route_table_id=public_routes.id, opts=_child(self))
        nat_ip = aws.ec2.Eip(f"{name}-nat-ip", domain="vpc", tags=tags, opts=_child(self, depends_on=[gateway]))
        nat = aws.ec2.NatGateway(f"{name}-nat", allocation_id=nat_ip.id, subnet_id=public.id, tags=tags,
                                 opts=_child(self, depends_on=[gateway]))
        private_routes = aws.ec2.RouteTable(f"{name}-private-routes", vpc_id=self.vpc.id,
                                            routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}],
                                            tags=tags, opts=_child(self))
        self.private_subnets = []
        for i, cidr in enumerate(cp.private_cidrs):
            subnet = aws.ec2.Subnet(f"{name}-private-{i}", vpc_id=self.vpc.id, cidr_block=cidr,
                                    availability_zone=zones.names[i], map_public_ip_on_launch=False,
                                    tags={**tags, "Name": f"{plan.prefix}-private-{i}"}, opts=_child(self))
            aws.ec2.RouteTableAssociation(f"{name}-private-{i}-routes-assoc", subnet_id=subnet.id,
                                          route_table_id=private_routes.id, opts=_child(self))
            self.private_subnets.append(subnet)
        private_ids = [s.id for s in self.private_subnets]

        # --- security groups: clients → load balancer → server → database ------------------------
        self.lb_security_group = aws.ec2.SecurityGroup(
            f"{name}-lb-sg", vpc_id=self.vpc.id, description="mlplat control plane load balancer",
            ingress=[{"protocol": "tcp", "from_port": port, "to_port": port, "cidr_blocks": list(cp.client_cidrs),
                      "description": "control plane clients"} for port in (cp.listener_port, TRACKING_PORT)],
            egress=[{"protocol": "tcp", "from_port": SERVER_PORT, "to_port": TRACKING_PORT,
                     "cidr_blocks": [cp.vpc_cidr], "description": "to the server's containers"}],
            tags=tags, opts=_child(self))
        self.server_security_group = aws.ec2.SecurityGroup(
            f"{name}-server-sg", vpc_id=self.vpc.id, description="mlplat control plane server tasks",
            ingress=[{"protocol": "tcp", "from_port": SERVER_PORT, "to_port": TRACKING_PORT,
                      "security_groups": [self.lb_security_group.id], "description": "from the load balancer"}],
            egress=[{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"],
                     "description": "ECR, CloudWatch Logs, Secrets Manager, S3 and AWS APIs"},
                    {"protocol": "tcp", "from_port": POSTGRES_PORT, "to_port": POSTGRES_PORT,
                     "cidr_blocks": [cp.vpc_cidr], "description": "the ledger database"}],
            tags=tags, opts=_child(self))
        self.db_security_group = aws.ec2.SecurityGroup(
            f"{name}-db-sg", vpc_id=self.vpc.id, description="mlplat ledger database: the server only",
            ingress=[{"protocol": "tcp", "from_port": POSTGRES_PORT, "to_port": POSTGRES_PORT,
                      "security_groups": [self.server_security_group.id], "description": "the server's tasks"}],
            tags=tags, opts=_child(self))

        # --- the ledger database ----------------------------------------------------------------
        self.key = aws.kms.Key(f"{name}-key", description=f"mlplat ledger of {plan.spec.team}/{plan.spec.environment}",
                               enable_key_rotation=True, deletion_window_in_days=30, tags=tags, opts=_child(self))
        aws.kms.Alias(f"{name}-key-alias", name=cp.key_alias, target_key_id=self.key.key_id, opts=_child(self))
        subnet_group = aws.rds.SubnetGroup(f"{name}-db-subnets", name=cp.db_subnet_group, subnet_ids=private_ids,
                                           description="mlplat ledger: private subnets", tags=tags, opts=_child(self))
        self.database = aws.rds.Instance(
            f"{name}-db", identifier=cp.db_identifier, engine="postgres", engine_version=settings.postgres_version,
            instance_class=settings.db_instance_class, allocated_storage=20, max_allocated_storage=100,
            storage_type="gp3", storage_encrypted=True, kms_key_id=self.key.arn,
            db_name=DB_NAME, username=DB_USER, manage_master_user_password=True, port=POSTGRES_PORT,
            db_subnet_group_name=subnet_group.name, vpc_security_group_ids=[self.db_security_group.id],
            publicly_accessible=False, multi_az=cp.production,
            backup_retention_period=settings.backup_retention_days, copy_tags_to_snapshot=True,
            deletion_protection=cp.production, skip_final_snapshot=not cp.production,
            final_snapshot_identifier=cp.final_snapshot, auto_minor_version_upgrade=True,
            tags=tags, opts=_child(self))
        secret_arn = self.database.master_user_secrets.apply(_secret_arn)

        # --- the load balancer (internal) ---------------------------------------------------------
        self.load_balancer = aws.lb.LoadBalancer(
            f"{name}-lb", name=cp.load_balancer, internal=True, load_balancer_type="application",
            security_groups=[self.lb_security_group.id], subnets=private_ids, drop_invalid_header_fields=True,
            enable_deletion_protection=cp.production, tags=tags, opts=_child(self))
        targets = {}
        for key, group_name, port, health in (("server", cp.server_target_group, SERVER_PORT, "/healthz"),
                                              ("tracking", cp.tracking_target_group, TRACKING_PORT, "/health")):
            targets[key] = aws.lb.TargetGroup(
                f"{name}-{key}-tg", name=group_name, port=port, protocol="HTTP", target_type="ip",
                vpc_id=self.vpc.id, deregistration_delay=30,
                health_check={"path": health, "matcher": "200", "interval": 15, "healthy_threshold": 2,
                              "unhealthy_threshold": 3},
                tags=tags, opts=_child(self))
        tls = {"certificate_arn": settings.certificate_arn, "ssl_policy": TLS_POLICY} if cp.https else {}
        listeners = [
            aws.lb.Listener(f"{name}-{key}-listener", load_balancer_arn=self.load_balancer.arn, port=port,
                            protocol=cp.protocol, default_actions=[{"type": "forward",
                                                                    "target_group_arn": targets[key].arn}],
                            tags=tags, opts=_child(self), **tls)
            for key, port in (("server", cp.listener_port), ("tracking", TRACKING_PORT))]
        public_host: pulumi.Output[str] = (pulumi.Output.from_input(settings.hostname) if cp.https
                                           else self.load_balancer.dns_name)

        # --- the service -------------------------------------------------------------------------
        self.log_group = aws.cloudwatch.LogGroup(f"{name}-logs", name=cp.log_group, retention_in_days=90,
                                                 tags=tags, opts=_child(self))
        image = (pulumi.Output.from_input(settings.image) if settings.image else
                 pulumi.Output.from_input(args.account).apply(lambda account: default_image(cp.region, account)))
        self.execution_role = aws.iam.Role(
            f"{name}-execution-role", name=cp.execution_role, assume_role_policy=p.assume_role_policy(
                "ecs-tasks.amazonaws.com"), description="ECS: pull the control plane image, write its logs, "
            "read its database secret", tags=tags, opts=_child(self))
        aws.iam.RolePolicy(f"{name}-execution-role-policy", role=self.execution_role.id,
                           policy=pulumi.Output.all(secret_arn, self.log_group.arn, image).apply(
                               lambda a: execution_role_policy(secret_arn=a[0], log_group_arn=a[1], image=a[2])),
                           opts=_child(self))
        self.task_role = aws.iam.Role(
            f"{name}-task-role", name=cp.task_role, assume_role_policy=p.assume_role_policy("ecs-tasks.amazonaws.com"),
            description="The control plane's platform services: the platform role's permissions", tags=tags,
            opts=_child(self))
        aws.iam.RolePolicy(f"{name}-task-role-policy", role=self.task_role.id, policy=p.platform_role_policy(plan),
                           opts=_child(self))
        self.cluster = aws.ecs.Cluster(f"{name}-cluster", name=cp.cluster,
                                       settings=[{"name": "containerInsights", "value": "enabled"}], tags=tags,
                                       opts=_child(self))
        definitions = pulumi.Output.all(image, self.database.address, secret_arn, self.log_group.name, args.bucket,
                                        public_host).apply(lambda a: container_definitions(
                                            cp, image=a[0], db_address=a[1], secret_arn=a[2], log_group=a[3],
                                            bucket=a[4], public_host=a[5]))
        self.task_definition = aws.ecs.TaskDefinition(
            f"{name}-task", family=cp.family, requires_compatibilities=["FARGATE"], network_mode="awsvpc",
            cpu=str(settings.cpu), memory=str(settings.memory), execution_role_arn=self.execution_role.arn,
            task_role_arn=self.task_role.arn, container_definitions=definitions,
            runtime_platform={"operating_system_family": "LINUX", "cpu_architecture": "X86_64"},
            tags=tags, opts=_child(self))
        self.service = aws.ecs.Service(
            f"{name}-service", name=cp.cluster, cluster=self.cluster.arn, task_definition=self.task_definition.arn,
            launch_type="FARGATE", platform_version="LATEST", desired_count=1,
            network_configuration={"subnets": private_ids, "security_groups": [self.server_security_group.id],
                                   "assign_public_ip": False},
            load_balancers=[{"target_group_arn": targets["server"].arn, "container_name": "server",
                             "container_port": SERVER_PORT},
                            {"target_group_arn": targets["tracking"].arn, "container_name": "tracking",
                             "container_port": TRACKING_PORT}],
            deployment_circuit_breaker={"enable": True, "rollback": True}, health_check_grace_period_seconds=120,
            enable_ecs_managed_tags=True, propagate_tags="SERVICE", tags=tags,
            opts=_child(self, depends_on=[*listeners, nat, private_routes]))

        self.url = public_host.apply(cp.url)
        self.tracking_url = public_host.apply(cp.tracking_url)
        self.register_outputs({"url": self.url, "tracking_url": self.tracking_url,
                               "load_balancer": self.load_balancer.dns_name, "database": self.database.address,
                               "database_secret_arn": secret_arn})


def _secret_arn(secrets: Any) -> str:
    """The ARN of the RDS-managed master user secret (``master_user_secrets[0].secret_arn``)."""
    if not secrets:
        raise StackError("RDS returned no managed master user secret for the ledger database",
                         hint="the database must keep manage_master_user_password enabled")
    first = secrets[0]
    arn = getattr(first, "secret_arn", None) or (first.get("secretArn") if isinstance(first, dict) else None)
    if not arn:
        raise StackError("the ledger database's managed master user secret has no ARN")
    return str(arn)
