"""AwsBackend.logs (CodeBuild build logs and training job logs from CloudWatch Logs) and AwsBackend.predict
straight to the SageMaker endpoint (no MLOPS_API_URL), against moto.

CloudWatch Logs, SageMaker and the sagemaker-runtime success path are moto. Two clients get a botocore
Stubber instead, because moto 5.2 cannot answer the way AWS does:
- codebuild: moto's BatchGetBuilds reports no `logs.groupName`/`logs.streamName` (the fields the code reads),
  marks every build SUCCEEDED when it is read, and ListBuildsForProject ignores `sortOrder`;
- sagemaker-runtime errors: moto's InvokeEndpoint answers for any endpoint name and cannot fail, so
  "Endpoint ... not found" and ModelError are stubbed with the shapes AWS returns.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests
from botocore.stub import Stubber
from moto_sagemaker_ext import ACCOUNT, IMAGE, REGION
from test_cli import run
from test_lifecycle_training import ROLE

from mlops.aws import AwsBackend, AwsSettings
from mlops.backend import PlatformError
from workloads.train import steps

PROJECT = "mlops-dev-build"  # the build project; its log group has the same name
NEW_BUILD = f"{PROJECT}:5b1f6c3e-8a2d-4f0b-9c7e-2d4a6b8c0e1f"
OLD_BUILD = f"{PROJECT}:0a9e8d7c-6b5a-4f3e-8d2c-1b0a9f8e7d6c"
ENDPOINT = "iris-endpoint"
NEW_LINES = [
    "[Container] 2024/05/01 10:00:00.000000 Running on CodeBuild On-demand",
    "[Container] 2024/05/01 10:00:01.000000 Entering phase INSTALL",
    "python -m workloads.train.run_job",
    "training job iris-models-20240501100002: InProgress",
    "training job iris-models-20240501100002: Completed",
    "[Container] 2024/05/01 10:07:40.000000 Phase complete: POST_BUILD State: SUCCEEDED",
]
OLD_LINES = ["[Container] 2024/04/30 09:00:00.000000 Entering phase BUILD", "quality gate not met"]

STACK_HINT = "{} is not known: name the stack (--stack <name> or MLOPS_STACK), whose outputs name it"


def put_lines(logs: Any, group: str, stream: str, lines: list[str], *, start_ms: int | None = None) -> None:
    """Log events the way CodeBuild/SageMaker write them: one event per line, newline-terminated."""
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    first = int(time.time() * 1000) if start_ms is None else start_ms
    for offset in range(0, len(lines), 10_000):  # PutLogEvents takes at most 10,000 events
        chunk = lines[offset : offset + 10_000]
        answer = logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[
                {"timestamp": first + offset + i, "message": line + "\n"} for i, line in enumerate(chunk)
            ],
        )
        assert "rejectedLogEventsInfo" not in answer, answer["rejectedLogEventsInfo"]


def stream_of(build_id: str) -> str:
    """CodeBuild names a build's log stream after the part of the build id that follows `project:`."""
    return build_id.split(":", 1)[1]


def build(build_id: str, status: str = "SUCCEEDED", *, with_log: bool = True) -> dict[str, Any]:
    """One build as BatchGetBuilds describes it (the project logs to the log group named after it)."""
    logs: dict[str, Any] = {"cloudWatchLogs": {"status": "ENABLED", "groupName": PROJECT}}
    if with_log:
        stream = stream_of(build_id)
        logs.update(
            groupName=PROJECT,
            streamName=stream,
            cloudWatchLogsArn=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{PROJECT}:log-stream:{stream}",
            deepLink=f"https://console.aws.amazon.com/cloudwatch/home?region={REGION}#logEvent:group={PROJECT};stream={stream}",
        )
    return {
        "id": build_id,
        "arn": f"arn:aws:codebuild:{REGION}:{ACCOUNT}:build/{build_id}",
        "projectName": PROJECT,
        "buildStatus": status,
        "currentPhase": "COMPLETED" if status != "IN_PROGRESS" else "BUILD",
        "startTime": datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        "logs": logs,
    }


def expect_latest(stubber: Stubber, ids: list[str]) -> None:
    stubber.add_response(
        "list_builds_for_project",
        {"ids": ids} if ids else {},  # a project with no builds: the answer has no ids at all
        {"projectName": PROJECT, "sortOrder": "DESCENDING"},
    )


