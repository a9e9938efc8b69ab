"""Deploy a model package by hand: the same code the deployer Lambda runs, plus waiting with progress.

    python workloads/serve/deploy.py --model_package_arn <arn>     # deploy this approved version
    python workloads/serve/deploy.py --rollback                    # redeploy the previous approved version
    python workloads/serve/deploy.py --teardown                    # delete all the deployer created
    python workloads/serve/deploy.py --verify                      # check the last deployment's outcome

Settings come from the deployer's env vars (docs/contracts.md); --endpoint_name and
--model_package_group_name override theirs. Exit code 0 when the version serves (or nothing needed
doing), 1 when the deployment rolled back or failed, 2 for bad arguments or settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `workloads` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workloads.serve.deployer.deployer import (
    FAILED,
    IN_PROGRESS,
    ROLLED_BACK,
    Deployer,
    DeployerConfig,
    DeployError,
    Progress,
    Result,
)


def deploy_by_hand(
    deployer: Deployer,
    package_arn: str | None = None,
    *,
    rollback: bool = False,
    wait: bool = True,
    progress: Progress | None = None,
    poll_seconds: float = 30,
) -> Result:
    """Start a deployment (a named version, or the rollback) and, if asked, wait for its outcome."""
    if rollback:
        result = deployer.rollback()
    elif package_arn:
        result = deployer.deploy(package_arn, explicit=True)
    else:
        raise DeployError("name a model package ARN or ask for --rollback")
    if result.status == IN_PROGRESS and wait:
        if progress:
            progress(f"{result.message} ({result.endpoint_config})", 0.0)
        result = deployer.wait(progress, poll_seconds=poll_seconds)
    return result


def _print_progress(message: str, fraction: float | None) -> None:
    print(message, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--model_package_arn", "--model-package-arn", help="approved model package to deploy")
    action.add_argument("--rollback", action="store_true", help="redeploy the previous approved version")
    action.add_argument(
        "--teardown", action="store_true", help="delete the endpoint, configs, models, scaling"
    )
    action.add_argument("--verify", action="store_true", help="verify the last deployment and clean up")
    parser.add_argument("--endpoint_name", "--endpoint-name", default=None)
    parser.add_argument("--model_package_group_name", "--model-package-group-name", default=None)
    parser.add_argument("--no-wait", action="store_true", help="start the deployment and return")
    parser.add_argument("--poll-seconds", type=float, default=30.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    if args.endpoint_name:
        env["ENDPOINT_NAME"] = args.endpoint_name
    if args.model_package_group_name:
        env["MODEL_PACKAGE_GROUP_NAME"] = args.model_package_group_name
    try:
        if args.teardown:
            # Teardown needs neither a role nor a group; fill them so the config parses.
            env.setdefault("EXECUTION_ROLE_ARN", "unused-by-teardown")
            env.setdefault("MODEL_PACKAGE_GROUP_NAME", "unused-by-teardown")
        config = DeployerConfig.from_env(env)
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    deployer = Deployer(config)
    try:
        if args.teardown:
            removed = deployer.teardown()
            for item in removed:
                print(f"deleted {item}")
            print(f"teardown of {config.endpoint}: {len(removed)} resource(s) deleted")
            return 0
        if args.verify:
            result = deployer.reconcile()
        else:
            result = deploy_by_hand(
                deployer,
                args.model_package_arn,
                rollback=args.rollback,
                wait=not args.no_wait,
                progress=_print_progress,
                poll_seconds=args.poll_seconds,
            )
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    print(f"{result.status}: {result.message}")
    return 1 if result.status in (ROLLED_BACK, FAILED) else 0


if __name__ == "__main__":
    sys.exit(main())
