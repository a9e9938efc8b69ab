"""LocalBackend: every `mlops` verb against the local platform.

Approve and reject write the registry directly (its event outbox is what the daemon's deployer
reacts to, as EventBridge is on AWS); deploy, status and predict go to the running daemon through
DaemonClient; status falls back to the database when the daemon is down. Training goes through the
local git remote and build, exactly as a `git push` does, so `mlops train` and a push cannot diverge.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.backend import (
    APPROVED,
    DEPLOY_IN_PROGRESS,
    DEPLOY_SUCCEEDED,
    REJECTED,
    ApprovalOutlook,
    BuildRecord,
    DeploymentRecord,
    DeploymentStatus,
    EndpointStatus,
    ModelVersion,
    PlatformError,
    Progress,
    RequestFilter,
    RequestRecord,
    TrainResult,
    predict_approval,
)
from mlops.local import build as builds
from mlops.local import history, repo
from mlops.local.build import Build
from mlops.local.identity import current_approver
from mlops.local.registry import LocalRegistry, parse_ref, signature_of_metadata
from mlops.local.settings import LocalSettings
from workloads.serve.deployer import lifecycle

if TYPE_CHECKING:
    from mlops.local.client import DaemonClient
    from mlops.local.runfile import DaemonInfo

BOOTSTRAP_APPROVER = "mlops local up (bootstrap)"
BOOTSTRAP_DESCRIPTION = (
    "approved automatically by `mlops local up --bootstrap` so the platform serves a first model; "
    "every later version waits for a person (mlops approve <version>)"
)
# Files a platform home always has; `local reset` refuses to delete a directory with neither.
_HOME_MARKERS = ("platform.db", "repo.git")

TRAIN_STATUS = {builds.SUCCEEDED: "Completed", builds.FAILED: "Failed"}


def _nothing(message: str, fraction: float | None) -> None:
    return None


@dataclass
class UpResult:
    base_url: str
    predict_url: str
    pid: int
    messages: list[str] = field(default_factory=list)
    bootstrapped_version: int | None = None
    serving_version: int | None = None
    versions: int = 0
    already_running: bool = False
    """The daemon was up before this `up`: it kept running (with the code it started with)."""
    example_context: str = "5.1, 3.5, 1.4, 0.2"
    """A CSV row the serving version accepts (the first row of its training data)."""

    @property
    def console_url(self) -> str:
        return f"{self.base_url}/"


class LocalBackend:
    name = "local"

    def __init__(
        self, settings: LocalSettings | None = None, *, cwd: Path | None = None, approver: str | None = None
    ) -> None:
        self.settings = settings or LocalSettings.from_env()
        self.cwd = (cwd or Path.cwd()).resolve()
        self._approver = approver
        self._registry: LocalRegistry | None = None

    # --- helpers ----------------------------------------------------------------------------------

    @property
    def registry(self) -> LocalRegistry:
        if self._registry is None:
            self._registry = LocalRegistry(self.settings.db_path, self.settings.models_dir)
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def approver(self) -> str:
        return self._approver or current_approver(self.cwd)

    def _ref(self, ref: str) -> tuple[str, int]:
        group, version = parse_ref(ref, self.settings.group)
        if group != self.settings.group:
            raise PlatformError(
                f"{ref} belongs to model package group {group!r}; this platform's group is "
                f"{self.settings.group!r} (MLOPS_MODEL_PACKAGE_GROUP)"
            )
        return group, version

    def daemon_info(self) -> DaemonInfo | None:
        from mlops.local import daemon

        return daemon.info(self.settings)

    def _client(self) -> DaemonClient:
        from mlops.local.client import DaemonClient

        info = self.daemon_info()
        if info is None:
            raise PlatformError(
                f"the local platform is not running (MLOPS_HOME={self.settings.home}); start it with "
                "`mlops local up`"
            )
        return DaemonClient(info)

    # --- training ---------------------------------------------------------------------------------

    def _start_build(self, data_location: str | None) -> Build:
        """Queue a build of the work tree's HEAD (pushed first) or, outside a work tree, of the branch."""
        s = self.settings
        repo.init_remote(s)
        if data_location and Path(data_location).is_absolute() and not Path(data_location).exists():
            raise PlatformError(f"training data {data_location} does not exist")
        work_tree = repo.work_tree_root(self.cwd)
        with builds.BuildStore(s) as store:
            before = store.max_id()
        if work_tree is not None:
            commit = repo.head_commit(work_tree)
            repo.push_head(work_tree, s)
            if data_location is None:
                with builds.BuildStore(s) as store:
                    # The push updated the branch, so the hook has already queued this commit's build.
                    started = [b for b in store.all() if b.id > before and b.commit == commit]
                if started:
                    return started[-1]
        else:
            tip = repo.branch_tip(s)
            if tip is None:
                raise PlatformError(
                    f"nothing has been pushed to {s.repo_path} yet: run this from your git work tree, "
                    f"or `git push {repo.REMOTE_NAME} {s.source_branch}`"
                )
            commit = tip
        with builds.BuildStore(s) as store:
            queued = store.enqueue(commit, ref=f"refs/heads/{s.source_branch}", data_path=data_location)
        builds.spawn(s, queued.id)
        return queued

    def _train_result(self, build: Build) -> TrainResult:
        model = self.registry.get(build.group, build.model_version) if build.model_version else None
        return TrainResult(
            job_name=f"build-{build.id}",
            status=TRAIN_STATUS.get(build.status, build.status),
            model_version=model,
            metrics=model.metrics if model else {},
            failure_reason=build.failure_reason,
        )

    def train(
        self,
        *,
        data_location: str | None = None,
        instance_type: str | None = None,
        wait: bool = True,
        progress: Progress | None = None,
    ) -> TrainResult:
        if instance_type:
            raise PlatformError(
                "--instance-type is an AWS setting; the local platform trains on this machine (--target aws)"
            )
        report = progress or _nothing
        build = self._start_build(data_location)
        report(
            f"build {build.id} queued for commit {build.commit[:12]} (mlops logs {build.id} --follow)", None
        )
        if not wait:
            return TrainResult(job_name=f"build-{build.id}", status="InProgress", model_version=None)
        return self._train_result(builds.wait(self.settings, build.id, progress=report))

    # --- registry ---------------------------------------------------------------------------------

    def list_models(self) -> list[ModelVersion]:
        """Every version, with its signature, estimator and hyperparameters from its metadata.json."""
        found = []
        for model in self.registry.versions(self.settings.group):
            meta = self.registry.metadata(model.group, model.version)
            hyper = meta.get("hyperparameters")
            found.append(
                replace(
                    model,
                    signature=signature_of_metadata(meta),
                    estimator=meta.get("algorithm") or None,
                    hyperparameters=dict(hyper) if isinstance(hyper, dict) else {},
                )
            )
        return found

    def get_model(self, ref: str) -> ModelVersion:
        return self.registry.get(*self._ref(ref))

    def approve(
        self, ref: str, *, description: str = "", force: bool = False, allow_signature_change: bool = False
    ) -> ModelVersion:
        """Approve as the person; refused up front when the version's input signature breaks the
        serving version's callers, unless allow_signature_change (then recorded with the approval, so
        the deployer deploys it)."""
        group, version = self._ref(ref)
        serving = history.endpoint_view(self.settings).serving
        check = self.registry.signature_check(group, version, serving, allowed=allow_signature_change)
        try:
            lifecycle.require_signature(check, lifecycle.allow_hint(f"approve {version}"), approving=True)
        except lifecycle.LifecycleError as exc:
            raise PlatformError(str(exc)) from None
        return self.registry.set_status(
            group,
            version,
            APPROVED,
            approver=self.approver(),
            description=description,
            force=force,
            allow_signature_change=allow_signature_change,
        )

    def reject(self, ref: str, *, reason: str, force: bool = False) -> ModelVersion:
        if not reason.strip():
            raise PlatformError("a rejection needs a reason (--reason), so the next person knows why")
        group, version = self._ref(ref)
        return self.registry.set_status(
            group, version, REJECTED, approver=self.approver(), description=reason, force=force
        )

    def approval_outlook(self, version: int) -> ApprovalOutlook:
        """What the daemon's deployer will do with an approval of `version` (read before approving)."""
        view = history.endpoint_view(self.settings)
        running = self.daemon_info() is not None
        if not running:
            # A deployment recorded InProgress did not survive the daemon: its next start ends it
            # (Deployer.recover) before it reads the approval, so it is not "being deployed" then.
            view = replace(view, deploying=None)
        check = self.registry.signature_check(self.settings.group, version, view.serving, allowed=False)
        return predict_approval(view, version, running=running, signature=check)

    def endpoint_view(self) -> Any:
        return history.endpoint_view(self.settings)

    # --- history ----------------------------------------------------------------------------------

    def builds(self) -> list[BuildRecord]:
        return history.all_builds(self.settings)

    def build(self, ref: str | None = None) -> BuildRecord:
        return history.build_record(self.get_build(ref))

    def deployments(self) -> list[DeploymentRecord]:
        return history.deployments(self.settings)

    def requests(self, where: RequestFilter) -> list[RequestRecord]:
        return history.requests(self.settings, where)

    def request(self, request_id: str) -> RequestRecord:
        return history.request(self.settings, request_id)

    # --- deployment -------------------------------------------------------------------------------

    def _deploy_target(self, client: DaemonClient, ref: str | None) -> int:
        group = self.settings.group
        if ref is None:
            latest = self.registry.latest_approved(group)
            if latest is None:
                raise PlatformError(
                    "no version is approved yet: `mlops models`, then `mlops approve <version>`"
                )
            return latest.version
        model = self.get_model(ref)
        try:
            lifecycle.require_deployable(model.version, model.status)
        except lifecycle.LifecycleError as exc:
            raise PlatformError(str(exc)) from None
        return model.version

    def deploy(
        self,
        ref: str | None = None,
        *,
        rollback: bool = False,
        wait: bool = True,
        progress: Progress | None = None,
        allow_signature_change: bool = False,
    ) -> DeploymentStatus:
        client = self._client()
        allow = allow_signature_change
        if rollback:
            if ref is not None:
                raise PlatformError("give a version to deploy or --rollback, not both")
            started = client.rollback(allow_signature_change=allow)
        else:
            started = client.deploy(self._deploy_target(client, ref), allow_signature_change=allow)
        if not wait or started.status != DEPLOY_IN_PROGRESS:
            return started
        return self.wait_deployment(started, progress=progress, client=client)

    def wait_deployment(
        self,
        started: DeploymentStatus,
        *,
        progress: Progress | None = None,
        client: DaemonClient | None = None,
        timeout: float = 900.0,
        poll: float = 0.25,
    ) -> DeploymentStatus:
        """Poll until the deployment that began at started.started_at ends; report the traffic it has."""
        client = client or self._client()
        report = progress or _nothing
        deadline = time.monotonic() + timeout
        last: tuple[str, float] | None = None
        while True:
            latest = client.latest_deployment()
            mine = (
                latest is not None
                and latest.target_version == started.target_version
                and latest.started_at == started.started_at
            )
            if latest is not None and mine and latest.status != DEPLOY_IN_PROGRESS:
                share = 1.0 if latest.status == DEPLOY_SUCCEEDED else 0.0
                report(f"v{latest.target_version}: {latest.status}. {latest.message}".strip(), share)
                return latest
            if latest is not None and not mine and latest.started_at > started.started_at:
                # A newer approval took over (newest approved wins); this one will not finish on its own.
                return latest
            endpoint = client.status()
            share = sum(v.weight for v in endpoint.variants if v.model_version == started.target_version)
            state = (endpoint.status, round(share, 4))
            if state != last:
                report(f"v{started.target_version}: {share:.0%} of traffic ({endpoint.status})", share)
                last = state
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"deployment of v{started.target_version} still in progress after {timeout:.0f} s"
                )
            time.sleep(poll)

    def status(self) -> EndpointStatus:
        from mlops.local import state

        info = self.daemon_info()
        if info is not None:
            from mlops.local.client import DaemonClient

            try:
                return DaemonClient(info).status()
            except (PlatformError, OSError):
                pass  # the daemon died since it wrote daemon.json: the database still knows the state
        return state.read_endpoint_status(self.settings)

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._client().predict(payload)
        return result

    # --- builds -----------------------------------------------------------------------------------

    def latest_build(self) -> Build | None:
        with builds.BuildStore(self.settings) as store:
            return store.latest()

    def get_build(self, ref: str | None) -> Build:
        with builds.BuildStore(self.settings) as store:
            if ref is None:
                build = store.latest()
                if build is None:
                    raise PlatformError(
                        f"no builds yet: `git push {repo.REMOTE_NAME} {self.settings.source_branch}` or `mlops train`"
                    )
                return build
            text = ref.removeprefix("build-")
            if not text.isdigit():
                raise PlatformError(f"{ref!r} is not a build id (like 3 or build-3)")
            return store.get(int(text))

    def logs(self, ref: str | None = None, *, follow: bool = False, limit: int = 100) -> Iterator[str]:
        """The build's log (default: the latest build); limit > 0 keeps only the last lines unless following."""
        build = self.get_build(ref)
        lines = builds.follow_log(self.settings, build.id, follow=follow)
        if follow or limit <= 0:
            return lines
        tail: deque[str] = deque(lines, maxlen=limit)
        return iter(tail)

    # --- lifecycle --------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """`mlops local down`: stop the daemon (and with it the model servers); all state is kept and
        the next `mlops local up` serves the same version again."""
        from mlops.local import daemon

        info = daemon.info(self.settings)
        if info is None:
            return []
        if daemon.stop(self.settings):
            return [f"stopped the local platform daemon (pid {info.pid}, {info.base_url})"]
        return []

    def teardown(self) -> list[str]:
        """Delete the endpoint, as on AWS: its model servers stop and nothing serves; the registry,
        builds and request records stay, and the next approval creates the endpoint again. The
        daemon keeps running (`mlops local down` stops it)."""
        from mlops.local import runfile
        from mlops.local.state import ABSENT, StateStore

        if runfile.info(self.settings) is not None:
            return self._client().teardown()
        if not self.settings.db_path.exists():
            return []
        store = StateStore(self.settings.db_path, self.settings.endpoint_name)
        try:
            status, serving = store.endpoint_row()
            if status == ABSENT:
                return []
            store.clear_variants()
            store.set_endpoint(ABSENT, None)
            return [f"endpoint {self.settings.endpoint_name} (was {status}, serving v{serving})"]
        finally:
            store.close()

    def reset(self) -> list[str]:
        """Stop everything the platform runs and delete MLOPS_HOME: registry, models, requests, builds."""
        home = self.settings.home
        if not home.exists():
            return []
        if not any((home / marker).exists() for marker in _HOME_MARKERS):
            raise PlatformError(
                f"refusing to delete {home}: it does not look like a platform home (no {' or '.join(_HOME_MARKERS)})"
            )
        done = self.down()
        if self.settings.db_path.exists():
            with builds.BuildStore(self.settings) as store:
                running = store.unfinished()
                pids = {build.id: store.pid(build.id) for build in running}
            for build in running:
                pid = pids[build.id]
                if pid and pid != os.getpid():
                    try:
                        os.kill(pid, signal.SIGTERM)
                        done.append(f"stopped build {build.id} (pid {pid})")
                    except ProcessLookupError:
                        pass
        self.close()
        shutil.rmtree(home)
        done.append(f"deleted {home}")
        return done

    def _wait_serving(self, version: int, progress: Progress, timeout: float = 180.0) -> EndpointStatus:
        client = self._client()
        deadline = time.monotonic() + timeout
        while True:
            endpoint = client.status()
            dep = endpoint.last_deployment
            if (
                dep is not None
                and dep.target_version == version
                and dep.status
                not in (
                    DEPLOY_IN_PROGRESS,
                    DEPLOY_SUCCEEDED,
                )
            ):
                raise PlatformError(f"deploying v{version} ended {dep.status}: {dep.message}")
            if endpoint.serving_version == version and (dep is None or dep.status != DEPLOY_IN_PROGRESS):
                progress(f"v{version} is serving", 1.0)
                return endpoint
            if time.monotonic() > deadline:
                raise PlatformError(f"v{version} was approved but is not serving after {timeout:.0f} s")
            time.sleep(0.25)

    def _bootstrap_build(self, work_tree: Path | None, progress: Progress) -> Build:
        with builds.BuildStore(self.settings) as store:
            running = store.unfinished()
        if running:
            build = running[-1]  # an interrupted `local up` left it going: wait for it, do not train twice
        elif work_tree is None and repo.branch_tip(self.settings) is None:
            raise PlatformError(
                "`mlops local up --bootstrap` trains the first model from the current git work tree; "
                "run it from a clone of the project"
            )
        else:
            build = self._start_build(None)
        progress(f"training the first model: build {build.id} (mlops logs {build.id} --follow)", None)
        return builds.wait(self.settings, build.id, progress=progress)

    def up(self, *, bootstrap: bool = False, progress: Progress | None = None) -> UpResult:
        from mlops.local import daemon

        report = progress or _nothing
        s = self.settings
        s.home.mkdir(parents=True, exist_ok=True)
        messages = []
        if repo.init_remote(s):
            messages.append(f"created the local git remote {s.repo_path}")
        work_tree = repo.work_tree_root(self.cwd)
        if work_tree is not None:
            note = repo.ensure_remote_in(work_tree, s)
            if note:
                messages.append(note)
        running = daemon.info(s)
        if running is not None:
            # `make up` twice: say so, instead of "starting" and quietly keeping the old process.
            report(f"the platform daemon is already running (pid {running.pid}, {running.base_url})", None)
            messages.append(
                f"the platform was already running (pid {running.pid}); it keeps the code it started "
                "with: `make down && make up` restarts it"
            )
        else:
            report("starting the platform daemon", None)
        info = daemon.start(s)
        result = UpResult(
            base_url=info.base_url,
            predict_url=info.predict_url,
            pid=info.pid,
            messages=messages,
            already_running=running is not None and running.pid == info.pid,
        )
        if bootstrap and not self.registry.versions(s.group):
            build = self._bootstrap_build(work_tree, report)
            if build.status != builds.SUCCEEDED or build.model_version is None:
                raise PlatformError(
                    f"the first build ({build.id}) failed: {build.failure_reason} (mlops logs {build.id})"
                )
            model = self.registry.set_status(
                s.group,
                build.model_version,
                APPROVED,
                approver=BOOTSTRAP_APPROVER,
                description=BOOTSTRAP_DESCRIPTION,
            )
            result.bootstrapped_version = model.version
            report(f"deploying v{model.version}", None)
            self._wait_serving(model.version, report)
        result.versions = len(self.registry.versions(s.group))
        result.serving_version = self.status().serving_version
        result.example_context = history.example_context(s, result.serving_version)
        return result
