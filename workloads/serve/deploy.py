"""Deploy a model package by hand: the same code the deployer Lambda runs, plus waiting with progress.

    python workloads/serve/deploy.py --model_package_arn <arn>     # deploy this approved version
    python workloads/serve/deploy.py --rollback                    # back to the version that served before
    python workloads/serve/deploy.py --teardown                    # delete all the deployer created
    python workloads/serve/deploy.py --verify                      # check the last deployment's outcome

A version whose input signature breaks the serving version's callers (features added, removed,
retyped or moved; the task changed) is refused unless its approval allowed it or
--allow-signature-change is given (a rollback too).

Settings are the stack's: the deployer Lambda's own environment, read from the function named by
--deployer_function_name or DEPLOYER_FUNCTION_NAME (`pulumi stack output deployer_function_name`), so a
deployment by hand sends exactly what the automatic one sends (instance type, LINEAR step and wait,
rollback alarms, autoscaling). --settings-from-env uses the deployer's env vars (docs/contracts.md) of
this shell instead, as the Lambda itself does; one of the two is required, so a by-hand deployment never
falls back on defaults the stack does not use. --endpoint_name and --model_package_group_name override
either. Exit code 0 when the version serves (or nothing needed doing), 1 when the deployment
rolled back or failed, 2 for bad arguments or settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
    default_clients,
)


def deploy_by_hand(
    deployer: Deployer,
    package_arn: str | None = None,
    *,
    rollback: bool = False,
    wait: bool = True,
    progress: Progress | None = None,
    poll_seconds: float = 30,
    allow_signature_change: bool = False,
) -> Result:
    """Start a deployment (a named version, or the rollback) and, if asked, wait for its outcome."""
    if rollback:
        result = deployer.rollback(allow_signature_change=allow_signature_change)
    elif package_arn:
        result = deployer.deploy(package_arn, explicit=True, allow_signature_change=allow_signature_change)
    else:
        raise DeployError("name a model package ARN or ask for --rollback")
    if result.status == IN_PROGRESS and wait:
        if progress:
            progress(f"{result.message} ({result.endpoint_config})", 0.0)
        result = deployer.wait(progress, poll_seconds=poll_seconds)
    return result


def function_environment(lambda_client: Any, function_name: str) -> dict[str, str]:
    """The deployer Lambda's environment variables: the stack's deployment settings, exactly."""
    try:
        config = lambda_client.get_function_configuration(FunctionName=function_name)
    except Exception as exc:
        response = getattr(exc, "response", None) or {}
        why = response.get("Error", {}).get("Message", exc)
        raise DeployError(
            f"cannot read the settings of deployer function {function_name!r}: {why} "
            "(DEPLOYER_FUNCTION_NAME is `pulumi stack output deployer_function_name`)"
        ) from None
    variables = dict((config.get("Environment") or {}).get("Variables") or {})
    if not variables.get("ENDPOINT_NAME"):
        raise DeployError(f"function {function_name!r} is not a deployer: it has no ENDPOINT_NAME")
    # The endpoint lives in the function's region, whatever the caller's default region is.
    region = str(config.get("FunctionArn", "")).split(":")[3:4]
    if region and region[0]:
        variables["AWS_REGION"] = variables["AWS_DEFAULT_REGION"] = region[0]
    return variables


def by_hand_environment(
    env: Mapping[str, str], function_name: str | None, lambda_client: Any = None
) -> dict[str, str]:
    """The settings a by-hand action uses: the named deployer function's, else `env` as it is."""
    if not function_name:
        return dict(env)
    if lambda_client is None:
        import boto3

        # An ARN names its region; a bare name is looked up in the caller's region.
        parts = function_name.split(":")
        region = parts[3] if function_name.startswith("arn:") and len(parts) > 3 else None
        lambda_client = boto3.client("lambda", region_name=region or env.get("AWS_REGION") or None)
    stack = function_environment(lambda_client, function_name)
    # Only credentials come from the caller's environment; every setting, region included, is the stack's.
    return {**{k: v for k, v in env.items() if k.startswith("AWS_")}, **stack}


def _print_progress(message: str, fraction: float | None) -> None:
    print(message, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--model_package_arn", "--model-package-arn", help="approved model package to deploy")
    action.add_argument(
        "--rollback", action="store_true", help="go back to the version that served before the serving one"
    )
    action.add_argument(
        "--teardown", action="store_true", help="delete the endpoint, configs, models, scaling"
    )
    action.add_argument("--verify", action="store_true", help="verify the last deployment and clean up")
    parser.add_argument(
        "--deployer_function_name",
        "--deployer-function-name",
        default=os.environ.get("DEPLOYER_FUNCTION_NAME") or None,
        help="read the stack's settings from this deployer Lambda (default DEPLOYER_FUNCTION_NAME)",
    )
    parser.add_argument(
        "--settings-from-env",
        action="store_true",
        help="use the deployer env vars of this shell (docs/contracts.md) instead of the function's",
    )
    parser.add_argument("--endpoint_name", "--endpoint-name", default=None)
    parser.add_argument("--model_package_group_name", "--model-package-group-name", default=None)
    parser.add_argument("--no-wait", action="store_true", help="start the deployment and return")
    parser.add_argument(
        "--allow-signature-change",
        action="store_true",
        help="deploy even if the version's input signature breaks the serving version's callers",
    )
    parser.add_argument("--poll-seconds", type=float, default=30.0)
    return parser


def main(argv: Sequence[str] | None = None, lambda_client: Any = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not args.deployer_function_name and not args.settings_from_env:
            raise DeployError(
                "name the stack's deployer: --deployer_function_name or DEPLOYER_FUNCTION_NAME "
                "(`pulumi stack output deployer_function_name`), so this deployment carries the stack's "
                "settings; or pass --settings-from-env to use the deployer env vars of this shell"
            )
        function = None if args.settings_from_env else args.deployer_function_name
        env = by_hand_environment(os.environ, function, lambda_client)
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
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
    deployer = Deployer(config, **default_clients(env.get("AWS_REGION") or None))
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
                allow_signature_change=args.allow_signature_change,
            )
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    print(f"{result.status}: {result.message}")
    return 1 if result.status in (ROLLED_BACK, FAILED) else 0


if __name__ == "__main__":
    sys.exit(main())
