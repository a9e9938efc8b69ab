"""Components on their own, the other source-repository kinds, config validation and the config docs."""

from __future__ import annotations

import json
import re

import pulumi
import pytest
from pulumi_mocks import (
    ACCOUNT,
    REPO_ROOT,
    STACKS,
    RecordingMocks,
    RecordingMonitor,
    check_outputs,
    run_program,
    stack_config,
)

from components.settings import PlatformSettings, SettingsError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize(("kind", "provider_type"), [("github", "GitHub"), ("gitlab", "GitLab")])
def test_external_repository_goes_through_a_connection(kind: str, provider_type: str) -> None:
    run = run_program("dev", {"mlops:sourceRepoKind": kind, "mlops:sourceRepoName": "acme/iris-models"})
    assert not run.of_type("aws:codecommit/repository:Repository")
    connection = run.one("aws:codeconnections/connection:Connection", "-connection")
    assert connection.inputs["providerType"] == provider_type, connection.where()
    host = {"github": "github.com", "gitlab": "gitlab.com"}[kind]
    assert run.exports["repo_clone_url"] == f"https://{host}/acme/iris-models.git"
    pipeline = run.one("aws:codepipeline/pipeline:Pipeline", "-pipeline")
    (action,) = pipeline.inputs["stages"][0]["actions"]
    assert action["provider"] == "CodeStarSourceConnection", pipeline.where()
    assert action["configuration"] == {
        "ConnectionArn": connection.outputs["arn"],
        "FullRepositoryId": "acme/iris-models",
        "BranchName": "main",
        "DetectChanges": "true",
        "OutputArtifactFormat": "CODE_ZIP",
    }, pipeline.where()
    # The connection's webhook starts the pipeline; no EventBridge push rule.
    assert not [r for r in run.of_type("aws:cloudwatch/eventRule:EventRule") if r.name.endswith("-push-rule")]
    project = run.one("aws:codebuild/project:Project", "-project")
    assert project.inputs["source"]["type"] == kind.upper(), project.where()
    assert project.inputs["source"]["auth"] == {
        "type": "CODECONNECTIONS",
        "resource": connection.outputs["arn"],
    }
    pipeline_policy = json.loads(
        run.one("aws:iam/rolePolicy:RolePolicy", "-pipeline-policy").inputs["policy"]
    )
    (use,) = [st for st in pipeline_policy["Statement"] if st["Sid"] == "UseSourceConnection"]
    assert use["Resource"] == [connection.outputs["arn"]]


def test_existing_connection_is_used_not_created() -> None:
    arn = f"arn:aws:codeconnections:us-east-1:{ACCOUNT}:connection/existing-1234"
    run = run_program(
        "dev",
        {
            "mlops:sourceRepoKind": "bitbucket",
            "mlops:sourceRepoName": "acme/iris",
            "mlops:connectionArn": arn,
        },
    )
    assert not run.of_type("aws:codeconnections/connection:Connection")
    pipeline = run.one("aws:codepipeline/pipeline:Pipeline", "-pipeline")
    assert pipeline.inputs["stages"][0]["actions"][0]["configuration"]["ConnectionArn"] == arn
    assert run.exports["repo_clone_url"] == "https://bitbucket.org/acme/iris.git"


