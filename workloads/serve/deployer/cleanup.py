"""Cleanup and teardown: what the deployer made and nothing uses any more, and everything on destroy."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

try:  # in the Lambda zip the modules sit side by side at the top level
    from autoscaling import AutoscalingMixin  # type: ignore[import-not-found,unused-ignore]
    from state import (  # type: ignore[import-not-found,unused-ignore]
        IN_PROGRESS,
        MANAGED_BY,
        TAG_ENDPOINT,
        TAG_MANAGED_BY,
        TAG_STATUS,
        TAG_TARGET_CONFIG,
        DeployError,
        _not_found,
    )
except ImportError:  # imported as part of workloads.serve.deployer (tests, deploy.py, the local platform)
    from workloads.serve.deployer.autoscaling import AutoscalingMixin
    from workloads.serve.deployer.state import (
        IN_PROGRESS,
        MANAGED_BY,
        TAG_ENDPOINT,
        TAG_MANAGED_BY,
        TAG_STATUS,
        TAG_TARGET_CONFIG,
        DeployError,
        _not_found,
    )


class CleanupMixin(AutoscalingMixin):
    """The Deployer's deletions: unused configs and models, the whole endpoint, the registry's versions.
    (The clients, settings and tag readers it uses are declared on AutoscalingMixin.)"""

    # -- cleanup and teardown --------------------------------------------------------------------

    def _managed(self, arn: str) -> bool:
        tags = self._tags(arn)
        return tags.get(TAG_MANAGED_BY) == MANAGED_BY and tags.get(TAG_ENDPOINT) == self.config.endpoint

    def _list(self, method: str, key: str, name_key: str, arn_key: str) -> Iterator[tuple[str, str]]:
        kwargs: dict[str, Any] = {"NameContains": self.config.endpoint, "MaxResults": 100}
        while True:
            page = getattr(self.sm, method)(**kwargs)
            for item in page.get(key, []):
                # NameContains is a substring match; our names all start with the endpoint name.
                if item[name_key].startswith(self.config.endpoint + "-v"):
                    yield item[name_key], item[arn_key]
            if not page.get("NextToken"):
                return
            kwargs["NextToken"] = page["NextToken"]

    def _in_use(self) -> tuple[set[str], set[str]]:
        """Endpoint configs and models any endpoint of the account uses (live or mid-deployment)."""
        configs: set[str] = set()
        kwargs: dict[str, Any] = {"MaxResults": 100}
        while True:
            page = self.sm.list_endpoints(**kwargs)
            for summary in page.get("Endpoints", []):
                if summary.get("EndpointStatus") == "Deleting":
                    continue
                try:
                    desc = self.sm.describe_endpoint(EndpointName=summary["EndpointName"])
                except Exception as exc:
                    if _not_found(exc):
                        continue
                    raise
                configs.add(desc.get("EndpointConfigName", ""))
                pending = desc.get("PendingDeploymentSummary", {}).get("EndpointConfigName")
                if pending:
                    configs.add(pending)
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        models: set[str] = set()
        for name in configs - {""}:
            try:
                desc = self.sm.describe_endpoint_config(EndpointConfigName=name)
            except Exception as exc:
                if _not_found(exc):
                    continue
                raise
            models.update(v.get("ModelName", "") for v in desc.get("ProductionVariants", []))
        return configs, models

    def cleanup(self) -> list[str]:
        """Delete endpoint configs and models this deployer made that no endpoint uses (nor a deployment
        of this endpoint that is about to use them)."""
        configs_in_use, models_in_use = self._in_use()
        state = self.endpoint_state()
        if state.tags.get(TAG_STATUS) == IN_PROGRESS and state.tags.get(TAG_TARGET_CONFIG):
            target = state.tags[TAG_TARGET_CONFIG]
            configs_in_use.add(target)
            models_in_use.add(target)  # model and config share the name
        removed: list[str] = []
        for name, arn in list(
            self._list("list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", "EndpointConfigArn")
        ):
            if name not in configs_in_use and self._managed(arn):
                self._delete(self.sm.delete_endpoint_config, EndpointConfigName=name)
                removed.append(f"endpoint-config/{name}")
        for name, arn in list(self._list("list_models", "Models", "ModelName", "ModelArn")):
            if name not in models_in_use and self._managed(arn):
                self._delete(self.sm.delete_model, ModelName=name)
                removed.append(f"model/{name}")
        for item in removed:
            self.log(f"deleted unused {item}")
        return removed

    @staticmethod
    def _delete(call: Callable[..., Any], **kwargs: Any) -> None:
        try:
            call(**kwargs)
        except Exception as exc:
            if not _not_found(exc):
                raise

    def teardown(self, *, wait_seconds: float = 900, poll_seconds: float = 15) -> list[str]:
        """Delete everything this deployer made for the endpoint, endpoint first."""
        removed: list[str] = []
        if self._deregister_scaling():
            removed.append(f"scalable-target/{self._resource_id}")
        state = self.endpoint_state()
        if state.status != "Absent":
            if state.tags.get(TAG_MANAGED_BY) != MANAGED_BY:
                raise DeployError(f"endpoint {state.name} was not created by the deployer; not deleting it")
            if state.status != "Deleting":
                self._delete(self.sm.delete_endpoint, EndpointName=state.name)
            removed.append(f"endpoint/{state.name}")
            deadline = time.monotonic() + wait_seconds
            # Endpoint configs of an endpoint being deleted may still be attached; wait for it to go.
            while self.endpoint_state().status != "Absent":
                if time.monotonic() > deadline:
                    raise DeployError(
                        f"endpoint {state.name} still exists after {wait_seconds:.0f}s of deleting"
                    )
                time.sleep(poll_seconds)
        removed.extend(self.cleanup())
        return removed

    def model_packages(self, status: str | None = None) -> list[dict[str, Any]]:
        """The group's packages (of one approval status, or all), newest version first."""
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"ModelPackageGroupName": self.config.group, "MaxResults": 100}
        if status:
            kwargs["ModelApprovalStatus"] = status
        while True:
            page = self.sm.list_model_packages(**kwargs)
            found.extend(page.get("ModelPackageSummaryList", []))
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        return sorted(found, key=lambda p: int(p["ModelPackageVersion"]), reverse=True)

    def delete_model_packages(self) -> list[str]:
        """Delete every version of the group (any status); the group itself is Pulumi's to delete."""
        removed: list[str] = []
        for arn in (str(p["ModelPackageArn"]) for p in reversed(self.model_packages())):  # oldest first
            self._delete(self.sm.delete_model_package, ModelPackageName=arn)
            removed.append(f"model-package/{arn.split('/', 1)[1]}")
            self.log(f"deleted {arn}")
        return removed
