"""The deployment lifecycle's decisions, written once for both platforms.

Pure functions over an `EndpointView` (what serves, what is being deployed, what is queued, which
versions failed, which served), standard library only: this file ships in the deployer Lambda's zip
next to deployer.py, and the local platform's deployer (mlops/local/deployer.py) imports it. The
adapters only read their state into a view and carry the decision out (SageMaker calls and endpoint
tags on AWS; SQLite rows and model-server processes locally).

The rules:
- An approval event deploys its version when it is newer than the serving one and has not failed
  before; while a deployment runs it is queued (the highest wins); a duplicate, stale, failed,
  unapproved or other group's approval changes nothing and says why.
- A version whose deployment rolled back or failed, or that a person rolled back from, is not
  deployed by events (a redelivered event would repeat the failure or undo the rollback); a person
  can still deploy it by name.
- A failed newer version does not make older approvals stale: after v3 rolls back with v1 serving,
  approving v2 deploys v2. "Stale" means not newer than what serves, not "older than anything tried".
- A person may deploy any approved version by name (older, or once rolled back), never an unapproved
  one, never over a running deployment (on_deploy_request).
- Rollback by hand goes to the most recent version that actually served all traffic before the
  serving one, and is still approved; a version that never served (rolled back, or never deployed)
  is not a rollback target, and the version rolled back from leaves the history (rolling back twice
  goes two versions back).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

APPROVED = "Approved"
PENDING = "PendingManualApproval"
REJECTED = "Rejected"

DEPLOY = "deploy"
QUEUE = "queue"
SKIP = "skip"

_ARN = re.compile(r"^arn:[^:]+:sagemaker:[^:]*:\d*:model-package/(?P<group>[^/]+)/(?P<version>\d+)$")
HISTORY_CHARS = 256  # what one endpoint tag holds


class LifecycleError(ValueError):
    """A request the lifecycle refuses; the message says why and what to do instead."""


class EndpointBusyError(LifecycleError):
    """A person's deploy while a deployment runs: it waits for that one (409 locally)."""


@dataclass(frozen=True)
class EndpointView:
    """What a decision needs to know about one endpoint."""

    serving: int | None = None
    """The version that owns all traffic (verified), if any."""
    deploying: int | None = None
    """The version a deployment in progress is moving to."""
    pending: int | None = None
    """The version queued while a deployment runs."""
    failed: frozenset[int] = field(default_factory=frozenset)
    """Versions whose deployment rolled back or failed (and that have not served since)."""
    served: tuple[int, ...] = ()
    """Versions that served all traffic, oldest first, each once (the most recent last)."""
    busy: bool = False
    """The endpoint cannot start a deployment now (updating for another reason than `deploying`)."""


@dataclass(frozen=True)
class Decision:
    action: str  # DEPLOY | QUEUE | SKIP
    version: int
    reason: str


def _not_approved(version: int, status: str) -> str:
    return f"version {version} is {status}, not {APPROVED}; nothing deployed"


def on_approval(view: EndpointView, version: int, status: str = APPROVED) -> Decision:
    """What an approval event of `version` does to the endpoint."""
    if status != APPROVED:
        return Decision(SKIP, version, _not_approved(version, status))
    if view.deploying == version:
        return Decision(SKIP, version, f"version {version} is already being deployed")
    if view.serving == version:
        return Decision(SKIP, version, f"version {version} is already deployed")
    if view.serving is not None and version < view.serving:
        return Decision(
            SKIP, version, f"version {version} is not newer than the serving version {view.serving}"
        )
    if version in view.failed:
        return Decision(
            SKIP,
            version,
            f"version {version} was rolled back before; deploy it by name to try again",
        )
    if view.deploying is not None or view.busy:
        if view.pending is not None and version <= view.pending:
            return Decision(
                SKIP, version, f"version {version} not queued: version {view.pending} is already queued"
            )
        return Decision(QUEUE, version, f"version {version} queued, deployed when the endpoint is free")
    return Decision(DEPLOY, version, f"deploying version {version}")


def require_deployable(version: int, status: str) -> None:
    """Only an approved version is ever deployed, whoever asks."""
    if status != APPROVED:
        raise LifecycleError(f"{_not_approved(version, status)} (approve it first: mlops approve {version})")


def on_deploy_request(view: EndpointView, version: int, status: str) -> Decision:
    """A person's deploy by name (`mlops deploy N`, `--rollback`): any approved version, older and
    once-rolled-back ones included (events only move forward; a person may go back), but never over a
    running deployment, and the serving version is not deployed again."""
    require_deployable(version, status)
    if view.deploying is not None or view.busy:
        doing = (
            f"deploying version {view.deploying}" if view.deploying is not None else "the endpoint is busy"
        )
        raise EndpointBusyError(f"{doing}; wait for it to finish before deploying again")
    if view.serving == version:
        return Decision(SKIP, version, f"version {version} is already deployed")
    return Decision(DEPLOY, version, f"deploying version {version}")


