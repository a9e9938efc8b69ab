"""The Pulumi program, run under mocks once per stack file: every wire checked by value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi_mocks import (
    STACKS,
    ProgramRun,
    Registered,
    check_outputs,
    handler_module_path,
    program_run,
    run_program,
)

from components.settings import PlatformSettings

# pulumi_aws warns about its own deprecated modules on import; nothing here uses them.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REQUIRED_EXPORTS = {
    "api_url",
    "api_key",
    "repo_clone_url",
    "model_package_group_name",
    "endpoint_name",
    "build_project_name",
    "pipeline_name",
    "artifact_bucket",
    "ecr_repository_url",
}


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return program_run(request.param)


def test_there_is_a_stack_file_per_environment() -> None:
    assert STACKS == ["dev", "prod", "staging"]


def _function(run: ProgramRun, suffix: str) -> Registered:
    return run.one("aws:lambda/function:Function", suffix)


def _env(fn: Registered) -> dict[str, str]:
    return dict(fn.inputs["environment"]["variables"])


def test_exports_present_and_api_key_secret(run: ProgramRun) -> None:
    missing = REQUIRED_EXPORTS - set(run.exports)
    assert not missing, f"{run.stack}: exports missing {sorted(missing)}"
    assert run.secret_exports == {"api_key"}, f"{run.stack}: secret exports {run.secret_exports}"
    stage = run.one("aws:apigateway/stage:Stage", "-stage")
    assert run.exports["api_url"] == f"{stage.outputs['invokeUrl']}/predict", stage.where()
    assert run.exports["api_url"].endswith(f"/{run.stack}/predict")
    prefix = run.setting("namePrefix")
    assert run.exports["build_project_name"] == f"{prefix}-train"
    assert run.exports["model_package_group_name"] == f"{prefix}-models"
    assert run.exports["endpoint_name"] == f"{prefix}-endpoint"
    bucket = run.one("aws:s3/bucket:Bucket", "-artifacts")
    assert run.exports["artifact_bucket"] == bucket.outputs["bucket"], bucket.where()
    repo = run.one("aws:ecr/repository:Repository", "-images")
    assert run.exports["ecr_repository_url"] == repo.outputs["repositoryUrl"], repo.where()
    # The stack files use GitHub through a connection (CodeCommit takes no new customers).
    assert run.setting("sourceRepoKind") == "github"
    assert run.exports["repo_clone_url"] == f"https://github.com/{run.setting('sourceRepoName')}.git"


def test_component_outputs_match_exports(run: ProgramRun) -> None:
    g = run.program_globals
    outputs: list[pulumi.Output[Any]] = [
        g["api"].api_url,
        g["registry"].group_name,
        g["endpoint"].endpoint_name,
        g["build"].project_name,
        g["build"].log_group_name,
    ]

    def check(values: list[Any]) -> None:
        api_url, group, endpoint, project, log_group = values
        assert api_url == run.exports["api_url"], g["api"].urn
        assert group == run.exports["model_package_group_name"], g["registry"].urn
        assert endpoint == run.exports["endpoint_name"], g["endpoint"].urn
        # The seed's `aws logs get-log-events --log-group-name <project-name>` needs these equal.
        assert project == log_group == run.exports["build_project_name"], g["build"].urn

    check_outputs(outputs, check)


def test_components_have_their_type_tokens_and_parent_their_children(run: ProgramRun) -> None:
    components = {r.typ for r in run.resources if not r.custom}
    assert components == {
        "mlops:index:MlRepo",
        "mlops:index:ArtifactStore",
        "mlops:index:BuildPipeline",
        "mlops:index:ModelRegistryGroup",
        "mlops:index:BlueGreenEndpoint",
        "mlops:index:InferenceApi",
    }
    prefix = run.setting("namePrefix")
    for r in run.resources:
        if r.custom:
            type_chain = r.urn.split("::")[2].split("$")
            assert type_chain[0].startswith("mlops:index:"), f"{r.where()} is not a child of a component"
            assert r.name.startswith(f"{prefix}-"), f"{r.where()} is not named <component>-<role>"


def test_approval_rule_names_this_group_and_approved_and_targets_the_deployer(run: ProgramRun) -> None:
    rule = run.one("aws:cloudwatch/eventRule:EventRule", "-approved-rule")
    pattern = json.loads(rule.inputs["eventPattern"])
    assert pattern == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {
            "ModelPackageGroupName": [run.exports["model_package_group_name"]],
            "ModelApprovalStatus": ["Approved"],
        },
    }, rule.where()
    deployer = _function(run, "-deployer")
    target = run.one("aws:cloudwatch/eventTarget:EventTarget", "-approved-target")
    assert target.inputs["rule"] == rule.outputs["name"], target.where()
    assert target.inputs["arn"] == deployer.outputs["arn"], target.where()
    assert target.inputs["retryPolicy"] == {"maximumEventAgeInSeconds": 3600.0, "maximumRetryAttempts": 8.0}
    dlq = run.one("aws:sqs/queue:Queue", "-approved-dlq")
    assert target.inputs["deadLetterConfig"] == {"arn": dlq.outputs["arn"]}, target.where()
    assert dlq.inputs["sqsManagedSseEnabled"] is True, dlq.where()
    queue_policy = json.loads(
        run.one("aws:sqs/queuePolicy:QueuePolicy", "-approved-dlq-policy").inputs["policy"]
    )
    send = queue_policy["Statement"][0]
    assert send["Condition"]["ArnEquals"]["aws:SourceArn"] == rule.outputs["arn"]
    permission = run.one("aws:lambda/permission:Permission", "-approved-invoke")
    assert permission.inputs["principal"] == "events.amazonaws.com", permission.where()
    assert permission.inputs["sourceArn"] == rule.outputs["arn"], permission.where()
    assert permission.inputs["function"] == deployer.outputs["arn"], permission.where()
    group = run.one("aws:sagemaker/modelPackageGroup:ModelPackageGroup", "-group")
    assert group.inputs["modelPackageGroupName"] == run.exports["model_package_group_name"], group.where()


def test_deployer_environment_names_endpoint_alarms_and_this_stacks_traffic_settings(run: ProgramRun) -> None:
    deployer = _function(run, "-deployer")
    env = _env(deployer)
    endpoint = run.exports["endpoint_name"]
    alarms = {
        a.inputs.get("metricName", a.inputs["name"]): a
        for a in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    five_xx, latency = alarms["Invocation5XXErrors"], alarms["ModelLatency"]
    comparison = alarms[f"{endpoint}-4xx-vs-blue"]
    for alarm in (five_xx, latency):
        assert alarm.inputs["namespace"] == "AWS/SageMaker", alarm.where()
        assert alarm.inputs["dimensions"] == {"EndpointName": endpoint, "VariantName": "AllTraffic"}, (
            alarm.where()
        )
        assert alarm.inputs["evaluationPeriods"] == float(run.setting("alarmEvaluationPeriods")), (
            alarm.where()
        )
    assert five_xx.inputs["threshold"] == float(run.setting("alarm5xxThreshold")), five_xx.where()
    # ModelLatency is in microseconds; the setting is in milliseconds.
    assert latency.inputs["threshold"] == float(run.setting("alarmLatencyThresholdMs")) * 1000, (
        latency.where()
    )
    data_capture = run.setting("dataCapture") == "true"
    expected = {
        "MODEL_PACKAGE_GROUP_NAME": run.exports["model_package_group_name"],
        "ENDPOINT_NAME": endpoint,
        "EXECUTION_ROLE_ARN": run.exports["execution_role_arn"],
        "INSTANCE_TYPE": run.setting("endpointInstanceType"),
        "INITIAL_INSTANCE_COUNT": run.setting("endpointInitialInstanceCount"),
        "TRAFFIC_STEP_PERCENT": run.setting("trafficStepPercent"),
        "TRAFFIC_WAIT_SECONDS": run.setting("trafficWaitSeconds"),
        "ROLLBACK_ALARM_NAMES": f"{five_xx.inputs['name']},{latency.inputs['name']},{comparison.inputs['name']}",
        "TERMINATION_WAIT_SECONDS": run.setting("terminationWaitSeconds"),
        "MAXIMUM_EXECUTION_TIMEOUT_SECONDS": run.setting("maximumExecutionTimeoutSeconds"),
        "DATA_CAPTURE_S3_URI": (
            f"s3://{run.exports['artifact_bucket']}/data-capture/{endpoint}" if data_capture else ""
        ),
        "AUTOSCALING_MIN_CAPACITY": run.setting("autoscalingMinCapacity"),
        "AUTOSCALING_MAX_CAPACITY": run.setting("autoscalingMaxCapacity"),
        "AUTOSCALING_TARGET_INVOCATIONS": run.setting("autoscalingTargetInvocations"),
        "KMS_KEY_ARN": "",
    }
    assert env == expected, deployer.where()
    assert deployer.inputs["handler"] == "handler.handler", deployer.where()
    assert run.exports["rollback_alarm_names"] == [
        five_xx.inputs["name"],
        latency.inputs["name"],
        comparison.inputs["name"],
    ]


def test_the_4xx_comparison_alarm_compares_green_with_blue_by_endpoint_config(run: ProgramRun) -> None:
    endpoint = run.exports["endpoint_name"]
    (alarm,) = [
        a
        for a in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if a.inputs["name"] == f"{endpoint}-4xx-vs-blue"
    ]
    defaults = PlatformSettings(name_prefix="unused")
    margin = run.config.get("mlops:alarm4xxMargin", str(defaults.alarm_4xx_margin))
    assert alarm.inputs["threshold"] == float(margin), alarm.where()
    assert alarm.inputs["comparisonOperator"] == "GreaterThanThreshold", alarm.where()
    assert alarm.inputs["evaluationPeriods"] == float(run.setting("alarmEvaluationPeriods")), alarm.where()
    # No traffic on a fleet is no evidence: a quiet minute must not roll a deployment back.
    assert alarm.inputs["treatMissingData"] == "notBreaching", alarm.where()
    queries = {q["id"]: q for q in alarm.inputs["metricQueries"]}
    fleets = {"green_4xx", "green_requests", "blue_4xx", "blue_requests"}
    assert set(queries) == fleets | {"green_minus_blue_4xx_rate"}, alarm.where()
    for query_id in fleets:
        metric = queries[query_id]["metric"]
        assert (metric["namespace"], metric["stat"], metric["period"]) == ("AWS/SageMaker", "Sum", 60.0)
        assert metric["metricName"] == ("Invocation4XXErrors" if query_id.endswith("4xx") else "Invocations")
        # Pointed at no fleet until the deployer points it at a deployment's two configs.
        assert metric["dimensions"] == {
            "EndpointName": endpoint,
            "VariantName": "AllTraffic",
            "EndpointConfigName": "none",
        }, alarm.where()
        assert queries[query_id]["returnData"] is False
    least = run.config.get("mlops:alarm4xxMinRequests", str(defaults.alarm_4xx_min_requests))
    result = queries["green_minus_blue_4xx_rate"]
    assert result["returnData"] is True
    assert result["expression"] == (
        f"IF(green_requests >= {least} AND blue_requests >= {least}, "
        "green_4xx / green_requests - blue_4xx / blue_requests, 0)"
    ), alarm.where()


def test_endpoint_state_rule_failure_alarm_and_teardown_hook(run: ProgramRun) -> None:
    endpoint = run.exports["endpoint_name"]
    deployer = _function(run, "-deployer")
    rule = run.one("aws:cloudwatch/eventRule:EventRule", "-endpoint-state-rule")
    assert json.loads(rule.inputs["eventPattern"]) == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Endpoint State Change"],
        "detail": {"EndpointName": [endpoint]},
    }, rule.where()
    target = run.one("aws:cloudwatch/eventTarget:EventTarget", "-endpoint-state-target")
    assert target.inputs["arn"] == deployer.outputs["arn"], target.where()
    permission = run.one("aws:lambda/permission:Permission", "-endpoint-state-invoke")
    assert permission.inputs["sourceArn"] == rule.outputs["arn"], permission.where()
    failed = run.one("aws:cloudwatch/metricAlarm:MetricAlarm", "-deployments-failed-alarm")
    assert (failed.inputs["namespace"], failed.inputs["metricName"]) == (
        "MLOps/Deployer",
        "DeploymentsFailed",
    )
    assert failed.inputs["dimensions"] == {"Endpoint": endpoint}, failed.where()
    hook = run.one("aws:lambda/invocation:Invocation", "-teardown-hook")
    assert hook.inputs["lifecycleScope"] == "CRUD", hook.where()
    assert hook.inputs["functionName"] == deployer.outputs["name"], hook.where()
    assert json.loads(hook.inputs["input"])["endpoint_name"] == endpoint, hook.where()
    # Pulumi never declares the endpoint: the deployer owns it.
    assert not [r for r in run.resources if r.typ.startswith("aws:sagemaker/endpoint")]


def test_teardown_hook_depends_on_the_deployer_and_its_permissions(run: ProgramRun) -> None:
    # Pulumi deletes dependents first, so on `pulumi destroy` the hook (and with it the deployer's
    # teardown) runs while the deployer, its policy and the execution role still exist.
    hook = run.one("aws:lambda/invocation:Invocation", "-teardown-hook")
    needed = [
        _function(run, "-deployer"),
        run.one("aws:iam/rolePolicy:RolePolicy", "-deployer-policy"),
        run.one("aws:iam/role:Role", "-execution-role"),
        run.one("aws:iam/rolePolicy:RolePolicy", "-execution-policy"),
    ]
    deps = set(run.dependencies[hook.urn])
    for r in needed:
        assert r.urn in deps, f"{hook.where()} does not depend on {r.where()}"


def test_api_lambda_environment_names_the_endpoint_and_the_table(run: ProgramRun) -> None:
    fn = _function(run, "-function")
    table = run.one("aws:dynamodb/table:Table", "-records")
    assert _env(fn) == {
        "ENDPOINT_NAME": run.exports["endpoint_name"],
        "TABLE_NAME": table.outputs["name"],
        "MAX_BODY_BYTES": str(int(run.config.get("mlops:apiMaxBodyBytes", "1048576"))),
        "RECORD_TTL_DAYS": run.setting("recordTtlDays"),
    }, fn.where()
    assert table.inputs["hashKey"] == "request_id", table.where()
    assert table.inputs["attributes"] == [{"name": "request_id", "type": "S"}], table.where()
    assert table.inputs["ttl"] == {"attributeName": "expires_at", "enabled": True}, table.where()
    assert table.inputs["pointInTimeRecovery"]["enabled"] is True, table.where()
    assert table.inputs["serverSideEncryption"]["enabled"] is True, table.where()
    assert table.inputs["deletionProtectionEnabled"] is (run.setting("forceDestroy") == "false"), (
        table.where()
    )
    alarm = run.one("aws:cloudwatch/metricAlarm:MetricAlarm", "-records-not-stored-alarm")
    assert (alarm.inputs["namespace"], alarm.inputs["metricName"]) == (
        "MLOps/InferenceApi",
        "RecordsNotStored",
    )
    assert alarm.inputs["dimensions"] == {"Endpoint": run.exports["endpoint_name"]}, alarm.where()


def test_api_route_requires_a_key_and_the_usage_plan_has_this_stacks_limits(run: ProgramRun) -> None:
    api = run.one("aws:apigateway/restApi:RestApi", "-rest-api")
    resource = run.one("aws:apigateway/resource:Resource", "-predict")
    assert resource.inputs["pathPart"] == "predict", resource.where()
    method = run.one("aws:apigateway/method:Method", "-predict-post")
    assert (method.inputs["httpMethod"], method.inputs["apiKeyRequired"]) == ("POST", True), method.where()
    integration = run.one("aws:apigateway/integration:Integration", "-predict-integration")
    fn = _function(run, "-function")
    assert integration.inputs["type"] == "AWS_PROXY", integration.where()
    assert integration.inputs["uri"] == fn.outputs["invokeArn"], integration.where()
    permission = run.one("aws:lambda/permission:Permission", "-apigw-invoke")
    assert permission.inputs["sourceArn"] == f"{api.outputs['executionArn']}/*/POST/predict", (
        permission.where()
    )
    stage = run.one("aws:apigateway/stage:Stage", "-stage")
    assert stage.inputs["stageName"] == run.stack, stage.where()
    access_logs = run.one("aws:cloudwatch/logGroup:LogGroup", "-access-logs")
    assert stage.inputs["accessLogSettings"]["destinationArn"] == access_logs.outputs["arn"], stage.where()
    plan = run.one("aws:apigateway/usagePlan:UsagePlan", "-usage-plan")
    assert plan.inputs["apiStages"] == [{"apiId": "a1b2c3d4e5", "stage": run.stack}], plan.where()
    assert plan.inputs["throttleSettings"] == {
        "rateLimit": float(run.setting("apiThrottleRateLimit")),
        "burstLimit": float(run.setting("apiThrottleBurstLimit")),
    }, plan.where()
    assert plan.inputs["quotaSettings"] == {
        "limit": float(run.setting("apiQuotaLimit")),
        "period": run.setting("apiQuotaPeriod"),
    }, plan.where()
    key = run.one("aws:apigateway/apiKey:ApiKey", "-key")
    plan_key = run.one("aws:apigateway/usagePlanKey:UsagePlanKey", "-usage-plan-key")
    assert plan_key.inputs["keyId"] == f"{key.name}-id", plan_key.where()
    assert plan_key.inputs["usagePlanId"] == f"{plan.name}-id", plan_key.where()


def test_codebuild_environment_names_the_group_the_image_repository_and_the_role(run: ProgramRun) -> None:
    project = run.one("aws:codebuild/project:Project", "-project")
    env = {v["name"]: v["value"] for v in project.inputs["environment"]["environmentVariables"]}
    assert env == {
        "MODEL_PACKAGE_GROUP_NAME": run.exports["model_package_group_name"],
        "ECR_REPOSITORY_URI": run.exports["ecr_repository_url"],
        "SAGEMAKER_ROLE_ARN": run.exports["training_role_arn"],
        "ARTIFACT_BUCKET": run.exports["artifact_bucket"],
        "TRAINING_INSTANCE_TYPE": run.setting("trainingInstanceType"),
        "TRAINING_DATA_PATH": "data/iris.csv",
        "MODEL_GROUP": run.setting("modelGroup"),
        "QUALITY_GATE_MIN_ACCURACY": run.setting("qualityGateMinAccuracy"),
        "KMS_KEY_ARN": "",
    }, project.where()
    assert project.inputs["environment"]["privilegedMode"] is True, project.where()
    assert project.inputs["source"]["buildspec"] == "workloads/train/buildspec.yml", project.where()
    assert project.inputs["source"]["type"] == "GITHUB", project.where()
    assert project.inputs["source"]["location"] == run.exports["repo_clone_url"], project.where()
    log_group = run.one("aws:cloudwatch/logGroup:LogGroup", "-build-logs")
    assert log_group.inputs["name"] == project.inputs["name"] == run.exports["build_project_name"]
    assert log_group.inputs["retentionInDays"] == float(run.setting("logRetentionDays")), log_group.where()
    assert project.inputs["logsConfig"]["cloudwatchLogs"] == {
        "groupName": log_group.outputs["name"],
        "status": "ENABLED",
    }, project.where()


def test_pipeline_runs_source_then_the_training_build_on_a_push_to_the_branch(run: ProgramRun) -> None:
    pipeline = run.one("aws:codepipeline/pipeline:Pipeline", "-pipeline")
    source, build = pipeline.inputs["stages"]
    (source_action,) = source["actions"]
    connection = run.one("aws:codeconnections/connection:Connection", "-connection")
    assert source_action["provider"] == "CodeStarSourceConnection", pipeline.where()
    assert source_action["configuration"] == {
        "ConnectionArn": connection.outputs["arn"],
        "FullRepositoryId": run.setting("sourceRepoName"),
        "BranchName": run.setting("sourceBranch"),
        "DetectChanges": "true",
        "OutputArtifactFormat": "CODE_ZIP",
    }, pipeline.where()
    (build_action,) = build["actions"]
    assert build_action["configuration"] == {"ProjectName": run.exports["build_project_name"]}, (
        pipeline.where()
    )
    assert build_action["inputArtifacts"] == source_action["outputArtifacts"], pipeline.where()
    assert pipeline.inputs["artifactStores"][0]["location"] == run.exports["artifact_bucket"], (
        pipeline.where()
    )


def test_codecommit_source_starts_the_pipeline_on_a_push_to_the_branch() -> None:
    run = run_program("dev", {"mlops:sourceRepoKind": "codecommit", "mlops:sourceRepoName": ""})
    pipeline = run.one("aws:codepipeline/pipeline:Pipeline", "-pipeline")
    (source_action,) = pipeline.inputs["stages"][0]["actions"]
    assert source_action["provider"] == "CodeCommit", pipeline.where()
    assert source_action["configuration"] == {
        "RepositoryName": "mlops-dev-repo",
        "BranchName": run.setting("sourceBranch"),
        "PollForSourceChanges": "false",
        "OutputArtifactFormat": "CODE_ZIP",
    }, pipeline.where()
    codecommit = run.one("aws:codecommit/repository:Repository", "-repository")
    assert run.exports["repo_clone_url"] == codecommit.outputs["cloneUrlHttp"], codecommit.where()
    rule = run.one("aws:cloudwatch/eventRule:EventRule", "-push-rule")
    pattern = json.loads(rule.inputs["eventPattern"])
    assert pattern["resources"] == [codecommit.outputs["arn"]], rule.where()
    assert pattern["detail"]["referenceName"] == [run.setting("sourceBranch")], rule.where()
    target = run.one("aws:cloudwatch/eventTarget:EventTarget", "-push-target")
    assert target.inputs["arn"] == pipeline.outputs["arn"], target.where()


@pytest.mark.parametrize("suffix", ["-deployer", "-function"])
def test_lambda_archives_contain_the_module_their_handler_names(run: ProgramRun, suffix: str) -> None:
    fn = _function(run, suffix)
    archive = fn.inputs["code"]
    assert isinstance(archive, pulumi.AssetArchive), fn.where()
    (inner,) = archive.assets.values()
    assert isinstance(inner, pulumi.FileArchive), fn.where()
    module = handler_module_path(Path(inner.path), fn.inputs["handler"])
    assert module.is_file(), (
        f"{fn.where()}: handler {fn.inputs['handler']} needs {module}, which does not exist"
    )
    function_name = fn.inputs["handler"].rsplit(".", 1)[1]
    assert f"def {function_name}(" in module.read_text(), (
        f"{fn.where()}: {module} defines no {function_name}()"
    )


def test_one_component_owns_the_image_repository_and_bucket_the_others_use(run: ProgramRun) -> None:
    # Issue 9: the build and the endpoint take the ArtifactStore instead of loose names and ARNs.
    for typ, suffix in (("aws:ecr/repository:Repository", "-images"), ("aws:s3/bucket:Bucket", "-artifacts")):
        owned = run.one(typ, suffix)
        assert "mlops:index:ArtifactStore$" in owned.urn, owned.where()
    (lifecycle,) = run.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert "mlops:index:ArtifactStore$" in lifecycle.urn
    bucket_arn = run.one("aws:s3/bucket:Bucket", "-artifacts").outputs["arn"]
    repo_arn = run.one("aws:ecr/repository:Repository", "-images").outputs["arn"]
    for policy in ("-codebuild-policy", "-execution-policy", "-training-policy"):
        text = run.one("aws:iam/rolePolicy:RolePolicy", policy).inputs["policy"]
        assert repo_arn in text and bucket_arn in text, policy
    # They were BuildPipeline's children: each carries an alias to its old parent, so `pulumi up` on an
    # existing stack moves them instead of deleting the bucket and image repository.
    old_parent = (
        f'parentUrn: "urn:pulumi:{run.stack}::mlops::mlops:index:BuildPipeline::{run.setting("namePrefix")}"'
    )
    moved = [r for r in run.resources if r.custom and "mlops:index:ArtifactStore$" in r.urn]
    assert len(moved) >= 8
    for r in moved:
        assert any(old_parent in spec for spec in run.aliases.get(r.urn, [])), r.where()
