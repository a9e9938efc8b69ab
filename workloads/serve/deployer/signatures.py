"""A model package's input signature as the registry records it, for the shared signature gate.

The register step (workloads/train/steps.py `signature_properties`) writes the signature into the
package's CustomerMetadataProperties (signature_task, signature_features as "name:type ...",
signature_n_features, signature_classes / signature_output) and `signature`, the S3 URI of the whole
signature.json. The properties are lossy (at most 256 characters, so a long feature list is cut with
"...", and a name's characters outside SageMaker's property alphabet become "_"), so the exact
signature.json is read when an S3 client is given; the properties are the fallback, used only when
they are whole. A package registered before signatures were recorded has neither: None.

The allowance a person gave with the approval (`mlops approve --allow-signature-change`) is the
property ALLOWED_PROPERTY, written by workloads/train/registry.decide; the deployer, which runs later
and elsewhere, honours it.

This folder is the deployer Lambda's zip: boto3, the standard library and each other only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

try:  # in the Lambda zip the modules sit side by side at the top level
    import lifecycle  # type: ignore[import-not-found,unused-ignore]
    from state import TAG_SERVING, _not_found  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from workloads.serve.deployer import lifecycle
    from workloads.serve.deployer.state import TAG_SERVING, _not_found

ALLOWED_PROPERTY = "signature_change_allowed"
ALLOWED_VALUE = "true"
MAX_SIGNATURE_BYTES = 1024 * 1024
_CUT = "..."


def properties(package: Mapping[str, Any]) -> dict[str, str]:
    return dict(package.get("CustomerMetadataProperties") or {})


def allowed(package: Mapping[str, Any]) -> bool:
    """Whether the package's approval allows a breaking signature change."""
    return properties(package).get(ALLOWED_PROPERTY) == ALLOWED_VALUE


def from_properties(props: Mapping[str, str]) -> dict[str, Any] | None:
    """The signature the properties record, or None when they record none or only part of it."""
    text = props.get("signature_features", "")
    if not text or text.endswith(_CUT):
        return None
    features = []
    for item in text.split():
        name, sep, kind = item.rpartition(":")
        if not sep:
            return None
        features.append({"name": name, "type": kind})
    if props.get("signature_n_features") not in (None, str(len(features))):
        return None  # a name held a space: the split cannot be trusted
    if props.get("signature_classes"):
        output: dict[str, Any] = {"kind": "classes", "classes": props["signature_classes"].split()}
    elif props.get("signature_output"):
        name, _, kind = props["signature_output"].rpartition(":")
        output = {"kind": "value", "name": name, "type": kind or "number"}
    else:
        output = {}
    return {
        "task": props.get("signature_task") or lifecycle.CLASSIFICATION,
        "target": props.get("signature_target", ""),
        "features": features,
        "output": output,
    }


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def recorded(package: Mapping[str, Any], s3: Any = None) -> dict[str, Any] | None:
    """The package's signature as a mapping: signature.json when it can be read, else the properties."""
    props = properties(package)
    uri = props.get("signature", "")
    if s3 is not None and uri.startswith("s3://"):
        bucket, key = _split_s3(uri)
        try:
            body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{MAX_SIGNATURE_BYTES}")["Body"]
            found = json.loads(body.read())
            if isinstance(found, dict) and isinstance(found.get("features"), list):
                return found
        except Exception:  # unreadable (deleted, no access): the properties may still be whole
            pass
    return from_properties(props)


def of_package(package: Mapping[str, Any], s3: Any = None) -> lifecycle.Signature | None:
    found = recorded(package, s3)
    return lifecycle.Signature.from_mapping(found) if found else None


def version_arn(arn: str, version: int) -> str:
    """The ARN of another version of the same group (`.../model-package/<group>/<version>`)."""
    return f"{arn.rsplit('/', 1)[0]}/{version}"


def check(
    sm: Any,
    s3: Any,
    package: Mapping[str, Any],
    serving: int | None,
    *,
    allow: bool = False,
    approval: bool = True,
) -> lifecycle.SignatureCheck:
    """compare_signatures of `package` against the serving version's package (same group), with the
    allowance given now (`allow`), or, for the deployment its approval event starts (`approval`), the
    one recorded with that approval: a later deploy or rollback by hand needs the flag again."""
    version = int(package["ModelPackageVersion"])
    permitted = allow or (approval and allowed(package))
    if serving is None or serving == version:
        return lifecycle.SignatureCheck(version, serving, allowed=permitted)
    try:
        other: Mapping[str, Any] | None = sm.describe_model_package(
            ModelPackageName=version_arn(str(package["ModelPackageArn"]), serving)
        )
    except Exception as exc:
        if not _not_found(exc):  # a deleted serving version is compared as one without a signature
            raise
        other = None
    return lifecycle.compare_signatures(
        version,
        of_package(package, s3),
        serving,
        of_package(other, s3) if other is not None else None,
        allowed=permitted,
    )


def serving_version(sm: Any, endpoint: str) -> int | None:
    """The version the deployer records serving on `endpoint` (its tag), or None (no endpoint yet)."""
    try:
        desc = sm.describe_endpoint(EndpointName=endpoint)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise
    tags = sm.list_tags(ResourceArn=desc["EndpointArn"]).get("Tags", [])
    raw = next((t["Value"] for t in tags if t["Key"] == TAG_SERVING), "")
    return int(raw) if raw.isdigit() else None
