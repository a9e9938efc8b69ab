"""The whole lifecycle on moto: register -> approve -> deploy (Lambda) -> update -> reject -> rollback -> teardown."""

from __future__ import annotations

from typing import Any

import boto3
import moto_sagemaker_ext as ext
import pytest

from mlops.aws import AwsBackend, AwsSettings
from mlops.backend import DEPLOY_IN_PROGRESS, DEPLOY_SKIPPED, DEPLOY_SUCCEEDED
from workloads.serve.deployer import handler as lambda_handler

GROUP = "iris-models"
ENDPOINT = "iris-prod"
ALARMS = ["iris-prod-5xx", "iris-prod-p99-latency"]


@pytest.fixture
def backend(moto_aws: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    ext.install()
    ext.reset()
    env = {
        "MODEL_PACKAGE_GROUP_NAME": GROUP,
        "ENDPOINT_NAME": ENDPOINT,
        "EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/sagemaker-exec",
        "INSTANCE_TYPE": "ml.m5.large",
        "INITIAL_INSTANCE_COUNT": "2",
        "TRAFFIC_STEP_PERCENT": "50",
        "TRAFFIC_WAIT_SECONDS": "60",
        "ROLLBACK_ALARM_NAMES": ",".join(ALARMS),
        "TERMINATION_WAIT_SECONDS": "120",
        "MAXIMUM_EXECUTION_TIMEOUT_SECONDS": "1800",
        "AUTOSCALING_MIN_CAPACITY": "2",
        "AUTOSCALING_MAX_CAPACITY": "3",
        "AWS_LAMBDA_FUNCTION_NAME": "iris-deployer",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield AwsBackend(AwsSettings.from_env(), poll_seconds=0)
    ext.reset()


def test_whole_lifecycle(backend: AwsBackend) -> None:
    sm = boto3.client("sagemaker", region_name="us-east-1")

    # v1: registered by the build, approved by a person -> the Lambda creates the endpoint.
    v1 = ext.register_package(sm, GROUP, commit="one")
    assert backend.approve("1", description="first model").status == "Approved"
    assert lambda_handler.handler(ext.package_event(sm, v1))["status"] == DEPLOY_IN_PROGRESS
    assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == DEPLOY_SUCCEEDED
    status = backend.status()
    assert (status.status, status.serving_version) == ("InService", 1)
    assert [(v.name, v.model_version, v.weight) for v in status.variants] == [("AllTraffic", 1, 1.0)]
    v1_config = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]

    # v2: approved -> UpdateEndpoint, blue/green LINEAR with the alarms; mid-shift the status shows both fleets.
    ext.behaviour.mode = "hold"
    v2 = ext.register_package(sm, GROUP, commit="two")
    backend.approve("2")
    assert lambda_handler.handler(ext.package_event(sm, v2))["status"] == DEPLOY_IN_PROGRESS
    update = ext.behaviour.updates[-1]
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "LINEAR",
        "LinearStepSize": {"Type": "INSTANCE_COUNT", "Value": 1},  # 50% of 2 instances
        "WaitIntervalInSeconds": 60,
    }
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": a} for a in ALARMS]
    }
    mid = backend.status()
    assert mid.status == "Updating" and mid.last_deployment is not None
    assert (
        mid.last_deployment.target_version,
        mid.last_deployment.status,
        mid.last_deployment.from_version,
    ) == (
        2,
        DEPLOY_IN_PROGRESS,
        1,
    )
    assert [(v.model_version, v.weight) for v in mid.variants] == [(1, 1.0), (2, 0.0)]
    ext.finish(ENDPOINT, "complete")
    assert lambda_handler.handler(ext.endpoint_event(sm, ENDPOINT))["status"] == DEPLOY_SUCCEEDED
    assert backend.status().serving_version == 2
    ext.behaviour.mode = "complete"

    # v3: rejected -> its (Rejected) event changes nothing.
    v3 = ext.register_package(sm, GROUP, commit="three")
    assert backend.reject("3", reason="worse on versicolor").status == "Rejected"
    assert lambda_handler.handler(ext.package_event(sm, v3))["status"] == DEPLOY_SKIPPED
    assert len(ext.behaviour.updates) == 1
    assert backend.status().serving_version == 2

    # Roll back: v1's model serves again, on a fresh config built from its package.
    progress: list[str] = []
    outcome = backend.deploy(rollback=True, progress=lambda m, f: progress.append(m))
    assert (outcome.status, outcome.target_version, outcome.from_version) == (DEPLOY_SUCCEEDED, 1, 2)
    assert (
        outcome.message
        == "version 1 serving on " + sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    )
    live = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    assert live.startswith(f"{ENDPOINT}-v1-") and live == v1_config
    model = sm.describe_model(ModelName=live)
    assert model["PrimaryContainer"]["Environment"] == {"MODEL_VERSION": "1"}
    assert backend.status().serving_version == 1
    assert progress and progress[0].startswith("rollback from version 2 to 1")
    # The late duplicate of v2's approval does not undo the rollback.
    assert lambda_handler.handler(ext.package_event(sm, v2))["status"] == DEPLOY_SKIPPED

    # Teardown (what `pulumi destroy` triggers): nothing the deployer made is left.
    removed = backend.teardown()
    assert f"endpoint/{ENDPOINT}" in removed
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    assert backend.status().status == "Absent"
