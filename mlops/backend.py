"""What every `mlops` verb needs from a platform: one interface, two adapters.

`mlops.aws` implements it with boto3 against SageMaker/CodeBuild/CloudWatch Logs; `mlops.local`
implements it against the local platform (SQLite registry, local endpoint). The CLI (`mlops.cli`)
only talks to this interface, so `mlops approve 3` means the same thing on both.

A model reference (`ref`) is either a version number ("3") or a model package ARN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
APPROVAL_STATUSES = (PENDING, APPROVED, REJECTED)

# Deployment outcomes, shared by the AWS deployer and the local one.
DEPLOY_IN_PROGRESS = "InProgress"
DEPLOY_SUCCEEDED = "Succeeded"
DEPLOY_ROLLED_BACK = "RolledBack"
DEPLOY_FAILED = "Failed"
DEPLOY_SKIPPED = "Skipped"

# (message, fraction done in [0, 1] or None when unknown)
Progress = Callable[[str, float | None], None]


class PlatformError(Exception):
    """A failure a person can act on; the CLI prints the message and exits non-zero."""


@dataclass
class ModelVersion:
    group: str
    version: int
    arn: str
    status: str
    created_at: str
    metrics: dict[str, Any] = field(default_factory=dict)
    approver: str | None = None
    description: str | None = None
    source_commit: str | None = None
    data_location: str | None = None
    image_uri: str | None = None
    signature_change_allowed: bool = False
    """Approved with --allow-signature-change: deployed even if its input signature breaks callers."""
    signature: dict[str, Any] | None = None
    """What callers send and get: {"task", "features": [{"name", "type"}], "output"}; None when not
    recorded (or not read: listings fill it, single lookups may not)."""
    estimator: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    job_name: str
    status: str  # Completed | Failed | Stopped
    model_version: ModelVersion | None
    metrics: dict[str, Any] = field(default_factory=dict)
    failure_reason: str | None = None


@dataclass
class VariantStatus:
    name: str
    model_version: int | None
    weight: float  # share of traffic, 0..1
    instances: int | None = None
    health: str = "unknown"
    restarts: int = 0
    """Times the supervisor restarted this variant's model server since it started serving (local)."""
    last_restart_reason: str | None = None


@dataclass
class DeploymentStatus:
    target_version: int
    status: str
    started_at: str
    finished_at: str | None = None
    message: str = ""
    from_version: int | None = None


@dataclass
class EndpointStatus:
    name: str
    status: str  # InService | Creating | Updating | RollingBack | Failed | Absent
    variants: list[VariantStatus] = field(default_factory=list)
    serving_version: int | None = None
    last_deployment: DeploymentStatus | None = None
    queued_version: int | None = None
    """An approved version waiting for the deployment in progress to end (it goes next)."""
    notes: list[str] = field(default_factory=list)
    """What is wrong right now that the fields above do not say (a variant restarting, a database
    that does not take writes, records waiting to be stored)."""
    database_bytes: int | None = None
    """Size of the local platform's database and its WAL (local only)."""


@dataclass
class ApprovalOutlook:
    """What an approval will make the deployer do, predicted with the deployer's own rule
    (workloads/serve/deployer/lifecycle.py on_approval) from the endpoint as it is now."""

    action: str  # deploy | queue | skip (lifecycle's names)
    reason: str
    platform_running: bool = True
    """False: nothing acts on the approval until the platform starts (local only)."""
    then: str = ""
    """For a queued approval: what happens once the deployment in progress ends."""


@dataclass
class BuildRecord:
    """One build: a push, a retry or `mlops train`."""

    id: str
    commit: str | None
    status: str  # Queued | InProgress | Succeeded | Failed (local); CodeBuild's on AWS
    created_at: str | None
    finished_at: str | None = None
    reason: str | None = None
    model_version: int | None = None
    data_path: str | None = None


@dataclass
class DeploymentRecord:
    """One deployment of the endpoint's history, oldest first in a listing."""

    id: int
    from_version: int | None
    to_version: int
    status: str
    started_at: str
    finished_at: str | None
    message: str
    planned_steps: int | None
    """LINEAR steps a full shift takes with the platform's fleet and step size when it started (1: the
    first version; None: not known, e.g. a Skipped entry or one recorded before steps were stored)."""
    reached_share: float
    """The new version's share of traffic when it ended (or now, while it runs), 0..1."""
    duration_seconds: float | None = None
    rollback_of: int | None = None


@dataclass
class RequestRecord:
    """One stored inference request and its answer."""

    request_id: str
    created_at: str
    status_code: int
    model_version: str | None
    latency_ms: float
    input: str
    output: str
    caller: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestFilter:
    version: str | None = None
    status: int | None = None
    """An HTTP status (200) or a class (4 for 4xx, 5 for 5xx)."""
    since: str | None = None
    until: str | None = None
    limit: int = 50


def predict_approval(
    view: Any, version: int, *, running: bool = True, signature: Any = None
) -> ApprovalOutlook:
    """The deployer's decision on an approval of `version`, from the endpoint's lifecycle view
    (a workloads.serve.deployer.lifecycle.EndpointView), by the rule both deployers apply.
    signature: the lifecycle.SignatureCheck of `version` against the serving one, where known, so a
    breaking change is predicted as the refusal it will be."""
    from workloads.serve.deployer import lifecycle

    decision = lifecycle.on_approval(view, version, signature=signature)
    then = ""
    if decision.action == lifecycle.QUEUE and view.deploying is not None:
        # What the deployer will decide once it is free depends on how the running deployment ends.
        ok = lifecycle.on_approval(lifecycle.after_outcome(view, view.deploying, True), version)
        bad = lifecycle.on_approval(lifecycle.after_outcome(view, view.deploying, False), version)
        then = (
            f"if v{view.deploying} succeeds: {ok.reason}; if v{view.deploying} rolls back: {bad.reason}"
            if ok.action != bad.action
            else ok.reason
        )
    return ApprovalOutlook(decision.action, decision.reason, running, then)


class Backend(Protocol):
    """The platform as the `mlops` verbs see it."""

    name: str

    def train(
        self,
        *,
        data_location: str | None = None,
        instance_type: str | None = None,
        wait: bool = True,
        progress: Progress | None = None,
    ) -> TrainResult: ...

    def list_models(self) -> list[ModelVersion]: ...

    def get_model(self, ref: str) -> ModelVersion: ...

    def approve(
        self, ref: str, *, description: str = "", force: bool = False, allow_signature_change: bool = False
    ) -> ModelVersion: ...

    def reject(self, ref: str, *, reason: str, force: bool = False) -> ModelVersion: ...

    def deploy(
        self,
        ref: str | None = None,
        *,
        rollback: bool = False,
        wait: bool = True,
        progress: Progress | None = None,
        allow_signature_change: bool = False,
    ) -> DeploymentStatus: ...

    def status(self) -> EndpointStatus: ...

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]: ...

    def logs(self, ref: str | None = None, *, follow: bool = False, limit: int = 100) -> Iterator[str]: ...

    def teardown(self) -> list[str]: ...

    def approval_outlook(self, version: int) -> ApprovalOutlook: ...

    def endpoint_view(self) -> Any:
        """The endpoint as workloads.serve.deployer.lifecycle sees it (an EndpointView)."""
        ...

    def builds(self) -> list[BuildRecord]: ...

    def build(self, ref: str | None = None) -> BuildRecord: ...

    def deployments(self) -> list[DeploymentRecord]: ...

    def requests(self, where: RequestFilter) -> list[RequestRecord]: ...

    def request(self, request_id: str) -> RequestRecord: ...
