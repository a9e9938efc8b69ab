"""What AWS accepts for a name or a number, read from botocore's service models when the tests run.

botocore ships every AWS API's model: each operation's input shape, and for each member its type and
(where the service declares them) `pattern`, `min`, `max` and enum values. `api(service, operation,
member path)` turns one member into a Limit; `ApiRecorder` stands in for a boto3 client and keeps
every call, so `ApiCall.problems()` checks a whole request against the operation's input shape.

A few rules AWS documents but the model cannot express (a percentage of a fleet, an attribute's
range) are `documented(...)` Limits: each cites its AWS page, and where botocore's own documentation
of the member states the rule, `says` quotes it so a test can check the model still says so.

The model's patterns are Java regular expressions (`\\p{L}`, `\\p{Print}`, surrogate pairs);
`java_regex` translates them for Python's `re`, and matches them whole, as the services do.
"""

from __future__ import annotations

import functools
import html
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore import xform_name
from botocore.model import Shape

_SESSION = botocore.session.get_session()
# Smithy's integer and long are 32- and 64-bit signed; a value outside them never reaches the service.
TYPE_BOUNDS = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_WHOLE_NUMBER_TYPES = tuple(TYPE_BOUNDS)
_NUMBER_TYPES = (*_WHOLE_NUMBER_TYPES, "double", "float")


@functools.cache
def service_model(service: str) -> Any:
    return _SESSION.get_service_model(service)


def _element(shape: Shape) -> Shape:
    """The shape one value of a list (its member) or a map (its value) has; other shapes themselves."""
    while shape.type_name in ("list", "map"):
        shape = shape.member if shape.type_name == "list" else shape.value
    return shape


def member_shape(service: str, operation: str, path: str) -> Shape:
    """The shape at `path` ("A.B.C") in an operation's input; lists and maps are stepped through."""
    shape = service_model(service).operation_model(operation).input_shape
    for name in path.split("."):
        shape = _element(shape)
        members = getattr(shape, "members", {})
        if name not in members:
            raise KeyError(f"{service} {operation}: {shape.name} has no member {name!r} (in {path!r})")
        shape = members[name]
    return shape


def documentation(service: str, operation: str, path: str) -> str:
    """botocore's documentation of a member, as plain text."""
    text = member_shape(service, operation, path).documentation or ""
    text = re.sub(r"</?(?:p|li|ul|ol|br|dl|dt|dd|note|important|div)\b[^>]*>", " ", text)
    text = re.sub(r"<[^>]+>", "", text)
    return " ".join(html.unescape(text).split())


# --- Java regular expressions -> Python ---------------------------------------------------------

