"""Names and numbers from botocore: every physical name and numeric setting that reaches an AWS API,
checked against the service's own model (pattern, length, range, enum) when the tests run.

1. What the Pulumi program declares (TABLE: resource input -> API member), for every stack file and
   for the longest name prefix the settings accept, so a name that fits only short prefixes fails.
2. What the code sends at run time: the deployer's and the build steps' requests, made against
   recording clients and checked whole against each operation's input shape, and the names they make.
3. SageMaker's LINEAR blue/green rule (10-50% of the fleet, whole instances), which the model cannot
   express, for every stack file.
4. The stack settings refuse what the API (or its documentation) refuses.

Limits come from botocore (tests/aws_limits.py: api(...)); the few documented rules the model lacks
are documented(...) there, each citing its AWS page.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aws_limits import (
    ALARM_PERIOD,
    ALARM_WINDOW_SECONDS,
    DOCUMENTED_SAYS,
    IAM_QUOTAS_URL,
    LINEAR_STEP_PERCENT,
    LOG_RETENTION,
    NONCURRENT_DAYS,
    PUT_METRIC_ALARM_URL,
    ROLE_INLINE_POLICIES_CHARACTERS,
    ROLE_TRUST_POLICY_CHARACTERS,
    S3_BUCKET_NAME,
    SQS_QUEUE_NAME,
    SQS_RETENTION,
    STAGE_NAME,
    USAGE_PLAN_MINIMUM,
    ApiCall,
    ApiRecorder,
    Field,
    Limit,
    api,
    api_shape,
    documentation,
    linear_step_problems,
)
from botocore.exceptions import ClientError
from pulumi_mocks import (
    ACCOUNT,
    REGION,
    STACKS,
    ProgramRun,
    Registered,
    program_run,
    run_program,
    stack_config,
)

from components.ml_repo import REPO_KINDS
from components.settings import PlatformSettings, SettingsError
from workloads.serve.deployer import deployer as dp
from workloads.train import steps

# pulumi_aws warns about its own deprecated modules on import; nothing here uses them.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
BUCKET = "aws:s3/bucket:Bucket"
BUCKET_ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
BUCKET_LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
BUCKET_OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
BUCKET_VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
CODECOMMIT = "aws:codecommit/repository:Repository"
CONNECTION = "aws:codeconnections/connection:Connection"
ECR = "aws:ecr/repository:Repository"
ECR_LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
EVENT_RULE = "aws:cloudwatch/eventRule:EventRule"
EVENT_TARGET = "aws:cloudwatch/eventTarget:EventTarget"
EVENT_INVOKE = "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig"
FUNCTION = "aws:lambda/function:Function"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
PACKAGE_GROUP = "aws:sagemaker/modelPackageGroup:ModelPackageGroup"
PERMISSION = "aws:lambda/permission:Permission"
PIPELINE = "aws:codepipeline/pipeline:Pipeline"
PROJECT = "aws:codebuild/project:Project"
QUEUE = "aws:sqs/queue:Queue"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
STAGE = "aws:apigateway/stage:Stage"
TABLE_ = "aws:dynamodb/table:Table"
USAGE_PLAN = "aws:apigateway/usagePlan:UsagePlan"

LINEAR = "DeploymentConfig.BlueGreenUpdatePolicy"
UPDATE = ("sagemaker", "UpdateEndpoint")
LINEAR_STEP_VALUE = api(*UPDATE, f"{LINEAR}.TrafficRoutingConfiguration.LinearStepSize.Value")
WAIT_INTERVAL = api(*UPDATE, f"{LINEAR}.TrafficRoutingConfiguration.WaitIntervalInSeconds")
TERMINATION_WAIT = api(*UPDATE, f"{LINEAR}.TerminationWaitInSeconds")
EXECUTION_TIMEOUT = api(*UPDATE, f"{LINEAR}.MaximumExecutionTimeoutInSeconds")
CODEBUILD_VAR = "environment.environmentVariables[name={}].value"
DEPLOYER_VAR = "environment.variables.{}"


def field(typ: str, path: str, *limits: Limit, **options: Any) -> Field:
    return Field(typ, path, limits, **options)


def codebuild_env(name: str, *limits: Limit) -> Field:
    """A CodeBuild environment variable the build's steps (workloads/train/steps.py) pass to an API."""
    return field(PROJECT, CODEBUILD_VAR.format(name), *limits, env=True)


def deployer_env(name: str, *limits: Limit, **options: Any) -> Field:
    """A deployer Lambda environment variable workloads/serve/deployer/deployer.py passes to an API."""
    return field(FUNCTION, DEPLOYER_VAR.format(name), *limits, suffix="-deployer", env=True, **options)


