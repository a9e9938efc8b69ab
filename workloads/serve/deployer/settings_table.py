"""Every setting of the platform, declared once: type, default, range, meaning and who reads it.

One row per setting. From these rows come the stack config (components/settings.py PlatformSettings:
keys, parsing, defaults, ranges), the environments Pulumi gives the deployer Lambda, the API Lambda and
CodeBuild (the components build them from the `*_env` names and take their defaults from here), the
deployer's parser (config.py DeployerConfig), the local platform's settings (mlops/local/settings.py
LocalSettings: MLOPS_* variables, with the local default where it differs), the README's settings
tables and docs/contracts.md's environment tables (`make docs`, tools/settings_docs.py). So a new
setting is a new row here, plus a field in the Args TypedDict of the component that takes it
(tests/test_settings_table.py checks the two match).

Standard library only, and in the deployer's folder because the deployer Lambda's zip is that folder:
the Lambda parses its environment with these rows.

Rows are grouped by where they are read, as classes (so mypy knows which settings object has which):
- Shared: stack settings the local platform reads too;
- Aws: stack settings only AWS has;
- Local: settings only the local platform has.
A row is a typed descriptor: `settings.traffic_step_percent` is an int to mypy on every settings
class that derives from the row's group; `.locally(float, 2.0)` gives the local platform its own type
and default.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, NamedTuple, Self, TypeVar, cast, overload

T = TypeVar("T")
L = TypeVar("L")
K = TypeVar("K")

# The runtimes that read settings from their environment.
DEPLOYER = "deployer"
API = "api"
BUILD = "build"
LOCAL = "local"

INT32_MAX = 2**31 - 1
# The retentions CloudWatch Logs accepts (0 = never expire is deliberately not offered).
CLOUDWATCH_RETENTION_DAYS = (
    *(1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731),
    *(1096, 1827, 2192, 2557, 2922, 3288, 3653),
)


def config_key(name: str) -> str:
    """The stack-file key of a setting: snake_case -> camelCase (alarm_5xx_threshold -> alarm5xxThreshold)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _number(value: float) -> str:
    """A number as the docs and messages show it: 1.0 -> 1, 0.9 -> 0.9."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


class Setting(Generic[T, L]):
    """One row: a setting's type, default, range or choices, meaning, stack key and env names.

    On a settings object it reads that object's value (T; L on the local platform's settings); on a
    class it is the row. A settings class that does not carry the row raises AttributeError."""

    name: str

    def __init__(
        self: Setting[T, T],
        kind: type[T],
        default: T,
        meaning: str,
        *,
        key: str = "",
        low: float | None = None,
        high: float | None = None,
        above: float | None = None,
        below: float | None = None,
        choices: tuple[T, ...] = (),
        choices_name: str = "",
        enum: tuple[str, str] | None = None,
        doc_default: str = "",
        deployer_env: str | None = None,
        api_env: str | None = None,
        build_env: str | None = None,
        local_env: str | None = None,
        local_meaning: str = "",
        args: tuple[str, ...] = (),
    ) -> None:
        self.kind: type[T] = kind
        self.default: T = default
        self.meaning = meaning
        self._key = key
        self.low, self.high, self.above, self.below = low, high, above, below
        """Range: low <= value <= high, above < value < below (each optional)."""
        self.choices = choices
        self.choices_name = choices_name
        """How a message names the choices ("a CloudWatch retention"); default: "one of ..."."""
        self.enum = enum
        """(botocore service, shape): the value is one of that shape's enum (checked by PlatformSettings)."""
        self.doc_default = doc_default
        """The default as the docs show it, where the value is not it (namePrefix: `mlops-<stack>`)."""
        self.env: dict[str, str] = {
            runtime: name
            for runtime, name in (
                (DEPLOYER, deployer_env),
                (API, api_env),
                (BUILD, build_env),
                (LOCAL, local_env),
            )
            if name
        }
        """runtime -> the environment variable it reads the setting from."""
        self.local_meaning = local_meaning
        self.args = args
        """The component Args fields ("BlueGreenEndpoint.instance_type") the stack's value goes to."""
        self.local_kind: type[Any] = kind
        self.local_default: Any = default
        self.local_doc_default = doc_default
        self.stack = True

    def locally(self, kind: type[K], default: K, *, doc_default: str = "") -> Setting[T, K]:
        """The local platform reads this setting as `kind` with its own `default`."""
        self.local_kind = kind
        self.local_default = default
        self.local_doc_default = doc_default
        return cast("Setting[T, K]", self)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        # Rows of the local platform's own group are not stack settings.
        self.stack = not issubclass(owner, LocalView)

    @property
    def key(self) -> str:
        """The stack-file key (mlops:<key>)."""
        return self._key or config_key(self.name)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: LocalView, owner: type | None = None) -> L: ...
    @overload
    def __get__(self, obj: SettingValues, owner: type | None = None) -> T: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        # Only reached when the object has no value for the row (values live in its __dict__).
        raise AttributeError(f"{type(obj).__name__} does not carry the setting {self.name} ({self.key})")

    def __repr__(self) -> str:
        return f"Setting({self.name}: {self.kind.__name__} = {self.default!r})"

    # -- values -------------------------------------------------------------------------------------

    def kind_for(self, runtime: str) -> type[Any]:
        return self.local_kind if runtime == LOCAL else self.kind

    def default_for(self, runtime: str) -> Any:
        return self.local_default if runtime == LOCAL else self.default

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this row's range or choices, in the words of an env var
        message ("is out of range [10, 50]"), or None."""
        if self.choices:
            if value in self.choices:
                return None
            listed = ", ".join(map(str, self.choices))
            return (
                f"is not {self.choices_name} ({listed})" if self.choices_name else f"is not one of {listed}"
            )
        low_ok = (self.low is None or value >= self.low) and (self.above is None or value > self.above)
        high_ok = (self.high is None or value <= self.high) and (self.below is None or value < self.below)
        if low_ok and high_ok:
            return None
        return self.range_phrase(interval=True)

    def stack_problem(self, value: Any) -> str | None:
        """The same in a stack key's words ("must be within 10..50")."""
        problem = self.problem(value)
        if problem is None or self.choices:
            return problem
        return self.range_phrase(interval=False)

    def range_phrase(self, *, interval: bool) -> str:
        """The allowed range: "is out of range [10, 50]" (interval) or "must be within 10..50"."""
        low, high, above = self.low, self.high, self.above
        if self.below is not None:
            text = f"[{_number(low or 0)}, {_number(self.below)})"
            return f"is out of range {text}" if interval else f"must be within {text}"
        if above is not None:
            if high is None:
                return f"must be > {_number(above)}"
            text = f"({_number(above)}, {_number(high)}]"
            return f"is out of range {text}" if interval else f"must be within {text}"
        if high is None:
            return f"must be {_number(low or 0)} or more"
        if interval:
            return f"is out of range [{_number(low or 0)}, {_number(high)}]"
        return f"must be within {_number(low or 0)}..{_number(high)}"

    def parse(self, raw: str, kind: type[Any], *, lenient_ints: bool = False) -> Any:
        """A value of `kind` from text; ValueError("is not a number") and the like say why not.
        lenient_ints: an int may be written as a float ("8000.0"; the local platform's old rule)."""
        if kind is bool:
            try:
                return {"true": True, "false": False}[raw.lower()]
            except KeyError:
                raise ValueError("is not true or false") from None
        if kind is int:
            try:
                return int(raw)
            except ValueError:
                if not lenient_ints:
                    raise ValueError("is not a whole number") from None
            try:
                number = float(raw)
            except ValueError:
                raise ValueError("is not a number") from None
            if not number.is_integer():
                raise ValueError("is not a whole number")
            return int(number)
        if kind is float:
            try:
                return float(raw)
            except ValueError:
                raise ValueError("is not a number") from None
        return kind(raw)

    def from_env(self, env: Mapping[str, str], runtime: str, *, lenient_ints: bool = False) -> Any:
        """The value `runtime` reads from its environment: the default when unset or empty, else the
        parsed value within range. ValueError names the variable ("TRAFFIC_STEP_PERCENT=0 is out of range
        [10, 50]")."""
        name = self.env[runtime]
        raw = env.get(name, "").strip()
        if not raw:
            return self.default_for(runtime)
        try:
            value = self.parse(raw, self.kind_for(runtime), lenient_ints=lenient_ints)
        except ValueError as exc:
            raise ValueError(f"{name}={raw!r} {exc}") from None
        problem = self.problem(value)
        if problem is not None:
            shown = repr(value) if isinstance(value, str) else value
            raise ValueError(f"{name}={shown} {problem}")
        return value

    @staticmethod
    def text(value: Any) -> str:
        """A value as an environment variable carries it (what from_env reads back)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return _number(value)
        return str(value)

    def arg(self, component: str) -> str | None:
        """The field of `component`'s Args this setting goes to, if it goes there."""
        for target in self.args:
            owner, _, field = target.partition(".")
            if owner == component:
                return field
        return None