def expect_describe(stubber: Stubber, build_id: str, described: dict[str, Any] | None) -> None:
    answer: dict[str, Any] = (
        {"builds": [described]} if described else {"builds": [], "buildsNotFound": [build_id]}
    )
    stubber.add_response("batch_get_builds", answer, {"ids": [build_id]})


@pytest.fixture
def codebuild(moto_aws: None) -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("codebuild", region_name=REGION)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()  # every expected CodeBuild call was made


@pytest.fixture
def logs_client(moto_aws: None) -> Any:
    return boto3.client("logs", region_name=REGION)


def backend_with(codebuild_client: Any, *, project: str = PROJECT, **kw: Any) -> AwsBackend:
    settings = AwsSettings.from_env({}, group="iris-models", build_project=project, region=REGION)
    return AwsBackend(settings, clients={"codebuild": codebuild_client}, poll_seconds=0, **kw)


# --- build logs -----------------------------------------------------------------------------------


def test_logs_are_the_latest_builds_lines_in_order(codebuild: tuple[Any, Stubber], logs_client: Any) -> None:
    client, stubber = codebuild
    put_lines(logs_client, PROJECT, stream_of(OLD_BUILD), OLD_LINES)
    put_lines(logs_client, PROJECT, stream_of(NEW_BUILD), NEW_LINES)
    expect_latest(stubber, [NEW_BUILD, OLD_BUILD])  # CodeBuild lists newest first when asked DESCENDING
    expect_describe(stubber, NEW_BUILD, build(NEW_BUILD))

    assert list(backend_with(client).logs()) == NEW_LINES


def test_logs_limit_keeps_the_last_lines(codebuild: tuple[Any, Stubber], logs_client: Any) -> None:
    client, stubber = codebuild
    put_lines(logs_client, PROJECT, stream_of(NEW_BUILD), NEW_LINES)
    for _ in range(2):
        expect_latest(stubber, [NEW_BUILD])
        expect_describe(stubber, NEW_BUILD, build(NEW_BUILD))
    backend = backend_with(client)

    assert list(backend.logs(limit=2)) == NEW_LINES[-2:]
    assert list(backend.logs(limit=len(NEW_LINES) + 5)) == NEW_LINES


def test_logs_of_an_explicit_build_id_skip_the_listing(
    codebuild: tuple[Any, Stubber], logs_client: Any
) -> None:
    client, stubber = codebuild
    put_lines(logs_client, PROJECT, stream_of(OLD_BUILD), OLD_LINES)
    put_lines(logs_client, PROJECT, stream_of(NEW_BUILD), NEW_LINES)
    expect_describe(stubber, OLD_BUILD, build(OLD_BUILD, "FAILED"))  # no list_builds_for_project queued

    # An explicit build id works without BUILD_PROJECT_NAME.
    assert list(backend_with(client, project="").logs(OLD_BUILD)) == OLD_LINES


def test_a_log_longer_than_one_page_comes_back_whole(
    codebuild: tuple[Any, Stubber], logs_client: Any
) -> None:
    client, stubber = codebuild
    lines = [f"step {i}" for i in range(10_250)]  # GetLogEvents answers at most 10,000 events a page
    put_lines(logs_client, PROJECT, stream_of(NEW_BUILD), lines)
    expect_describe(stubber, NEW_BUILD, build(NEW_BUILD))
    expect_describe(stubber, NEW_BUILD, build(NEW_BUILD))
    backend = backend_with(client)

    assert list(backend.logs(NEW_BUILD, limit=20_000)) == lines
    assert list(backend.logs(NEW_BUILD, limit=3)) == ["step 10247", "step 10248", "step 10249"]