# (Pulumi resource type, input) -> what the AWS API it reaches accepts. auto_named: without the input
# Pulumi names the resource <logical name>-<7 random hex>, which must fit the API too.
TABLE: list[Field] = [
    # SageMaker Model Registry
    field(
        PACKAGE_GROUP,
        "modelPackageGroupName",
        api("sagemaker", "CreateModelPackageGroup", "ModelPackageGroupName"),
    ),
    field(
        PACKAGE_GROUP,
        "modelPackageGroupDescription",
        api("sagemaker", "CreateModelPackageGroup", "ModelPackageGroupDescription"),
    ),
    # CodeBuild
    field(PROJECT, "name", api("codebuild", "CreateProject", "name")),
    field(PROJECT, "description", api("codebuild", "CreateProject", "description")),
    field(PROJECT, "buildTimeout", api("codebuild", "CreateProject", "timeoutInMinutes")),
    field(PROJECT, "environment.computeType", api("codebuild", "CreateProject", "environment.computeType")),
    field(PROJECT, "environment.type", api("codebuild", "CreateProject", "environment.type")),
    field(
        PROJECT,
        "environment.imagePullCredentialsType",
        api("codebuild", "CreateProject", "environment.imagePullCredentialsType"),
    ),
    field(
        PROJECT,
        "environment.environmentVariables[].name",
        api("codebuild", "CreateProject", "environment.environmentVariables.name"),
    ),
    field(PROJECT, "source.type", api("codebuild", "CreateProject", "source.type")),
    field(PROJECT, "source.gitCloneDepth", api("codebuild", "CreateProject", "source.gitCloneDepth")),
    codebuild_env(
        "TRAINING_INSTANCE_TYPE", api("sagemaker", "CreateTrainingJob", "ResourceConfig.InstanceType")
    ),
    codebuild_env(
        "MODEL_PACKAGE_GROUP_NAME", api("sagemaker", "CreateModelPackage", "ModelPackageGroupName")
    ),
    # CodePipeline, CodeCommit, CodeConnections
    field(PIPELINE, "name", api("codepipeline", "CreatePipeline", "pipeline.name")),
    field(PIPELINE, "pipelineType", api("codepipeline", "CreatePipeline", "pipeline.pipelineType")),
    field(PIPELINE, "executionMode", api("codepipeline", "CreatePipeline", "pipeline.executionMode")),
    field(PIPELINE, "stages[].name", api("codepipeline", "CreatePipeline", "pipeline.stages.name")),
    field(
        PIPELINE,
        "stages[].actions[].name",
        api("codepipeline", "CreatePipeline", "pipeline.stages.actions.name"),
    ),
    field(CODECOMMIT, "repositoryName", api("codecommit", "CreateRepository", "repositoryName")),
    field(CODECOMMIT, "description", api("codecommit", "CreateRepository", "repositoryDescription")),
    field(
        CONNECTION,
        "name",
        api("codeconnections", "CreateConnection", "ConnectionName"),
        auto_named=True,
    ),
    field(CONNECTION, "providerType", api("codeconnections", "CreateConnection", "ProviderType")),
    # ECR and S3
    field(ECR, "name", api("ecr", "CreateRepository", "repositoryName")),
    field(ECR, "imageTagMutability", api("ecr", "CreateRepository", "imageTagMutability")),
    field(ECR_LIFECYCLE, "policy", api("ecr", "PutLifecyclePolicy", "lifecyclePolicyText")),
    field(BUCKET, "bucket", S3_BUCKET_NAME, auto_named=True),
    field(
        BUCKET_LIFECYCLE,
        "rules[].noncurrentVersionExpiration.noncurrentDays",
        api(
            "s3",
            "PutBucketLifecycleConfiguration",
            "LifecycleConfiguration.Rules.NoncurrentVersionExpiration.NoncurrentDays",
        ),
        NONCURRENT_DAYS,
    ),
    field(
        BUCKET_LIFECYCLE,
        "rules[].abortIncompleteMultipartUpload.daysAfterInitiation",
        api(
            "s3",
            "PutBucketLifecycleConfiguration",
            "LifecycleConfiguration.Rules.AbortIncompleteMultipartUpload.DaysAfterInitiation",
        ),
    ),
    field(
        BUCKET_OWNERSHIP,
        "rule.objectOwnership",
        api("s3", "PutBucketOwnershipControls", "OwnershipControls.Rules.ObjectOwnership"),
    ),
    field(
        BUCKET_ENCRYPTION,
        "rules[].applyServerSideEncryptionByDefault.sseAlgorithm",
        api(
            "s3",
            "PutBucketEncryption",
            "ServerSideEncryptionConfiguration.Rules.ApplyServerSideEncryptionByDefault.SSEAlgorithm",
        ),
    ),
    field(
        BUCKET_VERSIONING,
        "versioningConfiguration.status",
        api("s3", "PutBucketVersioning", "VersioningConfiguration.Status"),
    ),
    # IAM
    field(ROLE, "name", api("iam", "CreateRole", "RoleName"), auto_named=True),
    field(ROLE, "description", api("iam", "CreateRole", "Description")),
    field(ROLE, "assumeRolePolicy", api("iam", "CreateRole", "AssumeRolePolicyDocument")),
    field(ROLE_POLICY, "name", api("iam", "PutRolePolicy", "PolicyName"), auto_named=True),
    field(ROLE_POLICY, "policy", api("iam", "PutRolePolicy", "PolicyDocument")),
    # Lambda
    field(FUNCTION, "name", api("lambda", "CreateFunction", "FunctionName")),
    field(FUNCTION, "description", api("lambda", "CreateFunction", "Description")),
    field(FUNCTION, "timeout", api("lambda", "CreateFunction", "Timeout")),
    field(FUNCTION, "memorySize", api("lambda", "CreateFunction", "MemorySize")),
    field(FUNCTION, "runtime", api("lambda", "CreateFunction", "Runtime")),
    field(FUNCTION, "handler", api("lambda", "CreateFunction", "Handler")),
    field(FUNCTION, "loggingConfig.logGroup", api("lambda", "CreateFunction", "LoggingConfig.LogGroup")),
    field(FUNCTION, "loggingConfig.logFormat", api("lambda", "CreateFunction", "LoggingConfig.LogFormat")),
    field(PERMISSION, "action", api("lambda", "AddPermission", "Action")),
    field(PERMISSION, "function", api("lambda", "AddPermission", "FunctionName")),
    field(PERMISSION, "principal", api("lambda", "AddPermission", "Principal")),
    field(PERMISSION, "sourceArn", api("lambda", "AddPermission", "SourceArn")),
    field(EVENT_INVOKE, "functionName", api("lambda", "PutFunctionEventInvokeConfig", "FunctionName")),
    field(
        EVENT_INVOKE,
        "maximumRetryAttempts",
        api("lambda", "PutFunctionEventInvokeConfig", "MaximumRetryAttempts"),
    ),
    field(
        EVENT_INVOKE,
        "maximumEventAgeInSeconds",
        api("lambda", "PutFunctionEventInvokeConfig", "MaximumEventAgeInSeconds"),
    ),
    # The deployer's environment: what workloads/serve/deployer/deployer.py sends to SageMaker and
    # Application Auto Scaling (DeployerConfig.from_env, deployment_config, register_autoscaling).
    deployer_env("ENDPOINT_NAME", api("sagemaker", "CreateEndpoint", "EndpointName")),
    deployer_env("MODEL_PACKAGE_GROUP_NAME", api("sagemaker", "ListModelPackages", "ModelPackageGroupName")),
    deployer_env("EXECUTION_ROLE_ARN", api("sagemaker", "CreateModel", "ExecutionRoleArn")),
    deployer_env(
        "INSTANCE_TYPE", api("sagemaker", "CreateEndpointConfig", "ProductionVariants.InstanceType")
    ),
    deployer_env(
        "INITIAL_INSTANCE_COUNT",
        api("sagemaker", "CreateEndpointConfig", "ProductionVariants.InitialInstanceCount"),
    ),
    # TRAFFIC_STEP_PERCENT is the step's percentage (CAPACITY_PERCENT) or gives its instance count.
    deployer_env("TRAFFIC_STEP_PERCENT", LINEAR_STEP_VALUE, LINEAR_STEP_PERCENT),
    deployer_env("TRAFFIC_WAIT_SECONDS", WAIT_INTERVAL),
    deployer_env("TERMINATION_WAIT_SECONDS", TERMINATION_WAIT),
    deployer_env("MAXIMUM_EXECUTION_TIMEOUT_SECONDS", EXECUTION_TIMEOUT),
    deployer_env(
        "ROLLBACK_ALARM_NAMES",
        api("sagemaker", "UpdateEndpoint", "DeploymentConfig.AutoRollbackConfiguration.Alarms.AlarmName"),
        split=",",
    ),
    deployer_env(
        "DATA_CAPTURE_S3_URI", api("sagemaker", "CreateEndpointConfig", "DataCaptureConfig.DestinationS3Uri")
    ),
    deployer_env(
        "AUTOSCALING_MIN_CAPACITY", api("application-autoscaling", "RegisterScalableTarget", "MinCapacity")
    ),
    deployer_env(
        "AUTOSCALING_MAX_CAPACITY", api("application-autoscaling", "RegisterScalableTarget", "MaxCapacity")
    ),
    deployer_env(
        "AUTOSCALING_TARGET_INVOCATIONS",
        api(
            "application-autoscaling",
            "PutScalingPolicy",
            "TargetTrackingScalingPolicyConfiguration.TargetValue",
        ),
    ),
    # CloudWatch
    field(ALARM, "name", api("cloudwatch", "PutMetricAlarm", "AlarmName")),
    field(ALARM, "alarmDescription", api("cloudwatch", "PutMetricAlarm", "AlarmDescription")),
    field(ALARM, "namespace", api("cloudwatch", "PutMetricAlarm", "Namespace")),
    field(ALARM, "metricName", api("cloudwatch", "PutMetricAlarm", "MetricName")),
    field(ALARM, "dimensions.*", api("cloudwatch", "PutMetricAlarm", "Dimensions.Value")),
    field(ALARM, "statistic", api("cloudwatch", "PutMetricAlarm", "Statistic")),
    field(ALARM, "comparisonOperator", api("cloudwatch", "PutMetricAlarm", "ComparisonOperator")),
    field(ALARM, "treatMissingData", api("cloudwatch", "PutMetricAlarm", "TreatMissingData")),
    field(ALARM, "evaluationPeriods", api("cloudwatch", "PutMetricAlarm", "EvaluationPeriods")),
    field(ALARM, "period", api("cloudwatch", "PutMetricAlarm", "Period"), ALARM_PERIOD),
    field(ALARM, "threshold", api("cloudwatch", "PutMetricAlarm", "Threshold")),
    field(LOG_GROUP, "name", api("logs", "CreateLogGroup", "logGroupName")),
    field(LOG_GROUP, "retentionInDays", api("logs", "PutRetentionPolicy", "retentionInDays"), LOG_RETENTION),
    # EventBridge and SQS
    field(EVENT_RULE, "name", api("events", "PutRule", "Name"), auto_named=True),
    field(EVENT_RULE, "description", api("events", "PutRule", "Description")),
    field(EVENT_RULE, "eventPattern", api("events", "PutRule", "EventPattern")),
    field(
        EVENT_TARGET,
        "retryPolicy.maximumRetryAttempts",
        api("events", "PutTargets", "Targets.RetryPolicy.MaximumRetryAttempts"),
    ),
    field(
        EVENT_TARGET,
        "retryPolicy.maximumEventAgeInSeconds",
        api("events", "PutTargets", "Targets.RetryPolicy.MaximumEventAgeInSeconds"),
    ),
    field(QUEUE, "name", SQS_QUEUE_NAME, auto_named=True),
    field(QUEUE, "messageRetentionSeconds", SQS_RETENTION),
    # DynamoDB: CreateTable's TableName also takes an ARN, so its member is wider than a table name.
    field(TABLE_, "name", api_shape("dynamodb", "TableName", "CreateTable TableName as a name, not an ARN")),
    field(TABLE_, "hashKey", api("dynamodb", "CreateTable", "KeySchema.AttributeName")),
    field(TABLE_, "billingMode", api("dynamodb", "CreateTable", "BillingMode")),
    field(
        TABLE_,
        "ttl.attributeName",
        api("dynamodb", "UpdateTimeToLive", "TimeToLiveSpecification.AttributeName"),
    ),
    # API Gateway
    field(STAGE, "stageName", STAGE_NAME),
    field(
        USAGE_PLAN,
        "throttleSettings.rateLimit",
        api("apigateway", "CreateUsagePlan", "throttle.rateLimit"),
        USAGE_PLAN_MINIMUM,
    ),
    field(
        USAGE_PLAN,
        "throttleSettings.burstLimit",
        api("apigateway", "CreateUsagePlan", "throttle.burstLimit"),
        USAGE_PLAN_MINIMUM,
    ),
    field(
        USAGE_PLAN,
        "quotaSettings.limit",
        api("apigateway", "CreateUsagePlan", "quota.limit"),
        USAGE_PLAN_MINIMUM,
    ),
    field(USAGE_PLAN, "quotaSettings.period", api("apigateway", "CreateUsagePlan", "quota.period")),
]

