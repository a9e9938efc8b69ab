"""The local blue/green deployer: LINEAR traffic shifting with auto-rollback, as SageMaker does it.

It reacts to the registry's event outbox (the local EventBridge) and to explicit deploy requests.
A deployment starts the new (green) variant beside the serving (blue) one, waits for its /ping, then
shifts traffic to it in LINEAR steps of whole instances of the fleet, as SageMaker does on AWS
(lifecycle.linear_shares: trafficStepPercent of MLOPS_INSTANCE_COUNT within 10-50%, so 50% then 100%
for the default two), waiting traffic_wait_seconds at each step while it watches a health check
(/ping) and an error-rate alarm on the green variant's answers in that step.
Either one failing sends all traffic back to blue and stops green: RolledBack, with the reason.
After 100% and termination_wait_seconds, blue drains and stops: Succeeded.

State goes to the database at every change (see state.py), written on a thread of its own
(state.StateWriter) so a held lock or a full disk never stops the API's event loop. The daemon's memory
is the truth while it runs (status is answered from it); the database follows it, with one rule per
kind of write:
- progress (a traffic step, a variant's pid) is best effort: the shift goes on if it cannot be written;
- success is recorded *before* it is acted on (the serving version changes only in the transaction
  that marks the deployment Succeeded); if it cannot be recorded, the deployment rolls back instead;
- a rollback acts first (all traffic to the version the database says serves) and its record is
  retried until it lands; until then the deployment counts as in progress, so nothing else starts.
So after a crash, whatever was written, the version recorded as serving is the one that owned all
traffic, and recovery gives it 100% again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable
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
    VariantStatus,
)
from mlops.local import state as st
from mlops.local.endpoint import Router, Variant, is_serve_process
from mlops.local.registry import LocalRegistry
from mlops.local.settings import LocalSettings
from mlops.local.supervisor import Supervisor
from workloads.serve.deployer import lifecycle

log = logging.getLogger("mlops.local.deployer")

RESTART_MESSAGE = "interrupted by a platform restart"
TEARDOWN_MESSAGE = "endpoint torn down (mlops teardown); its history ends here"
SHUTDOWN_MESSAGE = "interrupted by a platform shutdown"
DRAIN_SECONDS = 10.0
# One slow /ping under load is not a dead variant; two in a row is.
PING_FAILURES_TO_FAIL = 2
# How long an explicit request (deploy, rollback, teardown) waits for the database before it is
# refused with 503, and how long a finished shift waits to be recorded before it rolls back instead.
REQUEST_WRITE_SECONDS = 5.0
OUTCOME_WRITE_SECONDS = 30.0
# How long a rollback during a shutdown may wait for the database (the next start reconciles it).
SHUTDOWN_WRITE_SECONDS = 3.0


class DeploymentConflictError(PlatformError):
    """A deployment is already in progress (the API answers 409)."""


class VersionNotFoundError(PlatformError):
    """The requested version is not in the registry (the API answers 404)."""


class StateUnavailableError(PlatformError):
    """The state database cannot be written right now (the API answers 503); nothing was changed."""


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


Write = Callable[[st.StateStore, sqlite3.Connection], object]


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
        self.state = state  # reads only (on the event loop; WAL readers never wait for a writer)
        self.writer = st.StateWriter(settings.db_path, settings.endpoint_name)
        self.router = router
        self.poll_seconds = poll_seconds
        self.log_dir = settings.home / "logs"
        self.blue: Variant | None = None
        self.green: Variant | None = None
        self._current: int | None = None  # id of the deployment in progress
        self._message: str | None = None  # its message as it is now (the database may lag)
        self._status, self._serving = state.endpoint_row()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # old blue variants being stopped
        self._tearing_down = False
        self._resume: list[int] = []  # versions whose deployment a restart interrupted
        # Deciding and launching a deployment awaits the database: one decision at a time, so an
        # explicit deploy and an approval event can never both start one.
        self._deciding = asyncio.Lock()
        self._alarm = asyncio.Event()
        self._wake = asyncio.Event()
        self.supervisor = Supervisor(
            settings, router, watched_elsewhere=lambda v: v is self.green, on_restart=self._on_restart
        )
        router.on_error = self._on_error

    @property
    def busy(self) -> bool:
        return self._current is not None

    # --- the database side ------------------------------------------------------------------------

    def _variant_rows(self) -> list[st.VariantRow]:
        return [
            st.VariantRow(v.name, v.version, v.pid, v.port, v.weight / 100, v.health)
            for v in self.router.variants
        ]

    def _put_variants(self, rows: list[st.VariantRow]) -> Write:
        def write(store: st.StateStore, conn: sqlite3.Connection) -> None:
            for row in rows:
                store.put_variant(row, conn)

        return write

    async def _note(self, write: Write, what: str) -> None:
        """A best-effort write: progress the deployment does not depend on."""
        try:
            await self.writer.write(write, what=what, give_up_after=self.settings.traffic_wait_seconds)
        except st.StateWriteError as exc:
            log.warning("%s; going on (the outcome is recorded once the database takes writes)", exc)

    async def _record_request(
        self, write: Callable[[st.StateStore, sqlite3.Connection], int], what: str
    ) -> int:
        try:
            return await self.writer.write(write, what=what, give_up_after=REQUEST_WRITE_SECONDS)
        except st.StateWriteError as exc:
            raise StateUnavailableError(f"{exc}; nothing was changed, try again") from None

    async def _on_restart(self, variant: Variant) -> None:
        await self._note(self._put_variants(self._variant_rows()), f"the restart of {variant.name}")

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
        # Nothing serves yet, so these writes may wait for the database (a start that cannot write
        # its state fails with the reason instead of serving on a state it did not record).
        self.state.clear_variants()
        serving = self.state.serving_version()
        interrupted = self.state.in_progress()
        # Their approvals still stand (on AWS SageMaker would carry the update on): once the serving
        # version is back, the same rules as for an approval event decide whether each goes again.
        self._resume = sorted({dep.to_version for dep in interrupted if dep.rollback_of is None})
        for dep in interrupted:
            keeps = f"v{serving} keeps all traffic" if serving is not None else "nothing was serving"
            self.state.update_deployment(
                dep.id, status=DEPLOY_ROLLED_BACK, message=f"{RESTART_MESSAGE}; {keeps}"
            )
            log.warning("deployment %d to v%d %s; %s", dep.id, dep.to_version, RESTART_MESSAGE, keeps)
        self._serving = serving
        if serving is None:
            self._set_status(st.ABSENT)
            self.state.set_endpoint(st.ABSENT, None)
            return
        self._set_status(st.CREATING)
        self.state.set_endpoint(st.CREATING, serving)
        variant = self._spawn(serving)
        self.state.put_variant(self._variant_rows()[0])
        reason = await variant.wait_ready(self.router.session, self.settings.startup_timeout_seconds)
        if reason is not None:
            log.error("serving version v%d did not come back: %s", serving, reason)
            await variant.stop()
            self.router.remove(variant)
            self.state.clear_variants()
            self._set_status(st.FAILED)
            self.state.set_endpoint(st.FAILED, serving)
            return
        self.router.set_weights({variant: 100})
        self.blue = variant
        with self.state.transaction() as conn:
            self._put_variants(self._variant_rows())(self.state, conn)
            self.state.set_endpoint(st.IN_SERVICE, serving, conn)
        self._set_status(st.IN_SERVICE)
        log.info("v%d serves all traffic", serving)

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.supervisor.close()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        for variant in list(self.router.variants):
            await variant.stop()
            self.router.remove(variant)
        with contextlib.suppress(st.StateWriteError):
            await self.writer.write(
                lambda store, conn: store.clear_variants(conn),
                what="the stopped variants",
                give_up_after=SHUTDOWN_WRITE_SECONDS,
            )
        self.writer.close()

    async def teardown(self) -> list[str]:
        """`mlops teardown`: delete the endpoint as the AWS deployer does (its model servers stop, nothing
        serves, the registry stays); the next approval creates it again."""
        async with self._deciding:
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
        status, serving = self._status, self._serving

        def record(store: st.StateStore, conn: sqlite3.Connection) -> int:
            store.clear_variants(conn)
            store.set_endpoint(st.ABSENT, None, conn)
            # The endpoint's history ends here, as an AWS endpoint's tags go with it: view() starts over.
            return store.add_deployment(
                conn,
                from_version=serving,
                to_version=serving or 0,
                status=DEPLOY_SKIPPED,
                message=TEARDOWN_MESSAGE,
            )

        # Recorded first: if the database cannot take it, nothing is stopped and the endpoint serves on.
        await self._record_request(record, "the teardown")
        removed = []
        for variant in list(self.router.variants):
            await variant.stop()
            self.router.remove(variant)
            removed.append(f"model server {variant.name} (pid {variant.pid})")
        self.blue = self.green = None
        self._serving = None
        self._set_status(st.ABSENT)
        if status != st.ABSENT:
            removed.append(f"endpoint {self.settings.endpoint_name} (was {status}, serving v{serving})")
        log.info("endpoint torn down: %s", "; ".join(removed) or "nothing to remove")
        return removed

    # --- the event loop side --------------------------------------------------------------------

    async def run(self) -> None:
        """Consume approval events and supervise the model servers for as long as the daemon runs."""
        supervisor = asyncio.get_running_loop().create_task(self.supervisor.run())
        try:
            while True:
                if not self.busy and not self._tearing_down:
                    try:
                        await self.consume_events()
                    except st.StateWriteError as exc:
                        log.debug("approval events wait for the database: %s", exc)
                    except Exception:
                        log.exception("reading approval events failed; retrying")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor

    def view(self) -> lifecycle.EndpointView:
        """The endpoint as the shared lifecycle rules see it (workloads/serve/deployer/lifecycle.py),
        replayed from the deployment history; the serving version is the one in memory."""
        view = replay(self.state.deployments())
        current = self.state.deployment(self._current) if self._current is not None else None
        return replace(
            view,
            serving=self._serving,
            deploying=current.to_version if current is not None else None,
        )

    async def consume_events(self) -> DeploymentStatus | None:
        """Decide on the approvals read from the outbox with the shared lifecycle rules.

        The cursor moves past every event read, in the same transaction that records the decision,
        so an approval is acted on exactly once even across a crash. If that transaction cannot be
        written, nothing happened: the same events are read again at the next poll.
        """
        async with self._deciding:
            if self.busy or self._tearing_down:
                return None
            events = self.registry.events_after(self.state.cursor())
            resume, self._resume = self._resume, []
            if not events and not resume:
                return None
            group = self.settings.group
            approved = sorted(
                {e["version"] for e in events if e["grp"] == group and e["status"] == APPROVED} | set(resume),
            )
            # A version rejected again (approve --force / reject --force) since its event does not deploy.
            approved = [v for v in approved if self.registry.get(group, v).status == APPROVED]
            view = self.view()
            serving = view.serving
            # Each against the serving version, with the allowance recorded with its approval.
            checks = {v: self.registry.signature_check(group, v, serving) for v in approved}
            target, skipped = lifecycle.on_approvals(view, approved, checks)
            last_event = events[-1]["id"] if events else self.state.cursor()
            message = (
                "resumed after a platform restart"
                if target is not None and target.version in resume
                else "starting"
            )
            note = checks[target.version].note() if target is not None else ""
            message = f"{message}; {note}" if note else message

            def record(store: st.StateStore, conn: sqlite3.Connection) -> int | None:
                for decision in skipped:
                    store.add_deployment(
                        conn,
                        from_version=serving,
                        to_version=decision.version,
                        status=DEPLOY_SKIPPED,
                        message=decision.reason,
                    )
                dep_id = None
                if target is not None:
                    dep_id = store.add_deployment(
                        conn,
                        from_version=serving,
                        to_version=target.version,
                        status=DEPLOY_IN_PROGRESS,
                        message=message,
                        planned_steps=self.settings.planned_steps(serving),
                    )
                store.set_cursor(last_event, conn)
                return dep_id

            dep_id = await self.writer.write(
                record, what="the approval decisions", give_up_after=REQUEST_WRITE_SECONDS
            )
            for decision in skipped:
                if decision.action == lifecycle.REFUSE:
                    log.warning("approval of v%d refused: %s", decision.version, decision.reason)
                else:
                    log.info("approval of v%d skipped: %s", decision.version, decision.reason)
            if dep_id is None or target is None:
                return None
            self._launch(dep_id, target.version, message)
            return self.state.deployment(dep_id).as_status()

    async def request_rollback(self, *, allow_signature_change: bool = False) -> DeploymentStatus:
        """`mlops deploy --rollback`: to the version that served before the serving one (lifecycle rules)."""
        approved = {m.version for m in self.registry.versions(self.settings.group) if m.status == APPROVED}
        view = self.view()
        try:
            version = lifecycle.rollback_target(view, approved)
        except lifecycle.LifecycleError as exc:
            raise PlatformError(str(exc)) from None
        return await self.request_deploy(
            version,
            rollback_of=view.serving,
            message=f"rollback from v{view.serving} to v{version}",
            allow_signature_change=allow_signature_change,
        )

    async def request_deploy(
        self,
        version: int,
        *,
        rollback_of: int | None = None,
        message: str = "starting",
        allow_signature_change: bool = False,
    ) -> DeploymentStatus:
        """An explicit deploy (or rollback to an older version); answers the deployment it started.

        A breaking signature change needs the person's allow_signature_change now; the allowance
        recorded with the version's approval covers that approval's own deployment only."""
        async with self._deciding:
            if self._tearing_down:
                raise DeploymentConflictError("the endpoint is being torn down; deploy again once it is gone")
            try:
                model = self.registry.get(self.settings.group, version)
            except PlatformError as exc:
                raise VersionNotFoundError(str(exc)) from exc
            check = self.registry.signature_check(
                self.settings.group,
                version,
                self._serving,
                # Only the person's flag: an allowance recorded with the approval was for that
                # approval's deployment, not for every later deploy or rollback of the version.
                allowed=allow_signature_change,
            )
            hint = "deploy --rollback" if rollback_of is not None else f"deploy {version}"
            try:
                decision = lifecycle.on_deploy_request(
                    self.view(), version, model.status, signature=check, hint=lifecycle.allow_hint(hint)
                )
            except lifecycle.EndpointBusyError:
                assert self._current is not None
                dep = self.state.deployment(self._current)
                raise DeploymentConflictError(
                    f"deployment {dep.id} of v{dep.to_version} is in progress; wait for it to finish"
                ) from None
            except lifecycle.LifecycleError as exc:
                raise PlatformError(str(exc)) from None
            serving = self._serving
            note = check.note()
            message = f"{message}; {note}" if note and decision.action == lifecycle.DEPLOY else message
            if decision.action == lifecycle.SKIP:

                def record(store: st.StateStore, conn: sqlite3.Connection) -> int:
                    return store.add_deployment(
                        conn,
                        from_version=serving,
                        to_version=version,
                        status=DEPLOY_SKIPPED,
                        message=decision.reason,
                    )

            else:

                def record(store: st.StateStore, conn: sqlite3.Connection) -> int:
                    return store.add_deployment(
                        conn,
                        from_version=serving,
                        to_version=version,
                        status=DEPLOY_IN_PROGRESS,
                        message=message,
                        planned_steps=self.settings.planned_steps(serving),
                        rollback_of=rollback_of,
                    )

            dep_id = await self._record_request(record, f"the deployment of v{version}")
            if decision.action == lifecycle.DEPLOY:
                self._launch(dep_id, version, message)
            return self.state.deployment(dep_id).as_status()

    def status(self) -> EndpointStatus:
        """The endpoint as the daemon runs it (memory), with the deployment history from the database."""
        latest = self.state.latest_deployment()
        last = latest.as_status() if latest is not None else None
        notes: list[str] = []
        if self.writer.failing is not None:
            notes.append(f"the platform database does not take writes ({self.writer.failing}); retrying")
        if last is not None and latest is not None and latest.id == self._current and self._message:
            last = replace(last, status=DEPLOY_IN_PROGRESS, finished_at=None, message=self._message)
        variants = [
            VariantStatus(
                name=v.name,
                model_version=v.version,
                weight=v.weight / 100,
                instances=self.settings.instances_at(v.weight / 100),
                health=v.health,
                restarts=v.restarts,
                last_restart_reason=v.last_restart_reason,
            )
            for v in sorted(self.router.variants, key=lambda v: v.version)
        ]
        notes.extend(d.message for d in self.state.refusals())  # approvals that wait for a person
        queued = self._queued() if self._current is not None else None
        if queued is not None:
            notes.append(
                f"version {queued} is approved and waits for the deployment in progress; it goes next"
            )
        for v in variants:
            if v.health != "Healthy" and v.weight > 0:
                notes.append(f"{v.name} holds {v.weight:.0%} of traffic but is {v.health}")
        return EndpointStatus(
            name=self.settings.endpoint_name,
            status=self._status,
            variants=variants,
            serving_version=self._serving,
            last_deployment=last,
            queued_version=queued,
            notes=notes,
        )

    def _queued(self) -> int | None:
        """The approval that will be deployed once the running deployment ends (the same rules decide)."""
        group = self.settings.group
        events = self.registry.events_after(self.state.cursor())
        approved = {e["version"] for e in events if e["grp"] == group and e["status"] == APPROVED}
        if not approved:
            return None
        target, _ = lifecycle.on_approvals(self.view(), approved)
        return target.version if target is not None and target.action == lifecycle.QUEUE else None

    def _set_status(self, status: str) -> None:
        self._status = status

    # --- one deployment -------------------------------------------------------------------------

    def _launch(self, dep_id: int, version: int, message: str) -> None:
        self._current = dep_id
        self._message = message
        self._set_status(st.CREATING if self.blue is None else st.UPDATING)
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
        return variant

    def _on_error(self, variant: Variant) -> None:
        if variant is self.green:
            self._alarm.set()
        if not variant.alive():
            self.supervisor.nudge()

    def _alarm_reason(self, green: Variant, blue: Variant | None = None) -> str | None:
        requests, errors = green.window_requests, green.window_errors
        minimum = self.settings.alarm_min_requests
        if requests >= minimum and errors / requests > self.settings.alarm_error_rate:
            return (
                f"error-rate alarm: v{green.version} failed {errors} of {requests} requests at {green.weight}% "
                f"of traffic (threshold {self.settings.alarm_error_rate:.0%})"
            )
        # The 4xx comparison: green's client-error rate against blue's over the same window (both
        # windows restart at each traffic step), i.e. on the same callers' traffic split by weight. A
        # version that turns answers into 400s (e.g. it expects other features) breaches it; callers'
        # own bad requests are refused by both alike and do not. Needs both to have answered enough.
        if blue is None or requests < minimum or blue.window_requests < minimum:
            return None
        green_rate = green.window_client_errors / requests
        blue_rate = blue.window_client_errors / blue.window_requests
        margin = self.settings.alarm_4xx_margin
        if green_rate - blue_rate > margin:
            return (
                f"4xx comparison alarm: v{green.version} answered {green.window_client_errors} of {requests} "
                f"requests with a 4xx ({green_rate:.0%}) against v{blue.version}'s "
                f"{blue.window_client_errors} of {blue.window_requests} ({blue_rate:.0%}) on the same "
                f"traffic, at {green.weight}% (margin {margin:.0%})"
            )
        return None

    async def _watch(self, green: Variant, seconds: float, blue: Variant | None = None) -> str | None:
        """Wait `seconds` watching green (against blue, while both take traffic); the reason to roll
        back, or None when it stayed healthy."""
        loop = asyncio.get_running_loop()
        interval = self.settings.health_interval_seconds
        deadline = loop.time() + seconds
        next_ping = loop.time() + interval
        failures = 0
        while True:
            reason = self._alarm_reason(green, blue)
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
            status, serving = self._status, self._serving
            await self._note(
                lambda store, conn: store.set_endpoint(status, serving, conn), "the endpoint's status"
            )
            green = self._spawn(version)
            self.green = green
            await self._note(self._put_variants(self._variant_rows()), f"the new variant {green.name}")
            reason = await green.wait_ready(self.router.session, self.settings.startup_timeout_seconds)
            if reason is not None:
                await self._roll_back(dep_id, blue, green, reason)
                return
            if blue is None:
                await self._succeed(dep_id, green, None)
                succeeded = True
                return
            # LINEAR in whole instances of the fleet: the steps the AWS deployer has SageMaker take.
            for fraction in self.settings.linear_shares():
                share = round(fraction * 100)
                self.router.set_weights({blue: 100 - share, green: share})
                message = f"shifting: v{green.version} {share}%, v{blue.version} {100 - share}%"
                self._message = message
                rows = self._variant_rows()

                def progress(
                    store: st.StateStore,
                    conn: sqlite3.Connection,
                    m: str = message,
                    w: float = share / 100,
                    r: list[st.VariantRow] = rows,
                ) -> None:
                    self._put_variants(r)(store, conn)
                    store.update_deployment(dep_id, message=m, green_weight=w, conn=conn)

                log.info("deployment %d %s", dep_id, message)
                await self._note(progress, f"deployment {dep_id}'s traffic step")
                reason = await self._watch(green, self.settings.traffic_wait_seconds, blue)
                if reason is not None:
                    await self._roll_back(dep_id, blue, green, reason)
                    return
            reason = await self._watch(green, self.settings.termination_wait_seconds)
            if reason is not None:
                await self._roll_back(dep_id, blue, green, reason)
                return
            await blue.drain(DRAIN_SECONDS)
            await self._succeed(dep_id, green, blue)
            succeeded = True
            # Stopping the drained blue is cleanup, not part of the deployment: the next one may start.
            retire = asyncio.get_running_loop().create_task(blue.stop())
            self._retiring.add(retire)
            retire.add_done_callback(self._retiring.discard)
        except asyncio.CancelledError:
            if not succeeded:
                await self._roll_back(
                    dep_id, blue, green, SHUTDOWN_MESSAGE, give_up_after=SHUTDOWN_WRITE_SECONDS
                )
            raise
        except st.StateWriteError as exc:
            log.error("deployment %d: %s", dep_id, exc)
            if not succeeded:
                await self._roll_back(dep_id, blue, green, f"{exc}; rolled back rather than serve unrecorded")
        except Exception as exc:
            log.exception("deployment %d failed", dep_id)
            if not succeeded:
                await self._roll_back(dep_id, blue, green, f"deployment failed: {exc}")
        finally:
            self._current = None
            self._message = None
            self._task = None
            self.green = None
            self._wake.set()

    async def _succeed(self, dep_id: int, green: Variant, blue: Variant | None) -> None:
        """Record the success, then act on it: green owns the traffic only once that is on disk."""
        green.weight = 100
        if blue is not None:
            blue.weight = 0
        rows = [row for row in self._variant_rows() if blue is None or row.name != blue.name]

        def record(store: st.StateStore, conn: sqlite3.Connection) -> None:
            if blue is not None:
                store.delete_variant(blue.name, conn)
            self._put_variants(rows)(store, conn)
            store.update_deployment(
                dep_id,
                status=DEPLOY_SUCCEEDED,
                message=f"v{green.version} serves all traffic",
                green_weight=1.0,
                conn=conn,
            )
            store.set_endpoint(st.IN_SERVICE, green.version, conn)

        await self.writer.write(
            record, what=f"the success of deployment {dep_id}", give_up_after=OUTCOME_WRITE_SECONDS
        )
        self.router.set_weights({green: 100, **({blue: 0} if blue is not None else {})})
        if blue is not None:
            self.router.remove(blue)
        self.blue = green
        self._serving = green.version
        self._set_status(st.IN_SERVICE)
        log.info("deployment %d succeeded: v%d serves all traffic", dep_id, green.version)

    async def _roll_back(
        self,
        dep_id: int,
        blue: Variant | None,
        green: Variant | None,
        reason: str,
        *,
        give_up_after: float | None = None,
    ) -> None:
        """Act first (all traffic back to the recorded serving version, green stopped), then record it,
        retrying until the record lands (give_up_after=None): until then this deployment is in progress,
        so no other can start on an endpoint whose database says something else."""
        log.warning("deployment %d rolling back: %s", dep_id, reason)
        weights: dict[Variant, int] = {}
        if blue is not None:
            weights[blue] = 100
        if green is not None:
            weights[green] = 0
        self.router.set_weights(weights)
        self._set_status(st.ROLLING_BACK)
        self._message = f"rolling back: {reason}"
        rows = self._variant_rows()
        serving = self._serving

        def rolling(store: st.StateStore, conn: sqlite3.Connection, m: str = self._message) -> None:
            self._put_variants(rows)(store, conn)
            # green_weight stays the share the shift reached: the history says how far it got.
            store.update_deployment(dep_id, message=m, conn=conn)
            store.set_endpoint(st.ROLLING_BACK, serving, conn)

        if give_up_after is None:
            await self._note(rolling, f"deployment {dep_id}'s rollback")
        if green is not None:
            await green.drain(DRAIN_SECONDS)
            await green.stop()
            self.router.remove(green)
        kept = blue.version if blue is not None else None
        outcome = f"rolled back, v{kept} keeps all traffic" if kept is not None else "nothing deployed"
        final = st.IN_SERVICE if blue is not None else st.FAILED
        self._set_status(final)
        self._message = f"{reason}; {outcome}"

        def record(store: st.StateStore, conn: sqlite3.Connection, m: str = self._message) -> None:
            if green is not None:
                store.delete_variant(green.name, conn)
            store.update_deployment(dep_id, status=DEPLOY_ROLLED_BACK, message=m, conn=conn)
            store.set_endpoint(final, kept, conn)

        try:
            await self.writer.write(
                record, what=f"the rollback of deployment {dep_id}", give_up_after=give_up_after
            )
        except st.StateWriteError as exc:
            log.error("%s; the next start reconciles it", exc)
        log.warning("deployment %d %s: %s", dep_id, outcome, reason)