def test_follow_prints_new_lines_until_the_build_ends(
    codebuild: tuple[Any, Stubber], logs_client: Any
) -> None:
    client, stubber = codebuild
    stream = stream_of(NEW_BUILD)
    start = int(time.time() * 1000)
    put_lines(logs_client, PROJECT, stream, NEW_LINES[:3], start_ms=start)
    expect_describe(stubber, NEW_BUILD, build(NEW_BUILD, "IN_PROGRESS"))
    expect_describe(stubber, NEW_BUILD, build(NEW_BUILD, "IN_PROGRESS"))
    expect_describe(stubber, NEW_BUILD, build(NEW_BUILD, "SUCCEEDED"))
    later = iter([NEW_LINES[3:5], NEW_LINES[5:]])
    naps: list[float] = []

    def sleep(seconds: float) -> None:  # the build writes more while the CLI waits
        naps.append(seconds)
        put_lines(logs_client, PROJECT, stream, next(later), start_ms=start + 10 * len(naps))

    backend = backend_with(client, sleep=sleep)
    backend.poll_seconds = 5

    assert list(backend.logs(NEW_BUILD, follow=True, limit=2)) == NEW_LINES[1:]
    assert naps == [5, 5]


def test_logs_without_a_build_project_name_the_setting(codebuild: tuple[Any, Stubber]) -> None:
    client, _ = codebuild  # nothing queued: any CodeBuild call would fail the test
    with pytest.raises(PlatformError) as err:
        list(backend_with(client, project="").logs())
    assert str(err.value) == STACK_HINT.format("BUILD_PROJECT_NAME")


def test_logs_of_a_project_without_builds_say_so(codebuild: tuple[Any, Stubber]) -> None:
    client, stubber = codebuild
    expect_latest(stubber, [])
    with pytest.raises(PlatformError) as err:
        list(backend_with(client).logs())
    assert str(err.value) == f"build project {PROJECT} has no builds yet"


def test_logs_of_a_project_that_does_not_exist_name_it(codebuild: tuple[Any, Stubber]) -> None:
    client, stubber = codebuild
    stubber.add_client_error(
        "list_builds_for_project",
        service_error_code="ResourceNotFoundException",
        service_message=f"The provided project arn:aws:codebuild:{REGION}:{ACCOUNT}:project/mlops-typo does not exist",
        http_status_code=400,
        expected_params={"projectName": "mlops-typo", "sortOrder": "DESCENDING"},
    )
    with pytest.raises(PlatformError) as err:
        list(backend_with(client, project="mlops-typo").logs())
    assert str(err.value) == (
        "cannot list the builds of project mlops-typo: The provided project "
        f"arn:aws:codebuild:{REGION}:{ACCOUNT}:project/mlops-typo does not exist"
    )


def test_logs_of_an_unknown_build_name_it(codebuild: tuple[Any, Stubber]) -> None:
    client, stubber = codebuild
    missing = f"{PROJECT}:00000000-0000-4000-8000-000000000000"
    expect_describe(stubber, missing, None)
    with pytest.raises(PlatformError) as err:
        list(backend_with(client).logs(missing))
    assert str(err.value) == f"no build {missing}"


def test_logs_of_a_malformed_build_id_pass_on_codebuilds_reason(codebuild: tuple[Any, Stubber]) -> None:
    client, stubber = codebuild
    stubber.add_client_error(
        "batch_get_builds",
        service_error_code="InvalidInputException",
        service_message="Invalid build ID provided",
        http_status_code=400,
        expected_params={"ids": [f"{PROJECT}:"]},
    )
    with pytest.raises(PlatformError) as err:
        list(backend_with(client).logs(f"{PROJECT}:"))
    assert str(err.value) == f"cannot read build {PROJECT}:: Invalid build ID provided"


def test_logs_of_a_build_that_has_not_started_logging_say_so(codebuild: tuple[Any, Stubber]) -> None:
    client, stubber = codebuild
    expect_latest(stubber, [NEW_BUILD])
    expect_describe(stubber, NEW_BUILD, build(NEW_BUILD, "IN_PROGRESS", with_log=False))
    with pytest.raises(PlatformError) as err:
        list(backend_with(client).logs())
    assert str(err.value) == f"build {NEW_BUILD} has no CloudWatch log yet"


def test_logs_whose_stream_is_gone_name_the_group_and_stream(
    codebuild: tuple[Any, Stubber], logs_client: Any
) -> None:
    client, stubber = codebuild
    put_lines(logs_client, PROJECT, stream_of(NEW_BUILD), NEW_LINES)  # the group exists, OLD's stream not
    expect_describe(stubber, OLD_BUILD, build(OLD_BUILD))
    with pytest.raises(PlatformError) as err:
        list(backend_with(client).logs(OLD_BUILD))
    assert str(err.value).startswith(
        f"cannot read the log of build {OLD_BUILD} (log group {PROJECT}, stream {stream_of(OLD_BUILD)}): "
    )


