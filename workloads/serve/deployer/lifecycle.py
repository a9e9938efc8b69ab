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
- No silent breaking change (compare_signatures): a version whose INPUT signature differs from the
  serving version's in a way callers notice (a feature added, removed, retyped or moved; the task
  changed) is refused, whoever or whatever asks (an approval event: REFUSE, recorded with the reason;
  a person's approve, deploy or rollback: SignatureChangeError), unless a person allowed it: with the
  approval (recorded in the registry, so the deployer, later and elsewhere, honours it) or with the
  deploy. A rollback by hand changes the signature back for the callers just as much, so it needs the
  same allowance. A version without a recorded signature (registered before signatures were) cannot
  be compared: it is not refused, and the decision says the check did not run (refusing on missing
  evidence would make every deployment after an upgrade need the override, and teach people to
  always pass it); the 4xx comparison alarm of the shift is then the guard.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

APPROVED = "Approved"
PENDING = "PendingManualApproval"
REJECTED = "Rejected"

DEPLOY = "deploy"
QUEUE = "queue"
SKIP = "skip"
REFUSE = "refuse"  # not deployed until a person allows it (a breaking signature change)

CLASSIFICATION = "classification"
# How a person allows a breaking signature change, on every verb that can deploy (the CLI's flag).
ALLOW_FLAG = "--allow-signature-change"

_ARN = re.compile(r"^arn:[^:]+:sagemaker:[^:]*:\d*:model-package/(?P<group>[^/]+)/(?P<version>\d+)$")
HISTORY_CHARS = 256  # what one endpoint tag holds


class LifecycleError(ValueError):
    """A request the lifecycle refuses; the message says why and what to do instead."""


class EndpointBusyError(LifecycleError):
    """A person's deploy while a deployment runs: it waits for that one (409 locally)."""


class SignatureChangeError(LifecycleError):
    """A person's approve, deploy or rollback of a version whose input signature breaks the serving
    one's callers, without the allowance; the message says what changed and how to allow it."""


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
    action: str  # DEPLOY | QUEUE | SKIP | REFUSE
    version: int
    reason: str


# --- signatures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """What a caller sends (features: names and types, in order) and the kind of answer (task).

    From a model's metadata.json / signature.json (workloads/model_io.ModelMetadata.signature), or
    the registry's record of it."""

    task: str
    features: tuple[tuple[str, str], ...]  # (name, "number" | "string"), in the order rows are read
    output: str = ""  # "classes a b c" or "value <name>": shown, not compared
    # Whether the model scores a missing number (null): None where the record does not say (older
    # artifacts, AWS properties), and then not compared.
    missing_numbers: bool | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Signature | None:
        """A signature dict ({"task", "features": [{"name", "type"}], "output"}); None if it has no
        features list (nothing recorded)."""
        features = raw.get("features")
        if not isinstance(features, list) or not features:
            return None
        pairs = tuple(
            (str(f.get("name", "")), str(f.get("type", "number"))) for f in features if isinstance(f, Mapping)
        )
        output = raw.get("output") if isinstance(raw.get("output"), Mapping) else {}
        assert isinstance(output, Mapping)
        if output.get("kind") == "classes":
            shown = "classes " + " ".join(map(str, output.get("classes") or []))
        elif output:
            shown = f"value {output.get('name', '')}".rstrip()
        else:
            shown = ""
        imputes = raw.get("imputes_missing")
        return cls(
            str(raw.get("task") or CLASSIFICATION),
            pairs,
            shown,
            imputes if isinstance(imputes, bool) else None,
        )

    def describe(self) -> str:
        """One line for `mlops models`: the features with their types, then the answer."""
        features = ", ".join(f"{name} ({kind})" for name, kind in self.features)
        return f"{self.task}: {features}" + (f" -> {self.output}" if self.output else "")


@dataclass(frozen=True)
class SignatureCheck:
    """compare_signatures' verdict on deploying `version` over `serving`."""

    version: int
    serving: int | None
    changes: tuple[str, ...] = ()
    """What breaks callers of the serving version, each in words; empty: compatible."""
    allowed: bool = False
    """A person allowed a breaking change for this version (with its approval, or the deploy)."""
    unchecked: str = ""
    """Why no comparison was made (a version without a recorded signature); empty when it was."""

    @property
    def compatible(self) -> bool:
        return not self.changes

    @property
    def deployable(self) -> bool:
        return self.compatible or self.allowed

    def refusal(self, how: str = "") -> str:
        """Why the version is not deployed, and how to deploy it anyway."""
        fix = how or (
            f"if the change is meant, a person allows it: `mlops deploy {self.version} {ALLOW_FLAG}` "
            f"(or approve it again: `mlops approve {self.version} --force {ALLOW_FLAG}`)"
        )
        return (
            f"version {self.version}{_REFUSAL_MARK}{self.serving}'s: {'; '.join(self.changes)}. "
            f"Callers' requests would be refused or misread; {fix}"
        )

    def note(self) -> str:
        """What the decision adds to its message when the version deploys: an allowed change, or a
        check that could not run. Empty for a compatible version."""
        if self.unchecked:
            return f"input signature not checked: {self.unchecked}"
        if self.changes and self.allowed:
            return f"input signature change allowed by a person: {'; '.join(self.changes)}"
        return ""


_REFUSAL_MARK = " not deployed: its input signature is incompatible with serving version "
_APPROVAL_MARK = (
    " not approved (it stays as it was): its input signature is incompatible with serving version "
)


def is_refusal(reason: str) -> bool:
    """Whether a recorded decision's reason is a signature refusal (SignatureCheck.refusal)."""
    return reason.startswith("version ") and _REFUSAL_MARK in reason


def signature_changes(serving: Signature, new: Signature) -> list[str]:
    """What in `new` breaks callers of `serving`, in words a user understands; [] when nothing does.

    Compared: the task (classification <-> regression changes the answer's shape), the features'
    names (added, removed), types (number <-> string) and order (a caller sending rows of values by
    position would put them under the wrong feature). Not compared: the classes or the regression
    output's name (an answer callers read by label), the target column's name, the estimator."""
    found: list[str] = []
    if serving.task != new.task:
        found.append(f"task changed from {serving.task} to {new.task}")
    old = dict(serving.features)
    now = dict(new.features)
    added = [f"{n} ({now[n]})" for n, _ in new.features if n not in old]
    removed = [f"{n} ({old[n]})" for n, _ in serving.features if n not in now]
    if added:
        found.append(f"feature{'s' if len(added) > 1 else ''} added: {', '.join(added)}")
    if removed:
        found.append(f"feature{'s' if len(removed) > 1 else ''} removed: {', '.join(removed)}")
    retyped = [f"{n} {old[n]} -> {now[n]}" for n, _ in serving.features if n in now and old[n] != now[n]]
    if retyped:
        found.append(f"feature{'s' if len(retyped) > 1 else ''} retyped: {', '.join(retyped)}")
    kept_old = [n for n, _ in serving.features if n in now]
    kept_new = [n for n, _ in new.features if n in old]
    if kept_old != kept_new:
        found.append(
            f"features reordered: {', '.join(kept_old)} -> {', '.join(kept_new)}, so values sent by "
            "position would land under the wrong feature"
        )
    numbers = [name for name, kind in new.features if kind == "number" and old.get(name) == "number"]
    if serving.missing_numbers and new.missing_numbers is False and numbers:
        # The serving model answers a null number (it imputes); the new one answers such rows 400.
        found.append(f"missing numbers no longer accepted: null for {', '.join(numbers)} would be refused")
    return found


def compare_signatures(
    version: int,
    new: Signature | None,
    serving_version: int | None,
    serving: Signature | None,
    *,
    allowed: bool = False,
) -> SignatureCheck:
    """Whether deploying `version` (signature `new`) over `serving_version` breaks its callers.

    Nothing serving, or the same version: nothing to compare. A side without a recorded signature:
    not compared (the check says why; see the module's rules)."""
    if serving_version is None or serving_version == version:
        return SignatureCheck(version, serving_version, allowed=allowed)
    missing = [
        f"version {v} has no recorded signature"
        for v, s in ((serving_version, serving), (version, new))
        if s is None
    ]
    if missing:
        return SignatureCheck(version, serving_version, allowed=allowed, unchecked=" and ".join(missing))
    assert new is not None and serving is not None
    return SignatureCheck(version, serving_version, tuple(signature_changes(serving, new)), allowed)


def allow_hint(command: str) -> str:
    """How a person does it anyway: allow_hint("approve 3") -> "... `mlops approve 3 --allow-signature-change`"."""
    return f"if the change is meant, allow it: `mlops {command} {ALLOW_FLAG}`"


def require_signature(check: SignatureCheck | None, how: str = "", *, approving: bool = False) -> None:
    """A person's approve, deploy or rollback: refused while the change is neither compatible nor allowed.
    approving: the refusal is of an approval, so it says the version stays unapproved (as it does)."""
    if check is not None and not check.deployable:
        refusal = check.refusal(how)
        if approving:
            refusal = refusal.replace(_REFUSAL_MARK, _APPROVAL_MARK, 1)
        raise SignatureChangeError(refusal)


def _with_note(reason: str, check: SignatureCheck | None) -> str:
    note = check.note() if check is not None else ""
    return f"{reason} ({note})" if note else reason


def _not_approved(version: int, status: str) -> str:
    return f"version {version} is {status}, not {APPROVED}; nothing deployed"


def on_approval(
    view: EndpointView, version: int, status: str = APPROVED, *, signature: SignatureCheck | None = None
) -> Decision:
    """What an approval event of `version` does to the endpoint.

    `signature`: compare_signatures of this version against the serving one, where the adapter read
    them; an incompatible change nobody allowed is REFUSE. A queued approval is checked when it is
    started (against what serves then), not when it is queued."""
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
    if signature is not None and not signature.deployable:
        return Decision(REFUSE, version, signature.refusal())
    return Decision(DEPLOY, version, _with_note(f"deploying version {version}", signature))


def require_deployable(version: int, status: str) -> None:
    """Only an approved version is ever deployed, whoever asks."""
    if status != APPROVED:
        raise LifecycleError(f"{_not_approved(version, status)} (approve it first: mlops approve {version})")


def on_deploy_request(
    view: EndpointView,
    version: int,
    status: str,
    *,
    signature: SignatureCheck | None = None,
    hint: str = "",
) -> Decision:
    """A person's deploy by name (`mlops deploy N`, `--rollback`): any approved version, older and
    once-rolled-back ones included (events only move forward; a person may go back), but never over a
    running deployment, and the serving version is not deployed again. A breaking signature change
    needs the allowance (SignatureChangeError names the flag, or says `hint`), a rollback's too."""
    require_deployable(version, status)
    if view.deploying is not None or view.busy:
        doing = (
            f"deploying version {view.deploying}" if view.deploying is not None else "the endpoint is busy"
        )
        raise EndpointBusyError(f"{doing}; wait for it to finish before deploying again")
    if view.serving == version:
        return Decision(SKIP, version, f"version {version} is already deployed")
    if signature is not None and not signature.deployable:
        raise SignatureChangeError(signature.refusal(hint or allow_hint(f"deploy {version}")))
    return Decision(DEPLOY, version, _with_note(f"deploying version {version}", signature))


def on_approvals(
    view: EndpointView, versions: Iterable[int], signatures: Mapping[int, SignatureCheck] | None = None
) -> tuple[Decision | None, list[Decision]]:
    """Several approvals read at once (the local outbox): the highest deployable one goes, the rest say
    why (a refused one among them: REFUSE, with its reason)."""
    checks = signatures or {}
    decisions = [on_approval(view, v, signature=checks.get(v)) for v in sorted(set(versions))]
    chosen = [d for d in decisions if d.action in (DEPLOY, QUEUE)]
    target = chosen[-1] if chosen else None
    if target is None:
        return None, decisions
    skipped = [
        d
        if d.action in (SKIP, REFUSE)
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
