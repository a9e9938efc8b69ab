"""The stack configuration: every key, its type and default in one place (documented in the README config table).

Read with `PlatformSettings.load(pulumi.Config())`. A wrong value fails `pulumi up` before anything
is created, with a message naming the key.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import pulumi

from components.ml_repo import REPO_KINDS

# SageMaker names: letters, digits, hyphens; ARNs lower-case them, so IAM scoping needs lower case.
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
QUOTA_PERIODS = ("DAY", "WEEK", "MONTH")
_CODECOMMIT_NAME = re.compile(r"^[\w.-]{1,100}$")
_OWNER_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class SettingsError(ValueError):
    """A config key has a value the platform cannot deploy."""


@dataclass(frozen=True)
class PlatformSettings:
    name_prefix: str
    source_repo_kind: str = "github"
    source_repo_name: str = ""
    source_branch: str = "main"
    connection_arn: str = ""
    training_instance_type: str = "ml.m5.large"
    training_data_path: str = "data/iris.csv"
    quality_gate_min_accuracy: float = 0.9
    build_compute_type: str = "BUILD_GENERAL1_SMALL"
    build_image: str = "aws/codebuild/standard:7.0"
    build_timeout_minutes: int = 60
    endpoint_instance_type: str = "ml.m5.large"
    endpoint_initial_instance_count: int = 2
    autoscaling_min_capacity: int = 2
    autoscaling_max_capacity: int = 2
    autoscaling_target_invocations: float = 100.0
    traffic_step_percent: int = 50
    traffic_wait_seconds: int = 300
    termination_wait_seconds: int = 300
    maximum_execution_timeout_seconds: int = 3600
    alarm_5xx_threshold: float = 1.0
    alarm_latency_threshold_ms: float = 500.0
    alarm_evaluation_periods: int = 2
    alarm_4xx_margin: float = 0.05
    alarm_4xx_min_requests: int = 20
    alarm_topic_arn: str = ""
    data_capture: bool = True
    api_throttle_rate_limit: float = 10.0
    api_throttle_burst_limit: int = 20
    api_quota_limit: int = 10000
    api_quota_period: str = "DAY"
    api_max_body_bytes: int = 1048576
    record_ttl_days: int = 90
    manage_api_gateway_account: bool = True
    log_retention_days: int = 30
    ecr_max_image_count: int = 30
    artifact_noncurrent_days: int = 90
    kms_key_arn: str = ""
    force_destroy: bool = False

    # Derived names: fixed so the seed's commands (`aws codebuild start-build --project-name ...`) and
    # the deployer's naming (`<endpoint>-v<version>-<hash>`, at most 63 characters) keep working.
    @property
    def repo_name(self) -> str:
        return self.source_repo_name or f"{self.name_prefix}-repo"

    @property
    def group_name(self) -> str:
        return f"{self.name_prefix}-models"

    @property
    def endpoint_name(self) -> str:
        return f"{self.name_prefix}-endpoint"

    @property
    def project_name(self) -> str:
        return f"{self.name_prefix}-train"

    @property
    def pipeline_name(self) -> str:
        return f"{self.name_prefix}-pipeline"

    @property
    def ecr_repository_name(self) -> str:
        return f"{self.name_prefix}-model"

    @property
    def table_name(self) -> str:
        return f"{self.name_prefix}-requests"

    @staticmethod
    def config_key(field_name: str) -> str:
        """The stack-file key of a field: snake_case -> camelCase (alarm_5xx_threshold -> alarm5xxThreshold)."""
        head, *rest = field_name.split("_")
        return head + "".join(part[:1].upper() + part[1:] for part in rest)

    @classmethod
    def load(cls, config: pulumi.Config, stack: str) -> PlatformSettings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = cls.config_key(f.name)
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            try:
                if kind == "int":
                    value: Any = config.get_int(key)
                elif kind == "float":
                    value = config.get_float(key)
                elif kind == "bool":
                    value = config.get_bool(key)
                else:
                    value = config.get(key)
            except pulumi.ConfigTypeError as exc:
                raise SettingsError(f"config {config.name}:{key}: {exc}") from None
            if value is not None:
                values[f.name] = value
        values.setdefault("name_prefix", f"mlops-{stack}")
        settings = cls(**values)
        settings.validate()
        return settings

    @classmethod
    def load_values(cls, config: Mapping[str, str], stack: str, namespace: str = "mlops") -> PlatformSettings:
        """The same from a stack file's `config:` map as the engine hands it over (all strings)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = config.get(f"{namespace}:{cls.config_key(f.name)}")
            if raw is None:
                continue
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            try:
                values[f.name] = (
                    int(raw)
                    if kind == "int"
                    else float(raw)
                    if kind == "float"
                    else {"true": True, "false": False}[raw.lower()]
                    if kind == "bool"
                    else raw
                )
            except (KeyError, ValueError):
                raise SettingsError(
                    f"config {namespace}:{cls.config_key(f.name)}: {raw!r} is not {kind}"
                ) from None
        values.setdefault("name_prefix", f"mlops-{stack}")
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        problems: list[str] = []
        if not _NAME.match(self.name_prefix):
            problems.append(
                f"namePrefix {self.name_prefix!r} must be 3-32 lower-case letters, digits or hyphens, "
                "starting with a letter"
            )
        if self.source_repo_kind not in REPO_KINDS:
            problems.append(f"sourceRepoKind {self.source_repo_kind!r} is not one of {', '.join(REPO_KINDS)}")
        elif self.source_repo_kind == "codecommit" and not _CODECOMMIT_NAME.match(self.repo_name):
            problems.append(
                f"sourceRepoName {self.source_repo_name!r} is not a CodeCommit repository name "
                "(letters, digits, '.', '_', '-'; at most 100; empty = <namePrefix>-repo)"
            )
        elif self.source_repo_kind != "codecommit" and not _OWNER_REPO.match(self.source_repo_name):
            problems.append(
                f"sourceRepoName must be the existing {self.source_repo_kind} repository as owner/repo "
                f"(got {self.source_repo_name!r}); set it with "
                "`pulumi config set mlops:sourceRepoName <owner>/<repo>`"
            )
        for key, value, low, high in _API_RANGES(self):
            if not low <= value <= high:
                problems.append(f"{key} {value} must be within {low}..{high}")
        for key, (service, shape) in _ENUM_SETTINGS.items():
            value = getattr(self, _field_of(key))
            if value not in _enum(service, shape):
                problems.append(f"{key} {value!r} is not a {service} {shape} (botocore's service model)")
        if not 0 <= self.alarm_4xx_margin < 1:
            problems.append(f"alarm4xxMargin {self.alarm_4xx_margin} must be a fraction in [0, 1), like 0.05")
        if self.alarm_4xx_min_requests < 1:
            problems.append(f"alarm4xxMinRequests {self.alarm_4xx_min_requests} must be at least 1")
        if not 0 < self.quality_gate_min_accuracy <= 1:
            problems.append(f"qualityGateMinAccuracy {self.quality_gate_min_accuracy} must be within (0, 1]")
        if self.autoscaling_max_capacity and not (
            1 <= self.autoscaling_min_capacity <= self.autoscaling_max_capacity
        ):
            problems.append(
                f"autoscaling bounds {self.autoscaling_min_capacity}..{self.autoscaling_max_capacity} "
                "need 1 <= autoscalingMinCapacity <= autoscalingMaxCapacity (or autoscalingMaxCapacity 0 = off)"
            )
        problems.extend(self._linear_shift_problems())
        if self.api_quota_period not in QUOTA_PERIODS:
            problems.append(
                f"apiQuotaPeriod {self.api_quota_period!r} is not one of {', '.join(QUOTA_PERIODS)}"
            )
        if self.api_max_body_bytes < 1:
            problems.append("apiMaxBodyBytes must be positive")
        if self.record_ttl_days < 0:
            problems.append("recordTtlDays must be 0 (keep) or more")
        if self.log_retention_days not in _LOG_RETENTION_DAYS:
            problems.append(
                f"logRetentionDays {self.log_retention_days} is not a CloudWatch retention "
                f"({', '.join(map(str, _LOG_RETENTION_DAYS))})"
            )
        if problems:
            raise SettingsError("invalid stack configuration: " + "; ".join(problems))

    @property
    def smallest_fleet(self) -> int:
        """The fewest instances the endpoint can have when a deployment starts."""
        if self.autoscaling_max_capacity:
            return min(self.endpoint_initial_instance_count, self.autoscaling_min_capacity)
        return self.endpoint_initial_instance_count

    def _linear_shift_problems(self) -> list[str]:
        # SageMaker LINEAR blue/green: each step moves 10-50% of the variant's instances, and whole
        # instances (the deployer sends the step as an instance count). So the smallest fleet the
        # endpoint can have must be at least two, and trafficStepPercent of it at least one instance.
        fleet = self.smallest_fleet
        if fleet < 2:
            return [
                f"endpointInitialInstanceCount/autoscalingMinCapacity allow a fleet of {fleet} instance; "
                "LINEAR blue/green shifts 10-50% of the fleet per step, one whole instance at least, "
                "so it needs 2 or more"
            ]
        if self.traffic_step_percent > 0 and fleet * self.traffic_step_percent // 100 < 1:
            return [
                f"trafficStepPercent {self.traffic_step_percent} of {fleet} instances is less than one "
                f"instance; raise it to {-(-100 // fleet)} or keep at least "
                f"{-(-100 // self.traffic_step_percent)} instances"
            ]
        return []