_PUNCT = "".join(re.escape(c) for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
# Java's POSIX classes are US-ASCII only (java.util.regex.Pattern, without UNICODE_CHARACTER_CLASS).
_POSIX = {
    "Lower": "a-z",
    "Upper": "A-Z",
    "ASCII": "\\x00-\\x7f",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "Punct": _PUNCT,
    "Graph": "a-zA-Z0-9" + _PUNCT,
    "Print": "\\x20-\\x7e",
    "Blank": " \\t",
    "Cntrl": "\\x00-\\x1f\\x7f",
    "XDigit": "0-9a-fA-F",
    "Space": " \\t\\n\\x0b\\f\\r",
}


@functools.cache
def _category_ranges() -> dict[str, str]:
    """Class contents for each Unicode general category ("Lu") and major class ("L")."""
    runs: dict[str, list[list[int]]] = {}
    for code in range(sys.maxunicode + 1):
        category = unicodedata.category(chr(code))
        for key in (category, category[0]):
            found = runs.setdefault(key, [])
            if found and found[-1][1] == code - 1:
                found[-1][1] = code
            else:
                found.append([code, code])
    return {
        key: "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in found)
        for key, found in runs.items()
    }


def _class_contents(name: str) -> str:
    if name in _POSIX:
        return _POSIX[name]
    category = name.removeprefix("Is")
    if re.fullmatch(r"[A-Z][a-z]?", category) and category in _category_ranges():
        return _category_ranges()[category]
    raise ValueError(f"java_regex: \\p{{{name}}} is not translated; add it to tests/aws_limits.py")


@functools.cache
def java_regex(pattern: str) -> re.Pattern[str]:
    """A botocore (Java) pattern as a Python regular expression; ASCII \\w \\d \\s, as in Java.

    Java's \\p{...} classes become explicit ranges, a UTF-16 surrogate pair one code point, and a
    quantified anchor (Java takes "$+", Python refuses it) the anchor alone."""
    if "&&" in pattern:
        raise ValueError(f"java_regex: class intersection in {pattern!r} is not translated")
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and pattern[i + 1 : i + 2] in ("p", "P"):
            end = pattern.index("}", i)
            contents = _class_contents(pattern[i + 3 : end])
            negated = pattern[i + 1] == "P"
            if in_class and negated:
                raise ValueError(f"java_regex: \\P{{...}} inside a class in {pattern!r} is not translated")
            out.append(contents if in_class else f"[{'^' if negated else ''}{contents}]")
            i = end + 1
            continue
        high = re.match(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", pattern[i : i + 12], re.I)
        if high:  # a UTF-16 surrogate pair is one code point in Java
            code = 0x10000 + ((int(high[1], 16) - 0xD800) << 10) + (int(high[2], 16) - 0xDC00)
            out.append(f"\\U{code:08x}")
            i += 12
            continue
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        quantified = re.match(r"[$^](\{(\d+)(?:,\d*)?\}|[*+?])", pattern[i:]) if not in_class else None
        if quantified:  # Java accepts a quantified anchor ("${1,256}" in SageMaker's model); Python does not
            at_least_once = quantified[1] == "+" or (quantified[2] is not None and int(quantified[2]) >= 1)
            out.append(char if at_least_once else "")
            i += len(quantified[0])
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return re.compile("".join(out), re.ASCII)


# --- checking a value against a shape -----------------------------------------------------------


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 90 else f"{text[:60]}...{text[-20:]}"


def _number_problems(shape: Shape, value: Any) -> list[str]:
    kind = shape.type_name
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return [f"{_short(value)} is not a number ({kind} {shape.name})"]
    try:
        number = float(value)
    except ValueError:
        return [f"{_short(value)} is not a number ({kind} {shape.name})"]
    problems: list[str] = []
    if kind in _WHOLE_NUMBER_TYPES:
        if not number.is_integer():
            return [f"{_short(value)} is not a whole number ({kind} {shape.name})"]
        low, high = TYPE_BOUNDS[kind]
        if not low <= number <= high:
            bits = 32 if kind == "integer" else 64
            problems.append(f"{number:.0f} does not fit {shape.name}, a {bits}-bit integer ({low}..{high})")
    meta = shape.metadata
    if "min" in meta and number < meta["min"]:
        problems.append(f"{number:g} is below {shape.name}'s minimum {meta['min']}")
    if "max" in meta and number > meta["max"]:
        problems.append(f"{number:g} is above {shape.name}'s maximum {meta['max']}")
    return problems


def _string_problems(shape: Shape, value: Any) -> list[str]:
    if not isinstance(value, str):
        return [f"{_short(value)} is not a string ({shape.name})"]
    meta = shape.metadata
    problems: list[str] = []
    if "min" in meta and len(value) < meta["min"]:
        problems.append(
            f"{_short(value)} is {len(value)} characters; {shape.name}'s minimum is {meta['min']}"
        )
    if "max" in meta and len(value) > meta["max"]:
        problems.append(
            f"{_short(value)} is {len(value)} characters; {shape.name}'s maximum is {meta['max']}"
        )
    if "pattern" in meta and not java_regex(meta["pattern"]).fullmatch(value):
        problems.append(f"{_short(value)} does not match {shape.name}'s pattern {meta['pattern']!r}")
    enum = getattr(shape, "enum", None) or []
    if enum and value not in enum:
        problems.append(
            f"{_short(value)} is not one of the {len(enum)} values of {shape.name} ({enum[:4]}...)"
        )
    return problems


def value_problems(shape: Shape, value: Any, where: str = "") -> list[str]:
    """Everything about `value` (a request or part of one) the service would refuse, each prefixed `where`."""
    at = f"{where}: " if where else ""
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, Mapping):
            return [f"{at}{_short(value)} is not a {shape.name} structure"]
        members = shape.members
        problems = [f"{at}{shape.name} needs {name}" for name in shape.required_members if name not in value]
        for name, item in value.items():
            if name not in members:
                problems.append(f"{at}{shape.name} has no member {name!r}")
            else:
                problems += value_problems(members[name], item, f"{where}.{name}" if where else name)
        return problems
    if kind in ("list", "map"):
        if not isinstance(value, Sequence | Mapping) or isinstance(value, str):
            return [f"{at}{_short(value)} is not a {kind} ({shape.name})"]
        problems = []
        if "min" in meta and len(value) < meta["min"]:
            problems.append(f"{at}{len(value)} items; {shape.name} needs at least {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{at}{len(value)} items; {shape.name} takes at most {meta['max']}")
        if isinstance(value, Mapping):
            for key, item in value.items():
                problems += value_problems(shape.key, key, f"{where}[{key!r}] (key)")
                problems += value_problems(shape.value, item, f"{where}[{key!r}]")
        else:
            for index, item in enumerate(value):
                problems += value_problems(shape.member, item, f"{where}[{index}]")
        return problems
    if kind in _NUMBER_TYPES:
        return [at + p for p in _number_problems(shape, value)]
    if kind == "string":
        return [at + p for p in _string_problems(shape, value)]
    return []


# --- limits -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Limit:
    """What AWS accepts for one value, and where that is written down (`source`)."""

    source: str
    shape: Shape | None = None
    """botocore's shape of the member: type, pattern, min, max, enum."""
    rule: str = ""
    """A documented rule botocore's model does not express, in words."""
    accepts: Callable[[Any], bool] | None = None
    rejects: tuple[Any, ...] = ()
    """Values the documented rule turns down (what a settings check must refuse too)."""
    says: tuple[str, str, str, str] | None = None
    """(service, operation, member path, sentence): botocore's documentation of the member states the rule."""

    @property
    def kind(self) -> str:
        return self.shape.type_name if self.shape is not None else "documented"

    def problems(self, value: Any) -> list[str]:
        if self.shape is not None:
            return [f"{p} [{self.source}]" for p in value_problems(self.shape, value)]
        assert self.accepts is not None
        try:
            ok = self.accepts(value)
        except (TypeError, ValueError):
            ok = False
        return [] if ok else [f"{_short(value)} breaks: {self.rule} [{self.source}]"]

    def outside(self) -> tuple[Any, ...]:
        """Values just outside what AWS accepts: min - 1, max + 1, the type's bounds, a non-member of an enum."""
        if self.shape is None:
            return self.rejects
        shape = _element(self.shape)
        meta = shape.metadata
        if shape.type_name in _NUMBER_TYPES:
            low, high = TYPE_BOUNDS.get(shape.type_name, (None, None))
            below = meta["min"] - 1 if "min" in meta else (low - 1 if low is not None else None)
            above = meta["max"] + 1 if "max" in meta else (high + 1 if high is not None else None)
            return tuple(v for v in (below, above) if v is not None)
        enum = getattr(shape, "enum", None) or []
        if enum:
            return (f"{enum[0]}-typo",)
        return ("x" * (meta["max"] + 1),) if "max" in meta else ()


def api(service: str, operation: str, path: str) -> Limit:
    """The limit botocore's model sets on one member of an operation's input (list items: each item)."""
    return Limit(f"{service} {operation} {path}", _element(member_shape(service, operation, path)))


def api_shape(service: str, shape_name: str, why: str) -> Limit:
    """A named shape of a service's model, for a member whose own shape is wider (`why` says so)."""
    return Limit(f"{service} {shape_name} ({why})", service_model(service).shape_for(shape_name))


def documented(
    source: str,
    rule: str,
    accepts: Callable[[Any], bool],
    *,
    rejects: tuple[Any, ...] = (),
    says: tuple[str, str, str, str] | None = None,
) -> Limit:
    return Limit(source, rule=rule, accepts=accepts, rejects=rejects, says=says)


def whole(value: Any) -> float:
    """A number given as int, float or digits, that must be whole (raises ValueError otherwise)."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return number


# --- a boto3 client that records ----------------------------------------------------------------


@dataclass
class ApiCall:
    service: str
    operation: str
    params: dict[str, Any]

    def problems(self) -> list[str]:
        shape = service_model(self.service).operation_model(self.operation).input_shape
        return value_problems(shape, self.params, f"{self.service} {self.operation}")


class ApiRecorder:
    """Stands in for a boto3 client: every call is kept, and answered from `answers` by method name
    (a value, or a function of the call's parameters, which may raise); unknown methods answer {}.
    A method the service does not have raises AttributeError, as on a real client."""

    def __init__(
        self,
        service: str,
        answers: Mapping[str, Any] | None = None,
        calls: list[ApiCall] | None = None,
    ) -> None:
        self._service = service
        self._answers = dict(answers or {})
        self._operations = {xform_name(op): op for op in service_model(service).operation_names}
        self.calls: list[ApiCall] = [] if calls is None else calls

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_") or method not in self._operations:
            raise AttributeError(f"{self._service} client has no method {method!r}")

        def call(**params: Any) -> Any:
            self.calls.append(ApiCall(self._service, self._operations[method], params))
            answer = self._answers.get(method, {})
            return answer(**params) if callable(answer) else answer

        return call


# --- reading Pulumi inputs ----------------------------------------------------------------------

_STEP = re.compile(r"(?P<key>[^\[\]]+)(?P<list>\[(?:(?P<field>\w+)=(?P<value>[^\]]+))?\])?")


def values_at(data: Mapping[str, Any], path: str) -> list[Any]:
    """The values at `path` in a resource's inputs: "a.b" keys, "a[]" every item of a list,
    "a[name=X]" the items whose name is X, "a.*" every value of a map. Absent or None: nothing."""
    current: list[Any] = [data]
    for step in path.split("."):
        match = _STEP.fullmatch(step)
        assert match, f"bad path step {step!r} in {path!r}"
        found: list[Any] = []
        for item in current:
            if not isinstance(item, Mapping):
                continue
            if match["key"] == "*":
                found.extend(item.values())
                continue
            value = item.get(match["key"])
            if match["list"] is None:
                found.append(value)
            elif isinstance(value, list):
                found.extend(
                    v
                    for v in value
                    if match["field"] is None
                    or (isinstance(v, Mapping) and str(v.get(match["field"])) == match["value"])
                )
        current = [v for v in found if v is not None]
    return current


@dataclass(frozen=True)
class Field:
    """One input of a Pulumi resource type that reaches an AWS API, and what that API accepts for it."""

    typ: str
    path: str
    limits: tuple[Limit, ...]
    suffix: str = ""
    """Only resources whose logical name ends with this (the deployer's environment, say)."""
    auto_named: bool = False
    """Absent from the inputs, Pulumi names the resource <logical name>-<7 random hex characters>."""
    split: str = ""
    """The input joins several values with this (ROLLBACK_ALARM_NAMES)."""
    env: bool = False
    """A Lambda or CodeBuild environment variable: the code sends nothing for an empty value."""

    def values(self, name: str, inputs: Mapping[str, Any]) -> list[Any]:
        found = values_at(inputs, self.path)
        if self.auto_named and not found:
            found = [f"{name}-{AUTONAME_RANDOM}"]
        if self.split:
            found = [part for v in found for part in str(v).split(self.split)]
        if self.env:
            found = [v for v in found if v != ""]
        return found


# Pulumi's auto-name: the logical name, "-", and 7 random hex characters.
AUTONAME_RANDOM = "0a1b2c3"


# --- rules AWS documents that the model cannot express ------------------------------------------
# Each cites its AWS page; `says` quotes botocore's own documentation of the member where it states
# the rule, and tests/test_aws_limits.py checks the model still says so.

LINEAR_STEP_MEMBER = "DeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration.LinearStepSize"
# SageMaker "Use linear traffic shifting"
# (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green-linear.html):
# "Each linear step should only be between 10-50% of the green fleet's capacity"; UpdateEndpoint's
# LinearStepSize: "Value must be 10-50% of the variant's total instance count". SageMaker turns whole
# instances on and off, so a step is at least one instance.
LINEAR_STEP_URL = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green-linear.html"
)
LINEAR_STEP_SAYS = (
    "sagemaker",
    "UpdateEndpoint",
    LINEAR_STEP_MEMBER,
    "Value must be 10-50% of the variant's total instance count",
)
LINEAR_STEP_PERCENT = documented(
    LINEAR_STEP_URL,
    "a LINEAR step is 10-50 (% of the variant's instances)",
    lambda v: 10 <= whole(v) <= 50,
    rejects=(9, 51),
    says=LINEAR_STEP_SAYS,
)


def linear_step_problems(routing: Mapping[str, Any], instances: int) -> list[str]:
    """What SageMaker's LINEAR rule says about a TrafficRoutingConfiguration on a fleet of `instances`."""
    if routing.get("Type") != "LINEAR":
        return []
    step = routing["LinearStepSize"]
    if step["Type"] == "CAPACITY_PERCENT":
        percent, moved = float(step["Value"]), float(step["Value"]) * instances / 100
    else:
        percent, moved = 100 * float(step["Value"]) / instances, float(step["Value"])
    said = f"LinearStepSize {step['Type']} {step['Value']} on {instances} instance(s)"
    problems = []
    if not 10 <= percent <= 50:
        problems.append(f"{said} is {percent:g}% of the fleet; SageMaker takes 10-50% [{LINEAR_STEP_URL}]")
    if moved < 1:
        problems.append(
            f"{said} moves {moved:g} of an instance; a step turns on whole instances, one at least "
            f"[{LINEAR_STEP_URL}]"
        )
    return problems


def log_retention_days() -> tuple[int, ...]:
    """The retentions PutRetentionPolicy takes: the model types retentionInDays as a bare integer and
    lists the values in its documentation ("Possible values are: 1, 3, 5, ... and 3653.")."""
    text = documentation("logs", "PutRetentionPolicy", "retentionInDays")
    match = re.search(r"Possible values are:([^.]*)\.", text)
    assert match, f"logs PutRetentionPolicy retentionInDays no longer lists its values: {text!r}"
    return tuple(int(n) for n in re.findall(r"\d+", match[1]))


LOG_RETENTION = documented(
    "logs PutRetentionPolicy retentionInDays (the values its documentation lists)",
    f"retentionInDays is one of {', '.join(map(str, log_retention_days()))}",
    lambda v: whole(v) in log_retention_days(),
    rejects=(0, 2, max(log_retention_days()) + 1),
    says=("logs", "PutRetentionPolicy", "retentionInDays", "Possible values are: 1, 3, 5, 7, 14, 30"),
)
# SQS queue attributes are a string map in the model; their ranges are in CreateQueue's documentation
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html).
SQS_RETENTION = documented(
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html",
    "MessageRetentionPeriod is 60..1,209,600 seconds",
    lambda v: 60 <= whole(v) <= 1_209_600,
    rejects=(59, 1_209_601),
    says=(
        "sqs",
        "CreateQueue",
        "Attributes",
        "An integer from 60 seconds (1 minute) to 1,209,600 seconds (14 days)",
    ),
)
SQS_QUEUE_NAME = documented(
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html",
    "a queue name is 1-80 letters, digits, hyphens and underscores",
    lambda v: re.fullmatch(r"[A-Za-z0-9_-]{1,80}", v) is not None,
    says=(
        "sqs",
        "CreateQueue",
        "QueueName",
        "A queue name can have up to 80 characters. Valid values: alphanumeric characters, hyphens (-), "
        "and underscores (_).",
    ),
)
# API Gateway's model types stageName as a bare string
# (https://docs.aws.amazon.com/apigateway/latest/api/API_CreateStage.html).
STAGE_NAME = documented(
    "https://docs.aws.amazon.com/apigateway/latest/api/API_CreateStage.html",
    "a stage name is 1-128 letters, digits, hyphens and underscores",
    lambda v: re.fullmatch(r"[A-Za-z0-9_-]{1,128}", v) is not None,
    says=(
        "apigateway",
        "CreateStage",
        "stageName",
        "Stage names can only contain alphanumeric characters, hyphens, and underscores. "
        "Maximum length is 128 characters.",
    ),
)
# Usage plan numbers: typed only in the model; CloudFormation's reference gives "Minimum: 0"
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-apigateway-usageplan-throttlesettings.html,
# .../aws-properties-apigateway-usageplan-quotasettings.html).
USAGE_PLAN_MINIMUM = documented(
    "https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-apigateway-usageplan-throttlesettings.html",
    "usage plan throttle and quota numbers are at least 0",
    lambda v: float(v) >= 0,
    rejects=(-1,),
)
PUT_METRIC_ALARM_URL = (
    "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html"
)
ALARM_PERIOD = documented(
    PUT_METRIC_ALARM_URL,
    "Period is 10, 20, 30 or a multiple of 60 seconds",
    lambda v: whole(v) in (10, 20, 30) or (whole(v) > 0 and whole(v) % 60 == 0),
    rejects=(45, 90),
    says=("cloudwatch", "PutMetricAlarm", "Period", "Valid values are 10, 20, 30, and any multiple of 60."),
)
# "Period multiplied by EvaluationPeriods can't be more than 604,800 seconds" (PutMetricAlarm, Period).
ALARM_WINDOW_SECONDS = 604_800
ALARM_WINDOW_SAYS = (
    "cloudwatch",
    "PutMetricAlarm",
    "Period",
    "Period multiplied by EvaluationPeriods can't be more than 604,800 seconds",
)
NONCURRENT_DAYS = documented(
    "https://docs.aws.amazon.com/AmazonS3/latest/API/API_NoncurrentVersionExpiration.html",
    "NoncurrentDays is a positive whole number",
    lambda v: whole(v) > 0,
    rejects=(0,),
    says=(
        "s3",
        "PutBucketLifecycleConfiguration",
        "LifecycleConfiguration.Rules.NoncurrentVersionExpiration.NoncurrentDays",
        "The value must be a non-zero positive integer.",
    ),
)
# The model leaves bucket names to the S3 User Guide's "Bucket naming rules" for general purpose buckets.
S3_BUCKET_NAME = documented(
    "https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html",
    "a bucket name is 3-63 lower-case letters, digits, dots and hyphens, starting and ending with a "
    "letter or digit",
    lambda v: re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", v) is not None,
)
# IAM and AWS STS quotas (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html):
# "Role policy size cannot exceed 10,240 characters" (all inline policies of a role together) and role
# trust policy length 2,048 characters (the default; adjustable to 4,096). White space does not count.
IAM_QUOTAS_URL = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html"
ROLE_INLINE_POLICIES_CHARACTERS = 10_240
ROLE_TRUST_POLICY_CHARACTERS = 2_048

DOCUMENTED_SAYS: tuple[tuple[str, str, str, str], ...] = tuple(
    says
    for says in (
        LINEAR_STEP_SAYS,
        LOG_RETENTION.says,
        SQS_RETENTION.says,
        SQS_QUEUE_NAME.says,
        STAGE_NAME.says,
        ALARM_PERIOD.says,
        ALARM_WINDOW_SAYS,
        NONCURRENT_DAYS.says,
    )
    if says is not None
)
