"""Run the Pulumi program (__main__.py) under pulumi.runtime mocks, once per stack file, and keep what it did.

The mocks answer like the AWS provider would (camelCase outputs, ARNs built from names, numbers as
floats) and record every registered resource with its inputs, so tests assert the wiring by value.
"""

from __future__ import annotations

import ast
import functools
import json
import runpy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
import pulumi
import yaml
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

REPO_ROOT = Path(__file__).resolve().parents[1]
STACK_DIR = REPO_ROOT / "platform"
PROJECT = "mlops"
ACCOUNT = "123456789012"
REGION = "us-east-1"
STACK_FILES = sorted(STACK_DIR.glob("Pulumi.*.yaml"))
STACKS = [p.name.split(".")[1] for p in STACK_FILES]


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    custom: bool
    urn: str = ""

    def where(self) -> str:
        return self.urn or f"{self.typ}::{self.name}"


class RecordingMocks(pulumi.runtime.Mocks):
    """Provider-shaped answers for the resource types and invokes the program uses; unknown invokes fail."""

    def __init__(self) -> None:
        self.resources: list[Registered] = []

    def _arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        return f"arn:aws:{service}:{REGION if regional else ''}:{ACCOUNT}:{resource}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = dict(args.inputs)
        name = args.name
        out: dict[str, Any] = dict(inputs)
        typ = args.typ
        physical = inputs.get("name") or name
        resource_id = f"{name}-id"
        arn = self._arn(typ.split(":")[1].split("/")[0], f"{typ.rsplit(':', 1)[-1].lower()}/{physical}")
        if typ == "aws:s3/bucket:Bucket":
            resource_id = inputs.get("bucket") or f"{name}-a1b2c3"
            out["bucket"] = resource_id
            arn = f"arn:aws:s3:::{resource_id}"
        elif typ == "aws:iam/role:Role":
            physical = inputs.get("name") or f"{name}-1a2b3c"
            arn = f"arn:aws:iam::{ACCOUNT}:role/{physical}"
            resource_id = physical
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            arn = self._arn("logs", f"log-group:{physical}")
            resource_id = physical
        elif typ == "aws:ecr/repository:Repository":
            arn = self._arn("ecr", f"repository/{physical}")
            out["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{physical}"
        elif typ == "aws:codecommit/repository:Repository":
            repo = inputs["repositoryName"]
            arn = self._arn("codecommit", repo)
            out["cloneUrlHttp"] = f"https://git-codecommit.{REGION}.amazonaws.com/v1/repos/{repo}"
            out["cloneUrlSsh"] = f"ssh://git-codecommit.{REGION}.amazonaws.com/v1/repos/{repo}"
        elif typ == "aws:codeconnections/connection:Connection":
            arn = self._arn("codeconnections", f"connection/{name}-uuid")
        elif typ == "aws:sagemaker/modelPackageGroup:ModelPackageGroup":
            arn = self._arn("sagemaker", f"model-package-group/{inputs['modelPackageGroupName']}")
        elif typ == "aws:codebuild/project:Project":
            arn = self._arn("codebuild", f"project/{physical}")
        elif typ == "aws:codepipeline/pipeline:Pipeline":
            arn = self._arn("codepipeline", physical)
        elif typ == "aws:cloudwatch/eventRule:EventRule":
            physical = inputs.get("name") or f"{name}-4d5e6f"
            out["name"] = physical
            arn = self._arn("events", f"rule/{physical}")
        elif typ == "aws:sqs/queue:Queue":
            physical = f"{name}-7a8b9c"
            arn = self._arn("sqs", physical)
            out["url"] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical}"
            resource_id = out["url"]
        elif typ == "aws:lambda/function:Function":
            arn = self._arn("lambda", f"function:{physical}")
            out["invokeArn"] = (
                f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{arn}/invocations"
            )
        elif typ == "aws:dynamodb/table:Table":
            arn = self._arn("dynamodb", f"table/{physical}")
            resource_id = physical
        elif typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
            arn = self._arn("cloudwatch", f"alarm:{physical}")
        elif typ == "aws:apigateway/restApi:RestApi":
            resource_id = "a1b2c3d4e5"
            out["rootResourceId"] = "root0123"
            out["executionArn"] = self._arn("execute-api", resource_id)
        elif typ == "aws:apigateway/stage:Stage":
            out["invokeUrl"] = (
                f"https://{inputs['restApi']}.execute-api.{REGION}.amazonaws.com/{inputs['stageName']}"
            )
        elif typ == "aws:apigateway/apiKey:ApiKey":
            out["value"] = "mock-api-key-value-0123456789"
        out.setdefault("arn", arn)
        out.setdefault("name", physical)
        self.resources.append(Registered(typ, name, inputs, out, bool(args.custom)))
        return resource_id, out

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/ci",
                "id": ACCOUNT,
                "userId": "AIDAEXAMPLE",
            }, []
        if args.token == "aws:index/getRegion:getRegion":
            return {
                "region": REGION,
                "name": REGION,
                "id": REGION,
                "endpoint": f"ec2.{REGION}.amazonaws.com",
            }, []
        if args.token == "aws:index/getPartition:getPartition":
            return {
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "id": "aws",
                "reverseDnsPrefix": "com.amazonaws",
            }, []
        raise NotImplementedError(f"no mock for invoke {args.token}")


