"""One deployment lifecycle, two targets: drivers that give tests/test_lifecycle_parity.py the same verbs.

AwsDriver: moto in-process with tests/moto_sagemaker_ext.py. Versions are model packages
(ext.register_package); approve/reject go through AwsBackend (what `mlops approve` runs) and then the
documented "Model Package State Change" event goes to the deployer Lambda's handler; after every action
the driver delivers "Endpoint State Change" events for as long as the endpoint keeps changing, as
EventBridge would. A version registered good=False is one SageMaker rolls back (ext mode "rollback" on
its UpdateEndpoint: an alarm fired mid-shift); hold() keeps the next shift Updating until finish().

LocalDriver: the real local platform on a temp MLOPS_HOME: the daemon started as tests/test_local_*.py
do, versions registered in the LocalRegistry from real model dirs (local_daemon_helpers.build_model; a
bad version is its "corrupt" model, which cannot load, so /ping fails and the deployer rolls back),
approve/reject/deploy/status/teardown through LocalBackend, waits polling the daemon's status with
generous ceilings. A local shift cannot be paused, so a driver opened with hold=True runs every shift
with a long traffic wait (MLOPS_TRAFFIC_WAIT_SECONDS) and an approval made during it lands mid-shift;
finish("rollback") kills the green model server, which the deployer's health check catches.

Verbs return plain values (versions, (status, target) pairs, traffic shares) so a scenario asserts the
same literal on both targets.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import boto3
import moto_sagemaker_ext as ext
import pytest
from botocore.exceptions import ClientError
from local_daemon_helpers import fast_settings, wait_for
from moto.sagemaker.models import SageMakerModelBackend

from mlops.aws import AwsBackend, AwsSettings
from mlops.backend import APPROVED, DEPLOY_IN_PROGRESS, DEPLOY_SKIPPED, DEPLOY_SUCCEEDED, EndpointStatus
from mlops.local import daemon, db, state
from mlops.local.backend import LocalBackend
from mlops.local.endpoint import is_serve_process
from workloads.serve.deployer import deployer as dp
from workloads.serve.deployer import handler as lambda_handler

Deployment = tuple[str, int]
"""(status, target version) of the last deployment attempted: Succeeded, RolledBack, InProgress..."""

CEILING_SECONDS = 120.0  # how long a local wait may take before the scenario fails; never a timing assert
POLL_SECONDS = 0.05
STEP_PERCENT = 50  # both targets: LINEAR in two steps (AWS: 1 of 2 instances per step)
FLEET = 2  # instances: the AWS endpoint's, the local deployer's count (MLOPS_INSTANCE_COUNT)
LOCAL_STEP_WAIT_SECONDS = 1.0  # long enough for a poll to see the 50/50 split
LOCAL_HOLD_WAIT_SECONDS = 4.0  # "hold": a shift lasts ~8 s, so an approval made in it lands mid-shift
OTHER_GROUP = "other-models"

AWS_GROUP = "iris-models"
AWS_ENDPOINT = "iris-endpoint"
AWS_ENV = {
    "MODEL_PACKAGE_GROUP_NAME": AWS_GROUP,
    "ENDPOINT_NAME": AWS_ENDPOINT,
    "EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/sagemaker-exec",
    "INSTANCE_TYPE": "ml.m5.large",
    "INITIAL_INSTANCE_COUNT": "2",
    "TRAFFIC_STEP_PERCENT": str(STEP_PERCENT),
    "TRAFFIC_WAIT_SECONDS": "300",
    "ROLLBACK_ALARM_NAMES": "iris-endpoint-5xx,iris-endpoint-latency",
    "TERMINATION_WAIT_SECONDS": "300",
    "AUTOSCALING_MIN_CAPACITY": "2",
    "AUTOSCALING_MAX_CAPACITY": "4",
    "AWS_LAMBDA_FUNCTION_NAME": "iris-deployer",
}
_VERSION_IN_NAME = re.compile(r"-v(\d+)-[0-9a-f]{8}$")


class Driver(Protocol):
    """The lifecycle as a scenario drives it, the same on every target."""

    name: str

    def register(self, expected: int, *, good: bool = True, narrow: bool = False) -> int:
        """Register the next version (it must become `expected`); good=False: it fails once deployed;
        narrow=True: its input signature has 3 of iris' 4 features (incompatible with the others)."""
        ...

    def approve(self, version: int, *, allow_signature_change: bool = False) -> None:
        """Approve a pending version as `mlops approve` does; the approval event reaches the deployer."""
        ...

    def approve_unchecked(self, version: int) -> None:
        """Approve in the registry directly (not through `mlops approve` and its up-front check, as a
        person with registry access could): only the deployer's gate stands."""
        ...

    def notes(self) -> list[str]:
        """`mlops status`'s notes."""
        ...

    def redeliver(self, version: int) -> None:
        """Deliver the version's last approval event again (at-least-once delivery)."""
        ...

    def approve_other_group(self) -> None:
        """Register and approve a version in another model package group."""
        ...

    def reject(self, version: int, reason: str) -> None: ...

    def hold(self) -> None:
        """The next shift stays in progress until finish() (locally: until its long traffic wait ends)."""
        ...

    def wait_shifting(self, version: int) -> None:
        """Return once a shift to `version` is in progress."""
        ...

    def finish(self, outcome: str = "complete") -> None:
        """End the held shift: "complete" (it finishes) or "rollback" (it fails mid-shift)."""
        ...

    def wait_settled(self) -> Deployment | None:
        """Wait until nothing is deploying or left to decide; the last deployment."""
        ...

    def serving(self) -> int | None:
        """The version that owns all traffic."""
        ...

    def last_deployment(self) -> Deployment | None: ...

    def attempts(self) -> int:
        """Deployments started so far (skipped approvals are not attempts)."""
        ...

    def shift_steps(self, version: int) -> list[float]:
        """The traffic shares the last deployment of `version` went through."""
        ...

    def served(self) -> list[int]:
        """Versions that served all traffic, oldest first, each once."""
        ...

    def deploy(self, version: int, *, allow_signature_change: bool = False) -> int:
        """Deploy a version by name (a person); the version the deployment went to."""
        ...

    def rollback(self, *, allow_signature_change: bool = False) -> int:
        """`mlops deploy --rollback`; the version the rollback went to."""
        ...

    def teardown(self) -> list[str]: ...

    def leftovers(self) -> list[str]:
        """What of the deployment still runs or exists."""
        ...

    def close(self) -> None: ...


