"""The deployer's settings: the env vars in docs/contracts.md, parsed and range-checked once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

try:  # in the Lambda zip the modules sit side by side at the top level
    from state import DeployError  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from workloads.serve.deployer.state import DeployError


def _env_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DeployError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise DeployError(f"{name}={value} is out of range [{low}, {high}]")
    return value


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise DeployError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise DeployError(f"{name}={value} must be > 0")
    return value


@dataclass(frozen=True)
class DeployerConfig:
    """Settings from the env vars in docs/contracts.md. Ranges are SageMaker's own API limits."""

    group: str
    endpoint: str
    role_arn: str
    # Defaults equal the stack settings' (components/settings.py) and the BlueGreenEndpoint component
    # takes its defaults from here; tests/test_aws_by_hand.py checks all three agree.
    instance_type: str = "ml.m5.large"
    initial_instance_count: int = 2
    traffic_step_percent: int = 50
    traffic_wait_seconds: int = 300
    rollback_alarm_names: tuple[str, ...] = ()
    termination_wait_seconds: int = 300
    max_execution_timeout_seconds: int = 3600
    data_capture_s3_uri: str = ""
    autoscaling_min_capacity: int = 2
    autoscaling_max_capacity: int = 2  # 0 = no autoscaling
    autoscaling_target_invocations: float = 100.0
    kms_key_arn: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeployerConfig:
        env = os.environ if env is None else env
        missing = [
            n for n in ("MODEL_PACKAGE_GROUP_NAME", "ENDPOINT_NAME", "EXECUTION_ROLE_ARN") if not env.get(n)
        ]
        if missing:
            raise DeployError(f"missing environment variable(s): {', '.join(missing)}")
        alarms = tuple(a.strip() for a in env.get("ROLLBACK_ALARM_NAMES", "").split(",") if a.strip())
        if len(alarms) > 10:
            raise DeployError(f"ROLLBACK_ALARM_NAMES names {len(alarms)} alarms; SageMaker takes at most 10")
        d = cls(group="", endpoint="", role_arn="")  # the defaults
        initial = _env_int(env, "INITIAL_INSTANCE_COUNT", d.initial_instance_count, 1, 1000)
        low = _env_int(env, "AUTOSCALING_MIN_CAPACITY", d.autoscaling_min_capacity, 0, 1000)
        high = _env_int(env, "AUTOSCALING_MAX_CAPACITY", d.autoscaling_max_capacity, 0, 1000)
        if high and low < 1:
            raise DeployError(f"AUTOSCALING_MIN_CAPACITY={low} must be at least 1 when autoscaling is on")
        if high and high < low:
            raise DeployError(f"AUTOSCALING_MAX_CAPACITY={high} is below AUTOSCALING_MIN_CAPACITY={low}")
        capture = env.get("DATA_CAPTURE_S3_URI", "").strip()
        if capture and not capture.startswith("s3://"):
            raise DeployError(f"DATA_CAPTURE_S3_URI={capture!r} is not an s3:// URI")
        return cls(
            group=env["MODEL_PACKAGE_GROUP_NAME"],
            endpoint=env["ENDPOINT_NAME"],
            role_arn=env["EXECUTION_ROLE_ARN"],
            instance_type=env.get("INSTANCE_TYPE", "").strip() or d.instance_type,
            initial_instance_count=initial,
            # SageMaker: a LINEAR step is 10-50% of the variant's instances.
            traffic_step_percent=_env_int(env, "TRAFFIC_STEP_PERCENT", d.traffic_step_percent, 10, 50),
            traffic_wait_seconds=_env_int(env, "TRAFFIC_WAIT_SECONDS", d.traffic_wait_seconds, 0, 3600),
            rollback_alarm_names=alarms,
            termination_wait_seconds=_env_int(
                env, "TERMINATION_WAIT_SECONDS", d.termination_wait_seconds, 0, 3600
            ),
            max_execution_timeout_seconds=_env_int(
                env,
                "MAXIMUM_EXECUTION_TIMEOUT_SECONDS",
                d.max_execution_timeout_seconds,
                600,
                28800,
            ),
            data_capture_s3_uri=capture,
            autoscaling_min_capacity=low,
            autoscaling_max_capacity=high,
            autoscaling_target_invocations=_env_float(
                env, "AUTOSCALING_TARGET_INVOCATIONS", d.autoscaling_target_invocations
            ),
            kms_key_arn=env.get("KMS_KEY_ARN", "").strip(),
        )

    def linear_step(self, instance_count: int) -> int:
        """Instances each LINEAR step moves: trafficStepPercent of the fleet, in whole instances, kept
        within SageMaker's 10-50% of the variant's instance count."""
        if instance_count < 2:
            raise DeployError(
                f"the endpoint has {instance_count} instance; a LINEAR blue/green shift moves 10-50% of "
                "the instances per step, one whole instance at least, so it needs 2 or more "
                "(INITIAL_INSTANCE_COUNT / AUTOSCALING_MIN_CAPACITY)"
            )
        low = -(-instance_count // 10)  # ceil(10%)
        high = instance_count // 2  # floor(50%)
        wanted = instance_count * self.traffic_step_percent // 100
        return max(low, min(high, max(1, wanted)))

    def deployment_config(self, instance_count: int) -> dict[str, Any]:
        """UpdateEndpoint's DeploymentConfig for a fleet of `instance_count`: LINEAR blue/green
        shifting in whole instances, rolled back on any alarm."""
        config: dict[str, Any] = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "LINEAR",
                    "LinearStepSize": {"Type": "INSTANCE_COUNT", "Value": self.linear_step(instance_count)},
                    "WaitIntervalInSeconds": self.traffic_wait_seconds,
                },
                "TerminationWaitInSeconds": self.termination_wait_seconds,
                "MaximumExecutionTimeoutInSeconds": self.max_execution_timeout_seconds,
            }
        }
        if self.rollback_alarm_names:
            config["AutoRollbackConfiguration"] = {
                "Alarms": [{"AlarmName": name} for name in self.rollback_alarm_names]
            }
        return config