# --- training job logs ----------------------------------------------------------------------------


def start_training_job(name: str) -> None:
    boto3.client("sagemaker", region_name=REGION).create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://iris-artifacts/training"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )


def test_logs_of_a_training_job_come_from_its_streams(logs_client: Any) -> None:
    job = "iris-models-20240501100002"
    start_training_job(job)
    lines = ["loaded 150 rows from 1 file(s)", "metric accuracy=0.9667", "metric f1_macro=0.9665"]
    put_lines(logs_client, steps.TRAINING_LOG_GROUP, f"{job}/algo-1-1714557602", lines)
    backend = AwsBackend(AwsSettings.from_env({}, group="iris-models", region=REGION), poll_seconds=0)
    asked: list[dict[str, Any]] = []
    backend.client("logs").meta.events.register(
        "request-created.logs.FilterLogEvents", lambda request, **_: asked.append(json.loads(request.body))
    )

    assert list(backend.logs(job)) == lines
    # moto ignores logStreamNamePrefix, so check the request itself: only this job's streams.
    assert asked == [
        {"logGroupName": steps.TRAINING_LOG_GROUP, "logStreamNamePrefix": f"{job}/", "startTime": 0}
    ]
    assert list(backend.logs(job, limit=1)) == ["metric f1_macro=0.9665"]
    with pytest.raises(PlatformError) as err:
        list(backend.logs("no-such-job"))
    assert str(err.value).startswith("no build or training job 'no-such-job': ")


# --- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def aws_cli_env(moto_aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLOPS_TARGET", "MLOPS_API_URL", "MLOPS_API_KEY", "BUILD_PROJECT_NAME", "ENDPOINT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL_PACKAGE_GROUP_NAME", "iris-models")


