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

from mlops.aws import AwsBackend, AwsSettings
from mlops.backend import ModelVersion, PlatformError


def describe(model: ModelVersion) -> str:
    lines = [
        f"model package  {model.arn}",
        f"version        {model.version} of {model.group}: {model.status}",
        f"commit         {model.source_commit or 'unknown'}",
        f"data           {model.data_location or 'unknown'}",
        f"image          {model.image_uri or 'unknown'}",
    ]
    for name, value in model.metrics.items():
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
    group = args.model_package_arn.rsplit("/", 2)[-2] if args.model_package_arn.count("/") >= 2 else ""
    backend = AwsBackend(AwsSettings.from_env(group=group), clients=clients)
    try:
        print(describe(backend.get_model(args.model_package_arn)))
        if args.reject:
            model = backend.reject(args.model_package_arn, reason=args.reason, force=args.force)
        else:
            model = backend.approve(args.model_package_arn, description=args.description, force=args.force)
    except PlatformError as exc:
        print(f"approve: {exc}", file=sys.stderr)
        return 1
    print(f"{model.status}: {model.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
