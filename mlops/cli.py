"""The `mlops` command: one set of verbs for the AWS platform and the local one.

    mlops [--target local|aws] <verb> ... [--json]

The verbs only talk to mlops.backend.Backend, so `mlops approve 3` means the same on both targets.
People get tables and progress bars; `--json` prints machine-readable JSON on stdout instead. Errors
a person can act on (PlatformError, bad arguments) are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.markup import escape
from rich.text import Text

from mlops.backend import (
    APPROVED,
    DEPLOY_FAILED,
    DEPLOY_IN_PROGRESS,
    DEPLOY_ROLLED_BACK,
    DEPLOY_SKIPPED,
    DEPLOY_SUCCEEDED,
    PENDING,
    ApprovalOutlook,
    Backend,
    BuildRecord,
    DeploymentRecord,
    DeploymentStatus,
    EndpointStatus,
    ModelVersion,
    PlatformError,
    Progress,
    RequestFilter,
    RequestRecord,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from mlops.local.backend import LocalBackend, UpResult

TARGETS = ("local", "aws")
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# How long `status --watch` waits for a deployment to start when none is running yet (an approval
# reaches the deployer within a second or two on both targets).
WATCH_SETTLE_SECONDS = 5.0
WATCH_INTERVAL_SECONDS = 0.5
STATUS_COLORS = {APPROVED: "green", PENDING: "yellow", DEPLOY_SUCCEEDED: "green", DEPLOY_IN_PROGRESS: "cyan"}


ALLOW_HELP = (
    "deploy it even though its input signature (features, their types and order, or the task) breaks "
    "the serving version's callers; recorded with the approval"
)


class UsageError(Exception):
    """Bad command-line arguments: exit 2 with one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming the problem, not argparse's usage block.
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


# --- output ---------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


class Output:
    def __init__(self, as_json: bool, command: str = "mlops") -> None:
        from rich.console import Console

        self.json = as_json
        # How a printed hint starts, so it runs as printed (`mlops --target aws --stack dev approve 3`).
        self.command = command
        # Piped output is read by people too (CI logs, `| less`): without a terminal to measure, use
        # COLUMNS when the caller set it (rich reads it), else a wide 200 rather than rich's 80.
        self.out: Console = Console(highlight=False, width=_width(sys.stdout))
        self.err: Console = Console(stderr=True, highlight=False, width=_width(sys.stderr))

    def emit(self, value: Any) -> None:
        print(json.dumps(jsonable(value), indent=2, sort_keys=True, default=str), flush=True)

    def emit_line(self, value: Any) -> None:
        print(json.dumps(jsonable(value), sort_keys=True, default=str), flush=True)

    def say(self, renderable: RenderableType) -> None:
        if not self.json:
            # A sentence is not broken into lines here: the terminal wraps it, and a pipe keeps it whole.
            self.out.print(renderable, soft_wrap=isinstance(renderable, str))

    @contextmanager
    def progress(self, title: str) -> Iterator[Progress]:
        """Progress for people on stderr (nothing with --json); yields the callback a backend reports to.

        On a terminal it is a live bar that clears itself when done; otherwise (CI logs, pipes) each new
        message is one plain line, so the log reads as a history instead of redraw noise.
        """
        if self.json:
            yield lambda message, fraction: None
            return
        if not self.err.is_terminal:
            said: list[str] = []

            def line(message: str, fraction: float | None) -> None:
                if not said or said[-1] != message:
                    said.append(message)
                    self.err.print(message, markup=False)

            yield line
            return
        from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn

        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
        with Progress(*columns, console=self.err, transient=True) as bar:
            task = bar.add_task(title, total=None)

            def report(message: str, fraction: float | None) -> None:
                if fraction is None:
                    bar.update(task, description=message)
                else:
                    bar.update(task, description=message, total=100, completed=round(fraction * 100, 1))
                # The bar clears itself at the end; keep each step visible above it.
                bar.console.print(f"  {message}", markup=False, style="dim")

            yield report


def _width(stream: Any) -> int | None:
    if stream.isatty() or os.environ.get("COLUMNS", "").isdigit():
        return None  # rich measures the terminal, or takes COLUMNS
    return 200


def _metric(model: ModelVersion, name: str) -> str:
    value = model.metrics.get(name)
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _status_text(status: str) -> str:
    color = STATUS_COLORS.get(status, "red" if status in ("Rejected", "Failed", "RolledBack") else "white")
    return f"[{color}]{status}[/{color}]"