def test_kms_key_reaches_bucket_image_table_and_both_env_contracts() -> None:
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    run = run_program("prod", {"mlops:kmsKeyArn": key})
    sse = run.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "-artifacts-encryption",
    )
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms",
        "kmsMasterKeyId": key,
    }
    repo = run.one("aws:ecr/repository:Repository", "-images")
    assert repo.inputs["encryptionConfigurations"] == [{"encryptionType": "KMS", "kmsKey": key}]
    table = run.one("aws:dynamodb/table:Table", "-records")
    assert table.inputs["serverSideEncryption"] == {"enabled": True, "kmsKeyArn": key}
    deployer = run.one("aws:lambda/function:Function", "-deployer")
    assert deployer.inputs["environment"]["variables"]["KMS_KEY_ARN"] == key
    project = run.one("aws:codebuild/project:Project", "-project")
    env = {v["name"]: v["value"] for v in project.inputs["environment"]["environmentVariables"]}
    assert env["KMS_KEY_ARN"] == key
    for suffix in ("-training-policy", "-codebuild-policy", "-execution-policy", "-deployer-policy"):
        doc = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", suffix).inputs["policy"])
        (kms,) = [st for st in doc["Statement"] if st["Sid"] == "UseConfiguredKmsKey"]
        assert kms["Resource"] == [key], suffix


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mlops:namePrefix": "MLOps_Dev"}, "namePrefix 'MLOps_Dev' must be"),
        ({"mlops:sourceRepoKind": "svn"}, "sourceRepoKind 'svn' is not one of"),
        (
            {"mlops:sourceRepoName": ""},
            r"sourceRepoName must be the existing github repository as owner/repo \(got ''\); set it with "
            r"`pulumi config set mlops:sourceRepoName <owner>/<repo>`",
        ),
        ({"mlops:trafficStepPercent": "0"}, "trafficStepPercent 0 must be within 10..50"),
        # Finding 8: SageMaker's LINEAR step is 10-50% of the fleet, and a whole instance.
        ({"mlops:trafficStepPercent": "60"}, "trafficStepPercent 60 must be within 10..50"),
        # The table's range says it (it was 1..1000, then the fleet rule refused 1).
        (
            {"mlops:endpointInitialInstanceCount": "1", "mlops:autoscalingMinCapacity": "1"},
            "endpointInitialInstanceCount 1 must be within 2..1000",
        ),
        # An autoscaling floor of 1 still allows a fleet of 1: the cross-field rule refuses it.
        (
            {"mlops:autoscalingMinCapacity": "1"},
            "allow a fleet of 1 instance; LINEAR blue/green shifts 10-50% of the fleet per step",
        ),
        (
            {"mlops:trafficStepPercent": "25"},
            "trafficStepPercent 25 of 2 instances is less than one instance; raise it to 50 or keep at least 4",
        ),
        ({"mlops:trafficStepPercent": "ten"}, "mlops:trafficStepPercent"),
        ({"mlops:autoscalingMinCapacity": "5"}, "autoscaling bounds 5..2"),
        (
            {"mlops:maximumExecutionTimeoutSeconds": "300"},
            "maximumExecutionTimeoutSeconds 300 must be within",
        ),
        ({"mlops:buildTimeoutMinutes": "3000"}, "buildTimeoutMinutes 3000 must be within 5..2160"),
        ({"mlops:apiQuotaPeriod": "YEAR"}, "apiQuotaPeriod 'YEAR' is not one of DAY, WEEK, MONTH"),
        ({"mlops:logRetentionDays": "10"}, "logRetentionDays 10 is not a CloudWatch retention"),
        ({"mlops:qualityGateMinAccuracy": "1.5"}, r"qualityGateMinAccuracy 1.5 must be within \(0, 1\]"),
    ],
)
def test_bad_config_fails_before_anything_is_created_naming_the_key(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        run_program("dev", overrides)


def test_default_name_prefix_is_the_stack_name() -> None:
    config = {k: v for k, v in stack_config("staging").items() if k != "mlops:namePrefix"}
    pulumi.runtime.set_all_config(config)
    settings = PlatformSettings.load(pulumi.Config("mlops"), "qa")
    assert (settings.name_prefix, settings.endpoint_name) == ("mlops-qa", "mlops-qa-endpoint")
    assert settings.traffic_wait_seconds == 300
    assert settings.api_max_body_bytes == 1048576  # not in the stack file: the default


def test_model_registry_group_on_its_own() -> None:
    """A component used from another Pulumi program: only its args, no platform config."""
    from components.model_registry_group import ModelRegistryGroup

    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(
        mocks, project="other", stack="test", preview=False, monitor=RecordingMonitor(mocks)
    )
    deployer_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:somebody-elses-deployer"

    @pulumi.runtime.test
    def program() -> pulumi.Output[bool]:
        group = ModelRegistryGroup(
            "fraud",
            {"group_name": "fraud-models", "deployer_function_arn": deployer_arn, "max_retry_attempts": 3},
        )

        def check(values: list[object]) -> None:
            name, rule_arn = values
            assert name == "fraud-models", group.urn
            assert rule_arn == f"arn:aws:events:us-east-1:{ACCOUNT}:rule/fraud-approved-rule-4d5e6f", (
                group.urn
            )

        check_outputs([group.group_name, group.rule_arn], check)
        return pulumi.Output.from_input(True)

    program()
    types = sorted(r.typ for r in mocks.resources)
    assert types == [
        "aws:cloudwatch/eventRule:EventRule",
        "aws:cloudwatch/eventTarget:EventTarget",
        "aws:lambda/permission:Permission",
        "aws:sagemaker/modelPackageGroup:ModelPackageGroup",
        "aws:sqs/queue:Queue",
        "aws:sqs/queuePolicy:QueuePolicy",
        "mlops:index:ModelRegistryGroup",
    ]
    (target,) = [r for r in mocks.resources if r.typ == "aws:cloudwatch/eventTarget:EventTarget"]
    assert target.inputs["arn"] == deployer_arn
    assert target.inputs["retryPolicy"]["maximumRetryAttempts"] == 3.0


def test_every_setting_is_documented_and_every_stack_key_is_a_setting() -> None:
    doc = (REPO_ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-zA-Z0-9]+)` \|", doc, flags=re.MULTILINE))
    keys = {row.key for row in PlatformSettings.rows()}
    assert keys - documented == set(), "settings missing from the README config table"
    assert documented - keys - {"aws:region"} == set(), (
        "the README config table documents keys that do not exist"
    )
    for stack in STACKS:
        unknown = {k.split(":", 1)[1] for k in stack_config(stack) if k.startswith("mlops:")} - keys
        # A misspelt key would otherwise be ignored silently and the default used.
        assert unknown == set(), f"platform/Pulumi.{stack}.yaml has unknown keys {sorted(unknown)}"


def test_stack_files_differ_where_environments_should() -> None:
    configs = {stack: stack_config(stack) for stack in STACKS}
    assert configs["dev"]["mlops:forceDestroy"] == "true"
    assert configs["prod"]["mlops:forceDestroy"] == "false"
    assert int(configs["prod"]["mlops:autoscalingMaxCapacity"]) > int(
        configs["dev"]["mlops:autoscalingMaxCapacity"]
    )
    assert int(configs["prod"]["mlops:trafficWaitSeconds"]) > int(configs["dev"]["mlops:trafficWaitSeconds"])
    assert len({c["mlops:namePrefix"] for c in configs.values()}) == len(STACKS)


def test_readme_config_table_states_each_settings_real_default() -> None:
    doc = (REPO_ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([a-zA-Z0-9]+)` \| [^|]*(?:\\\|[^|]*)* \| `([^`]*)` \|", doc, flags=re.MULTILINE)
    documented = dict(rows)
    checked = 0
    for row in PlatformSettings.rows():
        key = row.key
        if row.name == "name_prefix" or key not in documented:
            continue  # namePrefix's default is derived (mlops-<stack>); sourceRepoName has none
        default = row.default
        text = documented[key]
        if isinstance(default, bool):
            assert text == str(default).lower(), key
        elif isinstance(default, int | float):
            assert float(text) == float(default), f"README says {key} defaults to {text}, the code {default}"
        else:
            assert text == (default or '""'), f"README says {key} defaults to {text}, the code {default!r}"
        checked += 1
    assert checked >= 30