# Resource types the program declares whose inputs reach no name or number an API limits.
NOTHING_TO_CHECK = {
    "aws:apigateway/account:Account": "a role ARN only",
    "aws:apigateway/apiKey:ApiKey": "CreateApiKey's name and description are unconstrained strings",
    "aws:apigateway/deployment:Deployment": "ids only",
    "aws:apigateway/integration:Integration": "ids, an ARN and fixed words (unconstrained strings)",
    "aws:apigateway/method:Method": "ids and fixed words (unconstrained strings)",
    "aws:apigateway/methodSettings:MethodSettings": "fixed words (unconstrained strings)",
    "aws:apigateway/resource:Resource": "a fixed path part (an unconstrained string)",
    "aws:apigateway/restApi:RestApi": "CreateRestApi's name and description are unconstrained strings",
    "aws:apigateway/usagePlanKey:UsagePlanKey": "ids only",
    "aws:lambda/invocation:Invocation": "a JSON payload (a blob)",
    "aws:s3/bucketPolicy:BucketPolicy": "a policy document (tests/test_infra_security.py)",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "booleans",
    "aws:sqs/queuePolicy:QueuePolicy": "a policy document (tests/test_infra_security.py)",
}


# A valid configuration to vary one key of: the source repository is the one value a user must set.
BASE_SETTINGS: dict[str, Any] = {
    "name_prefix": "mlops-dev",
    "source_repo_kind": "github",
    "source_repo_name": "example-org/iris-models",
}
# sourceRepoName per kind: an external repository is owner/repo; CodeCommit's default is <prefix>-repo.
EXAMPLE_REPOS = {kind: "" if kind == "codecommit" else "example-org/iris-models" for kind in REPO_KINDS}


