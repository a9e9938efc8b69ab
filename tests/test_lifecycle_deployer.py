"""The deployer Lambda and deploy.py against moto (UpdateEndpoint from tests/moto_sagemaker_ext.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import moto_sagemaker_ext as ext
import pytest

from workloads.serve import deploy
from workloads.serve.deployer import deployer as dp
from workloads.serve.deployer import handler as lambda_handler

GROUP = "iris-models"
ENDPOINT = "iris-endpoint"
ALARMS = ["iris-endpoint-5xx", "iris-endpoint-latency"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, moto_aws: None) -> Iterator[dict[str, str]]:
    ext.install()
    ext.reset()
    values = {
        "MODEL_PACKAGE_GROUP_NAME": GROUP,
        "ENDPOINT_NAME": ENDPOINT,
        "EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/sagemaker-exec",
        "INSTANCE_TYPE": "ml.m5.large",
        "INITIAL_INSTANCE_COUNT": "2",
        "TRAFFIC_STEP_PERCENT": "25",
        "TRAFFIC_WAIT_SECONDS": "120",
        "ROLLBACK_ALARM_NAMES": ",".join(ALARMS),
        "TERMINATION_WAIT_SECONDS": "300",
        "MAXIMUM_EXECUTION_TIMEOUT_SECONDS": "3600",
        "DATA_CAPTURE_S3_URI": "s3://iris-capture/endpoint",
        "AUTOSCALING_MIN_CAPACITY": "2",
        "AUTOSCALING_MAX_CAPACITY": "6",
        "AUTOSCALING_TARGET_INVOCATIONS": "200",
        "KMS_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "AWS_LAMBDA_FUNCTION_NAME": "iris-deployer",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    yield values
    ext.reset()


@pytest.fixture
def sm(env: dict[str, str]) -> Any:
    return boto3.client("sagemaker", region_name="us-east-1")


def approve(sm: Any, arn: str) -> dict[str, Any]:
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="ok")
    return ext.package_event(sm, arn)


def tags(sm: Any) -> dict[str, str]:
    arn = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointArn"]
    return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}


def config_names(sm: Any) -> list[str]:
    return sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"])


def model_names(sm: Any) -> list[str]:
    return sorted(m["ModelName"] for m in sm.list_models()["Models"])


def deploy_v1(sm: Any) -> str:
    arn = ext.register_package(sm, GROUP, commit="v1commit")
    assert lambda_handler.handler(approve(sm, arn))["status"] == dp.IN_PROGRESS
    assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == dp.SUCCEEDED
    return arn


def test_first_approval_creates_endpoint_then_endpoint_event_verifies_it(sm: Any) -> None:
    arn = ext.register_package(sm, GROUP, commit="abc123")
    result = lambda_handler.handler(approve(sm, arn))

    assert result["status"] == dp.IN_PROGRESS
    assert result["version"] == 1
    name = result["endpoint_config"]
    assert name.startswith(f"{ENDPOINT}-v1-") and len(name) == len(ENDPOINT) + len("-v1-") + 8
    model = sm.describe_model(ModelName=name)
    assert model["PrimaryContainer"]["Image"] == ext.IMAGE
    assert (
        model["PrimaryContainer"]["ModelDataUrl"]
        == "s3://mlops-artifacts/training/abc123/output/model.tar.gz"
    )
    assert model["PrimaryContainer"]["Environment"] == {"MODEL_VERSION": "1"}
    config = sm.describe_endpoint_config(EndpointConfigName=name)
    variant = config["ProductionVariants"][0]
    assert (
        variant["VariantName"],
        variant["ModelName"],
        variant["InstanceType"],
        variant["InitialInstanceCount"],
    ) == (
        dp.VARIANT_NAME,
        name,
        "ml.m5.large",
        2,
    )
    assert config["DataCaptureConfig"]["DestinationS3Uri"] == "s3://iris-capture/endpoint"
    assert config["KmsKeyId"].endswith("1234567890ab")
    config_tags = {
        t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=config["EndpointConfigArn"])["Tags"]
    }
    assert config_tags[dp.TAG_MANAGED_BY] == "deployer" and config_tags[dp.TAG_ENDPOINT] == ENDPOINT
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == name
    assert tags(sm)[dp.TAG_STATUS] == dp.IN_PROGRESS and tags(sm)[dp.TAG_TARGET] == "1"
    assert dp.TAG_SERVING not in tags(sm)

    verified = lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))
    assert verified["status"] == dp.SUCCEEDED
    assert tags(sm)[dp.TAG_SERVING] == "1"
    aas = boto3.client("application-autoscaling", region_name="us-east-1")
    target = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
    assert target["ResourceId"] == f"endpoint/{ENDPOINT}/variant/{dp.VARIANT_NAME}"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)
    policy = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 200.0


def test_second_version_updates_blue_green_linear_with_alarms_and_keeps_instance_count(sm: Any) -> None:
    deploy_v1(sm)
    v1_config = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    # Autoscaling moved the live fleet to 4 instances; the new fleet must start there, not at 2.
    sm.update_endpoint_weights_and_capacities(
        EndpointName=ENDPOINT,
        DesiredWeightsAndCapacities=[{"VariantName": dp.VARIANT_NAME, "DesiredInstanceCount": 4}],
    )
    arn2 = ext.register_package(sm, GROUP, commit="v2commit")
    result = lambda_handler.handler(approve(sm, arn2))

    assert result["status"] == dp.IN_PROGRESS and result["from_version"] == 1
    assert len(ext.behaviour.updates) == 1
    update = ext.behaviour.updates[0]
    expected = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "LINEAR",
                # 25% of the live 4 instances: one whole instance per step (finding 8).
                "LinearStepSize": {"Type": "INSTANCE_COUNT", "Value": 1},
                "WaitIntervalInSeconds": 120,
            },
            "TerminationWaitInSeconds": 300,
            "MaximumExecutionTimeoutInSeconds": 3600,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in ALARMS]},
    }
    assert update["DeploymentConfig"] == expected
    assert update["RetainAllVariantProperties"] is True
    assert update["ExcludeRetainedVariantProperties"] == [{"VariantPropertyType": "DataCaptureConfig"}]
    desc = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert desc["LastDeploymentConfig"] == expected
    assert desc["ProductionVariants"][0]["DesiredInstanceCount"] == 4
    new_config = sm.describe_endpoint_config(EndpointConfigName=result["endpoint_config"])
    assert new_config["ProductionVariants"][0]["InitialInstanceCount"] == 4

    verified = lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))
    assert verified["status"] == dp.SUCCEEDED and verified["version"] == 2
    assert tags(sm)[dp.TAG_SERVING] == "2"
    # v1's config and model are no longer used by any endpoint: cleaned up.
    assert config_names(sm) == [result["endpoint_config"]]
    assert model_names(sm) == [result["endpoint_config"]]
    assert v1_config not in config_names(sm)


def test_sagemaker_rollback_is_reported_as_failure_with_emf_metric(
    sm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    deploy_v1(sm)
    v1_config = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    ext.behaviour.mode = "rollback"
    arn2 = ext.register_package(sm, GROUP, commit="bad")
    started = lambda_handler.handler(approve(sm, arn2))
    capsys.readouterr()

    outcome = lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))

    assert outcome["status"] == dp.ROLLED_BACK and outcome["version"] == 2
    assert ext.ROLLBACK_REASON.split(":")[0] in outcome["message"]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 1
    assert emf[0]["_aws"]["CloudWatchMetrics"][0] == {
        "Namespace": "MLOps/Deployer",
        "Dimensions": [["Endpoint"]],
        "Metrics": [{"Name": "DeploymentsFailed", "Unit": "Count"}],
    }
    assert (emf[0]["Endpoint"], emf[0]["DeploymentsFailed"], emf[0]["ModelVersion"]) == (ENDPOINT, 1, 2)
    assert tags(sm)[dp.TAG_SERVING] == "1"
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == v1_config
    # The rolled-back config is unused, so it goes; v1's stays.
    assert config_names(sm) == [v1_config]
    assert started["endpoint_config"] not in model_names(sm)
    # A second endpoint event (SageMaker may send several) reports the same outcome, counted once.
    again = lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))
    assert again["status"] == dp.ROLLED_BACK
    assert '"_aws"' not in capsys.readouterr().out
    # The same approval event delivered again does not retry the failed version.
    assert lambda_handler.handler(ext.package_event(sm, arn2))["status"] == dp.SKIPPED
    assert len(ext.behaviour.updates) == 1


def test_duplicate_events_start_one_deployment(sm: Any) -> None:
    deploy_v1(sm)
    ext.behaviour.mode = "hold"
    arn2 = ext.register_package(sm, GROUP, commit="v2")
    event = approve(sm, arn2)
    first = lambda_handler.handler(event)
    during = lambda_handler.handler(event)
    in_progress = lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))
    ext.finish(ENDPOINT, "complete")
    done = lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))
    after = lambda_handler.handler(event)

    assert first["status"] == dp.IN_PROGRESS
    assert during == {**during, "status": dp.SKIPPED, "message": "version 2 is already being deployed"}
    assert in_progress["status"] == dp.IN_PROGRESS and in_progress["message"] == "endpoint is Updating"
    assert done["status"] == dp.SUCCEEDED
    assert after["status"] == dp.SKIPPED and "already deployed" in after["message"]
    assert len(ext.behaviour.updates) == 1
    assert len(config_names(sm)) == 1


def test_out_of_order_and_foreign_events_are_ignored(sm: Any) -> None:
    deploy_v1(sm)
    arn2 = ext.register_package(sm, GROUP, commit="v2")
    arn3 = ext.register_package(sm, GROUP, commit="v3")
    late_v2 = approve(sm, arn2)
    assert lambda_handler.handler(approve(sm, arn3))["version"] == 3
    lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))

    stale = lambda_handler.handler(late_v2)
    assert (
        stale["status"] == dp.SKIPPED
        and stale["message"] == "version 2 is not newer than the serving version 3"
    )

    other_group = {**late_v2, "detail": {**late_v2["detail"], "ModelPackageGroupName": "other-group"}}
    assert (
        lambda_handler.handler(other_group)["message"] == "event for group 'other-group', not 'iris-models'"
    )
    arn4 = ext.register_package(sm, GROUP, commit="v4")
    sm.update_model_package(ModelPackageArn=arn4, ModelApprovalStatus="Rejected", ApprovalDescription="no")
    rejected = lambda_handler.handler(ext.package_event(sm, arn4))
    assert rejected["message"] == "package status 'Rejected' is not Approved"
    # An Approved event for a package rejected since: the registry's current status wins.
    assert lambda_handler.handler(ext.package_event(sm, arn4, status="Approved"))["message"] == (
        "version 4 is Rejected, not Approved; nothing deployed"
    )
    other_endpoint = ext.endpoint_event(sm, ENDPOINT)
    other_endpoint["detail"]["EndpointName"] = "someone-elses"
    assert lambda_handler.handler(other_endpoint)["status"] == dp.SKIPPED
    assert lambda_handler.handler({"detail-type": "Something Else", "detail": {}})["status"] == dp.SKIPPED
    assert tags(sm)[dp.TAG_SERVING] == "3"
    assert [u["EndpointConfigName"].split("-")[2] for u in ext.behaviour.updates] == ["v3"]


def test_version_approved_while_endpoint_busy_is_deployed_after(sm: Any) -> None:
    deploy_v1(sm)
    ext.behaviour.mode = "hold"
    arn2 = ext.register_package(sm, GROUP, commit="v2")
    arn3 = ext.register_package(sm, GROUP, commit="v3")
    lambda_handler.handler(approve(sm, arn2))
    queued = lambda_handler.handler(approve(sm, arn3))
    assert queued["message"] == "endpoint is Updating; version 3 queued, deployed when the endpoint is free"
    assert tags(sm)[dp.TAG_PENDING] == "3"

    ext.finish(ENDPOINT, "complete")
    ext.behaviour.mode = "complete"
    next_one = lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))
    assert next_one["status"] == dp.IN_PROGRESS and next_one["version"] == 3
    assert tags(sm)[dp.TAG_SERVING] == "2"
    assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == dp.SUCCEEDED
    assert tags(sm)[dp.TAG_SERVING] == "3" and tags(sm)[dp.TAG_PENDING] == ""


def test_throttled_calls_are_retried(sm: Any, env: dict[str, str]) -> None:
    arn = ext.register_package(sm, GROUP)
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    clients = dp.default_clients("us-east-1")
    calls: list[str] = []

    def throttle_first(request: Any, **kwargs: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        calls.append("DescribeModelPackage")
        if len(calls) > 1:
            return None  # let the real (moto) call through
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        raw = type("Raw", (), {"stream": lambda self, **k: iter([body])})()
        return AWSResponse(request.url, 400, {"x-amzn-ErrorType": "ThrottlingException"}, raw)

    clients["sagemaker"].meta.events.register("before-send.sagemaker.DescribeModelPackage", throttle_first)
    deployer = dp.Deployer(dp.DeployerConfig.from_env(), **clients, in_lambda=True)
    result = deployer.deploy(arn)
    assert result.status == dp.IN_PROGRESS and result.version == 1
    assert len(calls) == 2


def test_lifecycle_delete_tears_everything_down(sm: Any) -> None:
    deploy_v1(sm)
    assert lambda_handler.handler({"tf": {"action": "create", "prev_input": None}})["status"] == dp.SKIPPED
    assert lambda_handler.handler({"tf": {"action": "update"}})["status"] == dp.SKIPPED
    result = lambda_handler.handler({"tf": {"action": "delete", "prev_input": {}}})

    assert result["status"] == "TornDown"
    assert sm.list_endpoints()["Endpoints"] == []
    assert config_names(sm) == [] and model_names(sm) == []
    aas = boto3.client("application-autoscaling", region_name="us-east-1")
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert sorted(r.split("/")[0] for r in result["removed"]) == [
        "endpoint",
        "endpoint-config",
        "model",
        "scalable-target",
    ]
    # Twice is fine (Pulumi may retry a delete).
    assert lambda_handler.handler({"tf": {"action": "delete"}})["removed"] == []


def test_teardown_leaves_resources_it_did_not_create(sm: Any) -> None:
    deploy_v1(sm)
    sm.create_model(
        ModelName=f"{ENDPOINT}-v9-handmade",
        PrimaryContainer={"Image": ext.IMAGE},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/x",
    )
    lambda_handler.handler({"tf": {"action": "delete"}})
    assert model_names(sm) == [f"{ENDPOINT}-v9-handmade"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TRAFFIC_STEP_PERCENT", "0", "TRAFFIC_STEP_PERCENT=0 is out of range [10, 50]"),
        ("TRAFFIC_STEP_PERCENT", "75", "TRAFFIC_STEP_PERCENT=75 is out of range [10, 50]"),
        ("TRAFFIC_WAIT_SECONDS", "soon", "TRAFFIC_WAIT_SECONDS='soon' is not a whole number"),
        (
            "MAXIMUM_EXECUTION_TIMEOUT_SECONDS",
            "60",
            "MAXIMUM_EXECUTION_TIMEOUT_SECONDS=60 is out of range [600, 28800]",
        ),
        ("AUTOSCALING_MAX_CAPACITY", "1", "AUTOSCALING_MAX_CAPACITY=1 is below AUTOSCALING_MIN_CAPACITY=2"),
        ("DATA_CAPTURE_S3_URI", "bucket/x", "DATA_CAPTURE_S3_URI='bucket/x' is not an s3:// URI"),
        ("ENDPOINT_NAME", "", "missing environment variable(s): ENDPOINT_NAME"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], name: str, value: str, message: str) -> None:
    with pytest.raises(dp.DeployError) as err:
        dp.DeployerConfig.from_env({**env, name: value})
    assert str(err.value) == message


def test_deploy_py_by_hand_waits_rolls_back_and_tears_down(
    sm: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    arn1 = ext.register_package(sm, GROUP, commit="one")
    arn2 = ext.register_package(sm, GROUP, commit="two")
    for arn in (arn1, arn2):
        sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")

    assert deploy.main(["--settings-from-env", "--model_package_arn", arn1, "--poll-seconds", "0"]) == 0
    assert deploy.main(["--settings-from-env", "--model_package_arn", arn2, "--poll-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "Succeeded: version 2 serving on iris-endpoint-v2-" in out
    assert deploy.main(["--settings-from-env", "--rollback", "--poll-seconds", "0"]) == 0
    assert "Succeeded: version 1 serving on iris-endpoint-v1-" in capsys.readouterr().out
    assert tags(sm)[dp.TAG_SERVING] == "1"
    # The version rolled back from leaves the history and is not redeployed by its approval event.
    assert (tags(sm)[dp.TAG_SERVED], tags(sm)[dp.TAG_FAILED]) == ("1", "2")
    assert deploy.main(["--settings-from-env", "--rollback"]) == 1
    assert "no version that served before version 1 is still approved" in capsys.readouterr().err
    # A by-hand deployment that SageMaker itself rolls back counts as a failure via PutMetricData.
    ext.behaviour.mode = "rollback"
    assert deploy.main(["--settings-from-env", "--model_package_arn", arn2, "--poll-seconds", "0"]) == 1
    assert "RolledBack: deployment of version 2 rolled back: " in capsys.readouterr().out
    assert (tags(sm)[dp.TAG_SERVED], tags(sm)[dp.TAG_FAILED]) == ("1", "2")
    assert deploy.main(["--settings-from-env", "--teardown"]) == 0
    assert sm.list_endpoints()["Endpoints"] == [] and model_names(sm) == []


def test_deploy_py_refuses_unapproved_and_missing_packages(
    sm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    pending = ext.register_package(sm, GROUP)
    assert deploy.main(["--settings-from-env", "--model_package_arn", pending]) == 1
    assert "version 1 is PendingManualApproval, not Approved; nothing deployed" in capsys.readouterr().err
    missing = pending.replace("/1", "/7")
    assert deploy.main(["--settings-from-env", "--model_package_arn", missing]) == 1
    assert f"model package {missing} does not exist" in capsys.readouterr().err
    assert sm.list_endpoints()["Endpoints"] == []


# --- issue 8: what the first real runs would hit -----------------------------------------------------


def _refuse(client: Any, operation: str, code: str, message: str, times: int = 10**6) -> list[str]:
    """Make `client` answer `operation` with an AWS error `times` times; returns the calls seen."""
    seen: list[str] = []

    def answer(**kwargs: Any) -> Any:
        seen.append(operation)
        if len(seen) > times:
            return None  # through to moto
        error = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return type("Http", (), {"status_code": 400, "headers": {}, "raw": None})(), error

    client.meta.events.register(f"before-call.{client.meta.service_model.service_name}.{operation}", answer)
    return seen


def _deployer(env: dict[str, str], **clients: Any) -> dp.Deployer:
    made = dp.default_clients("us-east-1")
    made.update(clients)
    return dp.Deployer(dp.DeployerConfig.from_env(env), **made, in_lambda=True, sleep=lambda s: None)


def test_an_endpoint_event_before_update_endpoint_is_accepted_is_not_a_rollback(
    sm: Any, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Finding 19: the deployment's tags are written, then UpdateEndpoint is called; an endpoint event
    # handled in between saw the old config live and reported a rollback.
    deploy_v1(sm)
    v1_config = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    arn2 = ext.register_package(sm, GROUP, commit="v2")
    sm.update_model_package(ModelPackageArn=arn2, ModelApprovalStatus="Approved")
    starting = dp.default_clients("us-east-1")
    between: list[dict[str, Any]] = []

    def event_in_between(**kwargs: Any) -> None:
        between.append(lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT)))

    starting["sagemaker"].meta.events.register("before-call.sagemaker.UpdateEndpoint", event_in_between)
    capsys.readouterr()
    started = dp.Deployer(dp.DeployerConfig.from_env(env), **starting, in_lambda=True).deploy(arn2)

    assert started.status == dp.IN_PROGRESS
    (seen,) = between
    assert (seen["status"], seen["message"]) == (dp.IN_PROGRESS, "deployment of version 2 is being started")
    assert '"_aws"' not in capsys.readouterr().out  # no DeploymentsFailed
    assert v1_config in config_names(sm) and started.endpoint_config in config_names(sm)
    assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == dp.SUCCEEDED
    assert tags(sm)[dp.TAG_SERVING] == "2"


def test_a_deployment_whose_update_never_ran_fails_after_the_grace_period(sm: Any) -> None:
    deploy_v1(sm)
    arn = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointArn"]
    from datetime import UTC, datetime

    from moto.sagemaker.models import sagemaker_backends

    endpoint: Any = sagemaker_backends[ext.ACCOUNT][ext.REGION].endpoints[ENDPOINT]
    endpoint.last_modified_time = datetime(2019, 12, 31, tzinfo=UTC)  # v1 went live then
    # The invocation died after writing its tags, 20 minutes ago, before UpdateEndpoint.
    sm.add_tags(
        ResourceArn=arn,
        Tags=[
            {"Key": dp.TAG_STATUS, "Value": dp.IN_PROGRESS},
            {"Key": dp.TAG_TARGET, "Value": "2"},
            {"Key": dp.TAG_TARGET_CONFIG, "Value": f"{ENDPOINT}-v2-deadbeef"},
            {"Key": dp.TAG_STARTED, "Value": "2020-01-01T00:00:00Z"},
            {"Key": dp.TAG_ACCEPTED, "Value": ""},
        ],
    )
    result = lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))
    assert result["status"] == dp.FAILED
    assert "its UpdateEndpoint was never accepted within 900s" in result["message"]
    assert tags(sm)[dp.TAG_SERVING] == "1"


def test_rollback_by_hand_goes_to_the_last_version_that_served(sm: Any, env: dict[str, str]) -> None:
    # Finding 20: v2 was approved but SageMaker rolled it back; from v3, rollback must go to v1.
    deploy_v1(sm)
    ext.behaviour.mode = "rollback"
    arn2 = ext.register_package(sm, GROUP, commit="v2")
    lambda_handler.handler(approve(sm, arn2))
    assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == dp.ROLLED_BACK
    ext.behaviour.mode = "complete"
    arn3 = ext.register_package(sm, GROUP, commit="v3")
    lambda_handler.handler(approve(sm, arn3))
    assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == dp.SUCCEEDED
    assert tags(sm)[dp.TAG_SERVED] == "1 3"

    result = _deployer(env).rollback()
    assert (result.status, result.version, result.message) == (
        dp.IN_PROGRESS,
        1,
        "rollback from version 3 to 1",
    )


def test_autoscaling_that_cannot_be_registered_is_reported_and_the_rest_still_runs(
    sm: Any, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Finding 6: RegisterScalableTarget raised, so cleanup and the queued version never ran and the
    # failure only reached Lambda's async retries.
    deploy_v1(sm)
    v1_config = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    ext.behaviour.mode = "hold"
    arn2 = ext.register_package(sm, GROUP, commit="v2")
    arn3 = ext.register_package(sm, GROUP, commit="v3")
    lambda_handler.handler(approve(sm, arn2))
    assert "version 3 queued" in lambda_handler.handler(approve(sm, arn3))["message"]
    ext.finish(ENDPOINT, "complete")
    ext.behaviour.mode = "complete"
    aas = boto3.client("application-autoscaling", region_name="us-east-1")
    _refuse(aas, "RegisterScalableTarget", "AccessDeniedException", "not authorized to perform: x")
    capsys.readouterr()

    result = _deployer(env, autoscaling=aas).reconcile()

    # v2 was verified, v1's config cleaned up, and the queued v3 started.
    assert (result.status, result.version) == (dp.IN_PROGRESS, 3)
    assert v1_config not in config_names(sm)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [e["DeploymentsFailed"] for e in emf] == [1]
    assert emf[0]["Message"].startswith(
        f"autoscaling of endpoint/{ENDPOINT}/variant/AllTraffic not registered: not authorized"
    )
    assert tags(sm)[dp.TAG_AUTOSCALING_ERROR].startswith("autoscaling of endpoint/")
    # Once autoscaling registers again, the error tag clears.
    assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == dp.SUCCEEDED
    assert tags(sm)[dp.TAG_AUTOSCALING_ERROR] == ""


def test_create_endpoint_is_retried_while_the_new_config_is_not_visible(sm: Any, env: dict[str, str]) -> None:
    # Finding 13: CreateEndpoint right after CreateEndpointConfig is eventually consistent.
    arn = ext.register_package(sm, GROUP)
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    client = dp.default_clients("us-east-1")["sagemaker"]
    calls = _refuse(
        client, "CreateEndpoint", "ValidationException", "Could not find endpoint configuration x.", times=2
    )
    pauses: list[float] = []
    deployer = dp.Deployer(
        dp.DeployerConfig.from_env(env),
        **{**dp.default_clients("us-east-1"), "sagemaker": client},
        in_lambda=True,
        sleep=pauses.append,
    )
    assert deployer.deploy(arn).status == dp.IN_PROGRESS
    assert len(calls) == 3 and pauses == [1.0, 2.0]
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "InService"
    # Another validation error is not retried.
    sm.delete_endpoint(EndpointName=ENDPOINT)
    other = _refuse(client, "CreateEndpoint", "ValidationException", "Invalid instance type")
    with pytest.raises(Exception, match="Invalid instance type"):
        deployer.deploy(arn)
    assert len(other) == 1


def test_an_older_approval_during_a_shift_says_it_is_not_queued(sm: Any) -> None:
    # Finding 21: "version 3 queued" was printed while the pending version stayed 4.
    deploy_v1(sm)
    ext.behaviour.mode = "hold"
    arns = [ext.register_package(sm, GROUP, commit=f"v{n}") for n in (2, 3, 4)]
    lambda_handler.handler(approve(sm, arns[0]))
    assert lambda_handler.handler(approve(sm, arns[2]))["message"].endswith(
        "version 4 queued, deployed when the endpoint is free"
    )
    late = lambda_handler.handler(approve(sm, arns[1]))
    assert late["message"] == "endpoint is Updating; version 3 not queued: version 4 is already queued"
    assert tags(sm)[dp.TAG_PENDING] == "4"


def test_a_fleet_of_one_is_refused_before_anything_changes(sm: Any, env: dict[str, str]) -> None:
    # Finding 8: LINEAR moves 10-50% of the fleet per step, whole instances: one instance cannot shift.
    deploy_v1(sm)
    sm.update_endpoint_weights_and_capacities(
        EndpointName=ENDPOINT,
        DesiredWeightsAndCapacities=[{"VariantName": dp.VARIANT_NAME, "DesiredInstanceCount": 1}],
    )
    before = tags(sm)
    arn2 = ext.register_package(sm, GROUP, commit="v2")
    sm.update_model_package(ModelPackageArn=arn2, ModelApprovalStatus="Approved")
    with pytest.raises(dp.DeployError, match="the endpoint has 1 instance; a LINEAR blue/green shift"):
        _deployer(env).deploy(arn2)
    assert tags(sm) == before and ext.behaviour.updates == []


@pytest.mark.parametrize(
    ("fleet", "percent", "step"),
    [(2, 50, 1), (2, 10, 1), (4, 25, 1), (4, 50, 2), (10, 10, 1), (10, 50, 5), (3, 25, 1), (20, 10, 2)],
)
def test_linear_step_is_whole_instances_within_ten_to_fifty_percent(
    env: dict[str, str], fleet: int, percent: int, step: int
) -> None:
    config = dp.DeployerConfig.from_env({**env, "TRAFFIC_STEP_PERCENT": str(percent)})
    assert config.linear_step(fleet) == step
    assert fleet / 10 <= step <= fleet / 2


def test_registry_teardown_deletes_every_version_so_the_group_can_go(sm: Any) -> None:
    # Finding 15: `pulumi destroy` deleted the group with its versions still in it, which SageMaker refuses.
    arns = [ext.register_package(sm, GROUP, commit=f"c{n}") for n in range(3)]
    sm.update_model_package(ModelPackageArn=arns[0], ModelApprovalStatus="Approved")
    result = lambda_handler.handler(
        {"tf": {"action": "delete", "prev_input": {}}, "purpose": dp.REGISTRY_TEARDOWN, "group_name": GROUP}
    )
    assert result == {
        "status": "TornDown",
        "removed": [f"model-package/{GROUP}/{n}" for n in (1, 2, 3)],
    }
    assert sm.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"] == []
    sm.delete_model_package_group(ModelPackageGroupName=GROUP)
    # The endpoint teardown is a different lifecycle invocation and is not run by this one.
    assert lambda_handler.handler({"tf": {"action": "create"}, "purpose": dp.REGISTRY_TEARDOWN})[
        "status"
    ] == (dp.SKIPPED)


def test_rolling_back_twice_goes_two_versions_back(sm: Any, env: dict[str, str]) -> None:
    # Review of issue 8: served 1 2 3, rollback to 2, rollback again went back to 3.
    for n in (1, 2, 3):
        arn = ext.register_package(sm, GROUP, commit=f"v{n}")
        lambda_handler.handler(approve(sm, arn))
        assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == dp.SUCCEEDED
    assert tags(sm)[dp.TAG_SERVED] == "1 2 3"
    for expected in (2, 1):
        started = _deployer(env).rollback()
        assert started.version == expected
        assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == dp.SUCCEEDED
    assert (tags(sm)[dp.TAG_SERVING], tags(sm)[dp.TAG_SERVED], tags(sm)[dp.TAG_FAILED]) == ("1", "1", "2 3")
    # Approving v4 still deploys it: rolled-back-from versions only block their own old events.
    arn4 = ext.register_package(sm, GROUP, commit="v4")
    assert lambda_handler.handler(approve(sm, arn4))["status"] == dp.IN_PROGRESS


def test_the_deployer_zip_runs_alone_with_the_lifecycle_core_beside_it(tmp_path: Path) -> None:
    # The Lambda zip is the folder: handler.py, deployer.py and lifecycle.py at its top level, no
    # workloads package, boto3 the only dependency.
    import shutil
    import subprocess
    import sys

    folder = Path(dp.__file__).parent
    zip_root = tmp_path / "zip"
    zip_root.mkdir()
    for source in folder.glob("*.py"):
        shutil.copy(source, zip_root / source.name)
    probe = (
        "import sys; sys.path.insert(0, '.'); import handler, deployer, lifecycle; "
        "assert deployer.lifecycle is lifecycle; assert 'workloads' not in sys.modules; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('mlops', 'components', 'sklearn')]; "
        "print(lifecycle.on_approval(lifecycle.EndpointView(serving=1, failed=frozenset({3})), 2).action)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe], cwd=zip_root, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout.strip()) == (0, "deploy"), done.stderr


def test_a_lost_endpoint_event_does_not_leave_the_endpoint_blocked(sm: Any) -> None:
    # Review of issue 9: with the endpoint InService but its tags still InProgress (the endpoint event
    # went to the dead-letter queue), every later deployment was only queued, forever.
    deploy_v1(sm)
    arn2 = ext.register_package(sm, GROUP, commit="v2")
    assert lambda_handler.handler(approve(sm, arn2))["status"] == dp.IN_PROGRESS
    # ... v2's endpoint event never arrives.
    assert tags(sm)[dp.TAG_STATUS] == dp.IN_PROGRESS
    arn3 = ext.register_package(sm, GROUP, commit="v3")
    started = lambda_handler.handler(approve(sm, arn3))
    assert (started["status"], started["version"]) == (dp.IN_PROGRESS, 3)
    assert tags(sm)[dp.TAG_SERVED] == "1 2"  # v2's outcome was verified on the way
    assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == dp.SUCCEEDED
    assert tags(sm)[dp.TAG_SERVING] == "3"