def test_cli_logs_json_prints_one_object_per_line(
    aws_cli_env: None,
    codebuild: tuple[Any, Stubber],
    logs_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, stubber = codebuild
    monkeypatch.setenv("BUILD_PROJECT_NAME", PROJECT)
    # The CLI builds its backend from the environment; only the CodeBuild client is the stubbed one.
    real_from_env = AwsBackend.from_env
    monkeypatch.setattr(
        AwsBackend,
        "from_env",
        classmethod(
            lambda cls, stack=None: AwsBackend(real_from_env().settings, clients={"codebuild": client})
        ),
    )
    put_lines(logs_client, PROJECT, stream_of(NEW_BUILD), NEW_LINES)
    # `mlops logs` names the build first, reads its log, then its verdict (issue 12: a failed build's
    # log exits 1): one describe each.
    expect_latest(stubber, [NEW_BUILD])
    for _ in range(6):
        expect_describe(stubber, NEW_BUILD, build(NEW_BUILD))

    code, out, err = run(capsys, "--target", "aws", "logs", "--json")
    assert (code, err) == (0, "")
    assert [json.loads(line) for line in out.splitlines()] == [{"line": line} for line in NEW_LINES]

    code, out, err = run(capsys, "--target", "aws", "logs", NEW_BUILD, "--limit", "1")
    assert (code, out, err) == (0, NEW_LINES[-1] + "\n", "")


def test_cli_logs_without_a_project_is_one_error_line(
    aws_cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--target", "aws", "logs", "--json")
    message = STACK_HINT.format("BUILD_PROJECT_NAME")
    # One line on stderr for people, and with --json the message alone as one JSON object on stdout.
    assert (code, out, err) == (1, {"error": message, "exit_code": 1}, f"mlops: error: {message}\n")


# --- predict straight to the endpoint -------------------------------------------------------------

ANSWER = {
    "model_version": "3",
    "predictions": [
        {"label": "setosa", "probabilities": {"setosa": 0.98, "versicolor": 0.02, "virginica": 0.0}}
    ],
}


def queue_endpoint_answers(*bodies: dict[str, Any]) -> None:
    """moto's documented way to set what InvokeEndpoint answers (the moto API's endpoint-results queue)."""
    results = [
        {"Body": json.dumps(b), "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic"}
        for b in bodies
    ]
    requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
        json={"account_id": ACCOUNT, "region": REGION, "results": results},
        timeout=5,
    ).raise_for_status()


def endpoint_backend(**kw: Any) -> AwsBackend:
    return AwsBackend(AwsSettings.from_env({}, group="iris-models", endpoint=ENDPOINT, region=REGION, **kw))


def test_predict_without_an_api_url_invokes_the_endpoint(moto_aws: None) -> None:
    queue_endpoint_answers(ANSWER)
    backend = endpoint_backend()
    sent: list[Any] = []
    backend.client("sagemaker-runtime").meta.events.register(
        "request-created.sagemaker-runtime.InvokeEndpoint", lambda request, **_: sent.append(request)
    )

    answer = backend.predict({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})

    assert answer == ANSWER
    (request,) = sent
    assert request.method == "POST"
    assert request.url == f"https://runtime.sagemaker.{REGION}.amazonaws.com/endpoints/{ENDPOINT}/invocations"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert json.loads(request.body) == {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}


def stubbed_runtime(backend: AwsBackend) -> Stubber:
    return Stubber(backend.client("sagemaker-runtime"))


def expected_call(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "EndpointName": ENDPOINT,
        "ContentType": "application/json",
        "Accept": "application/json",
        "Body": json.dumps(payload).encode(),
    }


def test_predict_on_a_missing_endpoint_names_it(moto_aws: None) -> None:
    backend = endpoint_backend()
    payload = {"context": "5.1, 3.5, 1.4, 0.2"}
    with stubbed_runtime(backend) as stubber:
        stubber.add_client_error(
            "invoke_endpoint",
            service_error_code="ValidationError",
            service_message=f"Endpoint {ENDPOINT} of account {ACCOUNT} not found.",
            http_status_code=400,
            expected_params=expected_call(payload),
        )
        with pytest.raises(PlatformError) as err:
            backend.predict(payload)
        stubber.assert_no_pending_responses()
    assert (
        str(err.value) == f"endpoint {ENDPOINT} answered: Endpoint {ENDPOINT} of account {ACCOUNT} not found."
    )


def test_predict_when_the_model_fails_passes_on_its_message(moto_aws: None) -> None:
    backend = endpoint_backend()
    payload = {"instances": [[5.1, 3.5, 1.4]]}
    message = (
        'Received client error (400) from primary with message "{"error": "row 1: expected 4 features, got 3"}". '
        f"See https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}#logEventViewer:"
        f"group=/aws/sagemaker/Endpoints/{ENDPOINT} in account {ACCOUNT} for more information."
    )
    with stubbed_runtime(backend) as stubber:
        stubber.add_client_error(
            "invoke_endpoint",
            service_error_code="ModelError",
            service_message=message,
            http_status_code=424,
            expected_params=expected_call(payload),
        )
        with pytest.raises(PlatformError) as err:
            backend.predict(payload)
        stubber.assert_no_pending_responses()
    assert str(err.value) == f"endpoint {ENDPOINT} answered: {message}"


def test_predict_without_api_url_or_endpoint_names_both_settings(moto_aws: None) -> None:
    backend = AwsBackend(AwsSettings.from_env({}, group="iris-models", region=REGION))
    # Nothing queued on the stubber: a call to the runtime would fail the test.
    with stubbed_runtime(backend), pytest.raises(PlatformError) as err:
        backend.predict({"context": "5.1, 3.5, 1.4, 0.2"})
    assert str(err.value) == STACK_HINT.format("ENDPOINT_NAME")


def test_cli_predict_goes_to_the_endpoint_named_in_the_environment(
    aws_cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    queue_endpoint_answers(ANSWER)
    # The CLI makes its own client; a handler on a fresh default session sees what that client sends.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", boto3.Session())
    sent: list[Any] = []
    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register(
        "request-created.sagemaker-runtime.InvokeEndpoint", lambda request, **_: sent.append(request)
    )

    code, out, err = run(capsys, "--target", "aws", "predict", "5.1, 3.5, 1.4, 0.2", "--json")

    assert (code, out, err) == (0, ANSWER, "")
    (request,) = sent
    assert request.url == f"https://runtime.sagemaker.{REGION}.amazonaws.com/endpoints/{ENDPOINT}/invocations"
    assert json.loads(request.body) == {"context": "5.1, 3.5, 1.4, 0.2"}
