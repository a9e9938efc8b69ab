"""Train and register a model by hand: the build's steps after `docker push`, in one command.

    python workloads/train/run_job.py --file_location s3://bucket/data/iris.csv \
        --model_package_group_name iris-models --instance_type ml.m5.large

Optional: --image_uri (default: the newest image in ECR_REPOSITORY_URI), --role_arn (default
SAGEMAKER_ROLE_ARN), --min_accuracy (default QUALITY_GATE_MIN_ACCURACY), --bucket (default
ARTIFACT_BUCKET, where the job writes its output). Waits with progress and the job's log lines, checks
the quality gate, registers the model PendingManualApproval and prints its ARN. Exits 1 with the
failure reason when the job fails or the gate is not met.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `workloads` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workloads.train import steps
from workloads.train.steps import StepError, TrainingSettings


@dataclass
class RunResult:
    job_name: str
    status: str
    package_arn: str | None
    metrics: dict[str, float]
    failure_reason: str | None = None


def newest_image(ecr: Any, repository_uri: str) -> str:
    """`repo@sha256:...` of the most recently pushed image of an ECR repository."""
    name = repository_uri.split("/", 1)[1] if "/" in repository_uri else repository_uri
    images: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"repositoryName": name, "filter": {"tagStatus": "ANY"}}
    while True:
        page = ecr.describe_images(**kwargs)
        images.extend(page.get("imageDetails", []))
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    if not images:
        raise StepError(f"ECR repository {name} holds no image; push one or pass --image_uri")
    latest = max(images, key=lambda i: i["imagePushedAt"])
    return f"{repository_uri}@{latest['imageDigest']}"


def run(
    clients: Mapping[str, Any],
    settings: TrainingSettings,
    data_uri: str,
    *,
    commit: str | None = None,
    wait: bool = True,
    log: Callable[[str], None] = steps.stderr_log,
    poll_seconds: float = 30,
) -> RunResult:
    """Start the job; if waiting, follow it, gate it and register it. Failures are in the result."""
    commit = commit or "manual-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    name = steps.start_training(clients["sagemaker"], settings, data_uri, commit)
    log(f"started training job {name} on {settings.instance_type} ({settings.image_uri})")
    if not wait:
        return RunResult(name, "InProgress", None, {})
    try:
        steps.wait_for_training(
            clients["sagemaker"], clients["logs"], name, log=log, poll_seconds=poll_seconds
        )
        evaluation_uri = steps.gate(
            clients["s3"],
            clients["sagemaker"],
            name,
            settings.min_accuracy,
            kms_key_arn=settings.kms_key_arn,
            log=log,
        )
    except StepError as exc:
        desc = clients["sagemaker"].describe_training_job(TrainingJobName=name)
        return RunResult(name, desc["TrainingJobStatus"], None, {}, str(exc))
    # With ECR, the registered image is tagged so the lifecycle policy keeps it (as the build does).
    arn = steps.register(
        clients["sagemaker"],
        clients["s3"],
        settings,
        name,
        evaluation_uri,
        commit=commit,
        ecr=clients.get("ecr"),
    )
    bucket, key = steps.split_s3(evaluation_uri)
    metrics = steps.metrics_of(json.loads(clients["s3"].get_object(Bucket=bucket, Key=key)["Body"].read()))
    log(f"registered {arn} (PendingManualApproval)")
    return RunResult(name, "Completed", arn, metrics)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--file_location", "--file-location", required=True, help="s3:// URI of the training CSV"
    )
    parser.add_argument("--model_package_group_name", "--model-package-group-name", default=None)
    parser.add_argument("--instance_type", "--instance-type", default=None)
    parser.add_argument("--image_uri", "--image-uri", default=None)
    parser.add_argument("--role_arn", "--role-arn", default=None)
    parser.add_argument("--min_accuracy", "--min-accuracy", type=float, default=None)
    parser.add_argument(
        "--bucket", default=None, help="bucket for the job's output (default ARTIFACT_BUCKET)"
    )
    parser.add_argument("--commit", default=None, help="recorded with the model (default manual-<time>)")
    parser.add_argument("--poll-seconds", type=float, default=30.0)
    return parser


def _clients() -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    retry = Config(retries={"mode": "standard", "max_attempts": 8})
    return {n: boto3.client(n, config=retry) for n in ("s3", "sagemaker", "logs", "ecr")}


def main(argv: Sequence[str] | None = None, clients: Mapping[str, Any] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.min_accuracy is not None and not 0 <= args.min_accuracy <= 1:
            raise StepError(f"--min_accuracy {args.min_accuracy} must be between 0 and 1")
        settings = TrainingSettings.from_env(
            group=args.model_package_group_name,
            instance_type=args.instance_type,
            role_arn=args.role_arn,
            min_accuracy=args.min_accuracy,
            bucket=args.bucket,
            image_uri=args.image_uri,
        )
        steps.split_s3(args.file_location)
        c = clients or _clients()
        if not settings.image_uri and os.environ.get("ECR_REPOSITORY_URI"):
            settings = replace(settings, image_uri=newest_image(c["ecr"], os.environ["ECR_REPOSITORY_URI"]))
        result = run(c, settings, args.file_location, commit=args.commit, poll_seconds=args.poll_seconds)
    except StepError as exc:
        print(f"run_job: {exc}", file=sys.stderr)
        return 1
    if result.package_arn is None:
        print(
            f"run_job: training job {result.job_name} {result.status}: {result.failure_reason}",
            file=sys.stderr,
        )
        return 1
    print(result.package_arn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