# -- the settings objects -----------------------------------------------------------------------------

_REQUIRED: Any = object()


class SettingValues:
    """The values of one runtime's settings: the rows its class carries (`carries`) and the class's
    own annotated fields (DeployerConfig's group and endpoint, wired by Pulumi). Frozen; equal when
    the values are."""

    _own: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = {
            name: cls.__dict__.get(name, _REQUIRED)
            for name, annotation in inspect.get_annotations(cls).items()
            if "ClassVar" not in str(annotation)
        }
        cls._own = {**cls._own, **own}

    @classmethod
    def carries(cls, row: Setting[Any, Any]) -> bool:
        """Whether this class's objects have a value for `row` (every row of their groups by default)."""
        return True

    @classmethod
    def runtime(cls) -> str:
        """Whose defaults and types the values take: LOCAL for the local platform, else AWS's."""
        return LOCAL if issubclass(cls, LocalView) else ""

    @classmethod
    def rows(cls) -> tuple[Setting[Any, Any], ...]:
        """The rows this class carries, in declaration order (looked up each time: a test may add one)."""
        found: dict[str, Setting[Any, Any]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Setting):
                    found[name] = value
                elif name in found:
                    del found[name]  # a subclass replaced the row with something of its own
        return tuple(row for row in found.values() if cls.carries(row))

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        runtime = cls.runtime()
        for row in cls.rows():
            object.__setattr__(self, row.name, values.pop(row.name, row.default_for(runtime)))
        for name, default in cls._own.items():
            if name in values:
                object.__setattr__(self, name, values.pop(name))
            elif default is _REQUIRED:
                raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
            else:
                object.__setattr__(self, name, default)
        if values:
            raise TypeError(f"{cls.__name__}() has no setting(s) {', '.join(sorted(values))}")

    def values(self) -> dict[str, Any]:
        """Every value, by name (rows and own fields)."""
        return dict(vars(self))

    def replace(self, **changes: Any) -> Self:
        return type(self)(**{**vars(self), **changes})

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self), tuple(vars(self).items())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class LocalView(SettingValues):
    """The local platform's settings objects: rows read with their local type and default."""