@dataclasses.dataclass
class ModelRow:
    """A version as `mlops models` shows it: the registry's record and what the endpoint did with it."""

    model: ModelVersion
    serving: bool = False
    rolled_back: bool = False
    """Its deployment rolled back or failed, or a person rolled back from it (and it has not served since)."""

    @property
    def features(self) -> list[str] | None:
        found = (self.model.signature or {}).get("features")
        return [str(f.get("name")) for f in found] if isinstance(found, list) else None

    def as_json(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self.model),
            "serving": self.serving,
            "rolled_back": self.rolled_back,
            "features": self.features,
        }


def model_rows(backend: Backend) -> list[ModelRow]:
    models = backend.list_models()
    try:
        view = backend.endpoint_view()
        serving, failed = view.serving, set(view.failed)
    except PlatformError:  # an AWS stack without an endpoint yet, or no access to it
        serving, failed = None, set()
    return [ModelRow(m, m.version == serving, m.version in failed) for m in models]


def signature_text(model: ModelVersion) -> str:
    """`classification: sepal_length (number), ... -> classes setosa versicolor virginica`."""
    from workloads.serve.deployer import lifecycle

    found = lifecycle.Signature.from_mapping(model.signature or {})
    return found.describe() if found is not None else "not recorded"


def estimator_text(model: ModelVersion) -> str:
    hyper = ", ".join(f"{k}={v}" for k, v in sorted(model.hyperparameters.items()))
    return f"{model.estimator or 'not recorded'}" + (f" ({hyper})" if hyper else "")


# What a version is judged by: a classifier's holdout accuracy and macro F1, a regressor's R² and
# RMSE (the metrics mlops.toml's [gate] takes), so versions of one task compare at a glance.
_CLASSIFIER_METRICS = ("accuracy", "f1_macro")
_REGRESSOR_METRICS = ("r2", "rmse")


def _headline_metrics(model: ModelVersion) -> tuple[str, ...]:
    regression = "r2" in model.metrics or "rmse" in model.metrics
    return _REGRESSOR_METRICS if regression and "accuracy" not in model.metrics else _CLASSIFIER_METRICS


def models_view(rows: Sequence[ModelRow]) -> RenderableType:
    """One block per version: a line that fits 80 columns, then notes that wrap as words, so nothing
    is squeezed into a one-character column on a narrow terminal."""
    from rich.console import Group
    from rich.padding import Padding
    from rich.text import Text

    if not rows:
        return Text("no model versions yet")
    parts: list[RenderableType] = [
        Text.from_markup(f"[bold]model package group {escape(rows[0].model.group)}[/bold]")
    ]
    for row in rows:
        m = row.model
        marks = []
        if row.serving:
            marks.append("[bold green]serving[/bold green]")
        if row.rolled_back:
            marks.append("[bold red]rolled back[/bold red]")
        head = Text.from_markup(
            f"[bold]v{m.version}[/bold]  {_status_text(m.status)}"
            + ("  " + "  ".join(marks) if marks else "")
            + "  "
            + "  ".join(f"{name} {_metric(m, name)}" for name in _headline_metrics(m))
        )
        notes = [
            f"created {m.created_at[:16].replace('T', ' ')}  commit {(m.source_commit or '-')[:8]}",
            f"data {m.data_location or '-'}",
            f"signature {signature_text(m)}",
            f"estimator {estimator_text(m)}",
        ]
        if m.signature_change_allowed:
            notes.append("approved with --allow-signature-change")
        if m.approver or m.description:
            verb = "rejected" if m.status == "Rejected" else "approved" if m.status == APPROVED else "noted"
            said = f": {m.description}" if m.description else ""
            notes.append(f"{verb} by {m.approver or '-'}{said}")
        body = Text("\n".join(notes), overflow="fold")
        parts += [head, Padding(body, (0, 0, 0, 4), expand=False)]
    return Group(*parts)


def _deployment_line(dep: DeploymentStatus | None) -> str:
    if dep is None:
        return "last deployment: none"
    source = f"v{dep.from_version} -> " if dep.from_version is not None else ""
    when = f"{dep.started_at} .. {dep.finished_at}" if dep.finished_at else f"since {dep.started_at}"
    # Messages quote errors and reasons, which may hold brackets: never markup.
    message = f" - {escape(dep.message)}" if dep.message else ""
    return f"last deployment: {source}v{dep.target_version} {_status_text(dep.status)} ({when}){message}"


