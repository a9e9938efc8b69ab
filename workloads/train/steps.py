"""The build's steps around `docker push`, each a command the buildspec runs (and run_job.py chains):

    python -m workloads.train.steps image-digest --image-tag <commit> -> digest of that image in ECR, or ""
    python -m workloads.train.steps upload-data      -> s3:// URI of the training data, under the commit
    python -m workloads.train.steps start-training --data-uri <s3>   -> training job name
    python -m workloads.train.steps wait --job-name <job>            (progress and the job's log lines)
    python -m workloads.train.steps gate --job-name <job>            -> s3:// URI of evaluation.json
    python -m workloads.train.steps register --job-name <job> --evaluation-uri <s3>  -> package ARN

The one result goes to stdout (so `X=$(python -m ...)` works in the buildspec); progress goes to
stderr. Settings default to the CodeBuild env vars in docs/contracts.md. Exit codes: 0 done,
1 the step failed or a setting is missing (the reason is the last stderr line), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import secrets
import sys
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `workloads` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

Log = Callable[[str], None]

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
EVALUATION_FILE = "evaluation.json"
SIGNATURE_FILE = "signature.json"  # written by workloads/train/finish.py beside evaluation.json
OUTPUT_ARCHIVE = "output.tar.gz"
# evaluation.json is a few KB; anything near this is not ours.
MAX_OUTPUT_ARCHIVE_BYTES = 64 * 1024 * 1024
METRIC_DEFINITIONS = [
    {"Name": "accuracy", "Regex": r"metric accuracy=([0-9.]+)"},
    {"Name": "f1_macro", "Regex": r"metric f1_macro=([0-9.]+)"},
    # A regressor's lines (workloads/train/finish.py); rmse is never negative, r2 can be.
    {"Name": "r2", "Regex": r"metric r2=(-?[0-9.]+)"},
    {"Name": "rmse", "Regex": r"metric rmse=([0-9.]+)"},
]
TERMINAL = ("Completed", "Failed", "Stopped")
# Training job names start with this many characters of the group name (see job_name).
JOB_GROUP_CHARS = 29
# The register step tags the model's image `registered-v<version>`; the ECR lifecycle policy never
# expires an image with such a tag (components/build_pipeline.py), so every registered version can
# still be pulled for a scale-out, an instance replacement or a rollback.
REGISTERED_IMAGE_TAG_PREFIX = "registered-"
_S3_RE = re.compile(r"^s3://(?P<bucket>[^/]+)/(?P<key>.+)$")
_NAME_BAD = re.compile(r"[^a-zA-Z0-9-]")
_ECR_IMAGE_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/(?P<repo>[^:@]+)[:@]"
)


class StepError(Exception):
    """A step failed; the message is the one line the build log ends with."""


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def split_s3(uri: str) -> tuple[str, str]:
    match = _S3_RE.match(uri)
    if not match:
        raise StepError(f"{uri!r} is not an s3://bucket/key URI")
    return match["bucket"], match["key"]


def _float(name: str, raw: str | None, default: float) -> float:
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StepError(f"{name}={raw!r} is not a number") from None
    if not 0 <= value <= 1:
        raise StepError(f"{name}={value} must be between 0 and 1")
    return value


@dataclass(frozen=True)
class TrainingSettings:
    """What a training run needs; `from_env` reads the CodeBuild names from docs/contracts.md."""

    group: str
    role_arn: str
    bucket: str
    image_uri: str = ""
    instance_type: str = "ml.m5.large"
    min_accuracy: float = 0.0
    kms_key_arn: str = ""
    max_runtime_seconds: int = 3600
    hyperparameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> TrainingSettings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "group": env.get("MODEL_PACKAGE_GROUP_NAME", ""),
            "role_arn": env.get("SAGEMAKER_ROLE_ARN", ""),
            "bucket": env.get("ARTIFACT_BUCKET", ""),
            "image_uri": env.get("IMAGE_URI", ""),
            "instance_type": env.get("TRAINING_INSTANCE_TYPE", "") or "ml.m5.large",
            "min_accuracy": _float("QUALITY_GATE_MIN_ACCURACY", env.get("QUALITY_GATE_MIN_ACCURACY"), 0.0),
            "kms_key_arn": env.get("KMS_KEY_ARN", ""),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def require(self, *names: str) -> None:
        env_names = {
            "group": "MODEL_PACKAGE_GROUP_NAME / --model_package_group_name",
            "role_arn": "SAGEMAKER_ROLE_ARN / --role_arn",
            "bucket": "ARTIFACT_BUCKET / --bucket",
            "image_uri": "ECR_REPOSITORY_URI or IMAGE_URI / --image_uri",
        }
        missing = [env_names[n] for n in names if not getattr(self, n)]
        if missing:
            raise StepError(f"missing setting(s): {', '.join(missing)}")


def _sse(kms_key_arn: str) -> dict[str, str]:
    if kms_key_arn:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_arn}
    return {"ServerSideEncryption": "AES256"}


# --- steps ----------------------------------------------------------------------------------------


def training_data_path(
    given: str | None, source_root: Path, env_path: str, *, served_group: str = "", log: Log = stderr_log
) -> str:
    """The data this build trains on: the commit's mlops.toml [data] path (CodeBuild runs in the
    source checkout), or an explicit --data-path, logged. TRAINING_DATA_PATH (the stack's
    trainingDataPath) no longer chooses it; a build that finds it different says so. served_group: the
    stack's modelGroup (MODEL_GROUP); a commit whose mlops.toml names another group fails here."""
    from workloads.train.config import ConfigError, find_config, group_mismatch

    try:
        config = find_config(source_root)
    except ConfigError as exc:
        raise StepError(str(exc)) from None
    # Before anything is uploaded or trained: the stack serves one mlops.toml group (modelGroup).
    mismatch = group_mismatch(
        config.group, served_group, "stack", "MODEL_GROUP, stack config mlops:modelGroup"
    )
    if mismatch:
        raise StepError(mismatch)
    configured = config.data_path
    if given:
        if given != configured:
            log(f"data: {given} (--data-path, overriding mlops.toml [data] path {configured})")
        return given
    if env_path and env_path != configured:
        log(
            f"note: TRAINING_DATA_PATH={env_path} is ignored: the data is mlops.toml's [data] path {configured}"
        )
    log(f"data: {configured} (mlops.toml [data] path)")
    return configured