def _refused(settings: PlatformSettings) -> str | None:
    try:
        settings.validate()
    except SettingsError as exc:
        return str(exc)
    return None


def _longest_name_prefix() -> str:
    """The longest namePrefix PlatformSettings accepts (of one letter repeated): the longest its
    validation raises nothing about namePrefix for (other defaults may need a value the user sets)."""
    accepted = [
        length
        for length in range(1, 257)
        if "namePrefix"
        not in (_refused(PlatformSettings(**{**BASE_SETTINGS, "name_prefix": "a" * length})) or "")
    ]
    assert accepted, "PlatformSettings accepts no name prefix of repeated letters"
    return "a" * max(accepted)


LONGEST_PREFIX = _longest_name_prefix()
LONGEST = {"mlops:namePrefix": LONGEST_PREFIX}
# label -> (stack file, config overrides): every stack file as it is and with the longest name prefix,
# and the longest prefix with each source repository kind (each declares other resources).
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    **{stack: (stack, {}) for stack in STACKS},
    **{f"{stack}@longest-prefix": (stack, LONGEST) for stack in STACKS},
    **{
        f"dev@longest-prefix@{kind}": (
            "dev",
            {**LONGEST, "mlops:sourceRepoKind": kind, "mlops:sourceRepoName": EXAMPLE_REPOS[kind]},
        )
        for kind in REPO_KINDS
        if kind != stack_config("dev").get("mlops:sourceRepoKind")
    },
}
RUNS = list(VARIANTS)


@functools.cache
def stack_run(label: str) -> ProgramRun:
    stack, overrides = VARIANTS[label]
    return run_program(stack, overrides) if overrides else program_run(stack)


def _row_id(row: Field) -> str:
    return f"{row.typ.rsplit(':', 1)[-1]}.{row.path}"


def _rows_resources(run: ProgramRun, row: Field) -> list[Registered]:
    return [r for r in run.of_type(row.typ) if r.name.endswith(row.suffix)]


def _variables(resource: Registered) -> dict[str, str]:
    """The environment variables of a Lambda function or a CodeBuild project, as the code reads them."""
    if resource.typ == FUNCTION:
        return dict(resource.inputs["environment"]["variables"])
    return {v["name"]: v["value"] for v in resource.inputs["environment"]["environmentVariables"]}


# --- the checks themselves ------------------------------------------------------------------------

# (limit, a value AWS refuses, a value it takes): the checks can fail, and Java patterns read right.
CHECKS = [
    (api("sagemaker", "CreateModel", "ModelName"), "m" * 64, "m" * 63),
    (api("sagemaker", "CreateModel", "ModelName"), "under_score", "a-b-1"),
    (api("sagemaker", "AddTags", "Tags.Value"), "bang!", "modèle 模型 1.0 a:b/c=d+e-f@g_h"),
    (api("iam", "CreateRole", "RoleName"), "née", "ok+=,.@-_Name1"),
    (api("application-autoscaling", "PutScalingPolicy", "PolicyName"), "tab\there", "any printable!"),
    (api("codebuild", "CreateProject", "timeoutInMinutes"), 2161, 2160.0),
    (api("events", "PutTargets", "Targets.RetryPolicy.MaximumRetryAttempts"), 1.5, "185"),
    (api("sagemaker", "CreateTrainingJob", "ResourceConfig.InstanceType"), "ml.m5.larg", "ml.m5.large"),
    (api("sagemaker", "CreateModelPackage", "CustomerMetadataProperties"), "v!", "v"),
    (api("application-autoscaling", "RegisterScalableTarget", "MaxCapacity"), 2**31, 2**31 - 1),
    (LOG_RETENTION, 2, 3653),
    (SQS_RETENTION, 59, 1_209_600.0),
    (STAGE_NAME, "a.b", "dev_2-x"),
    (ALARM_PERIOD, 45, 120),
    (S3_BUCKET_NAME, "Upper-case", "a.b-c"),
]


@pytest.mark.parametrize(("limit", "refused", "taken"), CHECKS, ids=[c[0].source for c in CHECKS])
def test_the_checks_refuse_and_take_what_aws_does(limit: Limit, refused: Any, taken: Any) -> None:
    assert limit.problems(refused), f"{limit.source} takes {refused!r}"
    assert not limit.problems(taken), limit.problems(taken)


def test_a_request_is_checked_whole() -> None:
    call = ApiCall("sagemaker", "CreateEndpoint", {"EndpointName": "e" * 64, "Tags": [{"Key": "k"}], "X": 1})
    name = "e" * 64
    assert sorted(call.problems()) == sorted(
        [
            "sagemaker CreateEndpoint: CreateEndpointInput needs EndpointConfigName",
            "sagemaker CreateEndpoint: CreateEndpointInput has no member 'X'",
            f"sagemaker CreateEndpoint.EndpointName: {name!r} is 64 characters; EndpointName's maximum is 63",
            f"sagemaker CreateEndpoint.EndpointName: {name!r} does not match EndpointName's pattern "
            "'[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}'",
            "sagemaker CreateEndpoint.Tags[0]: Tag needs Value",
        ]
    )


# --- 1. what the Pulumi program declares ---------------------------------------------------------


def test_the_documented_rules_are_what_botocore_documents() -> None:
    for service, operation, path, sentence in DOCUMENTED_SAYS:
        text = documentation(service, operation, path)
        assert sentence in text, f"{service} {operation} {path} no longer says {sentence!r}: {text[:500]!r}"


@pytest.mark.parametrize("row", TABLE, ids=_row_id)
@pytest.mark.parametrize("label", RUNS)
def test_program_inputs_fit_what_aws_accepts(label: str, row: Field) -> None:
    run = stack_run(label)
    problems = [
        f"{label}: {r.where()} {row.path}: {problem}"
        for r in _rows_resources(run, row)
        for value in row.values(r.name, r.inputs)
        for limit in row.limits
        for problem in limit.problems(value)
    ]
    assert not problems, "\n".join(problems)


