"""Approve (or reject) a registered model by hand, after looking at its metrics.

    python workloads/train/approve.py --model_package_arn <arn> [--description "why"]
    python workloads/train/approve.py --model_package_arn <arn> --reject --reason "why not"

Shows the version's metrics and provenance, then records the decision with the approver's identity
(sts get-caller-identity) in ApprovalDescription. Only a PendingManualApproval version is changed
unless --force. Approving starts the blue/green deployment (EventBridge -> deployer Lambda).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workloads.serve.deployer import lifecycle
from workloads.train import registry


def describe(package: dict[str, Any], metrics: dict[str, Any]) -> str:
    props = package.get("CustomerMetadataProperties") or {}
    container = (package.get("InferenceSpecification", {}).get("Containers") or [{}])[0]
    lines = [
        f"model package  {package['ModelPackageArn']}",
        f"version        {package['ModelPackageVersion']} of {package.get('ModelPackageGroupName')}: "
        f"{package.get('ModelApprovalStatus')}",
        f"commit         {props.get('commit') or 'unknown'}",
        f"data           {props.get('data_location') or 'unknown'}",
        f"image          {container.get('Image') or 'unknown'}",
    ]
    for name, value in metrics.items():
        if isinstance(value, float):
            lines.append(f"{name:<14} {value:.4f}")
        elif name != "confusion_matrix":
            lines.append(f"{name:<14} {value}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_package_arn", "--model-package-arn", required=True)
    parser.add_argument("--description", default="", help="why it is approved (kept in ApprovalDescription)")
    parser.add_argument("--reject", action="store_true", help="reject instead of approving")
    parser.add_argument("--reason", default="", help="why it is rejected (required with --reject)")
    parser.add_argument(
        "--force", action="store_true", help="change a version that is not PendingManualApproval"
    )
    return parser


def main(argv: Sequence[str] | None = None, clients: dict[str, Any] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.reject and not args.reason.strip():
        print("approve: --reject needs --reason", file=sys.stderr)
        return 2
    try:
        ref = lifecycle.parse_version_ref(args.model_package_arn)
        if ref.arn is None:
            raise lifecycle.LifecycleError(f"{args.model_package_arn!r} is not a model package ARN")
        c = clients or _clients(ref.arn)
        package = registry.describe(c["sagemaker"], ref.arn)
        print(describe(package, registry.metrics(c["s3"], package)))
        status = registry.REJECTED if args.reject else registry.APPROVED
        text = args.reason if args.reject else args.description
        after = registry.decide(c["sagemaker"], c["sts"], ref.arn, status, text, force=args.force)
    except (lifecycle.LifecycleError, registry.RegistryError) as exc:
        print(f"approve: {exc}", file=sys.stderr)
        return 1
    print(f"{after['ModelApprovalStatus']}: {after.get('ApprovalDescription')}")
    return 0


def _clients(arn: str) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    # The package's ARN names its region.
    region = arn.split(":")[3] or None
    retry = Config(retries={"mode": "standard", "max_attempts": 8})
    return {n: boto3.client(n, region_name=region, config=retry) for n in ("sagemaker", "s3", "sts")}


if __name__ == "__main__":
    sys.exit(main())
