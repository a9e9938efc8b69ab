"""By hand equals automatic (issue 8, findings 17, 18, 22): every way of deploying sends the stack's settings.

For each stack file, the Pulumi program runs under mocks; the deployer Lambda it declares (with exactly
the environment Pulumi builds) and the CodeBuild project are put into moto. Then the same two-version
deployment runs four ways - the Lambda on the approval event, `deploy.py` by hand, `mlops --target aws`
with the stack's outputs, and a rollback - and each must send the same DeploymentConfig, instance
type and count, and register the same autoscaling: the stack's, whatever stale variables the shell has.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import moto_sagemaker_ext as ext
import pytest
from moto import mock_aws
from pulumi_mocks import STACKS, ProgramRun, program_run

from components.settings import PlatformSettings
from mlops import cli
from mlops.aws import AwsBackend, AwsSettings
from mlops.backend import PlatformError
from workloads.serve import deploy
from workloads.serve.deployer import deployer as dp
from workloads.serve.deployer import handler as lambda_handler

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# What a shell may still hold from an older README: none of it may reach a by-hand deployment.
STALE_SHELL = {
    "INSTANCE_TYPE": "ml.m5.large",
    "TRAFFIC_STEP_PERCENT": "10",
    "TRAFFIC_WAIT_SECONDS": "300",
    "ROLLBACK_ALARM_NAMES": "",
    "AUTOSCALING_MAX_CAPACITY": "0",
    "INITIAL_INSTANCE_COUNT": "9",
}


def _deployer_env(run: ProgramRun) -> dict[str, str]:
    return dict(run.one("aws:lambda/function:Function", "-deployer").inputs["environment"]["variables"])


def _put_stack_into_moto(run: ProgramRun) -> dict[str, Any]:
    """The deployer function and build project as Pulumi declares them; returns the stack outputs."""
    role = boto3.client("iam", region_name="us-east-1").create_role(
        RoleName="deployer-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    boto3.client("lambda", region_name="us-east-1").create_function(
        FunctionName=run.exports["deployer_function_name"],
        Runtime="python3.12",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": code.getvalue()},
        Environment={"Variables": _deployer_env(run)},
    )
    project = run.one("aws:codebuild/project:Project", "-project")
    env = project.inputs["environment"]
    boto3.client("codebuild", region_name="us-east-1").create_project(
        name=project.inputs["name"],
        source={"type": "S3", "location": "artifacts/source.zip"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": env["type"],
            "image": env["image"],
            "computeType": env["computeType"],
            "environmentVariables": env["environmentVariables"],
        },
        serviceRole=role,
    )
    return dict(run.exports)


def _approved(sm: Any, group: str, commit: str) -> str:
    arn = ext.register_package(sm, group, commit=commit)
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    return arn


def _observe(sm: Any, endpoint: str) -> dict[str, Any]:
    """What one deployment path made: the update it sent, the fleet and the autoscaling."""
    desc = sm.describe_endpoint(EndpointName=endpoint)
    config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    (variant,) = config["ProductionVariants"]
    aas = boto3.client("application-autoscaling")
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    return {
        "deployment_config": ext.behaviour.updates[-1]["DeploymentConfig"],
        "instance_type": variant["InstanceType"],
        "initial_instance_count": variant["InitialInstanceCount"],
        "data_capture": config.get("DataCaptureConfig", {}).get("DestinationS3Uri"),
        "autoscaling": [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets],
        "target_invocations": [
            p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] for p in policies
        ],
    }


def _by_lambda(run: ProgramRun, monkeypatch: pytest.MonkeyPatch, sm: Any, arns: list[str]) -> None:
    with monkeypatch.context() as m:
        for key, value in {**_deployer_env(run), "AWS_LAMBDA_FUNCTION_NAME": "deployer"}.items():
            m.setenv(key, value)
        for arn in arns:
            assert lambda_handler.handler(ext.package_event(sm, arn))["status"] == dp.IN_PROGRESS
            endpoint = run.exports["endpoint_name"]
            assert lambda_handler.handler(ext.endpoint_event(sm, endpoint))["status"] == dp.SUCCEEDED


def _by_deploy_py(run: ProgramRun, monkeypatch: pytest.MonkeyPatch, sm: Any, arns: list[str]) -> None:
    monkeypatch.setenv("DEPLOYER_FUNCTION_NAME", run.exports["deployer_function_name"])
    for arn in arns:
        assert deploy.main(["--model_package_arn", arn, "--poll-seconds", "0"]) == 0


def _by_mlops(run: ProgramRun, monkeypatch: pytest.MonkeyPatch, sm: Any, arns: list[str]) -> None:
    backend = AwsBackend(AwsSettings.from_stack(dict(run.exports)), poll_seconds=0)
    for arn in arns:
        assert backend.deploy(arn).status == dp.SUCCEEDED


def _by_rollback(run: ProgramRun, monkeypatch: pytest.MonkeyPatch, sm: Any, arns: list[str]) -> None:
    """v1, v2 through the Lambda, v1 again by hand, then `mlops --target aws deploy --rollback` to v2."""
    _by_lambda(run, monkeypatch, sm, arns)
    backend = AwsBackend(AwsSettings.from_stack(dict(run.exports)), poll_seconds=0)
    assert backend.deploy("1").status == dp.SUCCEEDED
    result = backend.deploy(rollback=True)
    assert (result.status, result.target_version) == (dp.SUCCEEDED, 2)


PATHS: dict[str, Callable[[ProgramRun, pytest.MonkeyPatch, Any, list[str]], None]] = {
    "lambda": _by_lambda,
    "deploy.py": _by_deploy_py,
    "mlops --target aws": _by_mlops,
    "rollback": _by_rollback,
}


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return program_run(request.param)


@pytest.fixture
def clean_shell(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from mlops.aws import STACK_OUTPUT_ENV

    for name in (
        *STACK_OUTPUT_ENV.values(),
        "MLOPS_STACK",
        "MLOPS_STACK_OUTPUTS",
        "AWS_LAMBDA_FUNCTION_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    for key, value in STALE_SHELL.items():
        monkeypatch.setenv(key, value)
    ext.install()
    yield
    ext.reset()


def test_every_deployment_path_sends_the_stacks_settings(
    run: ProgramRun, clean_shell: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    observed: dict[str, dict[str, Any]] = {}
    for name, path in PATHS.items():
        ext.reset()
        with mock_aws():
            _put_stack_into_moto(run)
            sm = boto3.client("sagemaker")
            group = run.exports["model_package_group_name"]
            arns = [_approved(sm, group, "one"), _approved(sm, group, "two")]
            path(run, monkeypatch, sm, arns)
            observed[name] = _observe(sm, run.exports["endpoint_name"])
    settings = PlatformSettings.load_values(run.config, run.stack)
    fleet = settings.endpoint_initial_instance_count
    expected = {
        "deployment_config": {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "LINEAR",
                    "LinearStepSize": {
                        "Type": "INSTANCE_COUNT",
                        "Value": fleet * settings.traffic_step_percent // 100,
                    },
                    "WaitIntervalInSeconds": settings.traffic_wait_seconds,
                },
                "TerminationWaitInSeconds": settings.termination_wait_seconds,
                "MaximumExecutionTimeoutInSeconds": settings.maximum_execution_timeout_seconds,
            },
            "AutoRollbackConfiguration": {
                "Alarms": [{"AlarmName": a} for a in run.exports["rollback_alarm_names"]]
            },
        },
        "instance_type": settings.endpoint_instance_type,
        "initial_instance_count": fleet,
        "data_capture": (
            f"s3://{run.exports['artifact_bucket']}/data-capture/{run.exports['endpoint_name']}"
            if settings.data_capture
            else None
        ),
        "autoscaling": [
            (
                f"endpoint/{run.exports['endpoint_name']}/variant/AllTraffic",
                settings.autoscaling_min_capacity,
                settings.autoscaling_max_capacity,
            )
        ],
        "target_invocations": [settings.autoscaling_target_invocations],
    }
    for name, seen in observed.items():
        assert seen == expected, f"{run.stack}: {name} deployed with other settings than the stack's"


def test_deploy_py_by_hand_refuses_to_guess_settings(
    clean_shell: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deploy.main(["--rollback"]) == 2
    err = capsys.readouterr().err
    assert "name the stack's deployer: --deployer_function_name or DEPLOYER_FUNCTION_NAME" in err


def test_deploy_py_names_a_function_that_is_not_there(
    clean_shell: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with mock_aws():
        assert deploy.main(["--rollback", "--deployer_function_name", "nope-deployer"]) == 2
    err = capsys.readouterr().err
    assert "cannot read the settings of deployer function 'nope-deployer'" in err


def test_status_needs_only_the_stack(
    run: ProgramRun,
    clean_shell: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Finding 18: `mlops --target aws status` with nothing but the stack's outputs.
    with mock_aws():
        outputs = _put_stack_into_moto(run)
        saved = tmp_path / "outputs.json"
        saved.write_text(json.dumps(outputs))
        monkeypatch.setenv("MLOPS_STACK_OUTPUTS", str(saved))
        code = cli.main(["--target", "aws", "--json", "status"])
        out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert json.loads(out)["name"] == run.exports["endpoint_name"]
    assert json.loads(out)["status"] == "Absent"


def test_stack_option_runs_pulumi_stack_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.aws import stack_outputs

    outputs = {"endpoint_name": "mlops-dev-endpoint", "model_package_group_name": "mlops-dev-models"}
    calls: list[tuple[list[str], Path | None]] = []

    def fake_run(command: list[str], **kwargs: Any) -> Any:
        calls.append((command, kwargs.get("cwd")))
        return type("Done", (), {"returncode": 0, "stdout": json.dumps(outputs), "stderr": ""})()

    monkeypatch.chdir(Path(__file__).resolve().parents[1] / "workloads")  # a subdirectory of the project
    assert stack_outputs("dev", run=fake_run) == outputs
    assert calls == [
        (
            ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", "dev"],
            Path(__file__).resolve().parents[1],
        )
    ]

    def failing(command: list[str], **kwargs: Any) -> Any:
        return type("Done", (), {"returncode": 255, "stdout": "", "stderr": "error: no stack named 'qa'\n"})()

    with pytest.raises(PlatformError, match=r"failed in .*: error: no stack named 'qa'"):
        stack_outputs("qa", run=failing)

    def missing(command: list[str], **kwargs: Any) -> Any:
        raise FileNotFoundError("pulumi")

    with pytest.raises(PlatformError, match="the Pulumi CLI is not on PATH"):
        stack_outputs("dev", run=missing)
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"url": "x"}))
    with pytest.raises(PlatformError, match="have no endpoint_name"):
        stack_outputs(path=str(bad))


def test_the_component_and_the_stack_settings_default_to_the_deployers_defaults() -> None:
    # Finding 17: the deployer's defaults (traffic step, autoscaling, fleet) were not the components'.
    # Now all three take them from the settings table's rows; the values still agree, and deploy.
    d = dp.DeployerConfig(group="", endpoint="", role_arn="")
    s = PlatformSettings(name_prefix="mlops-dev", source_repo_name="acme/iris")
    carried = [row.name for row in dp.DeployerConfig.rows()]
    assert len(carried) >= 9
    assert {name: getattr(s, name) for name in carried} == {name: getattr(d, name) for name in carried}
    assert (d.instance_type, d.initial_instance_count, d.max_execution_timeout_seconds) == (
        s.endpoint_instance_type,
        s.endpoint_initial_instance_count,
        s.maximum_execution_timeout_seconds,
    )
    # The defaults themselves are deployable (LINEAR needs whole instances).
    s.validate()
    assert d.linear_step(d.initial_instance_count) == 1


def test_the_deployer_parses_exactly_the_environment_pulumi_builds(run: ProgramRun) -> None:
    config = dp.DeployerConfig.from_env(_deployer_env(run))
    settings = PlatformSettings.load_values(run.config, run.stack)
    assert (config.group, config.endpoint) == (
        run.exports["model_package_group_name"],
        run.exports["endpoint_name"],
    )
    assert config.role_arn == run.exports["execution_role_arn"]
    assert config.instance_type == settings.endpoint_instance_type
    assert config.initial_instance_count == settings.endpoint_initial_instance_count
    assert config.traffic_step_percent == settings.traffic_step_percent
    assert config.traffic_wait_seconds == settings.traffic_wait_seconds
    assert config.rollback_alarm_names == tuple(run.exports["rollback_alarm_names"])
    assert (config.autoscaling_min_capacity, config.autoscaling_max_capacity) == (
        settings.autoscaling_min_capacity,
        settings.autoscaling_max_capacity,
    )


def test_approval_keeps_the_versions_provenance_even_if_the_service_replaces_the_map(
    moto_aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Finding 22: moto (and possibly SageMaker) replaces CustomerMetadataProperties on UpdateModelPackage.
    ext.install()
    monkeypatch.setattr(ext.behaviour, "replace_metadata", True)
    sm = boto3.client("sagemaker")
    arn = ext.register_package(sm, "iris-models", commit="c0ffee")
    backend = AwsBackend(AwsSettings.from_env({}, group="iris-models"))
    model = backend.approve("1", description="looks right")
    props = sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    assert props["commit"] == "c0ffee"
    assert props["data_location"] == "s3://mlops-artifacts/data/c0ffee/iris.csv"
    assert props["approved_by"] == model.approver and props["approved_at"]
    assert model.source_commit == "c0ffee" and model.data_location == props["data_location"]


def test_printed_hints_reach_the_same_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    # Finding 21: hints printed on AWS said `mlops approve 2`, which acts on the local platform.
    monkeypatch.delenv("MLOPS_TARGET", raising=False)
    monkeypatch.delenv("MLOPS_STACK", raising=False)
    assert cli.hint_command("aws", "dev") == "mlops --target aws --stack dev"
    assert cli.hint_command("local", None) == "mlops"
    monkeypatch.setenv("MLOPS_TARGET", "aws")
    monkeypatch.setenv("MLOPS_STACK", "dev")
    assert cli.hint_command("aws", "dev") == "mlops"


def test_a_stack_and_saved_outputs_together_are_refused(
    clean_shell: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review of issue 8: a leftover MLOPS_STACK_OUTPUTS silently beat --stack.
    monkeypatch.setenv("MLOPS_STACK_OUTPUTS", str(tmp_path / "dev.json"))
    with pytest.raises(PlatformError, match=r"both a stack \(prod\) and MLOPS_STACK_OUTPUTS"):
        AwsBackend.from_env("prod")


def test_by_hand_tools_use_the_stacks_region_not_the_shells(
    run: ProgramRun, clean_shell: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Review of issue 8: the stack pins its region; a shell defaulting to another one found nothing.
    assert run.exports["region"] == "us-east-1"
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert AwsSettings.from_stack(dict(run.exports)).region == "us-east-1"
    with mock_aws():
        _put_stack_into_moto(run)
        function = boto3.client("lambda", region_name="us-east-1").get_function_configuration(
            FunctionName=run.exports["deployer_function_name"]
        )["FunctionArn"]
        # deploy.py with the function's ARN finds it, and the endpoint, in the stack's region.
        assert deploy.main(["--deployer_function_name", function, "--verify"]) == 0
        assert f"endpoint {run.exports['endpoint_name']} does not exist" in capsys.readouterr().out