class RecordingMonitor(MockMonitor):
    """Also keeps each resource's explicit and implicit dependencies (what orders create and destroy)."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.dependencies: dict[str, list[str]] = {}
        self.retained: set[str] = set()
        self.protected: set[str] = set()
        self.aliases: dict[str, list[str]] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        self.dependencies[response.urn] = list(request.dependencies)
        if request.retainOnDelete:
            self.retained.add(response.urn)
        if request.protect:
            self.protected.add(response.urn)
        specs = [str(a) for a in request.aliases]
        if specs:
            self.aliases[response.urn] = specs
        return response


@dataclass
class ProgramRun:
    """One stack's run: its config, every resource registered, and the stack outputs (resolved)."""

    stack: str
    config: dict[str, str]
    resources: list[Registered]
    exports: dict[str, Any]
    secret_exports: set[str]
    dependencies: dict[str, list[str]] = field(repr=False, default_factory=dict)
    retained: set[str] = field(repr=False, default_factory=set)
    """URNs registered with retain_on_delete (kept in AWS on `pulumi destroy`)."""
    protected: set[str] = field(repr=False, default_factory=set)
    aliases: dict[str, list[str]] = field(repr=False, default_factory=dict)
    """URN -> the alias specs it was registered with (text), for resources that moved."""
    program_globals: dict[str, Any] = field(repr=False, default_factory=dict)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name_suffix: str) -> Registered:
        found = [r for r in self.of_type(typ) if r.name.endswith(name_suffix)]
        assert len(found) == 1, f"expected one {typ} named *{name_suffix}, found {[r.name for r in found]}"
        return found[0]

    def setting(self, key: str) -> str:
        return self.config[f"{PROJECT}:{key}"]

    def policies(self) -> Iterator[tuple[Registered, str, dict[str, Any]]]:
        """(resource, field, document) for every IAM policy document the program declares."""
        for r in self.resources:
            for key in ("policy", "assumeRolePolicy"):
                raw = r.inputs.get(key)
                if isinstance(raw, str) and raw.lstrip().startswith("{") and "Statement" in raw:
                    yield r, key, json.loads(raw)


# The stack files leave the source repository to the user (`pulumi config set mlops:sourceRepoName
# <owner>/<repo>`, the README's first AWS step); the suite runs them as if it had been set to this.
USER_SET_CONFIG = {"mlops:sourceRepoName": "example-org/iris-models"}


def stack_file_config(stack: str) -> dict[str, str]:
    """The stack file's config as the engine hands it to the program (strings; structured values JSON)."""
    data = yaml.safe_load((STACK_DIR / f"Pulumi.{stack}.yaml").read_text())
    config = data.get("config") or {}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def stack_config(stack: str) -> dict[str, str]:
    """The stack file's config plus what the README has the user set first."""
    return {**USER_SET_CONFIG, **stack_file_config(stack)}


