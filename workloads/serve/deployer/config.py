"""The deployer's settings: the env vars in docs/contracts.md, parsed and range-checked once.

Which variables, their types, defaults and ranges are the settings table's (settings_table.py, the
rows with a deployer_env); this module adds what Pulumi wires (group, endpoint, role, alarms, data
capture) and the rules between settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy reads the package (DeployerConfig's rows keep their types)
    from workloads.serve.deployer import lifecycle, settings_table
    from workloads.serve.deployer.state import DeployError
else:
    try:  # in the Lambda zip the modules sit side by side at the top level
        import lifecycle
        import settings_table
        from state import DeployError
    except ImportError:
        from workloads.serve.deployer import lifecycle, settings_table
        from workloads.serve.deployer.state import DeployError


class DeployerConfig(settings_table.Aws):
    """Settings from the env vars in docs/contracts.md. Ranges are SageMaker's own API limits.

    Carries the table's rows that have a deployer_env (their defaults are the stack's, so a variable
    left unset means what the stack file leaving the key out means), and the wired values below."""

    group: str
    endpoint: str
    role_arn: str
    rollback_alarm_names: tuple[str, ...] = ()
    data_capture_s3_uri: str = ""

    @classmethod
    def carries(cls, row: settings_table.Setting[Any, Any]) -> bool:
        return settings_table.DEPLOYER in row.env

    # The deployer's own names of three settings (deployer.py, autoscaling.py and deploy.py use them).
    @property
    def instance_type(self) -> str:
        return self.endpoint_instance_type

    @property
    def initial_instance_count(self) -> int:
        return self.endpoint_initial_instance_count

    @property
    def max_execution_timeout_seconds(self) -> int:
        return self.maximum_execution_timeout_seconds

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
        values: dict[str, Any] = {}
        for row in cls.rows():
            try:
                values[row.name] = row.from_env(env, settings_table.DEPLOYER)
            except ValueError as exc:
                raise DeployError(str(exc)) from None
        low, high = values["autoscaling_min_capacity"], values["autoscaling_max_capacity"]
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
            rollback_alarm_names=alarms,
            data_capture_s3_uri=capture,
            **values,
        )

    def linear_step(self, instance_count: int) -> int:
        """Instances each LINEAR step moves (lifecycle.linear_step: trafficStepPercent of the fleet, in
        whole instances, within SageMaker's 10-50% of the variant's instance count)."""
        try:
            return lifecycle.linear_step(instance_count, self.traffic_step_percent)
        except lifecycle.LifecycleError as exc:
            raise DeployError(f"{exc} (INITIAL_INSTANCE_COUNT / AUTOSCALING_MIN_CAPACITY)") from None

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
