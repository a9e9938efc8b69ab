"""The deployer's vocabulary: endpoint tags that hold the deployment state, results, names, errors.

Shared by the deployer's modules (this folder is the Lambda zip: boto3 and the standard library only).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

VARIANT_NAME = "AllTraffic"

TAG_MANAGED_BY = "mlops:managed-by"
MANAGED_BY = "deployer"
TAG_ENDPOINT = "mlops:endpoint"
TAG_SERVING = "mlops:serving-version"  # version whose config is live and verified
TAG_TARGET = "mlops:target-version"  # version of the last deployment started
TAG_TARGET_CONFIG = "mlops:target-config"  # endpoint config that deployment asked for
TAG_STATUS = "mlops:deployment-status"  # InProgress | Succeeded | RolledBack | Failed
TAG_FROM = "mlops:from-version"  # version serving when the deployment started
TAG_STARTED = "mlops:deployment-started-at"
TAG_FINISHED = "mlops:deployment-finished-at"
TAG_MESSAGE = "mlops:deployment-message"
TAG_PENDING = "mlops:pending-version"  # approved while the endpoint was busy; started on the next event
TAG_ACCEPTED = "mlops:update-accepted"  # endpoint config whose UpdateEndpoint SageMaker accepted
TAG_SERVED = "mlops:served-versions"  # versions that served all traffic, oldest first (rollback targets)
TAG_FAILED = "mlops:failed-versions"  # rolled back, failed or rolled back from: events do not deploy them
TAG_ROLLBACK_OF = "mlops:rollback-of"  # the version a rollback by hand is leaving
TAG_AUTOSCALING_ERROR = "mlops:autoscaling-error"  # why the last autoscaling registration failed
# An approval refused for a breaking input-signature change (lifecycle REFUSE): the version and why, until
# that version (or a newer one) is deployed. `mlops status` shows it.
TAG_REFUSED = "mlops:refused-version"
TAG_REFUSAL = "mlops:refusal"  # what changed, "; "-separated (tag_value: at most 256 characters)

# Equal to mlops.backend.DEPLOY_*; repeated because this module ships alone in the Lambda zip.
IN_PROGRESS = "InProgress"
SUCCEEDED = "Succeeded"
ROLLED_BACK = "RolledBack"
FAILED = "Failed"
SKIPPED = "Skipped"

APPROVED = "Approved"
PACKAGE_EVENT = "SageMaker Model Package State Change"
# The lifecycle invocation of ModelRegistryGroup (components/model_registry_group.py): on `pulumi
# destroy` of a stack with forceDestroy, the group's versions go first (SageMaker refuses to delete a
# group that still has versions).
REGISTRY_TEARDOWN = "model-registry-teardown"
ENDPOINT_EVENT = "SageMaker Endpoint State Change"
METRIC_NAMESPACE = "MLOps/Deployer"
METRIC_FAILED = "DeploymentsFailed"

BUSY_STATES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed")
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# A deployment whose UpdateEndpoint was never accepted (the invocation died between writing its tags
# and the call) is given up after this long: longer than one Lambda invocation can last.
UNACCEPTED_AFTER_SECONDS = 900
# CreateEndpoint right after CreateEndpointConfig can briefly not find the config (eventual
# consistency); it is retried with these pauses.
CREATE_RETRY_PAUSES = (1.0, 2.0, 4.0, 8.0, 15.0)
_TAG_VALUE_BAD = re.compile(r"[^\w .:/=+\-@]")
_NAME_MAX = 63

Log = Callable[[str], None]
Progress = Callable[[str, float | None], None]


class DeployError(Exception):
    """A deployment problem a person can act on; the message says what and which resource."""


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- configuration --------------------------------------------------------------------------------


@dataclass
class Result:
    """What one deployer action did; JSON-serialisable for the Lambda's return value."""

    status: str
    message: str
    version: int | None = None
    endpoint_config: str | None = None
    from_version: int | None = None
    started_at: str | None = None
    finished_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EndpointState:
    name: str
    status: str  # EndpointStatus, or "Absent"
    config_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)

    def version_tag(self, key: str) -> int | None:
        raw = self.tags.get(key, "")
        return int(raw) if raw.isdigit() else None


# --- helpers --------------------------------------------------------------------------------------


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _message(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", exc))


def _already_exists(exc: Exception) -> bool:
    # SageMaker answers a duplicate Create* with ValidationException "Cannot create already existing ...".
    return _code(exc) in ("ValidationException", "ResourceInUse") and "already exist" in _message(exc).lower()


def _not_found(exc: Exception) -> bool:
    text = _message(exc).lower()
    return _code(exc) in ("ValidationException", "ResourceNotFound", "ObjectNotFoundException") and (
        "could not find" in text or "not found" in text or "does not exist" in text
    )


def tag_value(text: str) -> str:
    """SageMaker tag values allow letters, digits, spaces and _.:/=+-@, at most 256 characters."""
    return _TAG_VALUE_BAD.sub(" ", text)[:256]


def _parse_time(text: str) -> float | None:
    """Epoch seconds of a utcnow() string, or None."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def resource_name(endpoint: str, version: int, digest: str) -> str:
    suffix = f"-v{version}-{digest[:8]}"
    return endpoint[: _NAME_MAX - len(suffix)].rstrip("-") + suffix


def default_clients(region: str | None = None) -> dict[str, Any]:
    """boto3 clients with botocore's standard retry mode, which backs off on throttling."""
    import boto3
    from botocore.config import Config

    retry = Config(retries={"mode": "standard", "max_attempts": 8})
    session = boto3.session.Session(region_name=region)
    return {
        "sagemaker": session.client("sagemaker", config=retry),
        "autoscaling": session.client("application-autoscaling", config=retry),
        "cloudwatch": session.client("cloudwatch", config=retry),
        "s3": session.client("s3", config=retry),
    }


def emf_line(endpoint: str, version: int | None, message: str) -> str:
    """The CloudWatch Embedded Metric Format record counting one failed deployment."""
    return json.dumps(
        {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": METRIC_NAMESPACE,
                        "Dimensions": [["Endpoint"]],
                        "Metrics": [{"Name": METRIC_FAILED, "Unit": "Count"}],
                    }
                ],
            },
            "Endpoint": endpoint,
            METRIC_FAILED: 1,
            "ModelVersion": version,
            "Message": message,
        }
    )


# --- the deployer ---------------------------------------------------------------------------------
