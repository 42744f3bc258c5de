"""Renderings of a policy-check report: text (people), JSON (scripts), JUnit XML and SARIF 2.1.0 (CI)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from mlplat.services.policy_check import (
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    STACK_VALID,
    STACK_VALID_REMEDIATION,
    WARNED,
    CheckReport,
    StackResult,
)
from mlplat_policies import rules

FORMATS = ("text", "json", "junit", "sarif")

# The stack-file key a finding of each policy is usually fixed under (SARIF and text point there).
POLICY_KEYS = {
    "required-cost-tags": "tags", "tracking-required": "provider", "approval-required": "governance",
    "monitoring-required": "monitoring", "safe-rollout": "serving", "storage": "provider", "spend": "serving",
    "database": "provider",
    STACK_VALID: None,
}


def _group(result: StackResult) -> dict[str, list[rules.Finding]]:
    groups: dict[str, list[rules.Finding]] = {}
    for finding in result.findings:
        label = f"{finding.resource_type} '{finding.resource_name}'" if finding.resource_name else "(the stack)"
        if finding.resource_type == "stack":
            label = "(stack file)"
        groups.setdefault(label, []).append(finding)
    return groups


def render_text(report: CheckReport) -> str:
    colours = {PASSED: "green", WARNED: "yellow", FAILED: "red", ERROR: "red", SKIPPED: "dim"}
    lines: list[str] = []
    for result in report.stacks:
        counts = f"{len(result.mandatory)} mandatory, {len(result.advisory)} advisory" if result.findings else ""
        head = (f"[bold]stack {result.stack}[/] ({result.provider or '?'}, {len(result.resources)} resources): "
                f"[{colours[result.status]}]{result.status.upper()}[/]" + (f" - {counts}" if counts else ""))
        lines.append(head)
        if result.error:
            lines.append(f"  [{colours[result.status]}]{_esc(result.error)}[/]")
        for label, findings in _group(result).items():
            lines.append(f"  {_esc(label)}")
            for f in findings:
                mark = "[red]x[/]" if f.level == rules.MANDATORY else "[yellow]![/]"
                lines.append(f"    {mark} [{f.level}] {f.policy}: {_esc(f.message)}")
                lines.append(f"      [dim]fix: {_esc(f.remediation)}[/]")
    c = report.counts()
    lines.append(f"{len(report.stacks)} stack(s) checked in {report.seconds:.1f} s: {c[PASSED]} passed, "
                 f"{c[WARNED]} with warnings, {c[FAILED]} failed, {c[ERROR]} errors, {c[SKIPPED]} skipped.")
    return "\n".join(lines)


def _esc(text: str) -> str:
    return text.replace("[", "\\[")


def render_json(report: CheckReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str)


def render_junit(report: CheckReport) -> str:
    """One test suite per stack, one test case per policy; mandatory findings fail it, errors error it."""
    suites = ET.Element("testsuites", name="mlplat policy check", time=f"{report.seconds:.3f}")
    names = [STACK_VALID, *rules.NAMES]
    for result in report.stacks:
        suite = ET.SubElement(suites, "testsuite", name=result.stack, time=f"{result.seconds:.3f}")
        failures = errors = skipped = 0
        for policy in names:
            case = ET.SubElement(suite, "testcase", classname=f"stacks.{result.stack}", name=policy)
            found = [f for f in result.findings if f.policy == policy]
            if result.status == ERROR:
                ET.SubElement(case, "error", message=result.error or "error").text = result.error or ""
                errors += 1
            elif result.status == SKIPPED or (result.status == FAILED and any(
                    f.policy == STACK_VALID for f in result.findings) and policy != STACK_VALID):
                ET.SubElement(case, "skipped", message=result.error or "the stack file is invalid")
                skipped += 1
            elif any(f.level == rules.MANDATORY for f in found):
                bad = [f for f in found if f.level == rules.MANDATORY]
                ET.SubElement(case, "failure", message=bad[0].message, type="mandatory").text = "\n".join(
                    f"{f.resource_type} {f.resource_name}: {f.message}\nfix: {f.remediation}" for f in bad)
                failures += 1
            if any(f.level == rules.ADVISORY for f in found):
                ET.SubElement(case, "system-out").text = "\n".join(
                    f"advisory: {f.message} (fix: {f.remediation})" for f in found if f.level == rules.ADVISORY)
        suite.set("tests", str(len(names)))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("skipped", str(skipped))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _line_of(path: str, key: str | None) -> int:
    if not path or key is None:
        return 1
    try:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            if re.match(rf"^\s*(mlplat:)?{re.escape(key)}\s*:", line):
                return number
    except OSError:
        pass
    return 1


def render_sarif(report: CheckReport) -> str:
    """SARIF 2.1.0 for GitHub code scanning: one rule per policy, one result per finding, located in the stack file."""
    project = Path(report.project_dir)
    policies = [(STACK_VALID, "The stack file is valid.", STACK_VALID_REMEDIATION, rules.MANDATORY)] + [
        (p.name, p.description, p.remediation, p.default_level) for p in rules.POLICIES]
    index = {name: i for i, (name, *_rest) in enumerate(policies)}
    sarif_rules = [{"id": name, "name": name, "shortDescription": {"text": description},
                    "help": {"text": remediation}, "defaultConfiguration": {
                        "level": "error" if level == rules.MANDATORY else "warning"}}
                   for name, description, remediation, level in policies]
    results = []
    for result in report.stacks:
        try:
            uri = Path(result.path).resolve().relative_to(project.resolve()).as_posix() if result.path else ""
        except ValueError:
            uri = result.path
        findings = list(result.findings)
        if result.status == ERROR:
            findings.append(rules.Finding(STACK_VALID, rules.MANDATORY, f"the stack's program failed: {result.error}",
                                          STACK_VALID_REMEDIATION, "stack", result.stack))
        for f in findings:
            location: dict[str, Any] = {"physicalLocation": {
                "artifactLocation": {"uri": uri or f"stacks/Pulumi.{result.stack}.yaml"},
                "region": {"startLine": _line_of(result.path, POLICY_KEYS.get(f.policy))}}}
            if f.urn or f.resource_name:
                location["logicalLocations"] = [{"fullyQualifiedName": f.urn or f"{f.resource_type}::{f.resource_name}",
                                                 "name": f.resource_name, "kind": "resource"}]
            results.append({
                "ruleId": f.policy, "ruleIndex": index.get(f.policy, 0),
                "level": "error" if f.level == rules.MANDATORY else "warning",
                "message": {"text": f"[{result.stack}] {f.message}. Fix: {f.remediation}"},
                "locations": [location],
                "partialFingerprints": {"mlplatFinding/v1": f"{result.stack}:{f.policy}:{f.urn or f.resource_name}:{f.message}"},
            })
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "mlplat-policy",
                                      "rules": sarif_rules}},
                  "results": results,
                  "invocations": [{"executionSuccessful": not any(s.status == ERROR for s in report.stacks)}]}],
    }
    return json.dumps(document, indent=2, sort_keys=True)


def render(report: CheckReport, fmt: str) -> str:
    return {"text": render_text, "json": render_json, "junit": render_junit, "sarif": render_sarif}[fmt](report)