# -- the table ----------------------------------------------------------------------------------------


class Shared(SettingValues):
    """Stack settings the local platform reads too (from its MLOPS_* variable)."""

    source_branch = Setting(
        str,
        "main",
        "A push to this branch trains a model; a build started by hand builds it too.",
        local_env="MLOPS_BRANCH",
        local_meaning="The branch of the local remote whose pushes are built.",
        args=("MlRepo.branch",),
    )
    group = Setting(
        str,
        "iris",
        "The `mlops.toml` `[model] group` this stack serves: a build whose `[model] group` differs fails "
        "before training, so an unrelated model never registers beside these. Its versions register in the "
        "stack's SageMaker group `<namePrefix>-models` (renaming that would replace it).",
        key="modelGroup",
        build_env="MODEL_GROUP",
        local_env="MLOPS_MODEL_PACKAGE_GROUP",
        local_meaning="The one model package group the local platform serves; a build whose `mlops.toml` "
        "`[model] group` differs fails before training.",
        args=("BuildPipeline.model_group",),
    )
    training_data_path = Setting(
        str,
        "data/iris.csv",
        "No longer chooses the training data: the commit's `mlops.toml` `[data] path` does, and a build "
        "that finds this set to something else says in its log that it ignores it. Kept until the stack "
        "drops it.",
        build_env="TRAINING_DATA_PATH",
        local_env="MLOPS_TRAINING_DATA_PATH",
        local_meaning="No longer chooses the data (`mlops.toml`'s `[data] path` does); a build that finds "
        "it set says in its log that it is ignored.",
        args=("BuildPipeline.training_data_path",),
    )
    quality_gate_min_accuracy = Setting(
        float,
        0.9,
        "A classification model whose holdout accuracy is below this is not registered (a floor on top of "
        "`mlops.toml`'s `[gate]`; a regressor is judged by its `[gate]` only).",
        above=0,
        high=1,
        build_env="QUALITY_GATE_MIN_ACCURACY",
        local_env="MLOPS_MIN_ACCURACY",
        args=("BuildPipeline.quality_gate_min_accuracy",),
    )
    endpoint_initial_instance_count = Setting(
        int,
        2,
        "Instances of a new endpoint config. LINEAR blue/green moves whole instances, 10-50% of the fleet "
        "per step, so a fleet needs 2 or more.",
        low=2,
        high=1000,
        deployer_env="INITIAL_INSTANCE_COUNT",
        local_env="MLOPS_INSTANCE_COUNT",
        local_meaning="The endpoint's fleet as the local deployer counts it (one model server per version "
        "serves it): LINEAR steps move whole instances of it, as on AWS, so it needs 2 or more.",
        args=("BlueGreenEndpoint.initial_instance_count",),
    )
    traffic_step_percent = Setting(
        int,
        50,
        "Blue/green LINEAR: share of the fleet shifted per step, rounded to whole instances within 10-50% "
        "of the instance count (`lifecycle.linear_step`, the same on both platforms). On AWS at least one "
        "instance of the smallest fleet.",
        low=10,
        high=50,
        deployer_env="TRAFFIC_STEP_PERCENT",
        local_env="MLOPS_TRAFFIC_STEP_PERCENT",
        local_meaning="Blue/green LINEAR: share of the fleet shifted per step, whole instances of "
        "`MLOPS_INSTANCE_COUNT` within 10-50% of it (`lifecycle.linear_step`, as on AWS).",
        args=("BlueGreenEndpoint.traffic_step_percent",),
    )
    traffic_wait_seconds = Setting(
        int,
        300,
        "Blue/green LINEAR: wait between steps while the rollback alarms watch.",
        low=0,
        high=3600,
        deployer_env="TRAFFIC_WAIT_SECONDS",
        local_env="MLOPS_TRAFFIC_WAIT_SECONDS",
        local_meaning="Blue/green LINEAR: wait at each step while the health check and the error-rate alarm "
        "watch the new version.",
        args=("BlueGreenEndpoint.traffic_wait_seconds",),
    ).locally(float, 2.0)
    termination_wait_seconds = Setting(
        int,
        300,
        "Wait before the old (blue) fleet is terminated after the last step.",
        low=0,
        high=3600,
        deployer_env="TERMINATION_WAIT_SECONDS",
        local_env="MLOPS_TERMINATION_WAIT_SECONDS",
        local_meaning="Wait after the last step, still watching, before the old version's server drains "
        "and stops.",
        args=("BlueGreenEndpoint.termination_wait_seconds",),
    ).locally(float, 1.0)
    record_ttl_days = Setting(
        int,
        90,
        "Days an inference record is kept in DynamoDB (TTL on `expires_at`); `0` = keep.",
        low=0,
        high=36500,
        api_env="RECORD_TTL_DAYS",
        local_env="MLOPS_RECORDS_RETENTION_DAYS",
        local_meaning="Stored requests older than this many days are deleted by the daemon; `0` keeps "
        "every record.",
        args=("InferenceApi.record_ttl_days",),
    ).locally(float, 30.0)
    alarm_4xx_margin = Setting(
        float,
        0.05,
        "Rollback alarm `<endpoint>-4xx-vs-blue`: how far the new fleet's 4xx rate may exceed the old "
        "fleet's, in the same minute, before a deployment rolls back (0.05 = 5 percentage points).",
        low=0,
        below=1,
        local_env="MLOPS_ALARM_4XX_MARGIN",
        local_meaning="During a shift: roll back when the new version's 4xx rate exceeds the old one's, in "
        "the same traffic step, by more than this (0.05 = 5 percentage points); both need "
        "`MLOPS_ALARM_MIN_REQUESTS` answers.",
        args=("BlueGreenEndpoint.alarm_4xx_margin",),
    )