def on_approvals(view: EndpointView, versions: Iterable[int]) -> tuple[Decision | None, list[Decision]]:
    """Several approvals read at once (the local outbox): the highest deployable one goes, the rest say why."""
    decisions = [on_approval(view, v) for v in sorted(set(versions))]
    chosen = [d for d in decisions if d.action in (DEPLOY, QUEUE)]
    target = chosen[-1] if chosen else None
    if target is None:
        return None, decisions
    skipped = [
        d
        if d.action == SKIP
        else Decision(SKIP, d.version, f"superseded by version {target.version}, approved at the same time")
        for d in decisions
        if d.version != target.version
    ]
    return target, skipped


def rollback_target(view: EndpointView, approved: Collection[int]) -> int:
    """The version `deploy --rollback` goes to: the last one that served before the serving one."""
    if view.serving is None:
        raise LifecycleError("no version serves all traffic, so there is nothing to roll back")
    earlier = [v for v in view.served if v != view.serving]
    for version in reversed(earlier):
        if version in approved:
            return version
    listed = ", ".join(map(str, earlier)) or "none"
    raise LifecycleError(
        f"no version that served before version {view.serving} is still approved (served: {listed}); "
        "deploy one by name instead"
    )


def after_outcome(
    view: EndpointView, version: int, succeeded: bool, *, rolled_back_from: int | None = None
) -> EndpointView:
    """The view once `version`'s deployment ended: served history and failed set updated.

    A successful rollback by hand (`rolled_back_from`) withdraws the version it left: it leaves the
    served history (a second rollback goes further back, not to it again) and joins the versions
    events do not deploy (a late duplicate of its approval does not undo the rollback)."""
    if succeeded:
        withdrawn = {rolled_back_from} - {version, None}
        served = (*(v for v in view.served if v != version and v not in withdrawn), version)
        failed = (view.failed - {version}) | {v for v in withdrawn if v is not None}
        return EndpointView(version, None, view.pending, frozenset(failed), served, view.busy)
    return EndpointView(view.serving, None, view.pending, view.failed | {version}, view.served, view.busy)


def linear_step(instance_count: int, step_percent: int) -> int:
    """Instances each LINEAR step moves: `step_percent` of the fleet in whole instances, kept within
    SageMaker's 10-50% of the variant's instance count (so at least one, at most half). The AWS deployer
    sends it as UpdateEndpoint's LinearStepSize; the local deployer shifts by it too."""
    if instance_count < 2:
        raise LifecycleError(
            f"the endpoint has {instance_count} instance; a LINEAR blue/green shift moves 10-50% of "
            "the instances per step, one whole instance at least, so it needs 2 or more"
        )
    low = -(-instance_count // 10)  # ceil(10%)
    high = instance_count // 2  # floor(50%)
    wanted = instance_count * step_percent // 100
    return max(low, min(high, max(1, wanted)))


def linear_shares(instance_count: int, step_percent: int) -> list[float]:
    """The new version's share of the traffic after each LINEAR step, ending at 1.0: whole instances
    of the fleet (linear_step), the last step taking what is left (2 instances at 25%: [0.5, 1.0])."""
    step = linear_step(instance_count, step_percent)
    return [min(moved, instance_count) / instance_count for moved in range(step, instance_count + step, step)]


def parse_versions(text: str) -> list[int]:
    """A history tag's value ("1 3 4") as versions."""
    return [int(v) for v in text.split() if v.isdigit()]


def format_versions(versions: Iterable[int], limit: int = HISTORY_CHARS) -> str:
    """Versions as one tag value, dropping the oldest to fit `limit` characters."""
    kept = list(versions)
    value = " ".join(map(str, kept))
    while len(value) > limit:
        kept = kept[1:]
        value = " ".join(map(str, kept))
    return value


@dataclass(frozen=True)
class VersionRef:
    version: int | None = None
    arn: str | None = None
    group: str | None = None


def parse_version_ref(text: str) -> VersionRef:
    """How a person names a version: `3`, `v3`, or a model package ARN."""
    raw = str(text).strip()
    if raw.startswith("arn:"):
        match = _ARN.match(raw)
        if not match:
            raise LifecycleError(f"{raw!r} is not a model package ARN")
        return VersionRef(int(match["version"]), raw, match["group"])
    digits = raw[1:] if raw[:1] in ("v", "V") else raw
    if not digits.isdigit() or int(digits) < 1:
        raise LifecycleError(f"{raw!r} is not a model version (like 3) or a model package ARN")
    return VersionRef(int(digits))


def review(version: int, current: str, new: str, *, force: bool = False, reason: str = "") -> None:
    """Whether a person may set `version` from `current` to `new` (approve or reject)."""
    if new == REJECTED and not reason.strip():
        raise LifecycleError("a rejection needs a reason (--reason)")
    if current == new and not force:
        # Nothing to force: saying "--force" here sent people to re-sign a version for no change.
        hint = f"; `mlops deploy {version}` deploys it by hand" if new == APPROVED else ""
        raise LifecycleError(f"version {version} is already {current}; nothing changed{hint}")
    if current != PENDING and not force:
        raise LifecycleError(
            f"version {version} is {current}, not {PENDING}; pass --force to set it to {new} anyway"
        )
