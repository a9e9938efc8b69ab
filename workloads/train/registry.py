"""The SageMaker Model Registry by hand: read a version with its evaluation, approve or reject it.

Used by the seed's `approve.py` and by the `mlops` command's AWS adapter (mlops/aws.py), so both sign a
version the same way: the caller's identity (sts get-caller-identity) in ApprovalDescription and in
the version's metadata, which keeps its provenance (commit, data, image, metrics). The rules of who may
change what (only a pending version unless forced; a rejection needs a reason) are the shared
lifecycle's (workloads/serve/deployer/lifecycle.py). boto3 clients are passed in; nothing here imports
the `mlops` package.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from workloads.serve.deployer import lifecycle, signatures
from workloads.train.steps import split_s3

APPROVED = lifecycle.APPROVED
REJECTED = lifecycle.REJECTED
MAX_EVALUATION_BYTES = 1024 * 1024


class RegistryError(Exception):
    """A registry request that cannot be done; the message says why."""


def _message(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", exc))


def describe(sm: Any, arn: str) -> dict[str, Any]:
    try:
        return dict(sm.describe_model_package(ModelPackageName=arn))
    except Exception as exc:
        text = _message(exc)
        if "not found" in text.lower() or "does not exist" in text.lower():
            raise RegistryError(f"model package {arn} does not exist") from None
        raise RegistryError(f"cannot read model package {arn}: {text}") from None


def metrics(s3: Any, package: Mapping[str, Any]) -> dict[str, Any]:
    """The package's evaluation.json (ModelQuality statistics), flattened to name -> value."""
    props = package.get("CustomerMetadataProperties") or {}
    fallback: dict[str, Any] = {}
    for name in ("accuracy", "f1_macro"):
        try:
            fallback[name] = float(props[name])
        except (KeyError, ValueError):
            continue
    uri = package.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get("S3Uri")
    if not uri:
        return fallback
    try:
        bucket, key = split_s3(uri)
        body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{MAX_EVALUATION_BYTES}")
        report = json.loads(body["Body"].read())
        stats = report["multiclass_classification_metrics"]
    except Exception as exc:
        return {**fallback, "metrics_error": f"cannot read {uri}: {_message(exc)}"}
    found: dict[str, Any] = {}
    for name, value in stats.items():
        if isinstance(value, Mapping) and "value" in value:
            found[name] = value["value"]
        elif name == "confusion_matrix":
            found[name] = value
    if "quality_gate" in report:
        found["quality_gate"] = report["quality_gate"]
    return found


def signature_check(
    sm: Any, s3: Any, package: Mapping[str, Any], endpoint: str, *, allow: bool = False
) -> lifecycle.SignatureCheck:
    """The version's input signature against the version serving on `endpoint` (its tags)."""
    try:
        serving = signatures.serving_version(sm, endpoint)
        return signatures.check(sm, s3, package, serving, allow=allow)
    except Exception as exc:
        raise RegistryError(f"cannot compare with what endpoint {endpoint} serves: {_message(exc)}") from None


def decide(
    sm: Any,
    sts: Any,
    arn: str,
    status: str,
    text: str = "",
    *,
    force: bool = False,
    allow_signature_change: bool = False,
    gate: lifecycle.SignatureCheck | None = None,
) -> dict[str, Any]:
    """Approve or reject the version as the caller; returns the package as it is afterwards.

    An approval is refused when `gate` (signature_check against the serving version) finds a
    breaking change and allow_signature_change is not given; with it, the allowance is recorded in
    the package (ALLOWED_PROPERTY), so the deployer Lambda, which acts on the approval event later,
    deploys it. A decision without the allowance removes an earlier one."""
    package = describe(sm, arn)
    version = int(package["ModelPackageVersion"])
    if status == APPROVED:
        try:
            lifecycle.require_signature(gate, lifecycle.allow_hint(f"approve {version}"), approving=True)
        except lifecycle.LifecycleError as exc:
            raise RegistryError(str(exc)) from None
    try:
        lifecycle.review(
            int(package["ModelPackageVersion"]),
            str(package.get("ModelApprovalStatus")),
            status,
            force=force,
            reason=text,
        )
    except lifecycle.LifecycleError as exc:
        raise RegistryError(str(exc)) from None
    try:
        who = str(sts.get_caller_identity()["Arn"])
    except Exception as exc:
        raise RegistryError(f"cannot tell who you are (sts get-caller-identity): {_message(exc)}") from None
    verb = "approved" if status == APPROVED else "rejected"
    allowing = allow_signature_change and status == APPROVED
    description = (
        f"{verb} by {who}"
        + (" with --allow-signature-change" if allowing else "")
        + (f": {text}" if text else "")
    )
    # The whole map, not just the new keys: the decision must not cost the version its provenance
    # (commit, data, image digest, metrics) whether UpdateModelPackage merges or replaces the map.
    properties = {
        **{
            k: v
            for k, v in dict(package.get("CustomerMetadataProperties") or {}).items()
            if k != signatures.ALLOWED_PROPERTY
        },
        f"{verb}_by": who[:256],
        f"{verb}_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        **({signatures.ALLOWED_PROPERTY: signatures.ALLOWED_VALUE} if allowing else {}),
    }
    # The allowance belongs to this approval only: one made without it takes an earlier one away.
    remove = (
        [signatures.ALLOWED_PROPERTY]
        if not allowing and signatures.ALLOWED_PROPERTY in (package.get("CustomerMetadataProperties") or {})
        else []
    )
    try:
        sm.update_model_package(
            ModelPackageArn=arn,
            ModelApprovalStatus=status,
            ApprovalDescription=description[:1024],
            CustomerMetadataProperties=properties,
            **({"CustomerMetadataPropertiesToRemove": remove} if remove else {}),
        )
    except Exception as exc:
        raise RegistryError(f"cannot update {arn}: {_message(exc)}") from None
    return describe(sm, arn)