class Aws(Shared):
    """Stack settings only the AWS platform has."""

    name_prefix = Setting(
        str,
        "",
        "Prefix of every physical name: `<prefix>-repo`, `-models` (model package group), `-endpoint`, "
        "`-train` (CodeBuild project and its log group), `-pipeline`, `-model` (ECR), `-requests` (table), "
        "`-deployer`, `-api`, `-inference` (REST API). 3-32 lower-case letters, digits, hyphens "
        "(SageMaker ARNs are lower case, and IAM scoping matches them).",
        doc_default="`mlops-<stack>`",
    )
    source_repo_kind = Setting(
        str,
        "github",
        "Where the training code lives: an existing repository reached through an AWS CodeConnections "
        "connection (works in every account), or a CodeCommit repository the stack creates (only where the "
        "account already has CodeCommit: AWS closed it to new customers in July 2024).",
        choices=("github", "gitlab", "bitbucket", "codecommit"),
        args=("MlRepo.kind",),
    )
    source_repo_name = Setting(
        str,
        "",
        "The existing repository as `owner/repo` (required: `pulumi config set mlops:sourceRepoName "
        "<owner>/<repo>`). CodeCommit: the name of the repository to create.",
        doc_default="(none; CodeCommit: `<prefix>-repo`)",
    )
    connection_arn = Setting(
        str,
        "",
        "External repositories: an existing connection ARN. Empty = the stack creates one in PENDING state; "
        "complete it once in the console (Developer Tools > Connections).",
        args=("MlRepo.connection_arn",),
    )
    training_instance_type = Setting(
        str,
        "ml.m5.large",
        "SageMaker training instance type.",
        enum=("sagemaker", "TrainingInstanceType"),
        build_env="TRAINING_INSTANCE_TYPE",
        args=("BuildPipeline.training_instance_type",),
    )
    build_compute_type = Setting(
        str,
        "BUILD_GENERAL1_SMALL",
        "CodeBuild compute type.",
        enum=("codebuild", "ComputeType"),
        args=("BuildPipeline.build_compute_type",),
    )
    build_image = Setting(
        str,
        "aws/codebuild/standard:7.0",
        "CodeBuild image (needs Docker; runs privileged for `docker build`).",
        args=("BuildPipeline.build_image",),
    )
    build_timeout_minutes = Setting(
        int,
        60,
        "CodeBuild timeout; covers image build + training + registration.",
        low=5,
        high=2160,
        args=("BuildPipeline.build_timeout_minutes",),
    )
    endpoint_instance_type = Setting(
        str,
        "ml.m5.large",
        "Endpoint instance type the deployer uses.",
        enum=("sagemaker", "ProductionVariantInstanceType"),
        deployer_env="INSTANCE_TYPE",
        args=("BlueGreenEndpoint.instance_type",),
    )
    autoscaling_min_capacity = Setting(
        int,
        2,
        "Endpoint autoscaling lower bound, registered by the deployer after a deployment; the smallest "
        "fleet a deployment can start from (2 or more, for LINEAR).",
        low=0,
        high=1000,
        deployer_env="AUTOSCALING_MIN_CAPACITY",
        args=("BlueGreenEndpoint.autoscaling_min_capacity",),
    )
    autoscaling_max_capacity = Setting(
        int,
        2,
        "Endpoint autoscaling upper bound; `0` = no autoscaling.",
        low=0,
        high=1000,
        deployer_env="AUTOSCALING_MAX_CAPACITY",
        args=("BlueGreenEndpoint.autoscaling_max_capacity",),
    )
    autoscaling_target_invocations = Setting(
        float,
        100.0,
        "Target invocations per instance per minute for target tracking.",
        above=0,
        deployer_env="AUTOSCALING_TARGET_INVOCATIONS",
        args=("BlueGreenEndpoint.autoscaling_target_invocations",),
    )
    maximum_execution_timeout_seconds = Setting(
        int,
        3600,
        "Upper bound of a whole blue/green deployment.",
        low=600,
        high=28800,
        deployer_env="MAXIMUM_EXECUTION_TIMEOUT_SECONDS",
        args=("BlueGreenEndpoint.maximum_execution_timeout_seconds",),
    )
    alarm_5xx_threshold = Setting(
        float,
        1.0,
        "Rollback alarm: `Invocation5XXErrors` per minute at or above which a deployment rolls back.",
        args=("BlueGreenEndpoint.alarm_5xx_threshold",),
    )
    alarm_latency_threshold_ms = Setting(
        float,
        500.0,
        "Rollback alarm: average `ModelLatency` (milliseconds; the alarm converts to CloudWatch's "
        "microseconds) above which a deployment rolls back.",
        args=("BlueGreenEndpoint.alarm_latency_threshold_ms",),
    )
    alarm_evaluation_periods = Setting(
        int,
        2,
        "One-minute periods that must breach before a rollback alarm fires.",
        low=1,
        high=100,
        args=("BlueGreenEndpoint.alarm_evaluation_periods",),
    )
    alarm_4xx_min_requests = Setting(
        int,
        20,
        "The 4xx comparison counts a minute only when each fleet answered at least this many requests in it.",
        low=1,
        high=INT32_MAX,
        args=("BlueGreenEndpoint.alarm_4xx_min_requests",),
    )
    alarm_topic_arn = Setting(
        str,
        "",
        "SNS topic notified by the `DeploymentsFailed` and `RecordsNotStored` alarms; empty = alarm state "
        "only.",
        args=("BlueGreenEndpoint.alarm_topic_arn", "InferenceApi.alarm_topic_arn"),
    )
    data_capture = Setting(
        bool,
        True,
        "Capture endpoint requests/responses to `s3://<artifact bucket>/data-capture/<endpoint>/` (the "
        "deployer's `DATA_CAPTURE_S3_URI`, empty when off).",
        args=("BlueGreenEndpoint.data_capture",),
    )
    api_throttle_rate_limit = Setting(
        float,
        10.0,
        "Usage plan: steady requests per second per API key.",
        low=0,
        high=INT32_MAX,
        args=("InferenceApi.throttle_rate_limit",),
    )
    api_throttle_burst_limit = Setting(
        int,
        20,
        "Usage plan: burst per API key.",
        low=0,
        high=INT32_MAX,
        args=("InferenceApi.throttle_burst_limit",),
    )
    api_quota_limit = Setting(
        int,
        10000,
        "Usage plan: requests per key per quota period.",
        low=0,
        high=INT32_MAX,
        args=("InferenceApi.quota_limit",),
    )
    api_quota_period = Setting(
        str,
        "DAY",
        "Usage plan quota period.",
        choices=("DAY", "WEEK", "MONTH"),
        args=("InferenceApi.quota_period",),
    )
    api_max_body_bytes = Setting(
        int,
        1048576,
        "Request bodies larger than this are answered 413.",
        low=1,
        high=10 * 1024 * 1024,
        api_env="MAX_BODY_BYTES",
        args=("InferenceApi.max_body_bytes",),
    )
    manage_api_gateway_account = Setting(
        bool,
        True,
        "Set API Gateway's account-wide CloudWatch Logs role (needed for access logs, once per account and "
        "region). Every stack may: the role is kept on `pulumi destroy`, so destroying one stack does not "
        "break the others' logging.",
        args=("InferenceApi.manage_account_logging_role",),
    )
    log_retention_days = Setting(
        int,
        30,
        "Retention of every log group the stack creates.",
        choices=CLOUDWATCH_RETENTION_DAYS,
        choices_name="a CloudWatch retention",
        args=(
            "BuildPipeline.log_retention_days",
            "BlueGreenEndpoint.log_retention_days",
            "InferenceApi.log_retention_days",
        ),
    )
    ecr_max_image_count = Setting(
        int,
        30,
        "Images kept in ECR besides those of registered model versions (tagged `registered-v<N>`, never "
        "expired); untagged layers expire after a day.",
        low=1,
        high=INT32_MAX,
        args=("ArtifactStore.ecr_max_image_count",),
    )
    artifact_noncurrent_days = Setting(
        int,
        90,
        "Days an overwritten or deleted artifact version is kept in the versioned bucket.",
        low=1,
        high=INT32_MAX,
        args=("ArtifactStore.artifact_noncurrent_days",),
    )
    kms_key_arn = Setting(
        str,
        "",
        "Customer-managed KMS key for bucket, ECR, CodeBuild, the records table and the SageMaker jobs; roles "
        "get use of exactly this key. Empty = AWS-managed encryption.",
        deployer_env="KMS_KEY_ARN",
        build_env="KMS_KEY_ARN",
        args=(
            "MlRepo.kms_key_arn",
            "ArtifactStore.kms_key_arn",
            "BuildPipeline.kms_key_arn",
            "BlueGreenEndpoint.kms_key_arn",
            "InferenceApi.kms_key_arn",
        ),
    )
    force_destroy = Setting(
        bool,
        False,
        "`true` lets `pulumi destroy` delete a non-empty bucket and ECR repository, the model package group "
        "with its versions, and turns off the table's deletion protection (dev). `false` keeps the model "
        "registry on destroy.",
        args=("ArtifactStore.force_destroy",),
    )