def test_every_table_row_reads_a_value() -> None:
    """A row whose resource type the program declares reads a value in some run (no stale paths)."""
    stale = []
    for row in TABLE:
        runs = [stack_run(label) for label in RUNS]
        declared = [r for run in runs for r in _rows_resources(run, row)]
        if declared and not any(row.values(r.name, r.inputs) for r in declared):
            stale.append(f"{_row_id(row)}: no {row.typ} of any run has {row.path}")
    assert not stale, "\n".join(stale)


def test_every_resource_type_is_checked_or_has_nothing_to_check() -> None:
    declared = {r.typ for label in RUNS for r in stack_run(label).resources if r.custom}
    unchecked = declared - {row.typ for row in TABLE} - set(NOTHING_TO_CHECK)
    assert not unchecked, f"resource types with no row in TABLE nor in NOTHING_TO_CHECK: {sorted(unchecked)}"


def _alarm_period(alarm: Registered) -> float:
    """An alarm's period: its own, or (a metric math alarm) the longest of its metric queries'."""
    if "period" in alarm.inputs:
        return float(alarm.inputs["period"])
    return max(float(q["metric"]["period"]) for q in alarm.inputs["metricQueries"] if q.get("metric"))


@pytest.mark.parametrize("label", RUNS)
def test_alarm_evaluation_window_fits_a_week(label: str) -> None:
    run = stack_run(label)
    problems = [
        f"{label}: {a.where()} period {_alarm_period(a):g} s x evaluationPeriods "
        f"{a.inputs['evaluationPeriods']:g} = {_alarm_period(a) * a.inputs['evaluationPeriods']:g} s; "
        f"PutMetricAlarm takes at most {ALARM_WINDOW_SECONDS} s [{PUT_METRIC_ALARM_URL}]"
        for a in run.of_type(ALARM)
        if _alarm_period(a) * a.inputs["evaluationPeriods"] > ALARM_WINDOW_SECONDS
    ]
    assert run.of_type(ALARM) and not problems, "\n".join(problems)


def _iam_characters(document: str) -> int:
    """A policy's size as IAM counts it: white space outside strings does not count."""
    return len(json.dumps(json.loads(document), separators=(",", ":")))


@pytest.mark.parametrize("label", RUNS)
def test_role_policies_fit_iam_quotas(label: str) -> None:
    run = stack_run(label)
    inline: dict[str, list[Registered]] = {}
    for policy in run.of_type(ROLE_POLICY):
        inline.setdefault(str(policy.inputs["role"]), []).append(policy)
    problems = []
    for role in run.of_type(ROLE):
        trust = _iam_characters(role.inputs["assumeRolePolicy"])
        if trust > ROLE_TRUST_POLICY_CHARACTERS:
            problems.append(
                f"{label}: {role.where()} assumeRolePolicy is {trust} characters; IAM's role trust policy "
                f"quota is {ROLE_TRUST_POLICY_CHARACTERS} [{IAM_QUOTAS_URL}]"
            )
    for role_id, policies in inline.items():
        size = sum(_iam_characters(p.inputs["policy"]) for p in policies)
        if size > ROLE_INLINE_POLICIES_CHARACTERS:
            names = ", ".join(p.where() for p in policies)
            problems.append(
                f"{label}: role {role_id}: inline policies {names} are {size} characters together; IAM "
                f"takes {ROLE_INLINE_POLICIES_CHARACTERS} per role [{IAM_QUOTAS_URL}]"
            )
    assert run.of_type(ROLE) and inline and not problems, "\n".join(problems)


# --- 2. what the code sends at run time ----------------------------------------------------------

VERSION = 99999  # a model package version far beyond any test's, so names are as long as they get
DIGEST = hashlib.sha256(b"a model package").hexdigest()
COMMITS = {
    "CodeBuild's CODEBUILD_RESOLVED_SOURCE_VERSION": hashlib.sha1(b"a commit").hexdigest(),
    "run_job.py's by-hand default": "manual-20991231235959",
}
# What AWS answers may say: quotes, braces, percent signs, non-ASCII; the deployer keeps it in a tag.
AWS_REFUSAL = (
    '1 validation error detected: Value \'{"Type": "CAPACITY_PERCENT", "Value": 5}\' at '
    "'deploymentConfig.blueGreenUpdatePolicy.trafficRoutingConfiguration.linearStepSize' failed to "
    "satisfy constraint: must be 10-50% of the variant\u2019s instance count (1 < 2?) — see <docs>"
)
ROLLBACK_REASON = (
    "Deployment was rolled back: alarm 'x-invocation-5xx' entered ALARM state (Threshold Crossed: 1 "
    "datapoint [5.0 (01/12/26 18:53:00)] was >= the threshold (1.0)); traffic shifted back 100%"
)


def _raises(operation: str, code: str, message: str) -> Callable[..., Any]:
    def answer(**_: Any) -> Any:
        raise ClientError({"Error": {"Code": code, "Message": message}}, operation)

    return answer


def _call_deployment_config(config: dp.DeployerConfig, instances: int) -> dict[str, Any]:
    """DeployerConfig.deployment_config(), which takes the fleet size where the step is instances."""
    return config.deployment_config(instances)


def _fleet_sizes(config: dp.DeployerConfig) -> list[int]:
    """Instance counts the endpoint can have when a deployment starts: the initial count, and with
    autoscaling anything from its minimum to its maximum."""
    sizes = {config.initial_instance_count}
    if config.autoscaling_max_capacity > 0:
        sizes |= set(range(config.autoscaling_min_capacity, config.autoscaling_max_capacity + 1))
    return sorted(sizes)


