"""Approve (or reject) a registered model by hand, after looking at its metrics.

    python workloads/train/approve.py --model_package_arn <arn> [--description "why"]
    python workloads/train/approve.py --model_package_arn <arn> --reject --reason "why not"

Shows the version's metrics, provenance and input signature, then records the decision with the
approver's identity (sts get-caller-identity) in ApprovalDescription. Only a PendingManualApproval
version is changed unless --force. Approving starts the blue/green deployment (EventBridge -> deployer
Lambda).

An approval whose input signature breaks the callers of the version serving on the endpoint
(--endpoint-name, default ENDPOINT_NAME: features added, removed, retyped or moved, the task changed)
is refused, saying why; --allow-signature-change approves it anyway and is recorded with the
approval, so the deployer deploys it. Without an endpoint name the comparison is left to the deployer,
which refuses such an approval event (and says so on the endpoint: `mlops --target aws status`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workloads.serve.deployer import lifecycle, signatures
from workloads.train import registry


def describe(package: dict[str, Any], metrics: dict[str, Any], s3: Any = None) -> str:
    props = package.get("CustomerMetadataProperties") or {}
    sig = signatures.of_package(package, s3)
    container = (package.get("InferenceSpecification", {}).get("Containers") or [{}])[0]
    lines = [
        f"model package  {package['ModelPackageArn']}",
        f"version        {package['ModelPackageVersion']} of {package.get('ModelPackageGroupName')}: "
        f"{package.get('ModelApprovalStatus')}",
        f"commit         {props.get('commit') or 'unknown'}",
        f"data           {props.get('data_location') or 'unknown'}",
        f"image          {container.get('Image') or 'unknown'}",
        f"signature      {sig.describe() if sig else 'not recorded'}",
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
    parser.add_argument(
        "--allow-signature-change",
        action="store_true",
        help="approve even if the input signature breaks the serving version's callers (recorded)",
    )
    parser.add_argument(
        "--endpoint_name",
        "--endpoint-name",
        default=os.environ.get("ENDPOINT_NAME") or None,
        help="the endpoint whose serving version the signature is compared with (default ENDPOINT_NAME)",
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
        print(describe(package, registry.metrics(c["s3"], package), c["s3"]))
        status = registry.REJECTED if args.reject else registry.APPROVED
        text = args.reason if args.reject else args.description
        gate = None
        if status == registry.APPROVED and args.endpoint_name:
            gate = registry.signature_check(
                c["sagemaker"], c["s3"], package, args.endpoint_name, allow=args.allow_signature_change
            )
        elif status == registry.APPROVED:
            print(
                "signature      not compared here (no --endpoint-name or ENDPOINT_NAME); the deployer "
                "refuses an approval that breaks the serving version's callers"
            )
        after = registry.decide(
            c["sagemaker"],
            c["sts"],
            ref.arn,
            status,
            text,
            force=args.force,
            allow_signature_change=args.allow_signature_change,
            gate=gate,
        )
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
