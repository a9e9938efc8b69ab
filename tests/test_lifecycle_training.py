"""The build's steps (buildspec.yml -> workloads.train.steps) and run_job.py against moto."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from workloads.train import run_job, steps

ROLE = "arn:aws:iam::123456789012:role/sagemaker-train"
BUCKET = "iris-artifacts"
GROUP = "iris-models"
REPO = "123456789012.dkr.ecr.us-east-1.amazonaws.com/iris-train"
DIGEST = "sha256:" + "3f" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 1,
            "digest": DIGEST,
        },
        "layers": [],
    }
)
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def clients(moto_aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for key, value in {
        "MODEL_PACKAGE_GROUP_NAME": GROUP,
        "ECR_REPOSITORY_URI": REPO,
        "SAGEMAKER_ROLE_ARN": ROLE,
        "ARTIFACT_BUCKET": BUCKET,
        "TRAINING_INSTANCE_TYPE": "ml.m5.xlarge",
        "QUALITY_GATE_MIN_ACCURACY": "0.9",
        "KMS_KEY_ARN": KMS,
        "CODEBUILD_RESOLVED_SOURCE_VERSION": COMMIT,
    }.items():
        monkeypatch.setenv(key, value)
    made = {n: boto3.client(n, region_name="us-east-1") for n in ("s3", "sagemaker", "logs", "ecr")}
    made["s3"].create_bucket(Bucket=BUCKET)
    made["sagemaker"].create_model_package_group(ModelPackageGroupName=GROUP)
    made["ecr"].create_repository(repositoryName=REPO.split("/", 1)[1], imageTagMutability="IMMUTABLE")
    yield made


def push_image(ecr: Any, tag: str = COMMIT) -> str:
    """What `docker push` leaves in ECR: an image tagged with the commit; returns its digest."""
    response = ecr.put_image(repositoryName=REPO.split("/", 1)[1], imageManifest=MANIFEST, imageTag=tag)
    return str(response["image"]["imageId"]["imageDigest"])


def evaluation(accuracy: float) -> dict[str, Any]:
    stat = lambda v: {"value": v, "standard_deviation": "NaN"}  # noqa: E731
    return {
        "version": 0.0,
        "multiclass_classification_metrics": {"accuracy": stat(accuracy), "f1_macro": stat(accuracy - 0.01)},
    }


def put_job_output(
    s3: Any, job: str, payload: dict[str, Any], *, logs: Any = None, signature: dict[str, Any] | None = None
) -> None:
    """What SageMaker leaves after a job: output.tar.gz with SM_OUTPUT_DATA_DIR, model.tar.gz, log lines."""
    buffer = io.BytesIO()
    files = {"evaluation.json": payload, **({"signature.json": signature} if signature else {})}
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket=BUCKET, Key=f"training/{job}/output/output.tar.gz", Body=buffer.getvalue())
    s3.put_object(Bucket=BUCKET, Key=f"training/{job}/output/model.tar.gz", Body=b"model")
    if logs is not None:
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=steps.TRAINING_LOG_GROUP)
        stream = f"{job}/algo-1-1700000000"
        now_ms = int(time.time() * 1000)
        logs.create_log_stream(logGroupName=steps.TRAINING_LOG_GROUP, logStreamName=stream)
        logs.put_log_events(
            logGroupName=steps.TRAINING_LOG_GROUP,
            logStreamName=stream,
            logEvents=[
                {"timestamp": now_ms, "message": "loaded 150 rows from 1 file(s)"},
                {"timestamp": now_ms + 1, "message": "metric accuracy=0.9667"},
            ],
        )


def fail_jobs_on_create(sm: Any, reason: str) -> None:
    """moto completes every job at once; make the next created job Failed, as SageMaker reports it."""
    from moto.sagemaker.models import sagemaker_backends

    def mark_failed(parsed: dict[str, Any], **kwargs: Any) -> None:
        name = parsed["TrainingJobArn"].split("training-job/", 1)[1]
        job: Any = sagemaker_backends["123456789012"]["us-east-1"].training_jobs[name]
        job.training_job_status = "Failed"
        job.failure_reason = reason

    sm.meta.events.register("after-call.sagemaker.CreateTrainingJob", mark_failed)


def test_buildspec_runs_our_steps_with_arguments_they_accept(repo_root: Path) -> None:
    spec = yaml.safe_load((repo_root / "workloads/train/buildspec.yml").read_text())
    assert spec["version"] == 0.2
    commands = [c for phase in spec["phases"].values() for c in phase.get("commands", [])]
    text = "\n".join(commands)
    assert 'docker build --file workloads/Dockerfile --tag "${IMAGE_URI}" .' in text
    assert (
        'IMAGE_URI="${ECR_REPOSITORY_URI}:${COMMIT}"' in text
        and 'COMMIT="${CODEBUILD_RESOLVED_SOURCE_VERSION}"' in text
    )
    assert "docker login --username AWS --password-stdin" in text
    step_lines = [c for c in commands if "workloads.train.steps" in c]
    invoked = []
    for line in step_lines:
        argv = shlex.split(line.split("python -m workloads.train.steps", 1)[1].removesuffix(')"'))
        args = steps.build_parser().parse_args(argv)
        invoked.append(args.step)
    assert invoked == [
        "image-digest",
        "image-digest",
        "upload-data",
        "start-training",
        "wait",
        "gate",
        "register",
    ]
    assert not any(c.startswith("export ") and "$(" in c for c in commands)


def test_build_steps_upload_train_gate_register(
    clients: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    repo_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(repo_root)

    def step(*argv: str) -> str:
        assert steps.main(list(argv), clients) == 0, capsys.readouterr().err
        return capsys.readouterr().out.strip()

    assert step("image-digest", "--image-tag", COMMIT) == ""
    pushed = push_image(clients["ecr"])
    assert step("image-digest", "--image-tag", COMMIT, "--require") == pushed

    data_uri = step("upload-data", "--data-path", "data/iris.csv")
    assert data_uri == f"s3://{BUCKET}/data/{COMMIT}/iris.csv"
    head = clients["s3"].head_object(Bucket=BUCKET, Key=f"data/{COMMIT}/iris.csv")
    assert (
        head["ServerSideEncryption"] == "aws:kms"
        and head["ContentLength"] == (repo_root / "data/iris.csv").stat().st_size
    )

    job = step("start-training", "--data-uri", data_uri, "--image-uri", f"{REPO}@{pushed}")
    assert job.startswith(f"{GROUP}-01234567-") and len(job) <= 63
    desc = clients["sagemaker"].describe_training_job(TrainingJobName=job)
    assert desc["AlgorithmSpecification"]["TrainingImage"] == f"{REPO}@{pushed}"
    assert desc["HyperParameters"] == {"min_accuracy": "0.9"}
    assert desc["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == data_uri
    assert desc["InputDataConfig"][0]["ChannelName"] == "train"
    assert desc["ResourceConfig"] == {
        "InstanceType": "ml.m5.xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 10,
        "VolumeKmsKeyId": KMS,
    }
    assert desc["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/training", "KmsKeyId": KMS}

    put_job_output(clients["s3"], job, evaluation(0.9667), logs=clients["logs"])
    assert steps.main(["wait", "--job-name", job, "--poll-seconds", "0"], clients) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"s3://{BUCKET}/training/{job}/output/model.tar.gz"
    assert "  | metric accuracy=0.9667" in err and f"training job {job}: Completed/Completed" in err

    evaluation_uri = step("gate", "--job-name", job)
    assert evaluation_uri == f"s3://{BUCKET}/training/{job}/output/evaluation.json"
    published = json.loads(
        clients["s3"].get_object(Bucket=BUCKET, Key=f"training/{job}/output/evaluation.json")["Body"].read()
    )
    assert published == evaluation(0.9667)

    arn = step("register", "--job-name", job, "--evaluation-uri", evaluation_uri, "--image-digest", pushed)
    package = clients["sagemaker"].describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["ModelPackageVersion"] == 1
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"] == {
        "ContentType": "application/json",
        "S3Uri": evaluation_uri,
    }
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == f"{REPO}@{pushed}" and container["ImageDigest"] == pushed
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/training/{job}/output/model.tar.gz"
    assert package["CustomerMetadataProperties"] == {
        "commit": COMMIT,
        "data_location": data_uri,
        "image_digest": pushed,
        "training_job": job,
        "accuracy": "0.9667",
        "f1_macro": "0.9567",
    }
    assert package["MetadataProperties"]["CommitId"] == COMMIT
    # Finding 12: the registered image carries registered-v1, which the ECR lifecycle never expires.
    (image,) = clients["ecr"].describe_images(repositoryName=REPO.split("/", 1)[1])["imageDetails"]
    assert sorted(image["imageTags"]) == sorted([COMMIT, "registered-v1"])


def test_the_models_signature_is_recorded_in_the_model_package(clients: dict[str, Any]) -> None:
    # signature.json as workloads/train/finish.py writes it beside evaluation.json.
    features = [{"name": f"feature_{i:02d}", "type": "number"} for i in range(30)] + [
        {"name": "size", "type": "string"}
    ]
    signature = {
        "task": "classification",
        "target": "diagnosis",
        "features": features,
        "output": {"kind": "classes", "classes": ["benign", "malignant"], "onnx_label": "value"},
        "group": GROUP,
        "estimator": "sklearn.pipeline.Pipeline(StandardScaler, LogisticRegression)",
        "hyperparameters": {"max_iter": "1000", "C": "1.0"},
    }
    settings = steps.TrainingSettings.from_env(image_uri=f"{REPO}:{COMMIT}")
    job = steps.start_training(clients["sagemaker"], settings, f"s3://{BUCKET}/data/x.csv", COMMIT)
    put_job_output(clients["s3"], job, evaluation(0.95), signature=signature)
    evaluation_uri = steps.gate(clients["s3"], clients["sagemaker"], job, 0.9, log=lambda _: None)
    arn = steps.register(clients["sagemaker"], clients["s3"], settings, job, evaluation_uri, commit=COMMIT)
    props = clients["sagemaker"].describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    assert props["signature_task"] == "classification"
    assert props["signature_target"] == "diagnosis"
    assert props["signature_n_features"] == "31"
    assert props["signature_classes"] == "benign malignant"
    assert props["estimator"] == "sklearn.pipeline.Pipeline_StandardScaler_ LogisticRegression_"
    assert props["hyperparameters"] == "C=1.0 max_iter=1000"
    # 31 features do not fit in one 256-character value: cut visibly; the published file has them all.
    assert len(props["signature_features"]) == 256 and props["signature_features"].endswith("...")
    assert props["signature_features"].startswith("feature_00:number feature_01:number ")
    assert props["signature"] == f"s3://{BUCKET}/training/{job}/output/signature.json"
    published = clients["s3"].get_object(Bucket=BUCKET, Key=f"training/{job}/output/signature.json")
    assert json.loads(published["Body"].read()) == signature


def test_gate_not_met_fails_the_build_and_registers_nothing(
    clients: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = steps.TrainingSettings.from_env(image_uri=f"{REPO}:{COMMIT}")
    job = steps.start_training(clients["sagemaker"], settings, f"s3://{BUCKET}/data/x.csv", COMMIT)
    put_job_output(clients["s3"], job, evaluation(0.6))
    assert steps.main(["gate", "--job-name", job], clients) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"gate: failed: quality gate not met: accuracy 0.6000 < 0.9000 (QUALITY_GATE_MIN_ACCURACY); model not "
        f"registered; evaluation at s3://{BUCKET}/training/{job}/output/evaluation.json"
    )
    assert (
        clients["sagemaker"].list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"] == []
    )


def test_failed_training_job_fails_the_wait_step_with_its_reason(
    clients: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fail_jobs_on_create(
        clients["sagemaker"],
        "AlgorithmError: data/iris.csv line 7: column sepal_width: 'abc' is not a number",
    )
    settings = steps.TrainingSettings.from_env(image_uri=f"{REPO}:{COMMIT}")
    job = steps.start_training(clients["sagemaker"], settings, f"s3://{BUCKET}/data/x.csv", COMMIT)
    assert steps.main(["wait", "--job-name", job, "--poll-seconds", "0"], clients) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"wait: failed: training job {job} Failed: AlgorithmError: data/iris.csv line 7: column sepal_width: "
        "'abc' is not a number"
    )


def test_missing_output_and_bad_settings_are_named(
    clients: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = steps.TrainingSettings.from_env(image_uri=f"{REPO}:{COMMIT}")
    job = steps.start_training(clients["sagemaker"], settings, f"s3://{BUCKET}/data/x.csv", COMMIT)
    assert steps.main(["gate", "--job-name", job], clients) == 1
    assert (
        f"training job {job} left no s3://{BUCKET}/training/{job}/output/output.tar.gz"
        in capsys.readouterr().err
    )
    assert steps.main(["upload-data", "--data-path", "no/such.csv"], clients) == 1
    assert (
        "training data no/such.csv does not exist in the repository (mlops.toml [data] path)"
        in capsys.readouterr().err
    )
    monkeypatch.setenv("QUALITY_GATE_MIN_ACCURACY", "high")
    assert steps.main(["gate", "--job-name", job], clients) == 1
    assert "QUALITY_GATE_MIN_ACCURACY='high' is not a number" in capsys.readouterr().err
    monkeypatch.delenv("SAGEMAKER_ROLE_ARN")
    monkeypatch.setenv("QUALITY_GATE_MIN_ACCURACY", "0.5")
    assert steps.main(["start-training", "--data-uri", f"s3://{BUCKET}/d.csv"], clients) == 1
    assert "missing setting(s): SAGEMAKER_ROLE_ARN / --role_arn" in capsys.readouterr().err


def test_run_job_by_hand_trains_gates_and_registers(
    clients: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {},
            "layers": [],
        }
    )
    clients["ecr"].put_image(repositoryName="iris-train", imageManifest=manifest, imageTag="abc")
    pushed = clients["ecr"].describe_images(repositoryName="iris-train")["imageDetails"][0]["imageDigest"]
    monkeypatch.setattr(steps, "job_name", lambda group, commit, now=None: "iris-by-hand")
    put_job_output(clients["s3"], "iris-by-hand", evaluation(0.95), logs=clients["logs"])

    code = run_job.main(
        [
            "--file_location",
            f"s3://{BUCKET}/data/iris.csv",
            "--model_package_group_name",
            GROUP,
            "--instance_type",
            "ml.c5.xlarge",
            "--poll-seconds",
            "0",
        ],
        clients,
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    package = clients["sagemaker"].describe_model_package(ModelPackageName=out.strip())
    assert package["InferenceSpecification"]["Containers"][0]["Image"] == f"{REPO}@{pushed}"
    assert package["CustomerMetadataProperties"]["commit"].startswith("manual-")
    assert "  | loaded 150 rows from 1 file(s)" in err
    desc = clients["sagemaker"].describe_training_job(TrainingJobName="iris-by-hand")
    assert desc["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge"
    # Review of issue 8: a version registered by hand keeps its image from ECR expiry too.
    (image,) = clients["ecr"].describe_images(repositoryName="iris-train")["imageDetails"]
    assert sorted(image["imageTags"]) == ["abc", "registered-v1"]


def test_run_job_exits_nonzero_with_the_failure_reason(
    clients: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fail_jobs_on_create(
        clients["sagemaker"],
        "AlgorithmError: quality gate failed: holdout accuracy 0.5000 < min_accuracy 0.9000",
    )
    code = run_job.main(
        [
            "--file_location",
            f"s3://{BUCKET}/data/iris.csv",
            "--image_uri",
            f"{REPO}:x",
            "--poll-seconds",
            "0",
        ],
        clients,
    )
    assert code == 1
    assert (
        "Failed: AlgorithmError: quality gate failed: holdout accuracy 0.5000 < min_accuracy 0.9000"
        in capsys.readouterr().err
    )
    assert run_job.main(["--file_location", "iris.csv"], clients) == 1
    assert "'iris.csv' is not an s3://bucket/key URI" in capsys.readouterr().err


def test_two_jobs_started_in_the_same_second_get_different_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 8, finding 21: names had second precision only, so two by-hand runs collided.
    from datetime import UTC, datetime

    drawn = iter(["a1b2c3", "d4e5f6", "000000"])
    monkeypatch.setattr(steps.secrets, "token_hex", lambda n: next(drawn) if n == 3 else "")
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    first, second = (steps.job_name(GROUP, "manual-20261201120000", now) for _ in range(2))
    assert first == f"{GROUP}-manual-2-20261201-120000-a1b2c3"
    assert second == f"{GROUP}-manual-2-20261201-120000-d4e5f6"
    long = steps.job_name("g" * 200, "f" * 40, now)
    assert len(long) == 61 and long.startswith("g" * 29 + "-ffffffff-")


def test_codebuild_trains_on_the_commits_mlops_toml_data(tmp_path: Path) -> None:
    (tmp_path / "mlops.toml").write_text('[data]\npath = "data/wine.csv"\ntarget = "quality"\n')
    logged: list[str] = []
    # The stack's TRAINING_DATA_PATH no longer decides; the log says it is ignored.
    assert steps.training_data_path(None, tmp_path, "data/iris.csv", log=logged.append) == "data/wine.csv"
    assert logged == [
        "note: TRAINING_DATA_PATH=data/iris.csv is ignored: the data is mlops.toml's [data] path data/wine.csv",
        "data: data/wine.csv (mlops.toml [data] path)",
    ]
    logged.clear()
    assert steps.training_data_path("data/other.csv", tmp_path, "", log=logged.append) == "data/other.csv"
    assert logged == ["data: data/other.csv (--data-path, overriding mlops.toml [data] path data/wine.csv)"]
    (tmp_path / "mlops.toml").write_text('[data]\npaht = "x.csv"\n')
    with pytest.raises(steps.StepError, match=r"unknown key\(s\) \[data\] paht"):
        steps.training_data_path(None, tmp_path, "", log=logged.append)


def test_codebuild_refuses_a_commit_of_another_model_group_before_uploading_anything(
    clients: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The stack serves one mlops.toml group (modelGroup -> MODEL_GROUP), as the local platform does:
    # a wine model pushed to the iris stack fails at upload-data, before any data or job exists.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wine.csv").write_text("a,quality\n1,5\n")
    (tmp_path / "mlops.toml").write_text(
        '[data]\npath = "data/wine.csv"\ntarget = "quality"\n[model]\ngroup = "wine"\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CODEBUILD_RESOLVED_SOURCE_VERSION", COMMIT)
    monkeypatch.setenv("MODEL_GROUP", "iris")
    assert steps.main(["upload-data"], clients) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "upload-data: failed: mlops.toml [model] group 'wine' is not the group this stack serves "
        "('iris', MODEL_GROUP, stack config mlops:modelGroup): set one to the other"
    )
    assert clients["s3"].list_objects_v2(Bucket=BUCKET, Prefix="data/").get("KeyCount") == 0
    # The stack's group named: the same commit uploads.
    monkeypatch.setenv("MODEL_GROUP", "wine")
    assert steps.main(["upload-data"], clients) == 0
    assert capsys.readouterr().out.strip() == f"s3://{BUCKET}/data/{COMMIT}/wine.csv"


def test_a_regressor_passes_the_gate_step_and_registers_with_its_metrics(clients: dict[str, Any]) -> None:
    stat = lambda v: {"value": v, "standard_deviation": "NaN"}  # noqa: E731
    regression = {"version": 0.0, "regression_metrics": {"r2": stat(0.41), "rmse": stat(55.2)}}
    signature = {
        "task": "regression",
        "target": "progression",
        "features": [{"name": "bmi", "type": "number"}],
        "output": {"kind": "value", "name": "progression", "type": "number"},
    }
    settings = steps.TrainingSettings.from_env(image_uri=f"{REPO}:{COMMIT}")
    job = steps.start_training(clients["sagemaker"], settings, f"s3://{BUCKET}/data/x.csv", COMMIT)
    put_job_output(clients["s3"], job, regression, signature=signature)
    logged: list[str] = []
    # The accuracy floor (0.9 here) has nothing to measure; the job's [gate] judged the regressor.
    uri = steps.gate(clients["s3"], clients["sagemaker"], job, 0.9, log=logged.append)
    assert logged == ["r2 0.4100, rmse 55.2000 (regression: judged by mlops.toml's [gate] in the job)"]
    arn = steps.register(clients["sagemaker"], clients["s3"], settings, job, uri, commit=COMMIT)
    package = clients["sagemaker"].describe_model_package(ModelPackageName=arn)
    props = package["CustomerMetadataProperties"]
    assert (props["r2"], props["rmse"]) == ("0.4100", "55.2000") and "accuracy" not in props
    assert props["signature_output"] == "progression:number" and props["signature_task"] == "regression"
    assert package["ModelPackageDescription"].endswith("r2 0.4100, rmse 55.2000")
