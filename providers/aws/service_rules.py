"""Rules AWS enforces on requests and Pulumi's mocks do not: names, versions, sizes.

Each rule returns the reason a value would be refused, or ``None`` when AWS accepts it, so the
stack is refused at validation (or planning) time with the reason, instead of at ``mlplat up`` by
the cloud. Stdlib only: the settings model calls these without any cloud SDK installed.
"""
from __future__ import annotations

import ipaddress
import re

# --- RDS -------------------------------------------------------------------------------------

# DB instance identifiers: 1-63 letters, digits or hyphens; the first a letter; no trailing hyphen
# and no two consecutive hyphens. Final snapshot identifiers follow the same rules up to 255.
# https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstance.html (DBInstanceIdentifier)
# https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DeleteDBInstance.html (FinalDBSnapshotIdentifier)
_RDS_CHARS = re.compile(r"^[A-Za-z0-9-]+$")


def rds_identifier_problem(name: str, *, limit: int = 63, what: str = "RDS DB instance identifier") -> str | None:
    """Why RDS would refuse ``name`` as an identifier, or ``None``."""
    if not 1 <= len(name) <= limit:
        return f"{what} {name!r} has {len(name)} characters; RDS allows 1 to {limit}"
    if not _RDS_CHARS.match(name):
        return f"{what} {name!r} may hold only letters, digits and hyphens"
    if not name[0].isalpha():
        return f"{what} {name!r} must start with a letter"
    if "--" in name:
        return f"{what} {name!r} contains two consecutive hyphens"
    if name.endswith("-"):
        return f"{what} {name!r} ends with a hyphen"
    return None


# RDS for PostgreSQL engine versions: since PostgreSQL 10 a version is MAJOR.MINOR ("16.4"); a major
# version alone ("16") lets RDS pick the default minor version and upgrade minors automatically.
# Versions before 10 had three parts (9.6.22) and are no longer offered by RDS.
# https://docs.aws.amazon.com/AmazonRDS/latest/PostgreSQLReleaseNotes/postgresql-versions.html
_PG_VERSION = re.compile(r"^(\d{2})(?:\.(\d{1,2}))?$")
PG_OLDEST_MAJOR = 11


def postgres_version_problem(version: str) -> str | None:
    """Why ``version`` is not an RDS for PostgreSQL engine version (``16`` or ``16.4``), or ``None``."""
    match = _PG_VERSION.match(version)
    if match is None:
        return (f"PostgreSQL engine version {version!r} is not MAJOR or MAJOR.MINOR (e.g. '16' or '16.4'); "
                "RDS for PostgreSQL names versions that way since PostgreSQL 10")
    if int(match.group(1)) < PG_OLDEST_MAJOR:
        return f"PostgreSQL {match.group(1)} is older than any major version RDS offers (>= {PG_OLDEST_MAJOR})"
    return None


# DB instance classes are db.<family>.<size>, e.g. db.t4g.micro, db.m7g.large, db.r6i.2xlarge.
# https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Concepts.DBInstanceClass.html
DB_INSTANCE_CLASS = r"^db\.[a-z][a-z0-9-]*\.[a-z0-9]+$"


# --- ECS on Fargate ------------------------------------------------------------------------------

# Task-level CPU units → the memory sizes (MiB) Fargate accepts with them (Linux; 8 and 16 vCPU need
# platform version 1.4.0 or later).
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}


def fargate_size_problem(cpu: int, memory: int) -> str | None:
    """Why Fargate would refuse a task of ``cpu`` units and ``memory`` MiB, or ``None``."""
    allowed = FARGATE_SIZES.get(cpu)
    if allowed is None:
        return f"Fargate task CPU {cpu} is not one of {', '.join(map(str, FARGATE_SIZES))} (CPU units; 1024 = 1 vCPU)"
    if memory not in allowed:
        step = allowed[1] - allowed[0]
        return (f"Fargate does not run {cpu} CPU units with {memory} MiB: choose {allowed[0]}-{allowed[-1]} MiB "
                f"in steps of {step}" if len(allowed) > 3 else
                f"Fargate does not run {cpu} CPU units with {memory} MiB: choose one of {', '.join(map(str, allowed))}")
    return None


# --- Elastic Load Balancing ----------------------------------------------------------------------

# Load balancer and target group names: at most 32 letters, digits or hyphens, not beginning or ending
# with a hyphen; a load balancer's name must not begin with "internal-".
# https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateLoadBalancer.html
# https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateTargetGroup.html
_ELB_CHARS = re.compile(r"^[A-Za-z0-9-]+$")


def elb_name_problem(name: str, *, what: str = "load balancer name") -> str | None:
    """Why Elastic Load Balancing would refuse ``name`` for a load balancer or target group, or ``None``."""
    if not 1 <= len(name) <= 32:
        return f"{what} {name!r} has {len(name)} characters; Elastic Load Balancing allows 1 to 32"
    if not _ELB_CHARS.match(name):
        return f"{what} {name!r} may hold only letters, digits and hyphens"
    if name.startswith("-") or name.endswith("-"):
        return f"{what} {name!r} begins or ends with a hyphen"
    if what == "load balancer name" and name.startswith("internal-"):
        return f"{what} {name!r} begins with 'internal-', which AWS reserves for internal load balancers' DNS names"
    return None


# --- VPC -----------------------------------------------------------------------------------------

# A VPC's IPv4 block is between /16 and /28; the program splits it in four subnets (two private, one
# public for the NAT gateway, one spare), each at least /28, so the block is /16 to /26.
# https://docs.aws.amazon.com/vpc/latest/userguide/vpc-cidr-blocks.html
VPC_PREFIX_RANGE = (16, 26)


def vpc_cidr_problem(cidr: str) -> str | None:
    """Why ``cidr`` cannot be the control plane's VPC block, or ``None``."""
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        return f"VPC CIDR {cidr!r} is not an IPv4 network ({exc})"
    if network.version != 4:
        return f"VPC CIDR {cidr!r} is not IPv4"
    low, high = VPC_PREFIX_RANGE
    if not low <= network.prefixlen <= high:
        return f"VPC CIDR {cidr!r} is /{network.prefixlen}; the control plane's VPC needs /{low} to /{high}"
    return None


def cidr_problem(cidr: str) -> str | None:
    """Why ``cidr`` is not an IPv4 network in CIDR notation, or ``None``."""
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        return f"{cidr!r} is not a network in CIDR notation ({exc})"
    return None if network.version == 4 else f"{cidr!r} is not IPv4"