def status_view(status: EndpointStatus) -> RenderableType:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    serving = f"v{status.serving_version}" if status.serving_version is not None else "nothing"
    header = Text.from_markup(
        f"endpoint [bold]{status.name}[/bold]  {_status_text(status.status)}  serving {serving}"
    )
    table = Table(show_edge=False)
    for column in ("variant", "version", "traffic", "share", "instances", "health", "restarts"):
        table.add_column(column)
    for v in status.variants:
        table.add_row(
            v.name,
            f"v{v.model_version}" if v.model_version is not None else "-",
            ProgressBar(total=100, completed=v.weight * 100, width=30),
            f"{v.weight:.0%}",
            str(v.instances) if v.instances is not None else "-",
            v.health,
            str(v.restarts),
        )
    parts: list[RenderableType] = [header]
    if status.variants:
        parts.append(table)
    parts.append(Text.from_markup(_deployment_line(status.last_deployment)))
    if status.queued_version is not None:
        parts.append(Text(f"queued: v{status.queued_version} goes next"))
    for v in status.variants:
        if v.restarts and v.last_restart_reason:
            parts.append(Text(f"{v.name} restarted {v.restarts}x; last: {v.last_restart_reason}"))
    for note in status.notes:
        parts.append(Text(f"note: {note}"))
    if status.database_bytes is not None:
        parts.append(Text(f"database: {status.database_bytes / 1e6:.1f} MB"))
    return Group(*parts)


def mlops_command() -> str:
    """This same `mlops`, spelled so it runs from the current directory as printed.

    After `make up` the command lives in .venv/bin, which is usually not on PATH: a bare `mlops` in the
    printed next steps would fail, or run some other installation.
    """
    script = Path(sys.executable).parent / "mlops"
    found = shutil.which("mlops")
    if script.is_file():
        if found is not None and os.path.samefile(found, script):
            return "mlops"
        return _shell_path(script)
    return f"{_shell_path(Path(sys.executable))} -m mlops"


def _shell_path(path: Path) -> str:
    """Relative to the current directory when it is inside it (`.venv/bin/mlops`), else absolute."""
    absolute = path.absolute()
    try:
        shown = str(absolute.relative_to(Path.cwd()))
    except ValueError:
        shown = str(absolute)
    return shlex.quote(shown)


def next_steps(result: UpResult, mlops: str = "mlops") -> list[str]:
    # The serving model's own example row, so the line works whatever model serves (not iris only).
    body = json.dumps({"context": result.example_context})
    upcoming = result.versions + 1
    commented = [
        ("git push local main", f"builds it; `{mlops} logs --follow` shows the build"),
        (f"{mlops} models", "the new version waits for a person's approval"),
        (f"{mlops} approve {upcoming}", "starts the LINEAR blue/green shift"),
        (f"{mlops} status --watch", "watch the traffic move"),
        (f"{mlops} local down", f"stop the platform ({mlops} local reset deletes its state)"),
    ]
    width = max(31, *(len(command) + 2 for command, _ in commented))
    return [
        f"curl -s -X POST {result.predict_url} -H 'content-type: application/json' -d {shlex.quote(body)}",
        f"{mlops} predict {shlex.quote(result.example_context)}",
        "# train a new version: change data/iris.csv, commit, then",
        *(f"{command.ljust(width)}# {comment}" for command, comment in commented),
    ]


# --- verbs ----------------------------------------------------------------------------------------


def _local(backend: Backend, verb: str) -> LocalBackend:
    from mlops.local.backend import LocalBackend

    if not isinstance(backend, LocalBackend):
        raise PlatformError(f"`mlops local {verb}` manages the local platform; drop --target aws")
    return backend


