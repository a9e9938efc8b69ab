"""The stack configuration: every key, its type and default in one place (documented in the README config table).

Read with `PlatformSettings.load(pulumi.Config())`. A wrong value fails `pulumi up` before anything
is created, with a message naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

import pulumi

from components.ml_repo import REPO_KINDS

# SageMaker names: letters, digits, hyphens; ARNs lower-case them, so IAM scoping needs lower case.
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
QUOTA_PERIODS = ("DAY", "WEEK", "MONTH")


class SettingsError(ValueError):
    """A config key has a value the platform cannot deploy."""


@dataclass(frozen=True)
class PlatformSettings:
    name_prefix: str
    source_repo_kind: str = "codecommit"
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
    endpoint_initial_instance_count: int = 1
    autoscaling_min_capacity: int = 1
    autoscaling_max_capacity: int = 2
    autoscaling_target_invocations: float = 100.0
    traffic_step_percent: int = 25
    traffic_wait_seconds: int = 300
    termination_wait_seconds: int = 300
    maximum_execution_timeout_seconds: int = 3600
    alarm_5xx_threshold: float = 1.0
    alarm_latency_threshold_ms: float = 500.0
    alarm_evaluation_periods: int = 2
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

    def validate(self) -> None:
        problems: list[str] = []
        if not _NAME.match(self.name_prefix):
            problems.append(
                f"namePrefix {self.name_prefix!r} must be 3-32 lower-case letters, digits or hyphens, "
                "starting with a letter"
            )
        if self.source_repo_kind not in REPO_KINDS:
            problems.append(f"sourceRepoKind {self.source_repo_kind!r} is not one of {', '.join(REPO_KINDS)}")
        elif self.source_repo_kind != "codecommit" and "/" not in self.source_repo_name:
            problems.append(
                f"sourceRepoName must be the existing repository as owner/repo for sourceRepoKind "
                f"{self.source_repo_kind} (got {self.source_repo_name!r})"
            )
        if not 1 <= self.traffic_step_percent <= 100:
            problems.append(f"trafficStepPercent {self.traffic_step_percent} must be within 1..100")
        if not 0 <= self.traffic_wait_seconds <= 3600:
            problems.append(f"trafficWaitSeconds {self.traffic_wait_seconds} must be within 0..3600")
        if not 0 < self.quality_gate_min_accuracy <= 1:
            problems.append(f"qualityGateMinAccuracy {self.quality_gate_min_accuracy} must be within (0, 1]")
        if self.endpoint_initial_instance_count < 1:
            problems.append("endpointInitialInstanceCount must be at least 1")
        if self.autoscaling_max_capacity and not (
            1 <= self.autoscaling_min_capacity <= self.autoscaling_max_capacity
        ):
            problems.append(
                f"autoscaling bounds {self.autoscaling_min_capacity}..{self.autoscaling_max_capacity} "
                "need 1 <= autoscalingMinCapacity <= autoscalingMaxCapacity (or autoscalingMaxCapacity 0 = off)"
            )
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