def upload_data(
    s3: Any, path: str | os.PathLike[str], bucket: str, commit: str, *, kms_key_arn: str = ""
) -> str:
    """Copy the repo's training data to s3://bucket/data/<commit>/<file>: each model keeps its data."""
    source = Path(path)
    if not source.is_file():
        raise StepError(f"training data {source} does not exist in the repository (mlops.toml [data] path)")
    if source.stat().st_size == 0:
        raise StepError(f"training data {source} is empty")
    key = f"data/{commit}/{source.name}"
    s3.upload_file(str(source), bucket, key, ExtraArgs={"ContentType": "text/csv", **_sse(kms_key_arn)})
    return f"s3://{bucket}/{key}"


def job_name_prefix(group: str) -> str:
    """The start of every training job name of a group (the CodeBuild role may create only these)."""
    return _NAME_BAD.sub("-", group)[:JOB_GROUP_CHARS]


def job_name(group: str, commit: str, now: datetime | None = None) -> str:
    """`<group[:29]>-<commit[:8]>-<UTC time>-<6 random hex>`: at most 61 of SageMaker's 63 characters.

    The random part keeps two jobs started in the same second (two by-hand runs, a retried step)
    from colliding on the name, which SageMaker refuses."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    name = f"{job_name_prefix(group)}-{_NAME_BAD.sub('-', commit)[:8]}-{stamp}-{secrets.token_hex(3)}"
    return name[:63]


def start_training(
    sm: Any, settings: TrainingSettings, data_uri: str, commit: str, name: str | None = None
) -> str:
    """Start the SageMaker training job on the pushed image; returns its name."""
    settings.require("group", "role_arn", "bucket", "image_uri")
    split_s3(data_uri)
    name = name or job_name(settings.group, commit)
    output: dict[str, Any] = {"S3OutputPath": f"s3://{settings.bucket}/training"}
    resources: dict[str, Any] = {
        "InstanceType": settings.instance_type,
        "InstanceCount": 1,
        "VolumeSizeInGB": 10,
    }
    if settings.kms_key_arn:
        output["KmsKeyId"] = settings.kms_key_arn
        resources["VolumeKmsKeyId"] = settings.kms_key_arn
    hyperparameters = {"min_accuracy": str(settings.min_accuracy), **settings.hyperparameters}
    sm.create_training_job(
        TrainingJobName=name,
        RoleArn=settings.role_arn,
        AlgorithmSpecification={
            "TrainingImage": settings.image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": METRIC_DEFINITIONS,
        },
        HyperParameters=hyperparameters,
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": data_uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "text/csv",
            }
        ],
        OutputDataConfig=output,
        ResourceConfig=resources,
        StoppingCondition={"MaxRuntimeInSeconds": settings.max_runtime_seconds},
        # Training reads only its channel and writes only /opt/ml: it needs no network.
        EnableNetworkIsolation=True,
        Tags=[
            {"Key": "mlops:commit", "Value": commit[:256]},
            {"Key": "mlops:model-package-group", "Value": settings.group},
        ],
    )
    return name


class TrainingLogTail:
    """New CloudWatch log lines of a training job, each printed once."""

    def __init__(self, logs: Any, job: str) -> None:
        self.logs = logs
        self.job = job
        self.seen: set[str] = set()
        self.start_ms = 0

    def lines(self) -> list[str]:
        found: list[str] = []
        kwargs: dict[str, Any] = {
            "logGroupName": TRAINING_LOG_GROUP,
            "logStreamNamePrefix": f"{self.job}/",
            "startTime": self.start_ms,
        }
        while True:
            try:
                page = self.logs.filter_log_events(**kwargs)
            except Exception as exc:
                # The log group appears only when the first job of the account logs a line.
                if getattr(exc, "response", {}).get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return found
                raise
            for event in page.get("events", []):
                if event["eventId"] in self.seen:
                    continue
                self.seen.add(event["eventId"])
                self.start_ms = max(self.start_ms, int(event["timestamp"]))
                found.append(str(event["message"]).rstrip("\n"))
            token = page.get("nextToken")
            if not token:
                return found
            kwargs["nextToken"] = token


def wait_for_training(
    sm: Any,
    logs: Any,
    name: str,
    *,
    log: Log = stderr_log,
    poll_seconds: float = 30,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the job to its end, relaying status changes and log lines; raise StepError unless Completed."""
    tail = TrainingLogTail(logs, name)
    last = ""
    started = time.monotonic()
    while True:
        desc = sm.describe_training_job(TrainingJobName=name)
        status = f"{desc['TrainingJobStatus']}/{desc.get('SecondaryStatus', '')}"
        if status != last:
            log(f"[{time.monotonic() - started:6.0f}s] training job {name}: {status}")
            last = status
        for line in tail.lines():
            log(f"  | {line}")
        if desc["TrainingJobStatus"] in TERMINAL:
            break
        sleep(poll_seconds)
    if desc["TrainingJobStatus"] != "Completed":
        reason = desc.get("FailureReason") or "no reason given"
        raise StepError(f"training job {name} {desc['TrainingJobStatus']}: {reason}")
    return dict(desc)


