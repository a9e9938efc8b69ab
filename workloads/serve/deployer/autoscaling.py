"""Endpoint autoscaling: the scalable target and target-tracking policy the deployer registers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:  # in the Lambda zip the modules sit side by side at the top level
    from config import DeployerConfig  # type: ignore[import-not-found,unused-ignore]
    from state import (  # type: ignore[import-not-found,unused-ignore]
        SCALABLE_DIMENSION,
        TAG_ENDPOINT,
        VARIANT_NAME,
        EndpointState,
        _not_found,
    )
except ImportError:  # imported as part of workloads.serve.deployer (tests, deploy.py, the local platform)
    from workloads.serve.deployer.config import DeployerConfig
    from workloads.serve.deployer.state import (
        SCALABLE_DIMENSION,
        TAG_ENDPOINT,
        VARIANT_NAME,
        EndpointState,
        _not_found,
    )


class AutoscalingMixin:
    """The Deployer's autoscaling calls (Application Auto Scaling on the endpoint's variant)."""

    config: DeployerConfig
    sm: Any
    aas: Any
    log: Callable[[str], None]

    # The Deployer's own (endpoint tags and state).
    _tags: Callable[[str], dict[str, str]]
    endpoint_state: Callable[[], EndpointState]

    # -- autoscaling -----------------------------------------------------------------------------

    @property
    def _resource_id(self) -> str:
        return f"endpoint/{self.config.endpoint}/variant/{VARIANT_NAME}"

    def _scalable_target_exists(self) -> bool:
        page = self.aas.describe_scalable_targets(
            ServiceNamespace="sagemaker",
            ResourceIds=[self._resource_id],
            ScalableDimension=SCALABLE_DIMENSION,
        )
        return bool(page.get("ScalableTargets"))

    def _deregister_scaling(self) -> bool:
        if not self._scalable_target_exists():
            return False
        self.aas.deregister_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=self._resource_id, ScalableDimension=SCALABLE_DIMENSION
        )
        return True

    def _prepare_autoscaling_for(self, state: EndpointState) -> None:
        # SageMaker refuses UpdateEndpoint that changes the instance type of an autoscaled variant;
        # a model-only change is allowed. Deregister only in the first case (re-registered on success).
        if not state.config_name:
            return
        try:
            live = self.sm.describe_endpoint_config(EndpointConfigName=state.config_name)
        except Exception as exc:
            if _not_found(exc):
                return
            raise
        types = {v.get("InstanceType") for v in live.get("ProductionVariants", [])}
        if types and types != {self.config.instance_type} and self._deregister_scaling():
            self.log(
                f"deregistered autoscaling before changing instance type {types} -> {self.config.instance_type}"
            )

    def register_autoscaling(self) -> bool:
        c = self.config
        if c.autoscaling_max_capacity <= 0:
            return False
        self.aas.register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=self._resource_id,
            ScalableDimension=SCALABLE_DIMENSION,
            MinCapacity=c.autoscaling_min_capacity,
            MaxCapacity=c.autoscaling_max_capacity,
            # The deployer's role may scale only targets carrying this tag (components/blue_green_endpoint.py).
            Tags={TAG_ENDPOINT: c.endpoint},
        )
        self.aas.put_scaling_policy(
            PolicyName=f"{c.endpoint}-invocations-per-instance",
            ServiceNamespace="sagemaker",
            ResourceId=self._resource_id,
            ScalableDimension=SCALABLE_DIMENSION,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": c.autoscaling_target_invocations,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                "ScaleInCooldown": 300,
                "ScaleOutCooldown": 60,
            },
        )
        return True
