"""What moto 5.2's SageMaker lacks for the lifecycle tests, added the way AWS behaves.

- UpdateEndpoint (absent in moto): validates like SageMaker (endpoint must be InService, config must
  exist), stores DeploymentConfig as the endpoint's LastDeploymentConfig, honours
  RetainAllVariantProperties (the live DesiredInstanceCount survives), and then, per `behaviour.mode`:
  "complete"  switches to the new config at once (what a finished LINEAR shift looks like),
  "hold"      leaves the endpoint Updating with a PendingDeploymentSummary until `finish(...)`,
  "rollback"  leaves the old config InService with a FailureReason (an alarm fired mid-shift).
- AddTags overwrites the value of an existing key (moto appends a duplicate).
- UpdateModelPackage merges CustomerMetadataProperties and keeps fields the call leaves out
  (moto overwrites them with None); `behaviour.replace_metadata` replaces the map as moto does.
- DeleteModelPackage and DeleteModelPackageGroup (absent in moto); a group with versions is refused.

`install()` patches moto's classes once per process; `reset()` restores the default behaviour.
Every update request is recorded in `behaviour.updates` for assertions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import SageMakerModelBackend, sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse

ROLLBACK_REASON = "Deployment was rolled back: alarm mlops-5xx entered ALARM state during traffic shifting"


@dataclass
class Behaviour:
    mode: str = "complete"
    updates: list[dict[str, Any]] = field(default_factory=list)
    # True: UpdateModelPackage replaces CustomerMetadataProperties as plain moto does (the code must not
    # depend on the service merging the map).
    replace_metadata: bool = False


behaviour = Behaviour()
_held: dict[str, list[dict[str, Any]]] = {}
_installed = False


def reset() -> None:
    behaviour.mode = "complete"
    behaviour.replace_metadata = False
    behaviour.updates.clear()
    _held.clear()


def _variants_for(
    backend: SageMakerModelBackend, endpoint: Any, config: Any, retain: bool
) -> list[dict[str, Any]]:
    new = endpoint._process_production_variants(config.production_variants)
    if retain:
        live = {v["VariantName"]: v for v in endpoint.production_variants}
        for variant in new:
            old = live.get(variant["VariantName"])
            if old:
                for key in ("CurrentInstanceCount", "DesiredInstanceCount", "CurrentWeight", "DesiredWeight"):
                    if key in old:
                        variant[key] = old[key]
    return new


def _update_endpoint(
    self: SageMakerModelBackend,
    endpoint_name: str,
    endpoint_config_name: str,
    retain_all_variant_properties: bool,
    exclude_retained_variant_properties: list[dict[str, str]] | None,
    deployment_config: dict[str, Any] | None,
    retain_deployment_config: bool,
) -> str:
    endpoint: Any = self.endpoints.get(endpoint_name)
    if endpoint is None:
        raise ValidationError(message=f'Could not find endpoint "{endpoint_name}".')
    if endpoint.endpoint_status != "InService":
        raise ValidationError(message=f'Cannot update in-progress endpoint "{endpoint.arn}".')
    config = self.endpoint_configs.get(endpoint_config_name)
    if config is None:
        raise ValidationError(message=f'Could not find endpoint configuration "{endpoint_config_name}".')
    behaviour.updates.append(
        {
            "EndpointName": endpoint_name,
            "EndpointConfigName": endpoint_config_name,
            "RetainAllVariantProperties": retain_all_variant_properties,
            "ExcludeRetainedVariantProperties": exclude_retained_variant_properties,
            "DeploymentConfig": copy.deepcopy(deployment_config),
            "Mode": behaviour.mode,
        }
    )
    if deployment_config is not None or not retain_deployment_config:
        endpoint.last_deployment_config = deployment_config
    variants = _variants_for(self, endpoint, config, bool(retain_all_variant_properties))
    endpoint.last_modified_time = utcnow()
    endpoint.failure_reason = None
    if behaviour.mode == "complete":
        endpoint.endpoint_config_name = endpoint_config_name
        endpoint.production_variants = variants
        endpoint.data_capture_config = config.data_capture_config
    elif behaviour.mode == "hold":
        endpoint.endpoint_status = "Updating"
        endpoint.pending_deployment_summary = {
            "EndpointConfigName": endpoint_config_name,
            "StartTime": utcnow(),
            "ProductionVariants": [
                {**v, "CurrentWeight": 0.0, "VariantStatus": [{"Status": "Baking", "StartTime": utcnow()}]}
                for v in variants
            ],
        }
        _held[endpoint_name] = variants  # what `finish` switches to
    elif behaviour.mode == "rollback":
        endpoint.failure_reason = ROLLBACK_REASON
    else:
        raise AssertionError(f"unknown moto_sagemaker_ext mode {behaviour.mode!r}")
    return str(endpoint.arn)


def finish(
    endpoint_name: str, outcome: str = "complete", account: str = "123456789012", region: str = "us-east-1"
) -> None:
    """End a held update: "complete" switches to the pending config, "rollback" stays on the old one."""
    endpoint: Any = sagemaker_backends[account][region].endpoints[endpoint_name]
    pending = getattr(endpoint, "pending_deployment_summary", None)
    assert pending, f"endpoint {endpoint_name} has no update in progress"
    if outcome == "complete":
        endpoint.endpoint_config_name = pending["EndpointConfigName"]
        endpoint.production_variants = _held[endpoint_name]
    else:
        endpoint.failure_reason = ROLLBACK_REASON
    endpoint.pending_deployment_summary = None
    del _held[endpoint_name]
    endpoint.endpoint_status = "InService"


def _response_update_endpoint(self: SageMakerResponse) -> ActionResult:
    arn = self.sagemaker_backend.update_endpoint(  # type: ignore[attr-defined]
        endpoint_name=self._get_param("EndpointName"),
        endpoint_config_name=self._get_param("EndpointConfigName"),
        retain_all_variant_properties=self._get_param("RetainAllVariantProperties", False),
        exclude_retained_variant_properties=self._get_param("ExcludeRetainedVariantProperties"),
        deployment_config=self._get_param("DeploymentConfig"),
        retain_deployment_config=self._get_param("RetainDeploymentConfig", False),
    )
    return ActionResult({"EndpointArn": arn})


def _add_tags(self: SageMakerModelBackend, arn: str, tags: list[dict[str, str]]) -> list[dict[str, str]]:
    resource = self._get_resource_from_arn(arn)
    new = {t["Key"]: t["Value"] for t in tags}
    kept = [t for t in (resource.tags or []) if t["Key"] not in new]
    resource.tags = kept + [{"Key": k, "Value": v} for k, v in new.items()]
    return list(resource.tags)


_original_update_model_package = SageMakerModelBackend.update_model_package


def _update_model_package(
    self: SageMakerModelBackend,
    model_package_arn: str,
    model_approval_status: str | None,
    approval_description: str | None,
    customer_metadata_properties: dict[str, str] | None,
    customer_metadata_properties_to_remove: list[str],
    additional_inference_specifications_to_add: list[Any] | None,
) -> str:
    name = self.model_package_name_mapping.get(model_package_arn, model_package_arn)
    package = self.model_packages.get(name)
    if package is None:
        raise ValidationError(f"Model package {model_package_arn} not found")
    merged = {} if behaviour.replace_metadata else dict(package.customer_metadata_properties or {})
    merged.update(customer_metadata_properties or {})
    arn = _original_update_model_package(
        self,
        model_package_arn,
        model_approval_status if model_approval_status is not None else package.model_approval_status,
        approval_description if approval_description is not None else package.approval_description,
        merged,
        customer_metadata_properties_to_remove,
        additional_inference_specifications_to_add,
    )
    return str(arn)


def _delete_model_package(self: SageMakerModelBackend, model_package_name: str) -> None:
    arn = self.model_package_name_mapping.get(model_package_name, model_package_name)
    package = self.model_packages.pop(arn, None)
    if package is None:
        raise ValidationError(f"Model package {model_package_name} not found")
    for key in [k for k, v in self.model_package_name_mapping.items() if v == arn]:
        del self.model_package_name_mapping[key]


def _delete_model_package_group(self: SageMakerModelBackend, model_package_group_name: str) -> None:
    # SageMaker refuses to delete a group that still has versions.
    if model_package_group_name not in self.model_package_groups:
        raise ValidationError(f"Model package group {model_package_group_name} not found")
    if any(p.model_package_group_name == model_package_group_name for p in self.model_packages.values()):
        raise ValidationError(
            f"Model Package Group {model_package_group_name} has model packages; delete them first"
        )
    del self.model_package_groups[model_package_group_name]


def _response_delete_model_package(self: SageMakerResponse) -> ActionResult:
    self.sagemaker_backend.delete_model_package(self._get_param("ModelPackageName"))  # type: ignore[attr-defined]
    return ActionResult({})


def _response_delete_model_package_group(self: SageMakerResponse) -> ActionResult:
    self.sagemaker_backend.delete_model_package_group(  # type: ignore[attr-defined]
        self._get_param("ModelPackageGroupName")
    )
    return ActionResult({})


def install() -> None:
    global _installed
    if _installed:
        return
    SageMakerModelBackend.update_endpoint = _update_endpoint  # type: ignore[attr-defined]
    SageMakerResponse.update_endpoint = _response_update_endpoint  # type: ignore[attr-defined]
    SageMakerModelBackend.add_tags = _add_tags  # type: ignore[method-assign]
    SageMakerModelBackend.update_model_package = _update_model_package  # type: ignore[method-assign]
    SageMakerModelBackend.delete_model_package = _delete_model_package  # type: ignore[attr-defined]
    SageMakerResponse.delete_model_package = _response_delete_model_package  # type: ignore[attr-defined]
    SageMakerModelBackend.delete_model_package_group = _delete_model_package_group  # type: ignore[attr-defined]
    SageMakerResponse.delete_model_package_group = _response_delete_model_package_group  # type: ignore[attr-defined]
    _installed = True


# --- fixtures' helpers: a registry and events shaped like AWS's ------------------------------------

ACCOUNT = "123456789012"
REGION = "us-east-1"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlops-train@sha256:" + "ab" * 32


IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_SIGNATURE: dict[str, Any] = {
    "task": "classification",
    "target": "species",
    "features": [{"name": n, "type": "number"} for n in IRIS_FEATURES],
    "output": {"kind": "classes", "classes": ["setosa", "versicolor", "virginica"]},
}


def register_package(
    sm: Any,
    group: str,
    *,
    bucket: str = "mlops-artifacts",
    commit: str = "c0ffee",
    status: str = "PendingManualApproval",
    signature: dict[str, Any] | None = IRIS_SIGNATURE,
) -> str:
    """Register a model package the way the build's `register` step does; returns its ARN.

    `signature` goes into the properties as the register step writes them (steps.signature_properties,
    pointing at a signature.json that is not uploaded: the properties are whole for a short signature);
    None: a package from before signatures were recorded."""
    from workloads.train.steps import signature_properties

    recorded = (
        signature_properties(signature, f"s3://{bucket}/training/{commit}/output/signature.json")
        if signature is not None
        else {}
    )
    try:
        sm.create_model_package_group(ModelPackageGroupName=group)
    except Exception as exc:  # already there: fine
        if "already exist" not in str(exc).lower():
            raise
    response = sm.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [
                {"Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/training/{commit}/output/model.tar.gz"}
            ],
            "SupportedContentTypes": ["application/json", "text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {
                    "ContentType": "application/json",
                    "S3Uri": f"s3://{bucket}/training/{commit}/output/evaluation.json",
                }
            }
        },
        CustomerMetadataProperties={
            "commit": commit,
            "data_location": f"s3://{bucket}/data/{commit}/iris.csv",
            **recorded,
        },
    )
    return str(response["ModelPackageArn"])


def package_event(sm: Any, arn: str, status: str | None = None) -> dict[str, Any]:
    """The documented "SageMaker Model Package State Change" event for the package as it is now."""
    pkg = sm.describe_model_package(ModelPackageName=arn)
    return {
        "version": "0",
        "id": "844e2571-85d4-695f-b930-0153b71dcb42",
        "detail-type": "SageMaker Model Package State Change",
        "source": "aws.sagemaker",
        "account": ACCOUNT,
        "time": "2021-02-24T17:00:14Z",
        "region": REGION,
        "resources": [arn],
        "detail": {
            "ModelPackageGroupName": pkg["ModelPackageGroupName"],
            "ModelPackageVersion": pkg["ModelPackageVersion"],
            "ModelPackageArn": arn,
            "CreationTime": "2021-02-24T17:00:14Z",
            "InferenceSpecification": pkg["InferenceSpecification"],
            "ModelPackageStatus": "Completed",
            "ModelApprovalStatus": status or pkg["ModelApprovalStatus"],
            "UpdatedModelPackageFields": ["ModelApprovalStatus", "ApprovalDescription"],
        },
    }


def endpoint_event(sm: Any, name: str) -> dict[str, Any]:
    """The documented "SageMaker Endpoint State Change" event (status in its UPPER_SNAKE form)."""
    desc = sm.describe_endpoint(EndpointName=name)
    status = {"InService": "IN_SERVICE", "Updating": "UPDATING", "Failed": "FAILED"}.get(
        desc["EndpointStatus"], desc["EndpointStatus"].upper()
    )
    return {
        "version": "0",
        "id": "d2921b5a-b0ad-cace-a8e3-0f159d018e06",
        "detail-type": "SageMaker Endpoint State Change",
        "source": "aws.sagemaker",
        "account": ACCOUNT,
        "time": "1583831889050",
        "region": REGION,
        "resources": [desc["EndpointArn"]],
        "detail": {
            "EndpointName": name,
            "EndpointArn": desc["EndpointArn"],
            "EndpointConfigName": desc["EndpointConfigName"],
            "ProductionVariants": [
                {
                    "DesiredWeight": v.get("DesiredWeight"),
                    "DesiredInstanceCount": v.get("DesiredInstanceCount"),
                }
                for v in desc.get("ProductionVariants", [])
            ],
            "EndpointStatus": status,
            "CreationTime": 1592411992203.0,
            "LastModifiedTime": 1592411994287.0,
            "Tags": {},
        },
    }