def _output_prefix(desc: Mapping[str, Any]) -> str:
    return f"{desc['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{desc['TrainingJobName']}/output"


def _read_output_member(s3: Any, desc: Mapping[str, Any], name: str, *, required: bool = True) -> Any:
    """A JSON file from the job's output.tar.gz (SageMaker packs SM_OUTPUT_DATA_DIR into it)."""
    bucket, key = split_s3(f"{_output_prefix(desc)}/{OUTPUT_ARCHIVE}")
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise StepError(
            f"training job {desc['TrainingJobName']} left no s3://{bucket}/{key}: {exc}"
        ) from None
    if head["ContentLength"] > MAX_OUTPUT_ARCHIVE_BYTES:
        raise StepError(f"s3://{bucket}/{key} is {head['ContentLength']} bytes; expected a small archive")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
            member = next((m for m in archive.getmembers() if m.isfile() and Path(m.name).name == name), None)
            handle = archive.extractfile(member) if member else None
            if handle is None:
                if not required:
                    return None
                raise StepError(f"s3://{bucket}/{key} holds no {name}")
            return json.loads(handle.read())
    except (tarfile.TarError, OSError) as exc:
        raise StepError(f"s3://{bucket}/{key} is not a readable tar.gz: {exc}") from None
    except json.JSONDecodeError as exc:
        raise StepError(f"{name} in s3://{bucket}/{key} is not valid JSON: {exc}") from None


