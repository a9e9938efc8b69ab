"""Issue 8's infrastructure findings, each checked on what the program sends, for every stack file."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pulumi_mocks import REPO_ROOT, STACKS, ProgramRun, program_run, run_program

from workloads.train import steps

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return program_run(request.param)


def _urn(run: ProgramRun, typ: str, suffix: str) -> str:
    return run.one(typ, suffix).urn


def test_pulumi_runs_the_program_in_the_venv_make_setup_builds() -> None:
    # Finding 2: `toolchain: uv` made Pulumi look for `uv` on PATH; make setup puts it in .tools/bin.
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert project["stackConfigDir"] == "platform"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "VENV := .venv" in makefile and "export UV_PROJECT_ENVIRONMENT := $(VENV)" in makefile
    # The program's imports are all in the locked environment the venv is built from.
    lock = {p["name"] for p in __import__("tomllib").loads((REPO_ROOT / "uv.lock").read_text())["package"]}
    assert {"pulumi", "pulumi-aws", "boto3"} <= lock


def test_api_gateway_account_role_outlives_any_one_stack(run: ProgramRun) -> None:
    # Finding 10: every stack of a region may set the account-wide role; destroying one must not
    # delete the role the others' logging goes through.
    keep = {
        _urn(run, "aws:iam/role:Role", "-apigw-logging-role"),
        _urn(run, "aws:iam/rolePolicy:RolePolicy", "-apigw-logging-policy"),
        _urn(run, "aws:apigateway/account:Account", "-apigw-account"),
    }
    assert keep <= run.retained, sorted(keep - run.retained)
    # Nothing else of the stack is retained except, without forceDestroy, the model registry.
    others = run.retained - keep
    group = _urn(run, "aws:sagemaker/modelPackageGroup:ModelPackageGroup", "-group")
    assert others == (set() if run.setting("forceDestroy") == "true" else {group})


def test_rest_api_deployment_changes_with_every_route_setting(run: ProgramRun) -> None:
    # Finding 11: the trigger hashed ids only, so turning api_key_required off was never deployed.
    deployment = run.one("aws:apigateway/deployment:Deployment", "-deployment")
    trigger = json.loads(deployment.inputs["triggers"]["route"])
    method = run.one("aws:apigateway/method:Method", "-predict-post")
    integration = run.one("aws:apigateway/integration:Integration", "-predict-integration")
    assert trigger["method"] == {
        "http_method": method.inputs["httpMethod"],
        "authorization": method.inputs["authorization"],
        "api_key_required": method.inputs["apiKeyRequired"],
    }, deployment.where()
    assert trigger["integration"] == {
        "type": integration.inputs["type"],
        "integration_http_method": integration.inputs["integrationHttpMethod"],
        "uri": integration.inputs["uri"],
        "timeout_milliseconds": integration.inputs["timeoutMilliseconds"],
    }, deployment.where()


def test_ecr_lifecycle_never_expires_an_image_a_model_version_uses(run: ProgramRun) -> None:
    # Finding 12: "keep the newest N, any tag" expired images live endpoints and rollbacks pull.
    (lifecycle,) = run.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    rules = sorted(json.loads(lifecycle.inputs["policy"])["rules"], key=lambda r: r["rulePriority"])
    first = rules[0]
    assert first["selection"]["tagStatus"] == "tagged", lifecycle.where()
    # The register step tags with this prefix (test_lifecycle_training checks the tag on a real image).
    assert first["selection"]["tagPrefixList"] == ["registered-"], lifecycle.where()
    assert getattr(steps, "REGISTERED_IMAGE_TAG_PREFIX", None) == "registered-"
    # Higher priority than the count rule, and a count that is never reached: it only protects.
    assert first["selection"]["countType"] == "imageCountMoreThan"
    assert first["selection"]["countNumber"] >= 100000
    assert rules[-1]["selection"]["tagStatus"] == "any"
    assert rules[-1]["selection"]["countNumber"] == float(run.setting("ecrMaxImageCount"))


def _deletes_after(run: ProgramRun, urn: str, dependency: str) -> bool:
    """Whether `urn` depends on `dependency` (so `pulumi destroy` deletes `urn` first)."""
    return dependency in run.dependencies[urn]


def test_destroy_empties_the_registry_before_deleting_it_or_keeps_it(run: ProgramRun) -> None:
    # Finding 15: SageMaker refuses to delete a model package group that still has versions.
    group = run.one("aws:sagemaker/modelPackageGroup:ModelPackageGroup", "-group")
    teardowns = [
        r for r in run.of_type("aws:lambda/invocation:Invocation") if r.name.endswith("-versions-teardown")
    ]
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "-deployer-policy").inputs["policy"])
    deletes = [st for st in policy["Statement"] if "sagemaker:DeleteModelPackage" in st["Action"]]
    if run.setting("forceDestroy") == "true":
        (teardown,) = teardowns
        assert json.loads(teardown.inputs["input"]) == {
            "purpose": "model-registry-teardown",
            "group_name": run.exports["model_package_group_name"],
        }
        assert teardown.inputs["lifecycleScope"] == "CRUD"
        # Deleted before the group, the deployer and the deployer's grants.
        for dependency in (
            group.urn,
            _urn(run, "aws:lambda/function:Function", "-deployer"),
            _urn(run, "aws:iam/rolePolicy:RolePolicy", "-deployer-policy"),
        ):
            assert _deletes_after(run, teardown.urn, dependency), f"{teardown.where()} before {dependency}"
        (grant,) = deletes
        assert grant["Resource"] == [
            f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{run.exports['model_package_group_name']}/*"
        ]
        assert group.urn not in run.retained
    else:
        assert teardowns == [] and deletes == []
        assert group.urn in run.retained, f"{group.where()}: kept on destroy, with its versions"


def test_failed_deployer_invocations_land_in_a_queue_that_alarms(run: ProgramRun) -> None:
    # Finding 6: a raising deployer only reached Lambda's async retries, not a DLQ or an alarm.
    config = run.one("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig", "-deployer-async")
    queue = run.one("aws:sqs/queue:Queue", "-deployer-failures")
    assert config.inputs["functionName"] == run.exports["deployer_function_name"]
    assert config.inputs["destinationConfig"] == {"onFailure": {"destination": queue.outputs["arn"]}}
    assert config.inputs["maximumRetryAttempts"] == 2
    alarm = run.one("aws:cloudwatch/metricAlarm:MetricAlarm", "-deployer-failures-alarm")
    assert (alarm.inputs["namespace"], alarm.inputs["metricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert alarm.inputs["dimensions"] == {"QueueName": queue.outputs["name"]}
    assert alarm.inputs["threshold"] == 1.0
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "-deployer-policy").inputs["policy"])
    (send,) = [st for st in policy["Statement"] if st["Action"] == ["sqs:SendMessage"]]
    assert send["Resource"] == [queue.outputs["arn"]]


def test_stack_files_use_a_source_every_account_can_create(run: ProgramRun) -> None:
    # Finding 4: CodeCommit refuses CreateRepository in accounts that never had a repository.
    assert run.setting("sourceRepoKind") == "github"
    assert not run.of_type("aws:codecommit/repository:Repository")
    connection = run.one("aws:codeconnections/connection:Connection", "-connection")
    assert connection.inputs["providerType"] == "GitHub"
    assert len(connection.inputs["name"]) <= 32


def test_a_stack_file_without_its_repository_fails_naming_the_command_to_set_it() -> None:
    from components.settings import SettingsError

    with pytest.raises(
        SettingsError, match=r"set it with `pulumi config set mlops:sourceRepoName <owner>/<repo>`"
    ):
        run_program("dev", {"mlops:sourceRepoName": ""})
    with pytest.raises(SettingsError, match="is not a CodeCommit repository name"):
        run_program("dev", {"mlops:sourceRepoKind": "codecommit", "mlops:sourceRepoName": "acme/iris"})


def _statement(run: ProgramRun, suffix: str, sid: str) -> dict[str, Any]:
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", suffix).inputs["policy"])
    (found,) = [st for st in policy["Statement"] if st["Sid"] == sid]
    return dict(found)


def test_log_group_grants_name_the_group_as_cloudwatch_logs_authorises_it(run: ProgramRun) -> None:
    # Finding 1, by value: log-group actions are authorised on log-group:NAME:*.
    group = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/TrainingJobs"
    assert _statement(run, "-codebuild-policy", "FollowTrainingLogs")["Resource"] == [f"{group}:*"]
    assert _statement(run, "-training-policy", "TrainingLogGroup")["Resource"] == [f"{group}:*"]
    assert _statement(run, "-training-policy", "WriteTrainingLogs")["Resource"] == [f"{group}:log-stream:*"]


def test_both_rules_reach_the_deployer_the_same_way(run: ProgramRun) -> None:
    # Issue 9: the EventBridge -> Lambda wiring is written once (components/event_delivery.py).
    for role in ("approved", "endpoint-state"):
        target = run.one("aws:cloudwatch/eventTarget:EventTarget", f"-{role}-target")
        queue = run.one("aws:sqs/queue:Queue", f"-{role}-dlq")
        policy = json.loads(
            run.one("aws:sqs/queuePolicy:QueuePolicy", f"-{role}-dlq-policy").inputs["policy"]
        )
        permission = run.one("aws:lambda/permission:Permission", f"-{role}-invoke")
        assert target.inputs["arn"] == run.one("aws:lambda/function:Function", "-deployer").outputs["arn"]
        assert target.inputs["retryPolicy"] == {
            "maximumEventAgeInSeconds": 3600.0,
            "maximumRetryAttempts": 8.0,
        }
        assert target.inputs["deadLetterConfig"] == {"arn": queue.outputs["arn"]}
        assert [st["Sid"] for st in policy["Statement"]] == [
            "UndeliveredEventsFromThisRule",
            "DenyInsecureTransport",
        ]
        assert permission.inputs["principal"] == "events.amazonaws.com"
        assert permission.urn in run.dependencies[target.urn]
