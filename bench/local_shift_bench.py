"""Blue/green on the local platform under constant load: what a LINEAR shift and a rollback cost clients.

    .venv/bin/python bench/local_shift_bench.py [--rate 250] [--wait 2.0]

Each scenario runs on a fresh temp MLOPS_HOME with the real daemon and serving variants, v1 serving,
while bench/local_loadgen.py sends single-row POST /predict at --rate from its own process:

  linear       v2 (good) approved: 25/50/75/100% steps, --wait seconds each
  bad_ping     v2 with a corrupt model file (never answers /ping 200): rolled back before any traffic
  bad_predict  v2 whose estimator expects 3 features while its metadata says 4 (predict raises):
               the error-rate alarm rolls it back during the first step
  kill_9       kill -9 of the daemon at the 50% step, then start again: who serves, what was stored

For each: requests sent, achieved rate, failed requests (by status), whether every 2xx is in the
`requests` table, and the deployment's outcome. The target for bad_predict is failed requests within
the first step's share (rate x wait x step%). Prints JSON; --out also writes it to a file;
--write-readme replaces this benchmark's own section of bench/README.md (between its markers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from local_daemon_helpers import (  # noqa: E402 - the tests' model builders and load generator driver
    Load,
    build_model,
    fast_settings,
    pid_alive,
    register,
    rows,
    serving_only,
    wait_for,
)
from readme_section import write_readme_section  # noqa: E402

from mlops.backend import DEPLOY_IN_PROGRESS  # noqa: E402
from mlops.local import daemon  # noqa: E402
from mlops.local.client import DaemonClient  # noqa: E402
from mlops.local.settings import LocalSettings  # noqa: E402

KINDS = {"linear": "good", "bad_ping": "corrupt", "bad_predict": "bad_predict", "kill_9": "good"}
LABELS = {
    "linear": "linear (good v2)",
    "bad_ping": "bad_ping (corrupt model file)",
    "bad_predict": "bad_predict (predict raises)",
    "kill_9": "kill_9 at the 50% step, then start",
}


def _finished(client: DaemonClient) -> bool:
    latest = client.latest_deployment()
    return latest is not None and latest.target_version == 2 and latest.status != DEPLOY_IN_PROGRESS


def scenario(name: str, work: Path, rate: float, wait: float) -> dict[str, Any]:
    # A fleet of four: four LINEAR steps of one instance (25%), the steps these figures were first taken with.
    settings: LocalSettings = fast_settings(
        work / "home",
        traffic_wait_seconds=wait,
        termination_wait_seconds=1.0,
        health_interval_seconds=0.5,
        endpoint_initial_instance_count=4,
    )
    register(settings, build_model(work / "m1"), approve=True)
    info = daemon.start(settings)
    load: Load | None = None
    try:
        client = DaemonClient(info)
        wait_for(lambda: serving_only(client.status(), 1), 60, "v1 to serve")
        load = Load(info.predict_url, rate, work / "answers.jsonl")
        time.sleep(1.0)
        register(settings, build_model(work / "m2", c=0.5, kind=KINDS[name]), approve=True)
        if name == "kill_9":
            wait_for(
                lambda: any(v.model_version == 2 and v.weight == 0.5 for v in client.status().variants),
                60,
                "the 50% step",
            )
            os.kill(info.pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(info.pid), 10, "the daemon to die")
        else:
            wait_for(lambda: _finished(client), 120, "the deployment to end")
            time.sleep(1.0)
        answers = load.stop()
        if name == "kill_9":
            client = DaemonClient(daemon.start(settings))
        latest = client.latest_deployment()
        status = client.status()
    finally:
        if load is not None:
            load.close()
        daemon.stop(settings)
    stored = rows(settings)
    ok = [a for a in answers if a["status"] == 200]
    failed = Counter(str(a["status"]) for a in answers if a["status"] != 200)
    span = answers[-1]["t"] - answers[0]["t"]
    return {
        "requests": len(answers),
        "achieved_rate": round(len(answers) / span, 1),
        "failed": sum(failed.values()),
        "failed_by_status": dict(failed),
        "first_step_share": round(rate * wait * settings.linear_shares()[0]),
        "every_2xx_stored": all(a["request_id"] in stored for a in ok),
        "answered_by": dict(Counter(a["model_version"] for a in ok)),
        "deployment": f"{latest.status}: {latest.message}" if latest else None,
        "serving_after": status.serving_version,
        "one_version_owns_all_traffic": serving_only(status, status.serving_version or -1),
        "alarm": f"> {settings.alarm_error_rate:.0%} errors over >= {settings.alarm_min_requests} requests",
        "health_interval_s": settings.health_interval_seconds,
    }


def report(results: dict[str, Any], argv: list[str]) -> str:
    """The bench/README.md section for one run's results."""
    first = next(results[name] for name in LABELS if name in results)
    lines = [
        "## Local platform: blue/green under constant load (`bench/local_shift_bench.py`)",
        "",
        f"{results['rate']:g} req/s of single-row `POST /predict` from a second process "
        f"(`bench/local_loadgen.py`), v1 serving, v2 approved; LINEAR 25% steps of {results['step_wait_s']:g} s, "
        f"alarm at {first['alarm']}, health check every {first['health_interval_s']:g} s; {results['cpus']} CPUs.",
        "",
        "| scenario | requests | failed | every 2xx stored | outcome |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for name, label in LABELS.items():
        if name not in results:
            continue
        r = results[name]
        by_status = ", ".join(
            f"{n:,} x {'no connection' if status == '0' else status}"
            for status, n in sorted(r["failed_by_status"].items())
        )
        failed = f"**{r['failed']:,}**" + (f" ({by_status})" if by_status else "")
        answered = ", ".join(f"{n:,} by v{v}" for v, n in sorted(r["answered_by"].items()))
        owner = "alone" if r["one_version_owns_all_traffic"] else "NOT alone"
        # Each scenario's home is a fresh temp dir; its path says nothing about the outcome.
        deployment = re.sub(r"\S*/home/models/", "$MLOPS_HOME/models/", r["deployment"] or "none")
        outcome = f"{deployment}; v{r['serving_after']} serves {owner} after (answered: {answered})"
        if name == "bad_predict":
            outcome += f"; first step's share: {r['first_step_share']:,} requests"
        stored = "yes" if r["every_2xx_stored"] else "**NO**"
        lines.append(f"| {label} | {r['requests']:,} | {failed} | {stored} | {outcome} |")
    lines += [
        "",
        f"Command: `.venv/bin/python bench/local_shift_bench.py {' '.join(argv)}`. The same four cases, "
        "with asserted counts, are `tests/test_local_deploy.py`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=250.0, help="requests/s from the load generator")
    parser.add_argument("--wait", type=float, default=2.0, help="seconds per traffic step")
    parser.add_argument("--scenario", choices=sorted(KINDS), action="append")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--write-readme", action="store_true", help="update this section of bench/README.md")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"rate": args.rate, "step_wait_s": args.wait, "cpus": os.cpu_count()}
    for name in args.scenario or list(KINDS):
        with tempfile.TemporaryDirectory(prefix=f"mlops-shift-{name}-") as tmp:
            results[name] = scenario(name, Path(tmp), args.rate, args.wait)
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.write_readme:
        write_readme_section("local_shift_bench", report(results, sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
