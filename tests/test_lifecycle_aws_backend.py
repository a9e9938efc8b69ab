"""AwsBackend verbs beyond the registry: train (the build's steps) and predict (the inference API)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from test_lifecycle_training import BUCKET, GROUP, REPO, evaluation, push_image, put_job_output

from mlops.aws import AwsBackend, AwsSettings
from mlops.backend import PlatformError
from workloads.train import steps


@pytest.fixture
def api() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "key": self.headers.get("x-api-key"), "body": body})
            if "context" not in body:
                answer: dict[str, Any]
                code, answer = 400, {"error": "body needs 'context' or 'instances'", "request_id": "r1"}
            else:
                code, answer = (
                    200,
                    {"request_id": "r2", "model_version": "3", "predictions": [{"label": "setosa"}]},
                )
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/prod", seen
    server.shutdown()


def test_predict_goes_through_the_api_with_the_key(api: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = api
    backend = AwsBackend(AwsSettings.from_env({}, group=GROUP, api_url=url, api_key="k-123"))
    answer = backend.predict({"context": "5.1, 3.5, 1.4, 0.2"})
    assert answer == {"request_id": "r2", "model_version": "3", "predictions": [{"label": "setosa"}]}
    assert seen[0] == {"path": "/prod/predict", "key": "k-123", "body": {"context": "5.1, 3.5, 1.4, 0.2"}}
    with pytest.raises(PlatformError) as err:
        backend.predict({"rows": []})
    assert str(err.value) == "the API answered 400: body needs 'context' or 'instances'"


def test_train_uploads_repo_data_trains_and_registers(
    moto_aws: None, monkeypatch: pytest.MonkeyPatch, repo_root: Path
) -> None:
    monkeypatch.chdir(repo_root)
    ecr = boto3.client("ecr", region_name="us-east-1")
    ecr.create_repository(repositoryName=REPO.split("/", 1)[1])
    digest = push_image(ecr)
    env = {
        "MODEL_PACKAGE_GROUP_NAME": GROUP,
        "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/train",
        "ARTIFACT_BUCKET": BUCKET,
        "IMAGE_URI": f"{REPO}@{digest}",
        "QUALITY_GATE_MIN_ACCURACY": "0.9",
    }
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    boto3.client("sagemaker", region_name="us-east-1").create_model_package_group(ModelPackageGroupName=GROUP)
    monkeypatch.setattr(steps, "job_name", lambda group, commit, now=None: "iris-cli")
    put_job_output(s3, "iris-cli", evaluation(0.97))
    messages: list[str] = []
    backend = AwsBackend(AwsSettings.from_env(env), poll_seconds=0)

    result = backend.train(instance_type="ml.c5.large", progress=lambda m, f: messages.append(m))

    assert (result.job_name, result.status) == ("iris-cli", "Completed")
    assert result.metrics == {"accuracy": 0.97, "f1_macro": 0.96}
    assert result.model_version is not None and result.model_version.version == 1
    assert result.model_version.data_location is not None
    assert result.model_version.data_location.endswith("/iris.csv")
    uploaded = result.model_version.data_location.removeprefix(f"s3://{BUCKET}/")
    assert (
        s3.head_object(Bucket=BUCKET, Key=uploaded)["ContentLength"]
        == (repo_root / "data/iris.csv").stat().st_size
    )
    assert any("training job iris-cli: Completed" in m for m in messages)
    # The image of a version registered by hand is kept by the ECR lifecycle, as the build's are.
    (image,) = ecr.describe_images(repositoryName=REPO.split("/", 1)[1])["imageDetails"]
    assert "registered-v1" in image["imageTags"]

    put_job_output(s3, "iris-cli-2", evaluation(0.5))
    monkeypatch.setattr(steps, "job_name", lambda group, commit, now=None: "iris-cli-2")
    failed = backend.train(data_location=f"s3://{BUCKET}/data/x/iris.csv")
    assert failed.model_version is None
    assert failed.failure_reason is not None and failed.failure_reason.startswith(
        "quality gate not met: accuracy 0.5000"
    )