def run_program(stack: str, overrides: dict[str, str] | None = None) -> ProgramRun:
    """Run __main__.py for a stack under fresh mocks; overrides replace config keys (tests of other kinds)."""
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    config = stack_config(stack)
    config.update(overrides or {})
    # A fresh root Stack per run, so exports of one run never land on another's.
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config)
    program_globals: dict[str, Any] = {}

    def program() -> None:
        program_globals.update(runpy.run_path(str(REPO_ROOT / "__main__.py"), run_name="__pulumi__"))

    _sync_await(run_pulumi_func(program))
    root = pulumi_settings.get_root_resource()
    assert root is not None
    exports: dict[str, Any] = {}
    secret: set[str] = set()
    for key, value in root.outputs.items():  # type: ignore[attr-defined]
        out = pulumi.Output.from_input(value)
        exports[key] = _sync_await(out.future())
        if _sync_await(out.is_secret()):
            secret.add(key)
    urns = list(monitor.resources)
    for r in mocks.resources:
        matches = [u for u in urns if u.endswith(f"{r.typ}::{r.name}")]
        r.urn = matches[0] if matches else ""
    return ProgramRun(
        stack,
        config,
        mocks.resources,
        exports,
        secret,
        monitor.dependencies,
        monitor.retained,
        monitor.protected,
        monitor.aliases,
        program_globals,
    )


@functools.cache
def program_run(stack: str) -> ProgramRun:
    """Each stack file's program runs once per test session."""
    return run_program(stack)


def resolve(output: pulumi.Output[Any]) -> Any:
    return _sync_await(output.future())


def check_outputs(outputs: list[pulumi.Output[Any]], check: Callable[[list[Any]], None]) -> None:
    """Assert on resolved Outputs inside Output.all(...).apply, as the engine would resolve them."""

    def run(values: list[Any]) -> bool:
        check(list(values))
        return True

    assert resolve(pulumi.Output.all(*outputs).apply(run)) is True


# --- what a Lambda's code calls, read from its source -------------------------------------------------

# botocore's signing name differs from the IAM prefix for these services.
_IAM_PREFIX = {"monitoring": "cloudwatch"}
# Operations authorised under another action's name (Service Authorization Reference).
_ACTION_OF_OPERATION = {"s3:HeadObject": "s3:GetObject", "s3:HeadBucket": "s3:ListBucket"}


def _calls_client(node: ast.AST) -> bool:
    """Whether node is, or contains, a call of something named like `client` / `_client`."""
    return any(
        isinstance(n, ast.Call)
        and "client" in (n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", ""))
        for n in ast.walk(node)
    )


def _client_services(tree: ast.AST) -> set[str]:
    """Service names the code makes clients for: `client("s3")`, `_client("dynamodb")`,
    and `{n: boto3.client(n) for n in ("s3", "logs")}`."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and _calls_client(node):
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
        if isinstance(node, ast.comprehension | ast.For) and isinstance(node.iter, ast.Tuple | ast.List):
            body = node if isinstance(node, ast.For) else tree
            if _calls_client(body):
                found |= {
                    e.value
                    for e in node.iter.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                }
    return found


def boto3_actions(paths: list[Path]) -> set[str]:
    """IAM actions of the boto3 operations the given files (or every .py file of given directories) use.

    An operation counts when its snake_case name appears as an attribute (`sm.create_model(...)`,
    `sm.delete_model` passed along) or as a string (`getattr(sm, "list_models")`, paginators) in code
    that makes a client for its service.
    """
    files = [f for p in paths for f in (sorted(p.glob("*.py")) if p.is_dir() else [p])]
    session = botocore.session.get_session()
    known = set(session.get_available_services())
    services: set[str] = set()
    names: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        services |= _client_services(tree) & known
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
    actions: set[str] = set()
    for service in services:
        model = session.get_service_model(service)
        prefix = _IAM_PREFIX.get(model.signing_name, model.signing_name)
        for operation in model.operation_names:
            if botocore.xform_name(operation) in names:
                action = f"{prefix}:{operation}"
                actions.add(_ACTION_OF_OPERATION.get(action, action))
    return actions


def handler_module_path(code_dir: Path, handler: str) -> Path:
    """The file Lambda imports for `handler` ("handler.handler" -> <dir>/handler.py)."""
    module = handler.rsplit(".", 1)[0]
    return code_dir / (module.replace(".", "/") + ".py")