def linear_shares(step: float) -> list[float]:
    """The shares a LINEAR shift of `step` (a fraction of the fleet) goes through, ending at 1.0."""
    shares: list[float] = []
    share = 0.0
    while share < 1.0:
        share = min(1.0, round(share + step, 4))
        shares.append(share)
    return shares


def _version_in(name: str | None) -> int | None:
    match = _VERSION_IN_NAME.search(name or "")
    return int(match.group(1)) if match else None


# --- AWS --------------------------------------------------------------------------------------------


class AwsDriver:
    """The deployer Lambda against moto; needs the moto_aws fixture active."""

    name = "aws"

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, *, step_percent: int = STEP_PERCENT, fleet: int = FLEET
    ) -> None:
        ext.install()
        ext.reset()
        sizes = {
            "TRAFFIC_STEP_PERCENT": str(step_percent),
            "INITIAL_INSTANCE_COUNT": str(fleet),
            "AUTOSCALING_MIN_CAPACITY": str(fleet),
            "AUTOSCALING_MAX_CAPACITY": str(max(fleet, 4)),
        }
        for key, value in {**AWS_ENV, **sizes}.items():
            monkeypatch.setenv(key, value)
        self.sm: Any = boto3.client("sagemaker", region_name=ext.REGION)
        self.backend = AwsBackend(AwsSettings.from_env(), poll_seconds=0)
        self._arns: dict[int, str] = {}
        self._approvals: dict[int, dict[str, Any]] = {}
        self._bad: set[int] = set()
        self._hold_next = False
        self._creates: list[int] = []
        self._shifts: list[tuple[int, dict[str, Any], int]] = []  # version, DeploymentConfig, fleet
        self.results: list[dict[str, Any]] = []  # every handler answer, for failure messages
        self._patch(monkeypatch)

    def _patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Choose ext's UpdateEndpoint mode per call (the model decides how its shift ends), count
        CreateEndpoint calls."""
        update = SageMakerModelBackend.update_endpoint  # type: ignore[attr-defined]
        create = SageMakerModelBackend.create_endpoint

        def update_endpoint(backend: Any, *args: Any, **kwargs: Any) -> Any:
            name = kwargs["endpoint_config_name"]
            version = _version_in(name)
            assert version is not None, f"UpdateEndpoint to {name}: not a deployer config"
            if version in self._bad:
                ext.behaviour.mode = "rollback"
            elif self._hold_next:
                ext.behaviour.mode = "hold"
                self._hold_next = False
            else:
                ext.behaviour.mode = "complete"
            fleet = int(backend.endpoint_configs[name].production_variants[0]["InitialInstanceCount"])
            try:
                return update(backend, *args, **kwargs)
            finally:
                if ext.behaviour.updates and ext.behaviour.updates[-1]["EndpointConfigName"] == name:
                    self._shifts.append((version, ext.behaviour.updates[-1]["DeploymentConfig"], fleet))
                ext.behaviour.mode = "complete"

        def create_endpoint(backend: Any, *args: Any, **kwargs: Any) -> Any:
            version = _version_in(kwargs.get("endpoint_config_name"))
            assert version is not None
            assert version not in self._bad, "a first version that fails (CreateEndpoint) is not modelled"
            self._creates.append(version)
            return create(backend, *args, **kwargs)

        monkeypatch.setattr(SageMakerModelBackend, "update_endpoint", update_endpoint)
        monkeypatch.setattr(SageMakerModelBackend, "create_endpoint", create_endpoint)

    # -- EventBridge ------------------------------------------------------------------------------

    def _describe(self) -> dict[str, Any] | None:
        try:
            return dict(self.sm.describe_endpoint(EndpointName=AWS_ENDPOINT))
        except ClientError as exc:
            if "Could not find" in str(exc):
                return None
            raise

    def _snapshot(self) -> tuple[Any, ...] | None:
        desc = self._describe()
        if desc is None:
            return None
        pending = desc.get("PendingDeploymentSummary") or {}
        return (
            desc["EndpointStatus"],
            desc.get("EndpointConfigName"),
            pending.get("EndpointConfigName"),
            desc.get("LastModifiedTime"),
            desc.get("FailureReason"),
        )

    def _deliver(self, event: dict[str, Any]) -> dict[str, Any]:
        result = lambda_handler.handler(event)
        self.results.append(result)
        return result

    def _pump(self, before: tuple[Any, ...] | None) -> None:
        """An endpoint event after each change of the endpoint, until it stops changing."""
        for _ in range(20):
            now = self._snapshot()
            if now is None or now == before:
                return
            self._deliver(ext.endpoint_event(self.sm, AWS_ENDPOINT))
            before = now
        raise AssertionError(f"the endpoint kept changing; handler answers: {self.results[-5:]}")

    def _act(self, action: Callable[[], Any]) -> Any:
        before = self._snapshot()
        result = action()
        self._pump(before)
        return result

    def _tags(self) -> dict[str, str]:
        desc = self._describe()
        if desc is None:
            return {}
        return {t["Key"]: t["Value"] for t in self.sm.list_tags(ResourceArn=desc["EndpointArn"])["Tags"]}

    # -- verbs ------------------------------------------------------------------------------------

    def register(self, expected: int, *, good: bool = True, narrow: bool = False) -> int:
        signature = {**ext.IRIS_SIGNATURE, "features": ext.IRIS_SIGNATURE["features"][: 3 if narrow else 4]}
        arn = ext.register_package(
            self.sm, AWS_GROUP, commit=f"v{expected}-{'good' if good else 'bad'}", signature=signature
        )
        version = int(arn.rsplit("/", 1)[1])
        assert version == expected, f"registered version {version}, expected {expected}"
        self._arns[version] = arn
        if not good:
            self._bad.add(version)
        return version

    def approve(self, version: int, *, allow_signature_change: bool = False) -> None:
        self.backend.approve(
            str(version), description="parity test", allow_signature_change=allow_signature_change
        )
        event = ext.package_event(self.sm, self._arns[version])
        self._approvals[version] = event
        self._act(lambda: self._deliver(event))

    def approve_unchecked(self, version: int) -> None:
        self.sm.update_model_package(ModelPackageArn=self._arns[version], ModelApprovalStatus=APPROVED)
        event = ext.package_event(self.sm, self._arns[version])
        self._approvals[version] = event
        self._act(lambda: self._deliver(event))

    def notes(self) -> list[str]:
        return self.backend.status().notes

    def redeliver(self, version: int) -> None:
        event = self._approvals[version]
        self._act(lambda: self._deliver(event))

    def approve_other_group(self) -> None:
        arn = ext.register_package(self.sm, OTHER_GROUP, commit="other")
        self.sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=APPROVED)
        self._act(lambda: self._deliver(ext.package_event(self.sm, arn)))

    def reject(self, version: int, reason: str) -> None:
        self.backend.reject(str(version), reason=reason)
        self._act(lambda: self._deliver(ext.package_event(self.sm, self._arns[version])))

    def hold(self) -> None:
        self._hold_next = True

    def wait_shifting(self, version: int) -> None:
        desc = self._describe() or {}
        pending = (desc.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
        assert (desc.get("EndpointStatus"), _version_in(pending)) == ("Updating", version), (
            f"no shift to version {version} in progress: {desc.get('EndpointStatus')}, pending {pending}"
        )

    def finish(self, outcome: str = "complete") -> None:
        self._act(lambda: ext.finish(AWS_ENDPOINT, outcome))

    def wait_settled(self) -> Deployment | None:
        # Synchronous under moto: every action already delivered its events; check nothing is left.
        desc = self._describe()
        tags = self._tags()
        if desc is not None:
            assert desc["EndpointStatus"] not in dp.BUSY_STATES, (
                f"endpoint {desc['EndpointStatus']}: a held shift settles only after finish()"
            )
            assert tags.get(dp.TAG_STATUS) != dp.IN_PROGRESS, f"still in progress: {self.results[-3:]}"
            live = _version_in(desc.get("EndpointConfigName"))
            assert tags.get(dp.TAG_SERVING) == str(live), (
                f"the deployer records version {tags.get(dp.TAG_SERVING)} serving, the endpoint runs {live}"
            )
        return self.last_deployment()

    def serving(self) -> int | None:
        desc = self._describe()
        return None if desc is None else _version_in(desc.get("EndpointConfigName"))

    def last_deployment(self) -> Deployment | None:
        tags = self._tags()
        target = tags.get(dp.TAG_TARGET, "")
        if not tags.get(dp.TAG_STATUS) or not target.isdigit():
            return None
        return tags[dp.TAG_STATUS], int(target)

    def attempts(self) -> int:
        return len(self._creates) + len(ext.behaviour.updates)

    def shift_steps(self, version: int) -> list[float]:
        shifts = [(config, fleet) for v, config, fleet in self._shifts if v == version]
        if not shifts:
            return [1.0] if version in self._creates else []
        config, fleet = shifts[-1]
        routing = config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
        if routing["Type"] == "ALL_AT_ONCE":
            return [1.0]
        assert routing["Type"] == "LINEAR", f"traffic routing {routing['Type']}"
        size = routing["LinearStepSize"]
        step = size["Value"] / fleet if size["Type"] == "INSTANCE_COUNT" else size["Value"] / 100
        return linear_shares(step)

    def served(self) -> list[int]:
        return [int(v) for v in self._tags().get(dp.TAG_SERVED, "").split() if v.isdigit()]

    def deploy(self, version: int, *, allow_signature_change: bool = False) -> int:
        started = self._act(
            lambda: self.backend.deploy(
                str(version), wait=False, allow_signature_change=allow_signature_change
            )
        )
        return int(started.target_version)

    def rollback(self, *, allow_signature_change: bool = False) -> int:
        started = self._act(
            lambda: self.backend.deploy(
                rollback=True, wait=False, allow_signature_change=allow_signature_change
            )
        )
        return int(started.target_version)

    def teardown(self) -> list[str]:
        return self.backend.teardown()

    def leftovers(self) -> list[str]:
        found = [f"endpoint {e['EndpointName']}" for e in self.sm.list_endpoints()["Endpoints"]]
        prefix = f"{AWS_ENDPOINT}-v"
        found += [
            f"endpoint config {c['EndpointConfigName']}"
            for c in self.sm.list_endpoint_configs()["EndpointConfigs"]
            if c["EndpointConfigName"].startswith(prefix)
        ]
        found += [
            f"model {m['ModelName']}"
            for m in self.sm.list_models()["Models"]
            if m["ModelName"].startswith(prefix)
        ]
        aas = boto3.client("application-autoscaling", region_name=ext.REGION)
        found += [
            f"scalable target {t['ResourceId']}"
            for t in aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
            if t["ResourceId"].startswith(f"endpoint/{AWS_ENDPOINT}/")
        ]
        return found

    def close(self) -> None:
        ext.reset()


# --- local ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDirs:
    """Real model artifacts, made once and registered as every version (the model server is told its
    version by MODEL_VERSION, so one artifact serves as v1, v2, ...)."""

    good: Path
    bad: Path  # local_daemon_helpers.build_model(kind="corrupt"): the model file cannot be loaded
    narrow: Path  # build_model(kind="three_features"): a good model whose signature drops a feature


def _serve_processes(models_dir: Path) -> Iterator[int]:
    """Model servers of this platform home (by their SM_MODEL_DIR), alive."""
    marker = f"SM_MODEL_DIR={models_dir}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(var.startswith(marker) for var in environ) and is_serve_process(pid):
            yield pid


class LocalDriver:
    """The local platform: a daemon on its own MLOPS_HOME, real model-server processes."""

    name = "local"

    def __init__(
        self,
        home: Path,
        models: ModelDirs,
        *,
        hold: bool = False,
        step_percent: int = STEP_PERCENT,
        fleet: int = FLEET,
    ) -> None:
        self.settings = fast_settings(
            home,
            traffic_step_percent=step_percent,
            endpoint_initial_instance_count=fleet,
            traffic_wait_seconds=LOCAL_HOLD_WAIT_SECONDS if hold else LOCAL_STEP_WAIT_SECONDS,
            startup_timeout_seconds=60.0,
        )
        self.models = models
        self.holds = hold
        self.backend = LocalBackend(self.settings, cwd=home.parent, approver="parity-test")
        self.info = daemon.start(self.settings, timeout=CEILING_SECONDS)
        self._store = state.StateStore(self.settings.db_path, self.settings.endpoint_name)
        # Traffic shares seen per deployment (target version, started_at), in the order seen.
        self._seen: dict[tuple[int, str], list[float]] = {}

    def _status(self) -> EndpointStatus:
        """The endpoint's status, noting the shares of a deployment in progress."""
        status = self.backend.status()
        dep = status.last_deployment
        if dep is not None and dep.status == DEPLOY_IN_PROGRESS:
            seen = self._seen.setdefault((dep.target_version, dep.started_at), [])
            share = round(sum(v.weight for v in status.variants if v.model_version == dep.target_version), 4)
            if share > 0 and (not seen or seen[-1] != share):
                seen.append(share)
        return status

    def _unconsumed(self) -> bool:
        return bool(self.backend.registry.events_after(self._store.cursor()))

    def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        wait_for(predicate, CEILING_SECONDS, what, interval=POLL_SECONDS)

    # -- verbs ------------------------------------------------------------------------------------

    def register(self, expected: int, *, good: bool = True, narrow: bool = False) -> int:
        source = self.models.narrow if narrow else self.models.good if good else self.models.bad
        model = self.backend.registry.register(self.settings.group, source, metrics={"accuracy": 1.0})
        assert model.version == expected, f"registered version {model.version}, expected {expected}"
        return model.version

    def approve(self, version: int, *, allow_signature_change: bool = False) -> None:
        self.backend.approve(
            str(version), description="parity test", allow_signature_change=allow_signature_change
        )

    def approve_unchecked(self, version: int) -> None:
        self.backend.registry.set_status(self.settings.group, version, APPROVED, approver="parity-test")

    def notes(self) -> list[str]:
        return self._status().notes

    def redeliver(self, version: int) -> None:
        conn = db.connect(self.settings.db_path)
        try:
            with db.transaction(conn):
                copied = conn.execute(
                    "INSERT INTO events (created_at, kind, grp, version, status) "
                    "SELECT created_at, kind, grp, version, status FROM events "
                    "WHERE grp=? AND version=? AND status=? ORDER BY id DESC LIMIT 1",
                    (self.settings.group, version, APPROVED),
                )
                assert copied.rowcount == 1, f"no approval event of version {version} to deliver again"
        finally:
            conn.close()

    def approve_other_group(self) -> None:
        reg = self.backend.registry
        model = reg.register(OTHER_GROUP, self.models.good, metrics={"accuracy": 1.0})
        reg.set_status(OTHER_GROUP, model.version, APPROVED, approver="parity-test")

    def reject(self, version: int, reason: str) -> None:
        self.backend.reject(str(version), reason=reason)

    def hold(self) -> None:
        assert self.holds, (
            "open the local driver with hold=True: a local shift is held by a long traffic wait"
        )

    def wait_shifting(self, version: int) -> None:
        def shifting() -> bool:
            status = self._status()
            dep = status.last_deployment
            share = sum(v.weight for v in status.variants if v.model_version == version)
            return (
                dep is not None
                and (dep.status, dep.target_version) == (DEPLOY_IN_PROGRESS, version)
                and (0 < share < 1)
            )

        self._wait(shifting, f"a traffic split with version {version}")

    def finish(self, outcome: str = "complete") -> None:
        dep = self._status().last_deployment
        assert dep is not None and dep.status == DEPLOY_IN_PROGRESS, f"no shift in progress: {dep}"
        if outcome == "complete":
            return  # the shift ends on its own once its traffic waits are over
        assert outcome == "rollback", outcome
        green = [v.pid for v in self._store.variants() if v.model_version == dep.target_version and v.pid]
        assert green, f"no model server of version {dep.target_version} runs"
        for pid in green:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # dies mid-shift: the deployer's health check must see it

    def wait_settled(self) -> Deployment | None:
        def settled() -> bool:
            # Events first: a decision is committed with the cursor, so a status read after this sees
            # any deployment the events started.
            if self._unconsumed():
                return False
            status = self._status()
            dep = status.last_deployment
            return status.status in (state.IN_SERVICE, state.ABSENT, state.FAILED) and (
                dep is None or dep.status != DEPLOY_IN_PROGRESS
            )

        self._wait(settled, "the local endpoint to settle")
        return self.last_deployment()

    def serving(self) -> int | None:
        return self._status().serving_version

    def last_deployment(self) -> Deployment | None:
        dep = self._status().last_deployment
        return None if dep is None else (dep.status, dep.target_version)

    def attempts(self) -> int:
        return len([d for d in self._store.deployments() if d.status != DEPLOY_SKIPPED])

    def shift_steps(self, version: int) -> list[float]:
        keys = [key for key in self._seen if key[0] == version]
        return self._seen[keys[-1]] if keys else []

    def served(self) -> list[int]:
        # The local platform keeps no such list; derived from its deployment history.
        order: list[int] = []
        for dep in self._store.deployments():
            if dep.status == DEPLOY_SUCCEEDED:
                order = [v for v in order if v != dep.to_version] + [dep.to_version]
        return order

    def deploy(self, version: int, *, allow_signature_change: bool = False) -> int:
        return self.backend.deploy(
            str(version), wait=False, allow_signature_change=allow_signature_change
        ).target_version

    def rollback(self, *, allow_signature_change: bool = False) -> int:
        return self.backend.deploy(
            rollback=True, wait=False, allow_signature_change=allow_signature_change
        ).target_version

    def teardown(self) -> list[str]:
        return self.backend.teardown()

    def leftovers(self) -> list[str]:
        # The daemon, like the AWS deployer Lambda, outlives a teardown; what the endpoint ran must not.
        found = [f"model server pid {pid}" for pid in _serve_processes(self.settings.models_dir)]
        status = self.backend.status()
        if status.status != state.ABSENT:
            found.append(f"endpoint {status.name} {status.status} (serving version {status.serving_version})")
        return found

    def close(self) -> None:
        daemon.stop(self.settings)
        self._store.close()
        self.backend.close()