class Local(Shared, LocalView):
    """Settings only the local platform has."""

    home = Setting(
        Path,
        Path(".mlops"),
        "Where the local platform keeps everything: database, git remote, models, logs. "
        "`mlops local reset` deletes it.",
        local_env="MLOPS_HOME",
        doc_default="`.mlops` of the project (the nearest directory up that has one, else the project root)",
    )
    endpoint_name = Setting(
        str,
        "local-endpoint",
        "The local endpoint's name.",
        local_env="MLOPS_ENDPOINT_NAME",
    )
    api_port = Setting(
        int,
        8000,
        "The API's port on 127.0.0.1 (`0` = any free port).",
        low=0,
        high=65535,
        local_env="MLOPS_API_PORT",
    )
    alarm_error_rate = Setting(
        float,
        0.05,
        "Error-rate alarm: a shift rolls back when more than this share of the new version's answers in a "
        "step fail.",
        low=0,
        high=1,
        local_env="MLOPS_ALARM_ERROR_RATE",
    )
    alarm_min_requests = Setting(
        int,
        5,
        "Error-rate alarm: the fewest of the new version's requests in a step it judges.",
        low=1,
        high=INT32_MAX,
        local_env="MLOPS_ALARM_MIN_REQUESTS",
    )
    health_interval_seconds = Setting(
        float,
        0.5,
        "How often the supervisor pings every model server; one that exits or misses `/ping` three times "
        "in a row is restarted.",
        above=0,
        local_env="MLOPS_HEALTH_INTERVAL_SECONDS",
    )
    startup_timeout_seconds = Setting(
        float,
        60.0,
        "How long a new version's model server may take to answer `/ping` before its deployment rolls back.",
        above=0,
        local_env="MLOPS_STARTUP_TIMEOUT_SECONDS",
    )