def _field_of(key: str) -> str:
    """camelCase config key -> the settings field (trainingInstanceType -> training_instance_type)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def _API_RANGES(s: PlatformSettings) -> list[tuple[str, float, float, float]]:
    """(key, value, low, high) of settings that reach an AWS API with a range of its own.

    Ranges from the service models (botocore) and, for the LINEAR step, SageMaker's guide ("10-50% of
    the variant's instance count"); tests/test_aws_limits.py checks them against botocore."""
    return [
        ("trafficStepPercent", s.traffic_step_percent, 10, 50),
        ("trafficWaitSeconds", s.traffic_wait_seconds, 0, 3600),
        ("terminationWaitSeconds", s.termination_wait_seconds, 0, 3600),
        ("maximumExecutionTimeoutSeconds", s.maximum_execution_timeout_seconds, 600, 28800),
        ("buildTimeoutMinutes", s.build_timeout_minutes, 5, 2160),
        ("endpointInitialInstanceCount", s.endpoint_initial_instance_count, 1, 1000),
        ("autoscalingMinCapacity", s.autoscaling_min_capacity, 0, 1000),
        ("autoscalingMaxCapacity", s.autoscaling_max_capacity, 0, 1000),
        ("alarmEvaluationPeriods", s.alarm_evaluation_periods, 1, 100),
        ("apiThrottleRateLimit", s.api_throttle_rate_limit, 0, _INT32_MAX),
        ("apiThrottleBurstLimit", s.api_throttle_burst_limit, 0, _INT32_MAX),
        ("apiQuotaLimit", s.api_quota_limit, 0, _INT32_MAX),
        ("artifactNoncurrentDays", s.artifact_noncurrent_days, 1, _INT32_MAX),
        ("ecrMaxImageCount", s.ecr_max_image_count, 1, _INT32_MAX),
        ("recordTtlDays", s.record_ttl_days, 0, 36500),
        ("apiMaxBodyBytes", s.api_max_body_bytes, 1, 10 * 1024 * 1024),
    ]


_INT32_MAX = 2**31 - 1
# Settings whose value is one of a service model's enums (botocore: shape, operation member path).
_ENUM_SETTINGS = {
    "buildComputeType": ("codebuild", "ComputeType"),
    "endpointInstanceType": ("sagemaker", "ProductionVariantInstanceType"),
    "trainingInstanceType": ("sagemaker", "TrainingInstanceType"),
}


@functools.cache
def _enum(service: str, shape: str) -> frozenset[str]:
    """The values botocore's service model allows for a shape (so a typo fails at `pulumi preview`)."""
    import botocore.session

    return frozenset(botocore.session.get_session().get_service_model(service).shape_for(shape).enum)


# The retentions CloudWatch Logs accepts (0 = never expire is deliberately not offered).
_LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