def read_evaluation(s3: Any, desc: Mapping[str, Any]) -> dict[str, Any]:
    """evaluation.json from the job's output.tar.gz."""
    return dict(_read_output_member(s3, desc, EVALUATION_FILE))


def read_signature(s3: Any, desc: Mapping[str, Any]) -> dict[str, Any] | None:
    """signature.json from the job's output.tar.gz; None for an image from before it was written."""
    found = _read_output_member(s3, desc, SIGNATURE_FILE, required=False)
    if found is None:
        return None
    if not isinstance(found, Mapping) or not isinstance(found.get("features"), list):
        raise StepError(f"{SIGNATURE_FILE} of training job {desc['TrainingJobName']} has no features list")
    return dict(found)


def signature_uri(evaluation_uri: str) -> str:
    return evaluation_uri.rsplit("/", 1)[0] + "/" + SIGNATURE_FILE


def published_signature(s3: Any, evaluation_uri: str) -> dict[str, Any] | None:
    """The signature the gate step published beside evaluation.json; None if the job wrote none."""
    bucket, key = split_s3(signature_uri(evaluation_uri))
    try:
        found = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise StepError(f"cannot read s3://{bucket}/{key}: {exc}") from None
    return dict(found)


def _property_value(text: str, limit: int = 256) -> str:
    """A CustomerMetadataProperties value: letters, digits, spaces and _.:/=+-@ only, at most 256
    characters. Anything else becomes "_" and a long value is cut visibly ("..."): the exact
    signature is the `signature` object this property set points at, and model.tar.gz's metadata.json."""
    safe = "".join(c if c.isalnum() or c.isspace() or c in "_.:/=+-@" else "_" for c in text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def signature_properties(signature: Mapping[str, Any], uri: str) -> dict[str, str]:
    """The model's signature as CustomerMetadataProperties: task, target, features (name:type in
    input order, space-separated), the classes or the regression output, and where the whole is."""
    features = signature.get("features") or []
    output = signature.get("output") or {}
    props = {
        "signature": _property_value(uri),
        "signature_task": _property_value(str(signature.get("task", ""))),
        "signature_target": _property_value(str(signature.get("target", ""))),
        "signature_features": _property_value(" ".join(f"{f['name']}:{f['type']}" for f in features)),
        "signature_n_features": str(len(features)),
    }
    if output.get("kind") == "classes":
        props["signature_classes"] = _property_value(" ".join(map(str, output.get("classes", []))))
    else:
        props["signature_output"] = _property_value(
            f"{output.get('name', '')}:{output.get('type', 'number')}"
        )
    # What was trained, where the job recorded it (an image from before did not): shown by `mlops models`.
    if signature.get("estimator"):
        props["estimator"] = _property_value(str(signature["estimator"]))
    hyper = signature.get("hyperparameters")
    if isinstance(hyper, Mapping) and hyper:
        props["hyperparameters"] = _property_value(" ".join(f"{k}={v}" for k, v in sorted(hyper.items())))
    # An empty value is refused by CreateModelPackage; leave such a key out.
    return {k: v for k, v in props.items() if v}


def metrics_of(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers from a Model Registry style evaluation.json: accuracy and f1_macro for a
    classifier, r2 and rmse for a regressor."""
    for section, names in (
        ("multiclass_classification_metrics", ("accuracy", "f1_macro")),
        ("regression_metrics", ("r2", "rmse")),
    ):
        stats = evaluation.get(section)
        if not isinstance(stats, Mapping):
            continue
        found: dict[str, float] = {}
        for name in names:
            try:
                found[name] = float(stats[name]["value"])
            except (KeyError, TypeError, ValueError):
                raise StepError(f"{EVALUATION_FILE} has no numeric {name}.value") from None
        return found
    raise StepError(f"{EVALUATION_FILE} has neither multiclass_classification_metrics nor regression_metrics")


def _headline(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def gate(
    s3: Any, sm: Any, name: str, min_accuracy: float, *, kms_key_arn: str = "", log: Log = stderr_log
) -> str:
    """Publish the job's evaluation.json (and signature.json, where the job wrote one) as objects of
    their own and check the quality gate on the evaluation."""
    desc = sm.describe_training_job(TrainingJobName=name)
    if desc["TrainingJobStatus"] != "Completed":
        raise StepError(f"training job {name} is {desc['TrainingJobStatus']}, not Completed")
    evaluation = read_evaluation(s3, desc)
    metrics = metrics_of(evaluation)
    signature = read_signature(s3, desc)
    uri = f"{_output_prefix(desc)}/{EVALUATION_FILE}"
    published = {EVALUATION_FILE: evaluation, **({SIGNATURE_FILE: signature} if signature else {})}
    for name_, payload in published.items():
        bucket, key = split_s3(f"{_output_prefix(desc)}/{name_}")
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(payload, indent=2, sort_keys=True).encode(),
            ContentType="application/json",
            **_sse(kms_key_arn),
        )
    if "accuracy" not in metrics:
        # The job judged it by mlops.toml's [gate] already (a miss fails the job); the accuracy floor
        # has nothing to measure on a regressor.
        log(f"{_headline(metrics)} (regression: judged by mlops.toml's [gate] in the job)")
        return uri
    log(f"{_headline(metrics)} (gate: accuracy >= {min_accuracy:.4f})")
    if metrics["accuracy"] < min_accuracy:
        raise StepError(
            f"quality gate not met: accuracy {metrics['accuracy']:.4f} < {min_accuracy:.4f} "
            f"(QUALITY_GATE_MIN_ACCURACY); model not registered; evaluation at {uri}"
        )
    return uri


def image_digest_of(image_uri: str) -> str:
    return image_uri.split("@", 1)[1] if "@sha256:" in image_uri else ""


def _ecr_repository(image_uri: str) -> tuple[str, str] | None:
    """(registry id, repository name) of an ECR image URI, or None for another registry."""
    match = _ECR_IMAGE_RE.match(image_uri)
    return (match["account"], match["repo"]) if match else None


def image_digest_for_tag(ecr: Any, repository_uri: str, tag: str) -> str:
    """The digest of the image tagged `tag` in the ECR repository, or "" when there is none.

    Tags are immutable, so a second build of the same commit (a pipeline retry, a push followed by
    `aws codebuild start-build`) reuses the image the first one pushed instead of failing at push."""
    found = _ecr_repository(f"{repository_uri}:{tag}")
    if found is None:
        raise StepError(f"{repository_uri!r} is not an ECR repository URI")
    registry, repository = found
    try:
        page = ecr.describe_images(
            registryId=registry, repositoryName=repository, imageIds=[{"imageTag": tag}]
        )
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") == "ImageNotFoundException":
            return ""
        raise StepError(f"cannot look up {repository_uri}:{tag}: {exc}") from None
    details = page.get("imageDetails", [])
    return str(details[0]["imageDigest"]) if details else ""


def protect_image(ecr: Any, image_uri: str, digest: str, version: int, *, log: Log = stderr_log) -> str:
    """Tag the registered model's image `registered-v<version>`, which the ECR lifecycle keeps forever.

    Returns the tag, or "" when the image is not in ECR (a by-hand run with another registry)."""
    found = _ecr_repository(image_uri)
    if found is None or not digest:
        return ""
    registry, repository = found
    tag = f"{REGISTERED_IMAGE_TAG_PREFIX}v{version}"
    ids = {"registryId": registry, "repositoryName": repository}
    images = ecr.batch_get_image(**ids, imageIds=[{"imageDigest": digest}]).get("images", [])
    if not images:
        raise StepError(f"image {repository}@{digest} is not in ECR; cannot protect it from expiry")
    try:
        ecr.put_image(
            **ids,
            imageManifest=images[0]["imageManifest"],
            imageManifestMediaType=images[0].get("imageManifestMediaType")
            or "application/vnd.docker.distribution.manifest.v2+json",
            imageTag=tag,
            imageDigest=digest,
        )
    except Exception as exc:
        # A retried register step tags the same image again: already there is done.
        if getattr(exc, "response", {}).get("Error", {}).get("Code") not in (
            "ImageAlreadyExistsException",
            "ImageTagAlreadyExistsException",
        ):
            raise StepError(f"cannot tag {repository}@{digest} as {tag}: {exc}") from None
    log(f"tagged {repository}@{digest} as {tag} (kept by the ECR lifecycle policy)")
    return tag


def register(
    sm: Any,
    s3: Any,
    settings: TrainingSettings,
    name: str,
    evaluation_uri: str,
    *,
    commit: str,
    image_digest: str = "",
    ecr: Any = None,
) -> str:
    """Register the job's model as PendingManualApproval with its metrics and provenance.

    With an ECR client, the model's image is then tagged so the lifecycle policy keeps it."""
    settings.require("group")
    desc = sm.describe_training_job(TrainingJobName=name)
    if desc["TrainingJobStatus"] != "Completed":
        raise StepError(
            f"training job {name} is {desc['TrainingJobStatus']}, not Completed; nothing registered"
        )
    bucket, key = split_s3(evaluation_uri)
    try:
        evaluation = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as exc:
        raise StepError(f"cannot read {evaluation_uri}: {exc}") from None
    metrics = metrics_of(evaluation)
    signature = published_signature(s3, evaluation_uri)
    image = desc["AlgorithmSpecification"]["TrainingImage"]
    digest = image_digest or image_digest_of(image)
    if digest and "@" not in image:
        # Pin the image the model was trained with: a tag can be moved, a digest cannot.
        image = f"{image.rsplit(':', 1)[0] if ':' in image.split('/')[-1] else image}@{digest}"
    data_uri = desc["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    container: dict[str, Any] = {"Image": image, "ModelDataUrl": desc["ModelArtifacts"]["S3ModelArtifacts"]}
    if digest:
        container["ImageDigest"] = digest
    properties = {
        "commit": commit,
        "data_location": data_uri,
        "image_digest": digest or "unknown",
        "training_job": name,
        **{k: f"{v:.4f}" for k, v in metrics.items()},
        # What the model takes and answers, in the registry itself (also in model.tar.gz's metadata.json).
        **(signature_properties(signature, signature_uri(evaluation_uri)) if signature else {}),
    }
    response = sm.create_model_package(
        ModelPackageGroupName=settings.group,
        ModelPackageDescription=f"commit {commit[:12]}, data {data_uri}, {_headline(metrics)}"[:1024],
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [container],
            "SupportedContentTypes": ["application/json", "text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={
            "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": evaluation_uri}}
        },
        MetadataProperties={"CommitId": commit[:1024], "GeneratedBy": desc["TrainingJobArn"]},
        CustomerMetadataProperties={k: str(v)[:256] for k, v in properties.items()},
        # The same job registered twice (a retried build step) is one package.
        ClientToken=hashlib.sha256(name.encode()).hexdigest()[:36],
    )
    arn = str(response["ModelPackageArn"])
    if ecr is not None:
        protect_image(ecr, image, digest, int(arn.rsplit("/", 1)[1]))
    return arn


# --- command line ---------------------------------------------------------------------------------


def _clients() -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    retry = Config(retries={"mode": "standard", "max_attempts": 8})
    return {n: boto3.client(n, config=retry) for n in ("s3", "sagemaker", "logs", "ecr")}


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    commit = env("CODEBUILD_RESOLVED_SOURCE_VERSION", "")
    parser = argparse.ArgumentParser(
        prog="steps", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--commit", default=commit, help="source commit (default CODEBUILD_RESOLVED_SOURCE_VERSION)"
    )
    sub = parser.add_subparsers(dest="step", required=True)
    digest = sub.add_parser("image-digest", help="digest of ECR_REPOSITORY_URI:<tag>, empty if none")
    digest.add_argument("--image-tag", required=True)
    digest.add_argument("--require", action="store_true", help="fail when there is no such image")
    up = sub.add_parser("upload-data")
    up.add_argument(
        "--data-path",
        default=None,
        help="training data in the checkout (default: mlops.toml [data] path); logged as an override",
    )
    start = sub.add_parser("start-training")
    start.add_argument("--data-uri", required=True)
    start.add_argument("--image-uri", default=None, help="default ECR_REPOSITORY_URI:<commit>")
    start.add_argument("--job-name", default=None)
    wait = sub.add_parser("wait")
    wait.add_argument("--job-name", required=True)
    wait.add_argument("--poll-seconds", type=float, default=30.0)
    gate_p = sub.add_parser("gate")
    gate_p.add_argument("--job-name", required=True)
    gate_p.add_argument("--min-accuracy", default=None, help="default QUALITY_GATE_MIN_ACCURACY")
    reg = sub.add_parser("register")
    reg.add_argument("--job-name", required=True)
    reg.add_argument("--evaluation-uri", required=True)
    reg.add_argument("--image-digest", default="", help="sha256:... of the pushed image")
    return parser


def main(argv: Sequence[str] | None = None, clients: Mapping[str, Any] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = TrainingSettings.from_env()
        if args.step in ("upload-data", "start-training") and not args.commit:
            raise StepError("no commit: set CODEBUILD_RESOLVED_SOURCE_VERSION or pass --commit")
        c = clients or _clients()
        if args.step == "image-digest":
            repo = os.environ.get("ECR_REPOSITORY_URI", "")
            if not repo:
                raise StepError("missing setting(s): ECR_REPOSITORY_URI")
            found = image_digest_for_tag(c["ecr"], repo, args.image_tag)
            if args.require and not found:
                raise StepError(f"no image {repo}:{args.image_tag} in ECR (did docker push fail above?)")
            print(found)
        elif args.step == "upload-data":
            settings.require("bucket")
            data_path = training_data_path(
                args.data_path,
                Path.cwd(),
                os.environ.get("TRAINING_DATA_PATH", ""),
                served_group=os.environ.get("MODEL_GROUP", ""),
            )
            print(
                upload_data(
                    c["s3"], data_path, settings.bucket, args.commit, kms_key_arn=settings.kms_key_arn
                )
            )
        elif args.step == "start-training":
            repo = os.environ.get("ECR_REPOSITORY_URI", "")
            image = args.image_uri or settings.image_uri or (f"{repo}:{args.commit}" if repo else "")
            settings = TrainingSettings.from_env(image_uri=image)
            name = start_training(c["sagemaker"], settings, args.data_uri, args.commit, args.job_name)
            stderr_log(f"started training job {name} on {settings.instance_type} with {image}")
            print(name)
        elif args.step == "wait":
            desc = wait_for_training(c["sagemaker"], c["logs"], args.job_name, poll_seconds=args.poll_seconds)
            print(desc["ModelArtifacts"]["S3ModelArtifacts"])
        elif args.step == "gate":
            floor = _float("--min-accuracy", args.min_accuracy, settings.min_accuracy)
            print(gate(c["s3"], c["sagemaker"], args.job_name, floor, kms_key_arn=settings.kms_key_arn))
        else:
            if not args.commit:
                raise StepError("no commit: set CODEBUILD_RESOLVED_SOURCE_VERSION or pass --commit")
            arn = register(
                c["sagemaker"],
                c["s3"],
                settings,
                args.job_name,
                args.evaluation_uri,
                commit=args.commit,
                image_digest=args.image_digest,
                ecr=c.get("ecr"),
            )
            stderr_log(
                f"registered {arn} (PendingManualApproval): approve it with workloads/train/approve.py"
            )
            print(arn)
    except StepError as exc:
        stderr_log(f"{args.step}: failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