def cmd_train(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    with out.progress("training") as report:
        result = backend.train(
            data_location=args.data, instance_type=args.instance_type, wait=not args.no_wait, progress=report
        )
    if out.json:
        out.emit(result)
    elif result.status == "Completed" and result.model_version is not None:
        m = result.model_version
        out.say(
            f"{result.job_name} completed: registered v{m.version} (accuracy {_metric(m, 'accuracy')}) "
            f"as {m.status}; approve it with `{out.command} approve {m.version}`"
        )
    elif result.status == "Failed":
        pass
    else:
        out.say(f"{result.job_name} is {result.status}; follow it with `{out.command} logs --follow`")
    if result.status == "Failed":
        out.err.print(f"mlops: {result.job_name} failed: {result.failure_reason}", markup=False)
        return EXIT_ERROR
    twin = same_inputs(backend, result.model_version)
    if twin is not None and result.model_version is not None:
        # Not an error (retraining is how a seed or a library change is tried), but never silent.
        out.err.print(
            f"mlops: note: v{result.model_version.version} was trained from the same commit and data as "
            f"v{twin.version} ({(twin.source_commit or '-')[:12]}, {twin.data_location}); nothing changed "
            "since, so expect the same model",
            markup=False,
        )
    return EXIT_OK


def same_inputs(backend: Backend, model: ModelVersion | None) -> ModelVersion | None:
    """An earlier version built from the same commit and the same data as `model`, if any."""
    if model is None or not model.source_commit:
        return None
    for other in backend.list_models():
        if (
            other.version < model.version
            and other.source_commit == model.source_commit
            and other.data_location == model.data_location
        ):
            return other
    return None


def cmd_models(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    rows = model_rows(backend)
    if out.json:
        out.emit([row.as_json() for row in rows])
    else:
        out.say(models_view(rows))
    return EXIT_OK


def approval_message(model: ModelVersion, outlook: ApprovalOutlook, command: str) -> str:
    """What will really happen after an approval, in the deployer's own words (lifecycle.on_approval)."""
    signed = f"approved v{model.version} ({model.arn}) as {model.approver}"
    if not outlook.platform_running:
        return (
            f"{signed}. The platform is not running, so nothing deploys now; when it starts "
            f"(`make up` or `{command} local up`) the deployer decides: {outlook.reason}"
        )
    if outlook.action == "deploy":
        return f"{signed}; the deployer shifts traffic to it in LINEAR steps: `{command} status --watch`"
    if outlook.action == "queue":
        return (
            f"{signed}; not deployed yet: {outlook.reason}. Then {outlook.then}: `{command} status --watch`"
        )
    hint = (
        f" (`{command} deploy {model.version}` deploys it by hand)" if "not newer" in outlook.reason else ""
    )
    return f"{signed}; nothing will be deployed: {outlook.reason}{hint}"


def cmd_approve(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    target = backend.get_model(args.ref)
    # Read before approving: afterwards the deployer may already be acting on it.
    try:
        outlook: ApprovalOutlook | None = backend.approval_outlook(target.version)
    except PlatformError as exc:  # the endpoint cannot be read (no access, no stack output naming it)
        unknown = f"cannot tell what the deployer will do: {exc}"
        outlook = None
    model = backend.approve(
        args.ref,
        description=args.description,
        force=args.force,
        allow_signature_change=args.allow_signature_change,
    )
    if out.json:
        deployment = dataclasses.asdict(outlook) if outlook else {"action": "unknown", "reason": unknown}
        out.emit({**dataclasses.asdict(model), "deployment": deployment})
    elif outlook is None:
        out.say(
            f"approved v{model.version} ({model.arn}) as {escape(model.approver or '')}; {escape(unknown)}"
        )
    else:
        out.say(approval_message(model, outlook, out.command))
    return EXIT_OK


def cmd_reject(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    model = backend.reject(args.ref, reason=args.reason, force=args.force)
    try:
        serving = backend.status().serving_version
    except PlatformError:
        serving = None
    still_serving = serving == model.version
    if out.json:
        out.emit({**dataclasses.asdict(model), "still_serving": still_serving})
    else:
        out.say(f"rejected v{model.version} ({model.arn}): {escape(model.description or '')}")
    if still_serving:
        out.err.print(
            f"mlops: warning: v{model.version} still serves all traffic; a rejection does not undeploy it. "
            f"`{out.command} deploy --rollback` goes back to the version before it",
            markup=False,
        )
    return EXIT_OK


def cmd_deploy(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    with out.progress("deploying") as report:
        result = backend.deploy(
            args.ref,
            rollback=args.rollback,
            wait=not args.no_wait,
            progress=report,
            allow_signature_change=args.allow_signature_change,
        )
    if out.json:
        out.emit(result)
    else:
        out.say(_deployment_line(result))
    if result.status in (DEPLOY_SUCCEEDED, DEPLOY_SKIPPED, DEPLOY_IN_PROGRESS):
        return EXIT_OK
    out.err.print(
        f"mlops: deployment of v{result.target_version} {result.status}: {result.message}", markup=False
    )
    return EXIT_ERROR


def watch_status(
    fetch: Callable[[], EndpointStatus],
    show: Callable[[EndpointStatus], None],
    *,
    settle: float = WATCH_SETTLE_SECONDS,
    interval: float = WATCH_INTERVAL_SECONDS,
) -> EndpointStatus:
    """Poll until a deployment seen in progress has finished (or, if none starts within `settle`, stop)."""
    began = time.monotonic()
    seen_running = False
    while True:
        status = fetch()
        show(status)
        running = status.last_deployment is not None and status.last_deployment.status == DEPLOY_IN_PROGRESS
        seen_running = seen_running or running
        if not running and (seen_running or time.monotonic() - began >= settle):
            return status
        time.sleep(interval)


def watch_exit_code(final: EndpointStatus, watched: bool) -> int:
    """Non-zero when the deployment `status --watch` followed ended rolled back or failed."""
    dep = final.last_deployment
    if watched and dep is not None and dep.status in (DEPLOY_ROLLED_BACK, DEPLOY_FAILED):
        return EXIT_ERROR
    return EXIT_OK


def cmd_status(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    if not args.watch:
        status = backend.status()
        if out.json:
            out.emit(status)
        else:
            out.say(status_view(status))
        return EXIT_OK
    watched: list[bool] = []

    def fetch() -> EndpointStatus:
        status = backend.status()
        dep = status.last_deployment
        if dep is not None and dep.status == DEPLOY_IN_PROGRESS:
            watched.append(True)
        return status

    try:
        if out.json:
            last: list[str] = []

            def show_json(status: EndpointStatus) -> None:
                line = json.dumps(jsonable(status), sort_keys=True, default=str)
                if not last or last[-1] != line:  # one line per change
                    print(line, flush=True)
                    last.append(line)

            final = watch_status(fetch, show_json)
        else:
            from rich.live import Live

            with Live(console=out.out, refresh_per_second=4) as live:
                final = watch_status(fetch, lambda s: live.update(status_view(s)))
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C is how a person stops watching
    code = watch_exit_code(final, bool(watched))
    if code != EXIT_OK and final.last_deployment is not None:
        dep = final.last_deployment
        out.err.print(f"mlops: deployment of v{dep.target_version} {dep.status}: {dep.message}", markup=False)
    return code


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    if (args.row is None) == (args.instances is None):
        raise UsageError('mlops predict: give one CSV row ("5.1, 3.5, 1.4, 0.2") or --instances JSON')
    if args.row is not None:
        return {"context": args.row}
    try:
        instances = json.loads(args.instances)
    except json.JSONDecodeError as exc:
        raise UsageError(f"mlops predict: --instances is not valid JSON: {exc}") from None
    return {"instances": instances}


def cmd_predict(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    answer = backend.predict(_payload(args))
    if out.json:
        out.emit(answer)
        return EXIT_OK
    from rich.table import Table
    from rich.text import Text

    predictions = answer.get("predictions", [])
    table = Table(title=f"model v{answer.get('model_version')}  request {answer.get('request_id', '-')}")
    table.add_column("row", justify="right")
    # A regressor answers {"value": ...} per row, a classifier {"label", "probabilities"}.
    regression = bool(predictions) and all("value" in p for p in predictions)
    for column in ("value",) if regression else ("label", "probabilities"):
        table.add_column(column)
    for i, p in enumerate(predictions, start=1):
        if regression:
            table.add_row(str(i), Text(f"{p['value']:.6g}", style="bold"))
            continue
        probs = ", ".join(f"{k} {v:.3f}" for k, v in sorted(p.get("probabilities", {}).items()))
        # Labels are the model's classes, so user data: Text, never rich markup.
        table.add_row(str(i), Text(str(p.get("label")), style="bold"), Text(probs))
    out.say(table)
    return EXIT_OK


def cmd_logs(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    # Name the build first: "the latest" must not change between the log and its verdict.
    build = backend.build(args.id)
    lines = backend.logs(build.id, follow=args.follow, limit=args.limit)
    for line in lines:
        if out.json:
            out.emit_line({"line": line})
        else:
            print(line, flush=True)
    build = backend.build(build.id)
    if build.status in BUILD_FAILED:
        out.err.print(
            f"mlops: build {build.id} {build.status}: {build.reason or '(no reason)'}", markup=False
        )
        return EXIT_ERROR
    return EXIT_OK


# Both targets' words for a build that did not make a version (local; CodeBuild's).
BUILD_FAILED = ("Failed", "FAILED", "FAULT", "TIMED_OUT", "STOPPED")


def _ago(stamp: str | None) -> str:
    return (stamp or "-")[:19].replace("T", " ")


def builds_table(rows: Sequence[BuildRecord]) -> RenderableType:
    from rich import box
    from rich.table import Table

    table = Table(title="builds" if rows else "no builds yet", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("build", "status", "commit", "version", "created"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold", min_width=20)
    for b in rows:
        table.add_row(
            b.id,
            _status_text(b.status),
            (b.commit or "-")[:8],
            f"v{b.model_version}" if b.model_version else "-",
            _ago(b.created_at),
            Text(b.reason or ""),  # a build's reason quotes the user's data and config: not markup
        )
    return table


def cmd_builds(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    rows = backend.builds()
    if out.json:
        out.emit(rows)
    else:
        out.say(builds_table(rows))
    return EXIT_OK


def deployments_table(rows: Sequence[DeploymentRecord]) -> RenderableType:
    from rich import box
    from rich.table import Table

    table = Table(title="deployments" if rows else "no deployments yet", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("id", "from", "to", "outcome", "share", "steps", "took", "started"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold", min_width=20)
    for d in rows:
        table.add_row(
            str(d.id),
            f"v{d.from_version}" if d.from_version is not None else "-",
            # A person's `deploy --rollback` (an alarm's rollback is an outcome, RolledBack, instead).
            f"v{d.to_version} (rollback)" if d.rollback_of is not None else f"v{d.to_version}",
            _status_text(d.status),
            f"{d.reached_share:.0%}",
            str(d.planned_steps) if d.planned_steps is not None else "-",
            f"{d.duration_seconds:.1f}s" if d.duration_seconds is not None else "-",
            _ago(d.started_at),
            Text(d.message),
        )
    return table


def cmd_deployments(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    rows = backend.deployments()
    if out.json:
        out.emit(rows)
    else:
        out.say(deployments_table(rows))
    return EXIT_OK


def requests_table(rows: Sequence[RequestRecord], width: int = 80) -> RenderableType:
    """`width`: the terminal's. The input column gets what the other columns leave of it: a column that
    does not wrap and is wider than the rest of the line makes rich drop every other column."""
    from rich import box
    from rich.table import Table

    table = Table(
        title="requests, newest first" if rows else "no requests match", box=box.SIMPLE_HEAD, pad_edge=False
    )
    # A request id is 36 characters: in a narrow terminal it folds onto two lines rather than squeeze
    # the status, version and latency out of sight (an 80-column terminal lost them).
    table.add_column("request id", overflow="fold", min_width=18)
    table.add_column("time", overflow="fold", min_width=10)
    for column in ("status", "version", "ms"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    table.add_column("input", overflow="ellipsis", no_wrap=True, min_width=10, max_width=max(10, width - 90))
    for r in rows:
        table.add_row(
            Text(r.request_id),
            _ago(r.created_at),
            str(r.status_code),
            Text(r.model_version or "-"),
            f"{r.latency_ms:.1f}",
            Text(_preview(r.input)),  # whatever a client sent: never markup; cut, not all 6 MB of it
        )
    return table


INPUT_PREVIEW_CHARS = 300


def _preview(text: str) -> str:
    flat = printable(text[: INPUT_PREVIEW_CHARS + 1].replace("\n", " "))
    return flat if len(flat) <= INPUT_PREVIEW_CHARS else flat[: INPUT_PREVIEW_CHARS - 1] + "…"


# C0 controls but newline and tab, DEL, and C1 controls: what a terminal acts on instead of showing.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with every control character shown as an escape (ESC as \\x1b): a stored request is
    whatever a caller sent, and printed raw its escape sequences would clear or retitle the terminal of
    whoever lists the requests."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _status_filter(text: str | None) -> int | None:
    if text is None:
        return None
    raw = text.lower().removesuffix("xx")
    if not raw.isdigit() or not (len(raw) == 1 or len(raw) == 3):
        raise UsageError(f"mlops requests: --status {text!r} is a status (200) or a class (4xx, 5xx)")
    return int(raw)


def cmd_requests(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    if args.id:
        one = backend.request(args.id)
        if out.json:
            out.emit(one)
        else:
            out.out.print(
                f"request {one.request_id} at {one.created_at}: HTTP {one.status_code}, "
                f"model {'v' + one.model_version if one.model_version else '(none answered)'}, "
                f"{one.latency_ms:.1f} ms",
                markup=False,
                soft_wrap=True,
            )
            out.out.print(f"input:  {printable(one.input)}", markup=False, soft_wrap=True)
            out.out.print(f"output: {printable(one.output)}", markup=False, soft_wrap=True)
            out.out.print(f"caller: {json.dumps(one.caller)}", markup=False, soft_wrap=True)
        return EXIT_OK
    where = RequestFilter(
        version=args.version,
        status=_status_filter(args.status),
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    rows = backend.requests(where)
    if out.json:
        out.emit(rows)
    else:
        out.say(requests_table(rows, out.out.width))
    return EXIT_OK


def cmd_teardown(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    done = backend.teardown()
    if out.json:
        out.emit({"removed": done})
    else:
        for line in done or ["nothing to tear down"]:
            out.say(line)
    return EXIT_OK


def cmd_local_up(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    local = _local(backend, "up")
    with out.progress("bringing the local platform up") as report:
        result = local.up(bootstrap=args.bootstrap, progress=report)
    mlops = mlops_command()
    steps = next_steps(result, mlops)
    if out.json:
        out.emit({**dataclasses.asdict(result), "console_url": result.console_url, "next_steps": steps})
        return EXIT_OK
    for message in result.messages:
        out.say(message)
    if result.bootstrapped_version is not None:
        out.say(
            f"[bold yellow]bootstrap:[/bold yellow] v{result.bootstrapped_version} was approved by "
            f"'mlops local up (bootstrap)' so there is something to serve; every later version waits for a "
            f"person (`{mlops} approve <version>`)."
        )
    serving = f"serving v{result.serving_version}" if result.serving_version else "no model serving yet"
    out.say(f"[bold green]the local platform is up[/bold green]: {result.base_url} ({serving})")
    out.say(f"inference API: POST {result.predict_url}")
    out.say("[bold]next steps[/bold]")
    for step in steps:
        # soft_wrap: never break the curl line, so it can be copied whole from a narrow terminal.
        out.out.print(f"  {step}", markup=False, soft_wrap=True)
    # Last, so it is what a person sees when `make up` returns.
    out.say(f"[bold]console[/bold] (versions, approvals, the traffic split): open {result.console_url}")
    return EXIT_OK


def cmd_local_down(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    done = _local(backend, "down").down()
    if out.json:
        out.emit({"stopped": done})
    else:
        out.say("\n".join(done) if done else "the local platform was not running")
    return EXIT_OK


def cmd_local_reset(backend: Backend, args: argparse.Namespace, out: Output) -> int:
    local = _local(backend, "reset")
    home = local.settings.home
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"mlops local reset: deletes {home} (models, requests, builds); pass --yes")
        answer = input(f"delete {home} with every model version, stored request and build? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.say("nothing deleted")
            return EXIT_OK
    done = local.reset()
    if out.json:
        out.emit({"removed": done})
    else:
        out.say("\n".join(done) if done else f"{home} does not exist; nothing to delete")
    return EXIT_OK


# --- wiring ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before and after the verb (`mlops --json models`, `mlops models --json`).
    # On the verbs they default to SUPPRESS so they do not overwrite what was given before the verb.
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    common.add_argument("--target", choices=TARGETS, default=argparse.SUPPRESS, help="platform to act on")
    common.add_argument("--stack", default=argparse.SUPPRESS, help="AWS: the Pulumi stack to act on")

    parser = _Parser(prog="mlops", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default=os.environ.get("MLOPS_TARGET") or "local",
        help="platform to act on (env MLOPS_TARGET, default local)",
    )
    parser.add_argument("--json", action="store_true", default=False, help="print machine-readable JSON")
    parser.add_argument(
        "--stack",
        default=os.environ.get("MLOPS_STACK") or None,
        help="AWS: the Pulumi stack whose outputs name everything (env MLOPS_STACK; or MLOPS_STACK_OUTPUTS=<file>)",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="<verb>")

    def verb(name: str, handler: Callable[..., int], help_text: str, **kw: Any) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, parents=[common], help=help_text, description=help_text, **kw)
        sub.set_defaults(handler=handler)
        return sub

    p = verb("train", cmd_train, "train a new model version from the latest code and data")
    p.add_argument("--data", help="training data: a path in the repository, or an absolute path")
    p.add_argument("--instance-type", help="training instance type (AWS only)")
    p.add_argument("--no-wait", action="store_true", help="return once the build has started")

    verb("models", cmd_models, "list model versions with their approval status and metrics")

    p = verb("approve", cmd_approve, "approve a model version, and say what the deployer will do with it")
    p.add_argument("ref", help="version number (3) or model package ARN")
    p.add_argument("--description", default="", help="why it is approved (kept in the registry)")
    p.add_argument("--force", action="store_true", help="change a version that is not pending")
    p.add_argument("--allow-signature-change", action="store_true", help=ALLOW_HELP)

    p = verb("reject", cmd_reject, "reject a model version")
    p.add_argument("ref", help="version number (3) or model package ARN")
    p.add_argument("--reason", required=True, help="why it is rejected (kept in the registry)")
    p.add_argument("--force", action="store_true", help="change a version that is not pending")

    p = verb("deploy", cmd_deploy, "deploy an approved version (default: the latest approved)")
    p.add_argument("ref", nargs="?", help="version number or model package ARN")
    p.add_argument(
        "--rollback", action="store_true", help="go back to the version that served before the serving one"
    )
    p.add_argument("--no-wait", action="store_true", help="return once the deployment has started")
    p.add_argument("--allow-signature-change", action="store_true", help=ALLOW_HELP)

    p = verb("status", cmd_status, "endpoint, variants, traffic split and the last deployment")
    p.add_argument(
        "--watch", action="store_true", help="refresh until the deployment finishes (Ctrl-C stops)"
    )

    p = verb("predict", cmd_predict, "send one request to the inference API")
    p.add_argument("row", nargs="?", help='a CSV row like "5.1, 3.5, 1.4, 0.2" (several rows: newlines)')
    p.add_argument("--instances", help="JSON list of feature rows, like [[5.1, 3.5, 1.4, 0.2]]")

    p = verb("logs", cmd_logs, "show a build's log (default: the latest build)")
    p.add_argument("id", nargs="?", help="build id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the build finishes")
    p.add_argument("--limit", type=int, default=1000, help="at most this many last lines (default 1000)")

    verb("builds", cmd_builds, "every build: commit, status, failure reason, the version it made")
    verb("deployments", cmd_deployments, "the endpoint's deployment history: from/to, steps, outcome, reason")
    p = verb("requests", cmd_requests, "recent inference requests (newest first), or one by id")
    p.add_argument("id", nargs="?", help="a request id: show that request whole")
    p.add_argument("--version", help="only requests answered by this model version")
    p.add_argument("--status", help="only this HTTP status (400) or class (4xx, 5xx)")
    p.add_argument("--since", help="only requests at or after this ISO time (2026-12-01T21:00)")
    p.add_argument("--until", help="only requests at or before this ISO time")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50, at most 1000)")

    verb(
        "teardown",
        cmd_teardown,
        "delete the endpoint (the registry stays; `mlops local down` stops the daemon)",
    )

    local = verbs.add_parser("local", help="run the platform on this machine")
    local_verbs = local.add_subparsers(dest="local_verb", required=True, metavar="<up|down|reset>")
    p = local_verbs.add_parser("up", parents=[common], help="start the local platform")
    p.add_argument("--bootstrap", action="store_true", help="train, approve and serve a first model if none")
    p.set_defaults(handler=cmd_local_up)
    p = local_verbs.add_parser("down", parents=[common], help="stop the local platform (state is kept)")
    p.set_defaults(handler=cmd_local_down)
    p = local_verbs.add_parser("reset", parents=[common], help="stop the local platform and delete its state")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=cmd_local_reset)
    return parser


def hint_command(target: str, stack: str | None) -> str:
    """The start of a command line that reaches the same platform as this one."""
    words = ["mlops"]
    if target != "local" and os.environ.get("MLOPS_TARGET") != target:
        words += ["--target", target]
    if stack and os.environ.get("MLOPS_STACK") != stack:
        words += ["--stack", stack]
    return " ".join(words)


def make_backend(target: str, stack: str | None = None) -> Backend:
    if target == "aws":
        from mlops.aws import AwsBackend  # imported only here: boto3 setup is not needed locally

        backend: Backend = AwsBackend.from_env(stack)
        return backend
    from mlops.local.backend import LocalBackend
    from mlops.local.settings import LocalSettings

    try:
        settings = LocalSettings.from_env()
    except ValueError as exc:  # a bad MLOPS_* variable
        raise PlatformError(str(exc)) from None
    return LocalBackend(settings)


def _fail(message: str, code: int, as_json: bool, *, prefix: str = "") -> int:
    """Say an error: always on stderr (after `prefix`, for people); with --json also as one JSON object on
    stdout, for scripts, whose "error" is the message alone."""
    print(prefix + message, file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}), flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in words
    try:
        args = build_parser().parse_args(words)
        out = Output(as_json=args.json, command=hint_command(args.target, args.stack))
        backend = make_backend(args.target, args.stack)
        try:
            code: int = args.handler(backend, args, out)
        finally:
            close = getattr(backend, "close", None)
            if callable(close):
                close()
        return code
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE, as_json)
    except PlatformError as exc:
        return _fail(str(exc), EXIT_ERROR, as_json, prefix="mlops: error: ")
    except KeyboardInterrupt:
        print("mlops: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `mlops logs | head`: the reader went away. Point stdout at /dev/null so the interpreter's
        # final flush does not raise again on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