class Wired(NamedTuple):
    """An environment variable Pulumi fills from a resource (a name or ARN it made), not a setting."""

    runtime: str
    env: str
    meaning: str


WIRED: tuple[Wired, ...] = (
    Wired(
        DEPLOYER, "MODEL_PACKAGE_GROUP_NAME", "The model package group whose approved versions it deploys."
    ),
    Wired(DEPLOYER, "ENDPOINT_NAME", "The SageMaker endpoint it creates and updates (`<prefix>-endpoint`)."),
    Wired(DEPLOYER, "EXECUTION_ROLE_ARN", "The SageMaker execution role of the models it creates."),
    Wired(DEPLOYER, "ROLLBACK_ALARM_NAMES", "The rollback alarms, comma-separated (at most 10)."),
    Wired(
        DEPLOYER,
        "DATA_CAPTURE_S3_URI",
        "`s3://<artifact bucket>/data-capture/<endpoint>` when `dataCapture` is on; empty = off.",
    ),
    Wired(API, "ENDPOINT_NAME", "The SageMaker endpoint it invokes."),
    Wired(API, "TABLE_NAME", "The DynamoDB table of request records (`<prefix>-requests`)."),
    Wired(BUILD, "MODEL_PACKAGE_GROUP_NAME", "The model package group it registers versions in."),
    Wired(BUILD, "ECR_REPOSITORY_URI", "The image repository it pushes the training/serving image to."),
    Wired(BUILD, "SAGEMAKER_ROLE_ARN", "The role training jobs run as."),
    Wired(BUILD, "ARTIFACT_BUCKET", "The artifact bucket (data, models, evaluations)."),
)


def all_rows() -> tuple[Setting[Any, Any], ...]:
    """Every row of the table, stack settings first."""
    return (*Aws.rows(), *(row for row in Local.rows() if not row.stack))


def env_rows(runtime: str) -> tuple[Setting[Any, Any], ...]:
    """The rows `runtime` reads from its environment."""
    return tuple(row for row in all_rows() if runtime in row.env)


def component_rows(component: str) -> tuple[Setting[Any, Any], ...]:
    """The rows whose stack value goes to one of `component`'s Args fields."""
    return tuple(row for row in Aws.rows() if row.arg(component) is not None)