@functools.cache
def deployer_calls(label: str) -> list[ApiCall]:
    """Every request the deployer makes for the run's endpoint: the first deployment, a blue/green
    update, an update SageMaker refuses, and the endpoint event after a rollback (which reports the
    failure, registers autoscaling and cleans up)."""
    run = stack_run(label)
    config = dp.DeployerConfig.from_env(_variables(run.one(FUNCTION, "-deployer")))
    calls: list[ApiCall] = []
    endpoint_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{config.endpoint}"
    package_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{config.group}/{VERSION}"
    bucket = run.exports["artifact_bucket"]
    package = {
        "ModelPackageArn": package_arn,
        "ModelPackageGroupName": config.group,
        "ModelPackageVersion": VERSION,
        "ModelApprovalStatus": dp.APPROVED,
        "InferenceSpecification": {
            "Containers": [
                {
                    "Image": f"{run.exports['ecr_repository_url']}@sha256:{DIGEST}",
                    "ModelDataUrl": f"s3://{bucket}/training/job/output/model.tar.gz",
                }
            ]
        },
    }
    fleet = min(_fleet_sizes(config))
    serving_config = dp.resource_name(config.endpoint, VERSION - 1, DIGEST)
    live = {
        "EndpointName": config.endpoint,
        "EndpointArn": endpoint_arn,
        "EndpointStatus": "InService",
        "EndpointConfigName": serving_config,
        "ProductionVariants": [{"VariantName": dp.VARIANT_NAME, "DesiredInstanceCount": fleet}],
    }
    serving_tags = {
        dp.TAG_MANAGED_BY: dp.MANAGED_BY,
        dp.TAG_ENDPOINT: config.endpoint,
        dp.TAG_SERVING: str(VERSION - 1),
        dp.TAG_SERVED: str(VERSION - 1),
        dp.TAG_STATUS: dp.SUCCEEDED,
    }

    def deployer(answers: Mapping[str, Any]) -> dp.Deployer:
        return dp.Deployer(
            config,
            sagemaker=ApiRecorder("sagemaker", answers, calls),
            autoscaling=ApiRecorder("application-autoscaling", {}, calls),
            cloudwatch=ApiRecorder("cloudwatch", {}, calls),
            log=lambda _message: None,
            in_lambda=False,
        )

    def tags(values: Mapping[str, str]) -> dict[str, Any]:
        return {"Tags": [{"Key": k, "Value": v} for k, v in values.items()]}

    absent = _raises(
        "DescribeEndpoint", "ValidationException", f'Could not find endpoint "{config.endpoint}".'
    )
    deployer({"describe_model_package": package, "describe_endpoint": absent}).deploy(package_arn)

    live_answers = {
        "describe_model_package": package,
        "describe_endpoint": live,
        "list_tags": tags(serving_tags),
        "describe_endpoint_config": {
            "EndpointConfigName": serving_config,
            "ProductionVariants": [{"ModelName": serving_config, "InstanceType": config.instance_type}],
        },
    }
    started = deployer(live_answers).deploy(package_arn)
    assert started.status == dp.IN_PROGRESS, started

    refused = _raises("UpdateEndpoint", "ValidationException", AWS_REFUSAL)
    with pytest.raises(ClientError):
        deployer({**live_answers, "update_endpoint": refused}).deploy(package_arn)

    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    in_progress = {
        **serving_tags,
        dp.TAG_STATUS: dp.IN_PROGRESS,
        dp.TAG_TARGET: str(VERSION),
        dp.TAG_TARGET_CONFIG: str(started.endpoint_config),
        dp.TAG_ACCEPTED: str(started.endpoint_config),
        dp.TAG_STARTED: an_hour_ago.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    # SageMaker accepted the update (the endpoint changed since), then rolled it back.
    rolled_back = {**live, "FailureReason": ROLLBACK_REASON, "LastModifiedTime": datetime.now(UTC)}
    deployer({"describe_endpoint": rolled_back, "list_tags": tags(in_progress)}).reconcile()
    return calls


@pytest.mark.parametrize("label", RUNS)
def test_deployer_requests_fit_what_aws_accepts(label: str) -> None:
    calls = deployer_calls(label)
    made = {c.operation for c in calls}
    expected = {"CreateModel", "CreateEndpointConfig", "CreateEndpoint", "UpdateEndpoint", "AddTags"}
    assert expected <= made, f"{label}: the deployer flows made {sorted(made)}, not all of {sorted(expected)}"
    assert {"RegisterScalableTarget", "PutScalingPolicy", "PutMetricData"} <= made, sorted(made)
    problems = [f"{label}: deployer {problem}" for call in calls for problem in call.problems()]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("label", RUNS)
def test_deployer_model_and_config_names_fit_for_large_versions(label: str) -> None:
    endpoint = stack_run(label).exports["endpoint_name"]
    limits = [
        api("sagemaker", "CreateModel", "ModelName"),
        api("sagemaker", "CreateEndpointConfig", "EndpointConfigName"),
    ]
    problems = []
    for version in (1, VERSION):
        name = dp.resource_name(endpoint, version, DIGEST)
        problems += [
            f"{label}: resource_name({endpoint!r}, {version}, digest) {p}"
            for limit in limits
            for p in limit.problems(name)
        ]
        # The deployer may create, and cleans up, only models and configs named <endpoint>-v*
        # (its IAM grants in components/blue_green_endpoint.py and Deployer._list).
        if not name.startswith(f"{endpoint}-v"):
            problems.append(
                f"{label}: resource_name({endpoint!r}, {version}, digest) = {name!r} cut the endpoint name"
            )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("label", RUNS)
def test_autoscaling_policy_name_fits(label: str) -> None:
    calls = [c for c in deployer_calls(label) if c.operation == "PutScalingPolicy"]
    names = [c.params["PolicyName"] for c in calls]
    problems = [
        f"{label}: PutScalingPolicy PolicyName {p}"
        for name in names
        for p in api("application-autoscaling", "PutScalingPolicy", "PolicyName").problems(name)
    ]
    assert names and not problems, "\n".join(problems)


def _bounds(limit: Limit) -> tuple[int, int]:
    assert limit.shape is not None
    return limit.shape.metadata["min"], limit.shape.metadata["max"]


# Configurations at the edges of what the APIs take: where the settings let one through, the deployer
# must take the environment the program gives it (it refuses a bad one on every event, after `pulumi up`).
EDGES: dict[str, dict[str, Any]] = {
    "waits at the API's minimum": {
        "trafficWaitSeconds": _bounds(WAIT_INTERVAL)[0],
        "terminationWaitSeconds": _bounds(TERMINATION_WAIT)[0],
    },
    "waits at the API's maximum": {
        "trafficWaitSeconds": _bounds(WAIT_INTERVAL)[1],
        "terminationWaitSeconds": _bounds(TERMINATION_WAIT)[1],
    },
    "deployment timeout at the API's minimum": {
        "maximumExecutionTimeoutSeconds": _bounds(EXECUTION_TIMEOUT)[0]
    },
    "deployment timeout at the API's maximum": {
        "maximumExecutionTimeoutSeconds": _bounds(EXECUTION_TIMEOUT)[1]
    },
    "LINEAR steps of 10%": {
        "trafficStepPercent": 10,
        "endpointInitialInstanceCount": 10,
        "autoscalingMinCapacity": 10,
        "autoscalingMaxCapacity": 10,
    },
    "autoscaling off, minimum 0": {"autoscalingMaxCapacity": 0, "autoscalingMinCapacity": 0},
}


@pytest.mark.parametrize("overrides", EDGES.values(), ids=EDGES.keys())
def test_the_deployer_takes_what_the_settings_let_through(overrides: dict[str, Any]) -> None:
    config = {f"mlops:{key}": str(value) for key, value in overrides.items()}
    try:
        run = run_program("dev", config)
    except SettingsError as exc:
        assert any(key in str(exc) for key in overrides), (
            f"dev with {overrides} refused for another reason: {exc}"
        )
        return
    function = run.one(FUNCTION, "-deployer")
    try:
        dp.DeployerConfig.from_env(_variables(function))
    except dp.DeployError as exc:
        pytest.fail(
            f"dev with {overrides}: the settings take it, then {function.where()} refuses its environment "
            f"on every event: {exc}"
        )


def training_calls(run: ProgramRun, commit: str) -> tuple[str, list[ApiCall]]:
    """The build's SageMaker and S3 requests for one commit: start the training job, register its model."""
    env = _variables(run.one(PROJECT, "-project"))
    settings = steps.TrainingSettings.from_env(env, image_uri=f"{env['ECR_REPOSITORY_URI']}:{commit}")
    data_uri = f"s3://{settings.bucket}/data/{commit}/iris.csv"  # what steps.upload_data returns
    evaluation = {
        "multiclass_classification_metrics": {"accuracy": {"value": 0.97}, "f1_macro": {"value": 0.96}}
    }

    def described(TrainingJobName: str, **_: Any) -> dict[str, Any]:
        return {
            "TrainingJobName": TrainingJobName,
            "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{TrainingJobName.lower()}",
            "TrainingJobStatus": "Completed",
            "AlgorithmSpecification": {"TrainingImage": settings.image_uri},
            "InputDataConfig": [{"DataSource": {"S3DataSource": {"S3Uri": data_uri}}}],
            "OutputDataConfig": {"S3OutputPath": f"s3://{settings.bucket}/training"},
            "ModelArtifacts": {
                "S3ModelArtifacts": f"s3://{settings.bucket}/training/{TrainingJobName}/output/model.tar.gz"
            },
        }

    calls: list[ApiCall] = []
    sm = ApiRecorder(
        "sagemaker",
        {"describe_training_job": described, "create_model_package": {"ModelPackageArn": "arn:package"}},
        calls,
    )
    # The longest signature a model package records: every property at its 256-character cap.
    signature = {
        "task": "classification",
        "target": "t" * 300,
        "features": [{"name": f"feature_{i:03d}", "type": "number"} for i in range(200)],
        "output": {"kind": "classes", "classes": [f"class_{i}" for i in range(100)]},
    }

    def get_object(Key: str, **_: Any) -> dict[str, Any]:
        body = signature if Key.endswith("/signature.json") else evaluation
        return {"Body": io.BytesIO(json.dumps(body).encode())}

    s3 = ApiRecorder("s3", {"get_object": get_object}, calls)
    name = steps.start_training(sm, settings, data_uri, commit)
    uri = f"s3://{settings.bucket}/training/{name}/output/evaluation.json"
    steps.register(sm, s3, settings, name, uri, commit=commit, image_digest=f"sha256:{DIGEST}")
    return name, calls


@pytest.mark.parametrize("label", RUNS)
def test_training_job_names_fit(label: str) -> None:
    group = stack_run(label).exports["model_package_group_name"]
    limit = api("sagemaker", "CreateTrainingJob", "TrainingJobName")
    late = datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)
    problems = [
        f"{label}: steps.job_name({group!r}, <{source}>) {p}"
        for source, commit in COMMITS.items()
        for p in limit.problems(steps.job_name(group, commit, late))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("label", RUNS)
def test_training_step_requests_fit_what_aws_accepts(label: str) -> None:
    problems = []
    for source, commit in COMMITS.items():
        _, calls = training_calls(stack_run(label), commit)
        made = {c.operation for c in calls}
        assert {"CreateTrainingJob", "CreateModelPackage"} <= made, sorted(made)
        problems += [f"{label}: steps, commit <{source}>: {p}" for call in calls for p in call.problems()]
    assert not problems, "\n".join(problems)


TAG_TEXTS = {
    "empty": "",
    "long": "x" * 1000,
    "non-ASCII": "modèle ✓ 模型 😀 \u2013 \u201cquoted\u201d",
    "punctuation": "a'b\"c(d)e[f]{g}<h>!#$%^&*;,?~`|\\",
    "control characters": "line\nbreak\ttab\x00nul",
    "AWS's refusal": AWS_REFUSAL,
}


@pytest.mark.parametrize("text", TAG_TEXTS.values(), ids=TAG_TEXTS.keys())
def test_tag_value_makes_any_text_a_sagemaker_tag_value(text: str) -> None:
    value = dp.tag_value(text)
    problems = api("sagemaker", "AddTags", "Tags.Value").problems(value)
    assert not problems, f"tag_value({text!r}) = {value!r}: {problems}"


def test_deployer_tag_keys_fit() -> None:
    keys = {v for k, v in vars(dp).items() if k.startswith("TAG_") and isinstance(v, str)}
    limit = api("sagemaker", "AddTags", "Tags.Key")
    problems = [f"deployer tag key {p}" for key in sorted(keys) for p in limit.problems(key)]
    assert keys and not problems, "\n".join(problems)


# --- 3. SageMaker's LINEAR rule -------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_linear_traffic_steps_are_whole_instances_within_10_to_50_percent(stack: str) -> None:
    """SageMaker: each LINEAR step is 10-50% of the variant's instances, and whole instances
    (finding 8); for every instance count the endpoint can have when a deployment starts."""
    run = program_run(stack)
    function = run.one(FUNCTION, "-deployer")
    env = _variables(function)
    settings = {k: run.setting(k) for k in ("trafficStepPercent", "endpointInitialInstanceCount")}
    config = dp.DeployerConfig.from_env(env)
    problems = []
    for instances in _fleet_sizes(config):
        routing = _call_deployment_config(config, instances)["BlueGreenUpdatePolicy"][
            "TrafficRoutingConfiguration"
        ]
        problems += [
            f"{stack}: {function.where()} TRAFFIC_STEP_PERCENT={env['TRAFFIC_STEP_PERCENT']} ({settings}, "
            f"autoscaling {config.autoscaling_min_capacity}..{config.autoscaling_max_capacity}): {p}"
            for p in linear_step_problems(routing, instances)
        ]
    assert not problems, "\n".join(problems)


# --- 4. the stack settings refuse what AWS refuses ------------------------------------------------


# PlatformSettings field -> the limits of the API members it becomes.
SETTINGS_LIMITS: dict[str, tuple[Limit, ...]] = {
    "traffic_step_percent": (LINEAR_STEP_VALUE, LINEAR_STEP_PERCENT),
    "traffic_wait_seconds": (WAIT_INTERVAL,),
    "termination_wait_seconds": (TERMINATION_WAIT,),
    "maximum_execution_timeout_seconds": (EXECUTION_TIMEOUT,),
    "build_timeout_minutes": (api("codebuild", "CreateProject", "timeoutInMinutes"),),
    "build_compute_type": (api("codebuild", "CreateProject", "environment.computeType"),),
    "endpoint_initial_instance_count": (
        api("sagemaker", "CreateEndpointConfig", "ProductionVariants.InitialInstanceCount"),
    ),
    "endpoint_instance_type": (api("sagemaker", "CreateEndpointConfig", "ProductionVariants.InstanceType"),),
    "training_instance_type": (api("sagemaker", "CreateTrainingJob", "ResourceConfig.InstanceType"),),
    "autoscaling_min_capacity": (api("application-autoscaling", "RegisterScalableTarget", "MinCapacity"),),
    "autoscaling_max_capacity": (api("application-autoscaling", "RegisterScalableTarget", "MaxCapacity"),),
    "alarm_evaluation_periods": (api("cloudwatch", "PutMetricAlarm", "EvaluationPeriods"),),
    "log_retention_days": (LOG_RETENTION,),
    "api_throttle_rate_limit": (
        api("apigateway", "CreateUsagePlan", "throttle.rateLimit"),
        USAGE_PLAN_MINIMUM,
    ),
    "api_throttle_burst_limit": (
        api("apigateway", "CreateUsagePlan", "throttle.burstLimit"),
        USAGE_PLAN_MINIMUM,
    ),
    "api_quota_limit": (api("apigateway", "CreateUsagePlan", "quota.limit"), USAGE_PLAN_MINIMUM),
    "api_quota_period": (api("apigateway", "CreateUsagePlan", "quota.period"),),
    "artifact_noncurrent_days": (
        api(
            "s3",
            "PutBucketLifecycleConfiguration",
            "LifecycleConfiguration.Rules.NoncurrentVersionExpiration.NoncurrentDays",
        ),
        NONCURRENT_DAYS,
    ),
}
SETTINGS_CASES = [
    pytest.param({name: value}, name, value, limit, id=f"{PlatformSettings.config_key(name)}={value}")
    for name, limits in SETTINGS_LIMITS.items()
    for limit in limits
    for value in limit.outside()
] + [
    # A CodeCommit repository is created with sourceRepoName (an external one only read): its API limits.
    pytest.param(
        {"source_repo_kind": "codecommit", "source_repo_name": name},
        "source_repo_name",
        name,
        api("codecommit", "CreateRepository", "repositoryName"),
        id=f"sourceRepoName={name[:20]} (codecommit)",
    )
    for name in ("example-org/iris-models", "r" * 101)
]


def test_the_base_settings_are_valid() -> None:
    assert _refused(PlatformSettings(**BASE_SETTINGS)) is None


@pytest.mark.parametrize(("overrides", "name", "value", "limit"), SETTINGS_CASES)
def test_settings_refuse_what_aws_refuses(
    overrides: dict[str, Any], name: str, value: Any, limit: Limit
) -> None:
    key = PlatformSettings.config_key(name)
    why = "; ".join(limit.problems(value))
    assert why, f"{key}={value!r}: {limit.source} accepts it; not a case for this test"
    message = _refused(PlatformSettings(**{**BASE_SETTINGS, **overrides}))
    assert message is not None, f"{key}={value!r} passes PlatformSettings.validate(); AWS refuses it: {why}"
    assert key in message, f"{key}={value!r} is refused, but the message does not name {key}: {message}"


def test_settings_refuse_alarm_evaluation_beyond_a_week() -> None:
    """alarmEvaluationPeriods x the alarms' period (fixed in the program) within PutMetricAlarm's week."""
    period = max(_alarm_period(a) for a in program_run(STACKS[0]).of_type(ALARM))
    most = int(ALARM_WINDOW_SECONDS // period)
    message = _refused(PlatformSettings(**{**BASE_SETTINGS, "alarm_evaluation_periods": most + 1}))
    assert message is not None and "alarmEvaluationPeriods" in message, (
        f"alarmEvaluationPeriods={most + 1} x period {period:g} s = {(most + 1) * period:g} s passes "
        f"PlatformSettings.validate() ({message}); PutMetricAlarm takes at most {ALARM_WINDOW_SECONDS} s "
        f"[{PUT_METRIC_ALARM_URL}]"
    )


LINEAR_FLEETS = [  # (trafficStepPercent, instances): steps SageMaker refuses (less than one instance)
    pytest.param(50, 1, id="50% of 1 instance"),
    pytest.param(25, 2, id="25% of 2 instances"),
    pytest.param(10, 9, id="10% of 9 instances"),
]


@pytest.mark.parametrize(("percent", "instances"), LINEAR_FLEETS)
def test_settings_refuse_linear_steps_of_less_than_one_instance(percent: int, instances: int) -> None:
    settings = PlatformSettings(
        **BASE_SETTINGS,
        traffic_step_percent=percent,
        endpoint_initial_instance_count=instances,
        autoscaling_min_capacity=instances,
        autoscaling_max_capacity=instances,
    )
    message = _refused(settings)
    keys = ("trafficStepPercent", "endpointInitialInstanceCount", "autoscalingMinCapacity")
    assert message is not None, (
        f"trafficStepPercent={percent} with {instances} instance(s) passes PlatformSettings.validate(); "
        f"SageMaker's LINEAR step would be {percent * instances / 100:g} of an instance "
        f"[{LINEAR_STEP_PERCENT.source}]"
    )
    assert any(k in message for k in keys), f"the message names none of {keys}: {message}"
