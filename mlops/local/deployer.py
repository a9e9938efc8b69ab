"""The local blue/green deployer: LINEAR traffic shifting with auto-rollback, as SageMaker does it.

It reacts to the registry's event outbox (the local EventBridge) and to explicit deploy requests.
A deployment starts the new (green) variant beside the serving (blue) one, waits for its /ping, then
gives it step%, 2*step%, ... 100% of traffic, waiting traffic_wait_seconds at each step while it
watches a health check (/ping) and an error-rate alarm on the green variant's answers in that step.
Either one failing sends all traffic back to blue and stops green: RolledBack, with the reason.
After 100% and termination_wait_seconds, blue drains and stops: Succeeded.

State goes to the database at every change (see state.py). The serving version changes only in the
transaction that marks a deployment Succeeded, so after a crash the version recorded as serving is
the one that owned all traffic, and recovery gives it 100% again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from mlops.backend import (
    APPROVED,
    DEPLOY_FAILED,
    DEPLOY_IN_PROGRESS,
    DEPLOY_ROLLED_BACK,
    DEPLOY_SKIPPED,
    DEPLOY_SUCCEEDED,
    DeploymentStatus,
    EndpointStatus,
    PlatformError,
)
from mlops.local import state as st
from mlops.local.endpoint import Router, Variant, is_serve_process
from mlops.local.registry import LocalRegistry
from mlops.local.settings import LocalSettings
from workloads.serve.deployer import lifecycle

log = logging.getLogger("mlops.local.deployer")

RESTART_MESSAGE = "interrupted by a platform restart"
TEARDOWN_MESSAGE = "endpoint torn down (mlops teardown); its history ends here"
SHUTDOWN_MESSAGE = "interrupted by a platform shutdown"
DRAIN_SECONDS = 10.0
# One slow /ping under load is not a dead variant; two in a row is.
PING_FAILURES_TO_FAIL = 2


class DeploymentConflictError(PlatformError):
    """A deployment is already in progress (the API answers 409)."""


class VersionNotFoundError(PlatformError):
    """The requested version is not in the registry (the API answers 404)."""


def replay(deployments: list[st.DeploymentRow]) -> lifecycle.EndpointView:
    """The served and failed histories of the endpoint from its deployment rows, oldest first."""
    view = lifecycle.EndpointView()
    for dep in deployments:
        if dep.status == DEPLOY_SKIPPED and dep.message == TEARDOWN_MESSAGE:
            view = lifecycle.EndpointView()  # a torn-down endpoint's history goes with it, as on AWS
        elif dep.status == DEPLOY_SUCCEEDED:
            view = lifecycle.after_outcome(view, dep.to_version, True, rolled_back_from=dep.rollback_of)
        elif dep.status in (DEPLOY_ROLLED_BACK, DEPLOY_FAILED) and not dep.message.startswith(
            (RESTART_MESSAGE, SHUTDOWN_MESSAGE)
        ):
            # A deployment a restart or shutdown interrupted says nothing against its version.
            view = lifecycle.after_outcome(view, dep.to_version, False)
    return view


class Deployer:
    def __init__(
        self,
        settings: LocalSettings,
        registry: LocalRegistry,
        state: st.StateStore,
        router: Router,
        *,
        poll_seconds: float = 0.2,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.state = state
        self.router = router
        self.poll_seconds = poll_seconds
        self.log_dir = settings.home / "logs"
        self.blue: Variant | None = None
        self.green: Variant | None = None
        self._current: int | None = None  # id of the deployment in progress
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # old blue variants being stopped
        self._tearing_down = False
        self._alarm = asyncio.Event()
        self._wake = asyncio.Event()
        router.on_error = self._on_error

    @property
    def busy(self) -> bool:
        return self._current is not None

    # --- start-up -------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Bring the endpoint back to the state recorded before the daemon last stopped (or crashed)."""
        leftovers = [row.pid for row in self.state.variants() if row.pid and is_serve_process(row.pid)]
        for pid in leftovers:
            log.warning("killing variant process %d left by a previous run", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while any(is_serve_process(pid) for pid in leftovers) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.state.clear_variants()
        serving = self.state.serving_version()
        for dep in self.state.in_progress():
            keeps = f"v{serving} keeps all traffic" if serving is not None else "nothing was serving"
            self.state.update_deployment(
                dep.id, status=DEPLOY_ROLLED_BACK, message=f"{RESTART_MESSAGE}; {keeps}", green_weight=0
            )
            log.warning("deployment %d to v%d %s; %s", dep.id, dep.to_version, RESTART_MESSAGE, keeps)
        if serving is None:
            self.state.set_endpoint(st.ABSENT, None)
            return
        self.state.set_endpoint(st.CREATING, serving)
        variant = self._spawn(serving)
        reason = await variant.wait_ready(self.router.session, self.settings.startup_timeout_seconds)
        if reason is not None:
            log.error("serving version v%d did not come back: %s", serving, reason)
            await variant.stop()
            self.router.remove(variant)
            self.state.clear_variants()
            self.state.set_endpoint(st.FAILED, serving)
            return
        self.router.set_weights({variant: 100})
        self.blue = variant
        with self.state.transaction() as conn:
            self._persist_variants(conn)
            self.state.set_endpoint(st.IN_SERVICE, serving, conn)
        log.info("v%d serves all traffic", serving)

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        for variant in list(self.router.variants):
            await variant.stop()
            self.router.remove(variant)
        self.state.clear_variants()

    async def teardown(self) -> list[str]:
        """`mlops teardown`: delete the endpoint as the AWS deployer does (its model servers stop, nothing
        serves, the registry stays); the next approval creates it again."""
        if self._current is not None:
            dep = self.state.deployment(self._current)
            raise DeploymentConflictError(
                f"deployment {dep.id} of v{dep.to_version} is in progress; wait for it to finish"
            )
        # No deployment may start while the endpoint goes (run() and request_deploy check this).
        self._tearing_down = True
        try:
            return await self._tear_down()
        finally:
            self._tearing_down = False

    async def _tear_down(self) -> list[str]:
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        removed = []
        for variant in list(self.router.variants):
            await variant.stop()
            self.router.remove(variant)
            removed.append(f"model server {variant.name} (pid {variant.pid})")
        self.blue = self.green = None
        status, serving = self.state.endpoint_row()
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM endpoint_variants WHERE endpoint=?", (self.settings.endpoint_name,))
            self.state.set_endpoint(st.ABSENT, None, conn)
            # The endpoint's history ends here, as an AWS endpoint's tags go with it: view() starts over.
            self.state.add_deployment(
                conn,
                from_version=serving,
                to_version=serving or 0,
                status=DEPLOY_SKIPPED,
                message=TEARDOWN_MESSAGE,
            )
        if status != st.ABSENT:
            removed.append(f"endpoint {self.settings.endpoint_name} (was {status}, serving v{serving})")
        log.info("endpoint torn down: %s", "; ".join(removed) or "nothing to remove")
        return removed

    # --- the event loop side --------------------------------------------------------------------

    async def run(self) -> None:
        """Consume approval events for as long as the daemon runs."""
        while True:
            if not self.busy and not self._tearing_down:
                try:
                    self.consume_events()
                except Exception:
                    log.exception("reading approval events failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    def view(self) -> lifecycle.EndpointView:
        """The endpoint as the shared lifecycle rules see it (workloads/serve/deployer/lifecycle.py),
        replayed from the deployment history; the serving version is the recorded one."""
        view = replay(self.state.deployments())
        current = self.state.deployment(self._current) if self._current is not None else None
        return replace(
            view,
            serving=self.state.serving_version(),
            deploying=current.to_version if current is not None else None,
        )

    def consume_events(self) -> DeploymentStatus | None:
        """Decide on the approvals read from the outbox with the shared lifecycle rules.

        The cursor moves past every event read, in the same transaction that records the decision,
        so an approval is acted on exactly once even across a crash.
        """
        events = self.registry.events_after(self.state.cursor())
        if not events:
            return None
        group = self.settings.group
        approved = sorted(
            {e["version"] for e in events if e["grp"] == group and e["status"] == APPROVED},
        )
        # A version rejected again (approve --force / reject --force) since its event does not deploy.
        approved = [v for v in approved if self.registry.get(group, v).status == APPROVED]
        view = self.view()
        serving = view.serving
        target, skipped = lifecycle.on_approvals(view, approved)
        with self.state.transaction() as conn:
            for decision in skipped:
                self.state.add_deployment(
                    conn,
                    from_version=serving,
                    to_version=decision.version,
                    status=DEPLOY_SKIPPED,
                    message=decision.reason,
                )
                log.info("approval of v%d skipped: %s", decision.version, decision.reason)
            dep_id = None
            if target is not None:
                dep_id = self.state.add_deployment(
                    conn,
                    from_version=serving,
                    to_version=target.version,
                    status=DEPLOY_IN_PROGRESS,
                    message="starting",
                )
            self.state.set_cursor(events[-1]["id"], conn)
        if dep_id is None or target is None:
            return None
        self._launch(dep_id, target.version)
        return self.state.deployment(dep_id).as_status()

    def request_rollback(self) -> DeploymentStatus:
        """`mlops deploy --rollback`: to the version that served before the serving one (lifecycle rules)."""
        approved = {m.version for m in self.registry.versions(self.settings.group) if m.status == APPROVED}
        view = self.view()
        try:
            version = lifecycle.rollback_target(view, approved)
        except lifecycle.LifecycleError as exc:
            raise PlatformError(str(exc)) from None
        return self.request_deploy(
            version, rollback_of=view.serving, message=f"rollback from v{view.serving} to v{version}"
        )

    def request_deploy(
        self, version: int, *, rollback_of: int | None = None, message: str = "starting"
    ) -> DeploymentStatus:
        """An explicit deploy (or rollback to an older version); answers the deployment it started."""
        if self._tearing_down:
            raise DeploymentConflictError("the endpoint is being torn down; deploy again once it is gone")
        if self._current is not None:
            dep = self.state.deployment(self._current)
            raise DeploymentConflictError(
                f"deployment {dep.id} of v{dep.to_version} is in progress; wait for it to finish"
            )
        try:
            model = self.registry.get(self.settings.group, version)
        except PlatformError as exc:
            raise VersionNotFoundError(str(exc)) from exc
        if model.status != APPROVED:
            raise PlatformError(
                f"version {version} is {model.status}; only an Approved version can be deployed"
            )
        serving = self.state.serving_version()
        with self.state.transaction() as conn:
            if version == serving:
                dep_id = self.state.add_deployment(
                    conn,
                    from_version=serving,
                    to_version=version,
                    status=DEPLOY_SKIPPED,
                    message=f"v{version} already serves all traffic",
                )
            else:
                dep_id = self.state.add_deployment(
                    conn,
                    from_version=serving,
                    to_version=version,
                    status=DEPLOY_IN_PROGRESS,
                    message=message,
                    rollback_of=rollback_of,
                )
        if version != serving:
            self._launch(dep_id, version)
        return self.state.deployment(dep_id).as_status()

    def status(self) -> EndpointStatus:
        return self.state.endpoint_status(running=True)

    # --- one deployment -------------------------------------------------------------------------

    def _launch(self, dep_id: int, version: int) -> None:
        self._current = dep_id
        self.state.set_endpoint_status(st.CREATING if self.blue is None else st.UPDATING)
        if self.blue is None:
            log.info("deployment %d started: v%d (first version on this endpoint)", dep_id, version)
        else:
            log.info("deployment %d started: v%d -> v%d", dep_id, self.blue.version, version)
        self._task = asyncio.get_running_loop().create_task(self._deploy(dep_id, version))

    def _spawn(self, version: int) -> Variant:
        model_dir: Path = self.registry.artifact_dir(self.settings.group, version)
        code_root = self.registry.image_dir(self.settings.group, version)
        variant = Variant.spawn(version, model_dir, self.log_dir, code_root)
        self.router.add(variant)
        self._persist_variants()
        return variant

    def _persist_variants(self, conn: sqlite3.Connection | None = None) -> None:
        for v in self.router.variants:
            self.state.put_variant(
                st.VariantRow(v.name, v.version, v.pid, v.port, v.weight / 100, v.health), conn=conn
            )

    def _on_error(self, variant: Variant) -> None:
        if variant is self.green:
            self._alarm.set()

    def _alarm_reason(self, green: Variant) -> str | None:
        requests, errors = green.window_requests, green.window_errors
        if (
            requests >= self.settings.alarm_min_requests
            and errors / requests > self.settings.alarm_error_rate
        ):
            return (
                f"error-rate alarm: v{green.version} failed {errors} of {requests} requests at {green.weight}% "
                f"of traffic (threshold {self.settings.alarm_error_rate:.0%})"
            )
        return None

    async def _watch(self, green: Variant, seconds: float) -> str | None:
        """Wait `seconds` watching green; the reason to roll back, or None when it stayed healthy."""
        loop = asyncio.get_running_loop()
        interval = self.settings.health_interval_seconds
        deadline = loop.time() + seconds
        next_ping = loop.time() + interval
        failures = 0
        while True:
            reason = self._alarm_reason(green)
            if reason is not None:
                return reason
            if not green.alive():
                return f"health check: v{green.version} exited with code {green.proc.returncode}"
            now = loop.time()
            if now >= deadline:
                return None
            if now >= next_ping:
                failures = (
                    0 if await green.ping(self.router.session, timeout=max(1.0, interval)) else failures + 1
                )
                if failures >= PING_FAILURES_TO_FAIL:
                    green.health = "Unhealthy"
                    return f"health check: v{green.version} /ping failed {failures} times in a row"
                next_ping = loop.time() + interval
            self._alarm.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._alarm.wait(), max(0.0, min(next_ping, deadline) - loop.time()))

    async def _deploy(self, dep_id: int, version: int) -> None:
        blue = self.blue
        green: Variant | None = None
        succeeded = False  # past this point green serves: nothing may roll the deployment back
        try:
            green = self._spawn(version)
            self.green = green
            reason = await green.wait_ready(self.router.session, self.settings.startup_timeout_seconds)
            if reason is not None:
                await self._roll_back(dep_id, blue, green, reason)
                return
            if blue is None:
                self.router.set_weights({green: 100})
                self._succeed(dep_id, green, None)
                return
            step = self.settings.traffic_step_percent
            share = 0
            while share < 100:
                share = min(100, share + step)
                self.router.set_weights({blue: 100 - share, green: share})
                message = f"shifting: v{green.version} {share}%, v{blue.version} {100 - share}%"
                with self.state.transaction() as conn:
                    self._persist_variants(conn)
                    self.state.update_deployment(dep_id, message=message, green_weight=share / 100, conn=conn)
                log.info("deployment %d %s", dep_id, message)
                reason = await self._watch(green, self.settings.traffic_wait_seconds)
                if reason is not None:
                    await self._roll_back(dep_id, blue, green, reason)
                    return
            reason = await self._watch(green, self.settings.termination_wait_seconds)
            if reason is not None:
                await self._roll_back(dep_id, blue, green, reason)
                return
            await blue.drain(DRAIN_SECONDS)
            self._succeed(dep_id, green, blue)
            succeeded = True
            # Stopping the drained blue is cleanup, not part of the deployment: the next one may start.
            retire = asyncio.get_running_loop().create_task(blue.stop())
            self._retiring.add(retire)
            retire.add_done_callback(self._retiring.discard)
        except asyncio.CancelledError:
            if not succeeded:
                await self._roll_back(dep_id, blue, green, SHUTDOWN_MESSAGE)
            raise
        except Exception as exc:
            log.exception("deployment %d failed", dep_id)
            if not succeeded:
                await self._roll_back(dep_id, blue, green, f"deployment failed: {exc}")
        finally:
            self._current = None
            self._task = None
            self.green = None
            self._wake.set()

    def _succeed(self, dep_id: int, green: Variant, blue: Variant | None) -> None:
        if blue is not None:
            self.router.remove(blue)
        self.blue = green
        with self.state.transaction() as conn:
            if blue is not None:
                self.state.delete_variant(blue.name, conn)
            self._persist_variants(conn)
            self.state.update_deployment(
                dep_id,
                status=DEPLOY_SUCCEEDED,
                message=f"v{green.version} serves all traffic",
                green_weight=1.0,
                conn=conn,
            )
            self.state.set_endpoint(st.IN_SERVICE, green.version, conn)
        log.info("deployment %d succeeded: v%d serves all traffic", dep_id, green.version)

    async def _roll_back(self, dep_id: int, blue: Variant | None, green: Variant | None, reason: str) -> None:
        log.warning("deployment %d rolling back: %s", dep_id, reason)
        weights: dict[Variant, int] = {}
        if blue is not None:
            weights[blue] = 100
        if green is not None:
            weights[green] = 0
        self.router.set_weights(weights)
        with self.state.transaction() as conn:
            self._persist_variants(conn)
            self.state.update_deployment(dep_id, message=f"rolling back: {reason}", green_weight=0, conn=conn)
            self.state.set_endpoint(st.ROLLING_BACK, self.state.serving_version(), conn)
        if green is not None:
            await green.drain(DRAIN_SECONDS)
            await green.stop()
            self.router.remove(green)
        serving = blue.version if blue is not None else None
        outcome = f"rolled back, v{serving} keeps all traffic" if serving is not None else "nothing deployed"
        with self.state.transaction() as conn:
            if green is not None:
                self.state.delete_variant(green.name, conn)
            self.state.update_deployment(
                dep_id, status=DEPLOY_ROLLED_BACK, message=f"{reason}; {outcome}", green_weight=0, conn=conn
            )
            self.state.set_endpoint(st.IN_SERVICE if blue is not None else st.FAILED, serving, conn)
        log.warning("deployment %d %s: %s", dep_id, outcome, reason)
