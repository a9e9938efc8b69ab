"""The endpoint's supervisor: a model server that dies or hangs outside a deployment is restarted.

SageMaker replaces an instance that fails its health check; locally the same job falls to this loop.
Every health interval it looks at each variant that holds its place on the endpoint (not the green
one a deployment is watching, not one being stopped): a process that has exited, or a /ping that
failed PING_FAILURES_TO_RESTART times in a row, means a restart of the same version in place (same
Variant object, so its weight and every reference to it stay). Until the new process answers /ping,
the router sends its share to another ready variant where one exists (endpoint.Router). A server that
keeps failing is retried with a growing pause, so a crash loop does not eat the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from mlops.local.endpoint import Router, Variant
from mlops.local.settings import LocalSettings

log = logging.getLogger("mlops.local.supervisor")

# One slow /ping on a busy machine is not a hung server; three in a row (with a 2 s timeout each) is.
PING_FAILURES_TO_RESTART = 3
PING_TIMEOUT_SECONDS = 2.0
_MAX_BACKOFF_SECONDS = 30.0


class Supervisor:
    def __init__(
        self,
        settings: LocalSettings,
        router: Router,
        *,
        watched_elsewhere: Callable[[Variant], bool],
        on_restart: Callable[[Variant], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.router = router
        self._watched_elsewhere = watched_elsewhere
        self._on_restart = on_restart
        self._failures: dict[Variant, int] = {}
        self._restarting: dict[Variant, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self.restarts = 0

    def nudge(self) -> None:
        """Look now (a request just failed to reach a variant) instead of at the next interval."""
        self._wake.set()

    def _supervised(self) -> list[Variant]:
        return [
            v
            for v in self.router.variants
            if not v.stopping and not self._watched_elsewhere(v) and v not in self._restarting
        ]

    async def check(self) -> None:
        """One round: the reason to restart each supervised variant, then the restarts."""
        variants = self._supervised()
        pings = await asyncio.gather(
            *(v.ping(self.router.session, timeout=PING_TIMEOUT_SECONDS) for v in variants if v.alive())
        )
        answers = iter(pings)
        for variant in variants:
            if variant.stopping or variant not in self.router.variants:
                continue  # a deployment retired it while we pinged
            if not variant.alive():
                reason = f"the model server of {variant.name} exited with code {variant.proc.returncode}"
            elif next(answers):
                self._failures[variant] = 0
                if variant.health != "Healthy" and variant.load_failure is None:
                    variant.ready = True
                    variant.health = "Healthy"
                continue
            else:
                failures = self._failures.get(variant, 0) + 1
                self._failures[variant] = failures
                if failures < PING_FAILURES_TO_RESTART:
                    continue
                reason = (
                    f"the model server of {variant.name} stopped answering /ping "
                    f"({failures} times in a row; last: {variant.last_ping})"
                )
            self._failures.pop(variant, None)
            variant.ready = False
            variant.health = "Unhealthy"
            task = asyncio.get_running_loop().create_task(self._restart(variant, reason))
            self._restarting[variant] = task
            task.add_done_callback(self._restarted)

    def _restarted(self, task: asyncio.Task[None]) -> None:
        for variant, running in list(self._restarting.items()):
            if running is task:
                del self._restarting[variant]

    async def _restart(self, variant: Variant, reason: str) -> None:
        backoff = 1.0
        while not variant.stopping and variant in self.router.variants:
            log.warning("%s; restarting it (restart %d)", reason, variant.restarts + 1)
            await variant.respawn(reason)
            self.restarts += 1
            failed = await variant.wait_ready(self.router.session, self.settings.startup_timeout_seconds)
            if failed is None:
                log.info("%s is back: pid %d port %d", variant.name, variant.pid, variant.port)
                try:
                    await self._on_restart(variant)
                except Exception:  # recording it is not the restart: the variant serves either way
                    log.exception("recording the restart of %s failed", variant.name)
                return
            reason = f"restart of {variant.name} failed: {failed}"
            variant.ready = False
            variant.health = "Failed"
            await asyncio.sleep(backoff)
            backoff = min(_MAX_BACKOFF_SECONDS, backoff * 2)

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception(
                    "supervisor round failed; next round in %g s", self.settings.health_interval_seconds
                )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.health_interval_seconds)

    async def close(self) -> None:
        tasks = list(self._restarting.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
