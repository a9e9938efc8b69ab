"""The deployer Lambda and deploy.py against moto (UpdateEndpoint from tests/moto_sagemaker_ext.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
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
        and stale["message"] == "version 2 is not newer than version 3 (already deployed or superseded)"
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
            "MAXIMUM_EXECUTION_TIMEOUT_SECONDS=60 is out of range [600, 14400]",
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
    assert tags(sm)[dp.TAG_SERVED] == "2 1"
    # A by-hand deployment that SageMaker itself rolls back counts as a failure via PutMetricData.
    ext.behaviour.mode = "rollback"
    assert deploy.main(["--settings-from-env", "--model_package_arn", arn2, "--poll-seconds", "0"]) == 1
    assert "RolledBack: deployment of version 2 rolled back: " in capsys.readouterr().out
    assert tags(sm)[dp.TAG_SERVED] == "2 1"
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
